//! The Noise layer through its public API, in memory: whole handshakes in both auth modes, every
//! refusal the responder and the dialer can meet (each with its typed error and its counter),
//! and the transport halves across any chunking, carrying real messaging-v1 frames, against
//! tampered, truncated and malformed input.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use syncpeer::PeerId;
use syncpeer::noise::{
    AuthMode, CLIENT_MESSAGE_LEN, ConnectionSecurity, HandshakeError, HandshakeErrorKind,
    Initiator, NoiseConfig, NoiseReader, NoiseSession, NoiseWriter, PublicKey, ReadError,
    Responder, SERVER_MESSAGE_LEN, StaticKeypair, Trust, TrustedPeers, encrypted_len,
};
use syncpeer::proto::{
    DirectSendMsg, FrameDecoder, MultiplexMessage, NetworkMessage, ProtocolId, encode_frame,
};

fn at(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

fn key(seed: u8) -> StaticKeypair {
    StaticKeypair::from_private_bytes([seed; 32])
}

/// A node with key `seed`, announcing `id`.
fn node(seed: u8, id: PeerId, mode: AuthMode, trusted: &TrustedPeers) -> NoiseConfig {
    NoiseConfig::new(key(seed), id, mode, trusted.clone())
}

/// Two nodes that trust each other, in `mode`: client (key 1, id 1) and server (key 2, id 2).
fn trusted_pair(mode: AuthMode) -> (NoiseConfig, NoiseConfig) {
    let trusted = TrustedPeers::new();
    let client = node(1, PeerId::from_u64(1), mode, &trusted);
    let server = node(2, PeerId::from_u64(2), mode, &trusted);
    trusted.insert(client.peer_id(), [client.public_key()]);
    trusted.insert(server.peer_id(), [server.public_key()]);
    (client, server)
}

/// Runs the responder on a client message: its session and answer, or its refusal.
fn respond(
    server: &NoiseConfig,
    message: &[u8],
) -> Result<(NoiseSession, Vec<u8>), HandshakeError> {
    let mut resp = Responder::new(server);
    assert_eq!(resp.read(message), message.len().min(CLIENT_MESSAGE_LEN));
    let accepted = resp.accept()?;
    Ok((accepted.session, accepted.response.to_vec()))
}

/// A whole handshake: the client dials `server` expecting `server_key`.
#[track_caller]
fn handshake(
    client: &NoiseConfig,
    server: &NoiseConfig,
    server_key: PublicKey,
    now: SystemTime,
) -> Result<(NoiseSession, NoiseSession), HandshakeError> {
    let mut init = Initiator::new(client, server.peer_id(), server_key, now)?;
    let (server_session, answer) = respond(server, init.first_message())?;
    assert_eq!(init.read(&answer), SERVER_MESSAGE_LEN);
    Ok((init.finish()?, server_session))
}

#[track_caller]
fn refused(result: Result<(NoiseSession, NoiseSession), HandshakeError>) -> HandshakeError {
    match result {
        Ok(_) => panic!("handshake should have been refused"),
        Err(e) => e,
    }
}

/// Encrypts with `w` and decrypts with `r`, feeding the ciphertext in `chunks`-sized pieces.
#[track_caller]
fn carry(w: &mut NoiseWriter, r: &mut NoiseReader, parts: &[&[u8]], chunk: usize) -> Vec<u8> {
    let mut wire = BytesMut::new();
    let total: usize = parts.iter().map(|p| p.len()).sum();
    assert_eq!(
        w.encrypt(parts.iter().copied(), &mut wire),
        Ok(encrypted_len(total))
    );
    let mut plain = BytesMut::new();
    for piece in wire.chunks(chunk.max(1)) {
        r.decrypt(piece, &mut plain).unwrap();
    }
    assert!(r.is_idle());
    plain.to_vec()
}

#[test]
fn mutual_handshake_then_traffic_both_ways() {
    let (client, server) = trusted_pair(AuthMode::Mutual);
    let (c, s) = handshake(&client, &server, server.public_key(), at(1000)).unwrap();
    assert_eq!(c.remote_peer_id(), server.peer_id());
    assert_eq!(c.remote_public_key(), server.public_key());
    assert_eq!(c.trust(), Trust::Trusted);
    assert_eq!(s.remote_peer_id(), client.peer_id());
    assert_eq!(s.remote_public_key(), client.public_key());
    assert_eq!(s.trust(), Trust::Trusted);
    let ((mut cw, mut cr), (mut sw, mut sr)) = (c.split(), s.split());
    assert_eq!(carry(&mut cw, &mut sr, &[b"ping"], 4096), b"ping");
    assert_eq!(carry(&mut sw, &mut cr, &[b"pong"], 4096), b"pong");
    assert_eq!(carry(&mut cw, &mut sr, &[b"a", b"b", b"c"], 1), b"abc");
    assert_eq!(client.stats().outbound_completed, 1);
    assert_eq!(server.stats().inbound_accepted, 1);
    assert_eq!(server.stats().handshake_failures_total(), 0);
}

#[test]
fn messaging_v1_frames_run_inside_unchanged() {
    let (client, server) = trusted_pair(AuthMode::Mutual);
    let (c, s) = handshake(&client, &server, server.public_key(), at(1)).unwrap();
    let (mut w, mut r) = (c.split().0, s.split().1);
    let msgs: Vec<MultiplexMessage> = [0usize, 11, 70_000, 300]
        .iter()
        .map(|&n| {
            MultiplexMessage::Message(NetworkMessage::DirectSendMsg(DirectSendMsg {
                protocol_id: ProtocolId(2),
                priority: 0,
                raw_msg: Bytes::from(vec![7u8; n]),
            }))
        })
        .collect();
    let mut frames = BytesMut::new();
    for m in &msgs {
        encode_frame(m, 1 << 20, &mut frames).unwrap();
    }
    let plain = carry(&mut w, &mut r, &[&frames], 1000);
    let mut decoder = FrameDecoder::new(1 << 20);
    decoder.extend(&plain);
    for m in &msgs {
        assert_eq!(decoder.decode().unwrap().as_ref(), Some(m));
    }
    assert!(decoder.is_idle());
}

#[test]
fn handshake_messages_in_any_chunking() {
    let (client, server) = trusted_pair(AuthMode::Mutual);
    for (i, chunk) in [1, 7, 64, 167, 168].into_iter().enumerate() {
        let mut init = Initiator::new(
            &client,
            server.peer_id(),
            server.public_key(),
            at(10 + i as u64),
        )
        .unwrap();
        let mut resp = Responder::new(&server);
        for piece in init.first_message().chunks(chunk) {
            assert!(resp.remaining() > 0);
            assert_eq!(resp.read(piece), piece.len());
        }
        assert_eq!(resp.remaining(), 0);
        let accepted = resp.accept().unwrap();
        // The answer, a byte at a time, followed by transport data that must be left alone.
        let mut wire = accepted.response.to_vec();
        let (mut sw, _) = accepted.session.split();
        sw.encrypt([&b"after"[..]], &mut BytesMut::new()).unwrap();
        wire.extend_from_slice(b"transport bytes");
        let mut used = 0;
        for b in &wire {
            used += init.read(std::slice::from_ref(b));
        }
        assert_eq!(used, SERVER_MESSAGE_LEN);
        init.finish().unwrap();
    }
}

#[test]
fn maybe_mutual_lets_strangers_in_untrusted() {
    let trusted = TrustedPeers::new();
    let server = node(2, PeerId::from_u64(2), AuthMode::MaybeMutual, &trusted);
    // A stranger announcing the peer id derived from its key: in, untrusted.
    let stranger_key = key(3).public_key();
    let stranger = node(
        3,
        stranger_key.derived_peer_id(),
        AuthMode::MaybeMutual,
        &trusted,
    );
    let (c, s) = handshake(&stranger, &server, server.public_key(), at(5)).unwrap();
    assert_eq!(s.trust(), Trust::Untrusted);
    assert_eq!(s.remote_peer_id(), stranger_key.derived_peer_id());
    assert_eq!(
        c.trust(),
        Trust::Untrusted,
        "the dialer does not list the server either"
    );
    // Timestamps are not checked in this mode: the same instant again is fine.
    handshake(&stranger, &server, server.public_key(), at(5)).unwrap();
    // A stranger announcing any other peer id: refused.
    let liar = node(4, PeerId::from_u64(4), AuthMode::MaybeMutual, &trusted);
    let e = refused(handshake(&liar, &server, server.public_key(), at(6)));
    assert!(
        matches!(e, HandshakeError::PeerIdMismatch { claimed, derived }
            if claimed == PeerId::from_u64(4) && derived == key(4).public_key().derived_peer_id()),
        "{e}"
    );
    // A trusted peer id must still prove a trusted key.
    trusted.insert(PeerId::from_u64(4), [key(5).public_key()]);
    let e = refused(handshake(&liar, &server, server.public_key(), at(7)));
    assert!(matches!(e, HandshakeError::UntrustedKey { .. }), "{e}");
    trusted.insert(PeerId::from_u64(4), [key(4).public_key()]);
    let (_, s) = handshake(&liar, &server, server.public_key(), at(8)).unwrap();
    assert_eq!(s.trust(), Trust::Trusted);
    let stats = server.stats();
    assert_eq!(stats.inbound_accepted, 3);
    assert_eq!(
        stats.handshake_failures(HandshakeErrorKind::PeerIdMismatch),
        1
    );
    assert_eq!(
        stats.handshake_failures(HandshakeErrorKind::UntrustedKey),
        1
    );
}

#[test]
fn mutual_refuses_unknown_peers_and_untrusted_keys() {
    let (client, server) = trusted_pair(AuthMode::Mutual);
    let stranger_key = key(9).public_key();
    let stranger = node(
        9,
        stranger_key.derived_peer_id(),
        AuthMode::Mutual,
        &TrustedPeers::new(),
    );
    let e = refused(handshake(&stranger, &server, server.public_key(), at(1)));
    assert!(matches!(e, HandshakeError::UnknownPeer { peer } if peer == stranger.peer_id()));
    // The client's peer id with another key (a stolen identity without its key).
    let impostor = node(8, client.peer_id(), AuthMode::Mutual, &TrustedPeers::new());
    let e = refused(handshake(&impostor, &server, server.public_key(), at(2)));
    assert!(
        matches!(e, HandshakeError::UntrustedKey { peer, key: k }
            if peer == client.peer_id() && k == key(8).public_key()),
        "{e}"
    );
    assert!(
        server.anti_replay().is_empty(),
        "refused clients leave no timestamp"
    );
    let stats = server.stats();
    assert_eq!(stats.handshake_failures(HandshakeErrorKind::UnknownPeer), 1);
    assert_eq!(
        stats.handshake_failures(HandshakeErrorKind::UntrustedKey),
        1
    );
    assert_eq!(stats.inbound_accepted, 0);
}

#[test]
fn trusted_set_updates_apply_to_the_next_handshake() {
    let (client, server) = trusted_pair(AuthMode::Mutual);
    let set = server.trusted_peers().clone();
    assert!(set.remove(&client.peer_id()));
    let e = refused(handshake(&client, &server, server.public_key(), at(1)));
    assert!(matches!(e, HandshakeError::UnknownPeer { .. }));
    set.replace_all([(
        client.peer_id(),
        vec![key(7).public_key(), client.public_key()],
    )]);
    handshake(&client, &server, server.public_key(), at(2)).unwrap();
}

#[test]
fn replayed_or_stale_timestamps_are_refused() {
    let (client, server) = trusted_pair(AuthMode::Mutual);
    let init = Initiator::new(&client, server.peer_id(), server.public_key(), at(100)).unwrap();
    let recorded = init.first_message().to_vec();
    respond(&server, &recorded).unwrap();
    // The recorded message, replayed byte for byte.
    let e = respond(&server, &recorded).unwrap_err();
    assert!(
        matches!(e, HandshakeError::Replay { timestamp: 100, last: 100, peer } if peer == client.peer_id()),
        "{e}"
    );
    // A fresh handshake with the same or an older timestamp.
    for ms in [100, 99, 0] {
        let e = refused(handshake(&client, &server, server.public_key(), at(ms)));
        assert!(
            matches!(e, HandshakeError::Replay { last: 100, .. }),
            "{ms}: {e}"
        );
    }
    handshake(&client, &server, server.public_key(), at(101)).unwrap();
    assert_eq!(server.anti_replay().last(&client.public_key()), Some(101));
    assert_eq!(
        server
            .stats()
            .handshake_failures(HandshakeErrorKind::Replay),
        4
    );
}

#[test]
fn wrong_server_key_self_dial_and_tampering() {
    let (client, server) = trusted_pair(AuthMode::Mutual);
    // Dialing the server with a key it does not hold: refused on the prologue.
    let e = refused(handshake(&client, &server, key(6).public_key(), at(1)));
    assert!(
        matches!(e, HandshakeError::WrongResponderKey { expected, .. } if expected == key(6).public_key()),
        "{e}"
    );
    // Same, with the prologue doctored to name the right key: the Noise message was
    // encrypted for another key and does not authenticate.
    let init = Initiator::new(&client, server.peer_id(), key(6).public_key(), at(2)).unwrap();
    let mut m = init.first_message().to_vec();
    m[32..64].copy_from_slice(server.public_key().as_bytes());
    let e = respond(&server, &m).unwrap_err();
    assert!(
        matches!(e, HandshakeError::ClientMessageRejected { .. }),
        "{e}"
    );
    // Dialing ourselves.
    let e = refused(handshake(&server, &server, server.public_key(), at(3)));
    assert!(matches!(e, HandshakeError::SelfDial), "{e}");
    // A changed server answer.
    let mut init = Initiator::new(&client, server.peer_id(), server.public_key(), at(4)).unwrap();
    let (_, mut answer) = respond(&server, init.first_message()).unwrap();
    answer[40] ^= 0x80;
    init.read(&answer);
    assert!(matches!(
        init.finish(),
        Err(HandshakeError::ServerMessageRejected)
    ));
    // A cut one.
    let mut init = Initiator::new(&client, server.peer_id(), server.public_key(), at(5)).unwrap();
    let (_, answer) = respond(&server, init.first_message()).unwrap();
    init.read(&answer[..47]);
    assert!(matches!(
        init.finish(),
        Err(HandshakeError::Incomplete {
            received: 47,
            expected: 48
        })
    ));
    assert_eq!(
        client
            .stats()
            .handshake_failures(HandshakeErrorKind::ServerMessageRejected),
        1
    );
}

#[test]
fn every_changed_byte_of_the_client_message_is_refused() {
    let (client, server) = trusted_pair(AuthMode::MaybeMutual);
    let init = Initiator::new(&client, server.peer_id(), server.public_key(), at(1)).unwrap();
    let original = init.first_message().to_vec();
    for i in 0..CLIENT_MESSAGE_LEN {
        let mut m = original.clone();
        m[i] ^= 0x01;
        let e = respond(&server, &m).unwrap_err();
        let expected = match i {
            // The peer id is in clear but mixed into the handshake: the message fails.
            0..32 => HandshakeErrorKind::ClientMessageRejected,
            32..64 => HandshakeErrorKind::WrongResponderKey,
            _ => HandshakeErrorKind::ClientMessageRejected,
        };
        assert_eq!(e.kind(), expected, "byte {i}: {e}");
    }
    assert_eq!(server.stats().inbound_accepted, 0);
}

fn transport_pair() -> (NoiseWriter, NoiseReader) {
    let (client, server) = trusted_pair(AuthMode::Mutual);
    let (c, s) = handshake(&client, &server, server.public_key(), at(1)).unwrap();
    (c.split().0, s.split().1)
}

/// Two messages, sealed by a fresh session's writer.
fn two_messages() -> (BytesMut, NoiseReader) {
    let (mut w, r) = transport_pair();
    let mut wire = BytesMut::new();
    w.encrypt([&b"first message"[..]], &mut wire).unwrap();
    w.encrypt([&b""[..], &b"second"[..], &b" one"[..]], &mut wire)
        .unwrap();
    (wire, r)
}

#[test]
fn transport_split_at_every_byte() {
    // Every handshake draws fresh ephemeral keys, so each split point gets its own session.
    let len = two_messages().0.len();
    assert_eq!(len, encrypted_len(13) + encrypted_len(10));
    for split in 0..=len {
        let (wire, mut r) = two_messages();
        let mut plain = BytesMut::new();
        r.decrypt(&wire[..split], &mut plain).unwrap();
        assert_eq!(
            r.is_idle(),
            split == 0 || split == encrypted_len(13) || split == len
        );
        r.decrypt(&wire[split..], &mut plain).unwrap();
        assert_eq!(&plain[..], b"first messagesecond one", "split at {split}");
        assert_eq!(r.finish(), Ok(()));
    }
}

#[test]
fn transport_bad_input() {
    // Tampered: every byte of a small message (a fresh session for each).
    for i in 0..encrypted_len(14) {
        let (mut w2, mut r2) = transport_pair();
        let mut m = BytesMut::new();
        w2.encrypt([&b"tamper with me"[..]], &mut m).unwrap();
        m[i] ^= 0x01;
        let mut plain = BytesMut::new();
        let got = r2.decrypt(&m, &mut plain);
        let got = got.and_then(|_| r2.finish().map(|()| None::<usize>));
        assert!(got.is_err(), "byte {i}: {got:?}");
        assert!(plain.is_empty(), "byte {i}: unauthenticated plaintext");
    }
    // Truncated, empty, too short, the largest length with nothing behind it.
    let cases: [(&[u8], ReadError); 4] = [
        (
            &[0x00, 0x20, 1, 2],
            ReadError::Truncated {
                received: 4,
                expected: 34,
            },
        ),
        (&[0x00, 0x00], ReadError::EmptyMessage),
        (&[0x00, 0x0f], ReadError::MessageTooShort { len: 15 }),
        (
            &[0xff, 0xff],
            ReadError::Truncated {
                received: 2,
                expected: 65537,
            },
        ),
    ];
    for (input, expected) in cases {
        let (_, mut r) = transport_pair();
        let mut plain = BytesMut::new();
        let got = r
            .decrypt(input, &mut plain)
            .and_then(|_| r.finish().map(|()| None::<usize>));
        assert_eq!(got, Err(expected));
        assert_eq!(
            r.decrypt(b"more", &mut plain),
            Err(expected),
            "stays failed"
        );
    }
}

#[test]
fn plaintext_opt_in_is_named() {
    let (client, _) = trusted_pair(AuthMode::Mutual);
    let choices = [
        ConnectionSecurity::Noise(client),
        ConnectionSecurity::InsecurePlaintext,
    ];
    assert!(format!("{:?}", choices[1]).contains("Insecure"));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Any batch of frames crosses the transport intact in any chunking of the ciphertext.
    #[test]
    fn any_batches_in_any_chunking(
        batches in prop::collection::vec(prop::collection::vec(prop::collection::vec(any::<u8>(), 0..3000), 0..8), 1..5),
        cuts in prop::collection::vec(1usize..70_000, 1..20),
    ) {
        let (mut w, mut r) = transport_pair();
        let mut wire = BytesMut::new();
        let mut sent = Vec::new();
        for batch in &batches {
            w.encrypt(batch.iter().map(|v| &v[..]), &mut wire).unwrap();
            sent.extend(batch.iter().flatten().copied());
        }
        let mut plain = BytesMut::new();
        let mut rest = &wire[..];
        let mut cut = cuts.iter().cycle();
        while !rest.is_empty() {
            let n = (*cut.next().unwrap()).min(rest.len());
            r.decrypt(&rest[..n], &mut plain).unwrap();
            rest = &rest[n..];
        }
        prop_assert_eq!(r.finish(), Ok(()));
        prop_assert_eq!(&plain[..], &sent[..]);
    }

    /// Arbitrary bytes never panic the reader and never yield plaintext.
    #[test]
    fn arbitrary_ciphertext_is_refused(bytes in prop::collection::vec(any::<u8>(), 0..300), chunk in 1usize..50) {
        let (_, mut r) = transport_pair();
        let mut plain = BytesMut::new();
        for piece in bytes.chunks(chunk) {
            if r.decrypt(piece, &mut plain).is_err() {
                break;
            }
        }
        let _ = r.finish();
        prop_assert!(plain.is_empty());
    }

    /// Arbitrary client messages never panic the responder and are never accepted.
    #[test]
    fn arbitrary_client_messages_are_refused(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let (_, server) = trusted_pair(AuthMode::MaybeMutual);
        prop_assert!(respond(&server, &bytes).is_err());
    }
}
