//! Networks over Noise whatever the suites run (`SYNCPEER_SECURITY`): who gets in (mutual and
//! maybe-mutual authentication, the trusted set changed while the network runs), what is
//! refused and how (a stranger, a wrong key, a replayed or tampered client message, garbage,
//! silence), each refusal typed, counted in the node's `NoiseStats` and leaving no thread; the
//! Aptos handshake inside the session byte for byte; and the API's refusals of a dial that does
//! not match the network's security.

mod common;
mod netkit;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, SystemTime};

use bytes::BytesMut;
use netkit::{
    Node, WAIT, eventually, id, key, node_from, noise_config, quiet, quiet_node_hello, serial,
    threads, threads_at_start, trusted,
};
use syncpeer::network::{Authentication, BuildError, ConnectError, HandshakeError, KeepError};
use syncpeer::noise::{
    AuthMode, HandshakeErrorKind, Initiator, NoiseConfig, SERVER_MESSAGE_LEN, Trust, TrustedPeers,
};
use syncpeer::{Network, PeerId};

/// Node `n` over Noise with `config`.
fn noise_node(n: u64, config: NoiseConfig) -> Node {
    node_from(n, Network::builder(id(n)).noise(config), quiet())
}

/// Node `n` over Noise, its key `key(n)`, in `mode`, trusting nodes 1 to 32.
fn node_in(n: u64, mode: AuthMode) -> Node {
    noise_node(n, NoiseConfig::new(key(n), id(n), mode, trusted()))
}

fn stats(n: &Node) -> syncpeer::noise::NoiseStats {
    n.net.noise_config().expect("a Noise network").stats()
}

/// Dials node `to` from `from` with `to`'s key.
fn dial(from: &Node, to: &Node) -> Result<PeerId, ConnectError> {
    from.net.connect(to.addr, id(to.n), key(to.n).public_key())
}

#[test]
fn mutual_refuses_a_stranger_until_the_running_trusted_set_names_it() {
    let _serial = serial();
    let b = node_in(2, AuthMode::Mutual);
    // Node 40 is outside the trusted set (1 to 32).
    let stranger = node_in(40, AuthMode::Mutual);
    match dial(&stranger, &b) {
        Err(ConnectError::Handshake(HandshakeError::Closed)) => {}
        other => panic!("{other:?}"),
    }
    eventually("the refusal counted", || {
        stats(&b).handshake_failures(HandshakeErrorKind::UnknownPeer) == 1
    });
    assert!(b.net.peers().is_empty());
    // Trusted while b runs: the next dial gets in.
    let set = b.net.noise_config().unwrap().trusted_peers();
    set.insert(id(40), [key(40).public_key()]);
    assert_eq!(dial(&stranger, &b).unwrap(), id(2));
    eventually("b sees node 40", || b.net.peer(id(40)).is_some());
    let info = b.net.connection(id(40)).unwrap();
    let expected = Authentication::Noise {
        key: key(40).public_key(),
        trust: Trust::Trusted,
    };
    assert_eq!(info.authentication, expected);
    // Removed again: the connection stays, a new dial is refused.
    set.remove(&id(40));
    stranger
        .net
        .disconnect(id(2), syncpeer::DisconnectReason::RequestedByPeerManager);
    eventually("b sees the close", || b.net.peers().is_empty());
    assert!(dial(&stranger, &b).is_err());
    eventually("the second refusal counted", || {
        stats(&b).handshake_failures(HandshakeErrorKind::UnknownPeer) == 2
    });
    assert_eq!(stats(&b).inbound_accepted, 1);
    stranger.net.shutdown();
    b.net.shutdown();
}

#[test]
fn maybe_mutual_lets_a_stranger_in_as_untrusted_if_its_id_is_its_key() {
    let _serial = serial();
    let b = node_in(2, AuthMode::MaybeMutual);
    let stranger_key = key(41);
    let derived = stranger_key.public_key().derived_peer_id();
    let config = NoiseConfig::new(
        stranger_key.clone(),
        derived,
        AuthMode::MaybeMutual,
        trusted(),
    );
    let stranger = node_from(41, Network::builder(derived).noise(config), quiet());
    assert_eq!(dial(&stranger, &b).unwrap(), id(2));
    eventually("b sees the stranger", || b.net.peer(derived).is_some());
    assert_eq!(
        b.net.connection(derived).unwrap().authentication,
        Authentication::Noise {
            key: stranger_key.public_key(),
            trust: Trust::Untrusted
        }
    );
    assert_eq!(
        stranger.net.connection(id(2)).unwrap().authentication,
        Authentication::Noise {
            key: key(2).public_key(),
            trust: Trust::Trusted
        }
    );
    // A stranger announcing an id that is not its key's is refused.
    let liar = noise_node(
        42,
        NoiseConfig::new(key(42), id(42), AuthMode::Mutual, TrustedPeers::new()),
    );
    assert!(dial(&liar, &b).is_err());
    eventually("the refusal counted", || {
        stats(&b).handshake_failures(HandshakeErrorKind::PeerIdMismatch) == 1
    });
    for n in [liar, stranger, b] {
        n.net.shutdown();
    }
}

#[test]
fn a_dial_with_the_wrong_key_is_refused_by_the_server_and_counted() {
    let _serial = serial();
    let (a, b) = (node_in(1, AuthMode::Mutual), node_in(2, AuthMode::Mutual));
    match a.net.connect(b.addr, id(2), key(3).public_key()) {
        Err(ConnectError::Handshake(HandshakeError::Closed)) => {}
        other => panic!("{other:?}"),
    }
    eventually("the refusal counted", || {
        stats(&b).handshake_failures(HandshakeErrorKind::WrongResponderKey) == 1
    });
    assert!(a.net.peers().is_empty() && b.net.peers().is_empty());
    a.net.shutdown();
    b.net.shutdown();
}

/// The client's 168 bytes as node 1 would send them to `b`, stamped `now`.
fn client_message(b: &Node, now: SystemTime) -> (Initiator, Vec<u8>) {
    let init = Initiator::new(&noise_config(1), id(2), key(b.n).public_key(), now).unwrap();
    let msg = init.first_message().to_vec();
    (init, msg)
}

/// Connects to `b`, writes `bytes`, and reads whatever comes back until `b` closes or `within`.
fn exchange(b: &Node, bytes: &[u8], within: Duration) -> Vec<u8> {
    netkit::raw_exchange(b.addr, bytes, within)
}

#[test]
fn a_replayed_client_message_and_hostile_upgrades_are_refused_leaving_no_thread() {
    let _serial = serial();
    let before = threads_at_start();
    let b = node_in(2, AuthMode::Mutual);
    let base = before + 3;
    eventually("b's threads", || threads() == base);
    let (_, first) = client_message(&b, SystemTime::now());
    // Accepted once: the answer (48 bytes) and b's sealed handshake come back.
    let mut s = TcpStream::connect(b.addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.write_all(&first).unwrap();
    let mut answer = [0u8; SERVER_MESSAGE_LEN];
    s.read_exact(&mut answer).unwrap();
    drop(s);
    // The same bytes again: a replay, refused, nothing comes back.
    assert_eq!(exchange(&b, &first, WAIT), b"");
    let mut tampered = first.clone();
    tampered[100] ^= 0x01;
    let mut garbage = b"GET / HTTP/1.1\r\n\r\n".repeat(10);
    garbage.truncate(168);
    for (bytes, what) in [
        (&tampered[..], "a tampered client message"),
        (&garbage[..], "garbage"),
        (&first[..100], "a truncated client message"),
        (&b""[..], "silence"),
    ] {
        assert_eq!(exchange(&b, bytes, WAIT), b"", "{what}");
    }
    let s = stats(&b);
    assert_eq!(s.inbound_accepted, 1);
    assert_eq!(s.handshake_failures(HandshakeErrorKind::Replay), 1);
    assert_eq!(
        s.handshake_failures(HandshakeErrorKind::ClientMessageRejected),
        1
    );
    assert_eq!(
        s.handshake_failures(HandshakeErrorKind::WrongResponderKey),
        1
    );
    assert!(b.net.peers().is_empty());
    eventually("no thread left by the refused upgrades", || {
        threads() == base
    });
    b.net.shutdown();
    eventually("no thread left", || threads() == before);
}

#[test]
fn the_aptos_handshake_runs_inside_the_session_byte_for_byte() {
    let _serial = serial();
    let b = node_in(2, AuthMode::Mutual);
    let (mut init, hello) = client_message(&b, SystemTime::now());
    let mut s = TcpStream::connect(b.addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.write_all(&hello).unwrap();
    let mut answer = [0u8; SERVER_MESSAGE_LEN];
    s.read_exact(&mut answer).unwrap();
    init.read(&answer);
    let (mut writer, mut reader) = init.finish().unwrap().split();
    // b's handshake message: one Noise message, holding exactly the plaintext one.
    let theirs = &quiet_node_hello(2)[32..];
    let mut sealed = vec![0u8; 2 + theirs.len() + 16];
    s.read_exact(&mut sealed).unwrap();
    assert!(
        !sealed.windows(theirs.len()).any(|w| w == theirs),
        "not in clear"
    );
    let mut plain = BytesMut::new();
    assert_eq!(reader.decrypt(&sealed, &mut plain), Ok(Some(theirs.len())));
    assert_eq!(&plain[..], theirs);
    // Ours, sealed the same way: b admits node 1.
    let mut ours = BytesMut::new();
    writer
        .encrypt([&quiet_node_hello(1)[32..]], &mut ours)
        .unwrap();
    s.write_all(&ours).unwrap();
    eventually("b admits node 1", || b.net.peer(id(1)).is_some());
    drop(s);
    b.net.shutdown();
}

#[test]
fn dials_and_builders_that_do_not_match_the_security_are_refused() {
    let _serial = serial();
    let noisy = node_in(1, AuthMode::Mutual);
    let plain = netkit::plain_node(2, quiet());
    assert!(matches!(
        noisy.net.connect_insecure(plain.addr),
        Err(ConnectError::KeyRequired)
    ));
    assert!(matches!(
        noisy.net.keep_connected_insecure(id(2), plain.addr),
        Err(KeepError::KeyRequired)
    ));
    assert!(matches!(
        plain.net.connect(noisy.addr, id(1), key(1).public_key()),
        Err(ConnectError::InsecureNetwork)
    ));
    assert!(matches!(
        plain
            .net
            .keep_connected(id(1), noisy.addr, key(1).public_key()),
        Err(KeepError::InsecureNetwork)
    ));
    assert!(matches!(
        Network::builder(id(3)).build(),
        Err(BuildError::NoSecurity)
    ));
    assert!(matches!(
        Network::builder(id(3)).noise(noise_config(4)).build(),
        Err(BuildError::PeerIdMismatch { .. })
    ));
    // A Noise node and a plaintext one do not understand each other.
    assert!(plain.net.connect_insecure(noisy.addr).is_err());
    noisy.net.shutdown();
    plain.net.shutdown();
}
