//! The upgrade's tests: the plain identity exchange and the Aptos handshake byte by byte,
//! then the same over Noise, two upgrades wired back to back in any chunking.

use std::time::SystemTime;

use super::*;
use crate::network::handshake::{ChainId, NetworkId};
use crate::noise::{
    AuthMode, HandshakeErrorKind, NoiseConfig, ReadError, StaticKeypair, Trust, TrustedPeers,
};
use crate::proto::ProtocolId;

fn local(id: u64, protocols: &[u8], chain: u8) -> Arc<Local> {
    let set = protocols.iter().map(|p| ProtocolId(*p)).collect();
    let msg = HandshakeMsg::v1(set, ChainId(chain), NetworkId::Validator);
    Arc::new(Local::new(
        PeerId::from_u64(id),
        msg,
        ConnectionSecurity::InsecurePlaintext,
    ))
}

/// A plain dial expecting `expected`.
fn dial(local: Arc<Local>, expected: Option<PeerId>) -> Upgrade {
    Upgrade::outbound(local, expected, None, SystemTime::now()).expect("plain dials start")
}

type Outcome = Option<Result<Upgraded, HandshakeError>>;

/// One side's turn: write all it has into `outbox`, read up to `chunk` of what it wants
/// from `inbox`.
fn turn(me: &mut Upgrade, inbox: &mut Vec<u8>, outbox: &mut Vec<u8>, chunk: usize) -> Outcome {
    let out = me.output().to_vec();
    outbox.extend_from_slice(&out);
    me.wrote(out.len());
    let n = me.want().min(chunk).min(inbox.len());
    let got: Vec<u8> = inbox.drain(..n).collect();
    match me.input(&got) {
        Ok(Progress::Pending) => None,
        Ok(Progress::Identified(_)) => {
            me.proceed();
            None
        }
        Ok(Progress::Done(u)) => Some(Ok(u)),
        Err(e) => Some(Err(e)),
    }
}

/// Runs two upgrades against each other, feeding `chunk` bytes at a time, each side
/// reading only what it wants. Returns both outcomes.
fn run(a: &mut Upgrade, b: &mut Upgrade, chunk: usize) -> [Result<Upgraded, HandshakeError>; 2] {
    let (mut to_a, mut to_b) = (Vec::new(), Vec::new());
    let (mut da, mut db): (Outcome, Outcome) = (None, None);
    for _ in 0..1000 {
        if da.is_none() {
            da = turn(a, &mut to_a, &mut to_b, chunk);
        }
        if db.is_none() {
            db = turn(b, &mut to_b, &mut to_a, chunk);
        }
        if da.is_some() && db.is_some() {
            break;
        }
    }
    [da.expect("a finishes"), db.expect("b finishes")]
}

#[test]
fn bytes_on_the_wire_and_the_outcome() {
    let (la, lb) = (local(1, &[0, 5], 4), local(2, &[0, 2, 5], 4));
    let mut a = dial(la.clone(), Some(PeerId::from_u64(2)));
    assert_eq!(a.output(), PeerId::from_u64(1).0);
    assert_eq!(a.want(), 32);
    a.wrote(32);
    assert!(a.output().is_empty());
    assert_eq!(
        a.input(&PeerId::from_u64(2).0).unwrap(),
        Progress::Identified(PeerId::from_u64(2))
    );
    assert_eq!(a.want(), 0, "nothing more is read before proceed");
    a.proceed();
    // V1 {0, 5}: bit vector 0x84; chain 4; Validator.
    assert_eq!(a.output(), [0x00, 0x06, 0x01, 0x00, 0x01, 0x84, 0x04, 0x00]);
    assert_eq!(a.want(), 2);
    let mut b = Upgrade::inbound(lb);
    let [ra, rb] = run(&mut Upgrade::inbound(la), &mut b, usize::MAX);
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    let common = [ProtocolId(0), ProtocolId(5)].into_iter().collect();
    assert_eq!(ra.protocols, common);
    assert_eq!(rb.protocols, common);
    assert_eq!(
        (ra.remote, rb.remote),
        (PeerId::from_u64(2), PeerId::from_u64(1))
    );
}

#[test]
fn completes_one_byte_at_a_time_and_reads_nothing_past_the_end() {
    let (la, lb) = (local(1, &[3], 4), local(2, &[3], 4));
    let (mut a, mut b) = (Upgrade::inbound(la), Upgrade::inbound(lb));
    let [ra, rb] = run(&mut a, &mut b, 1);
    assert!(ra.is_ok() && rb.is_ok());
    assert_eq!((a.want(), b.want()), (0, 0));
}

#[test]
fn refusals_on_both_sides() {
    // Our own id comes back: a self-connection.
    let l = local(1, &[3], 4);
    let mut a = Upgrade::inbound(l.clone());
    assert!(matches!(
        a.input(&PeerId::from_u64(1).0),
        Err(HandshakeError::SelfConnection)
    ));
    // A dial reaching the wrong peer.
    let mut a = dial(l, Some(PeerId::from_u64(9)));
    assert!(matches!(
        a.input(&PeerId::from_u64(2).0),
        Err(HandshakeError::UnexpectedPeer { expected, actual })
            if expected == PeerId::from_u64(9) && actual == PeerId::from_u64(2)
    ));
    // Another chain: both sides refuse, each naming the other's.
    let (mut a, mut b) = (
        Upgrade::inbound(local(1, &[3], 4)),
        Upgrade::inbound(local(2, &[3], 7)),
    );
    match run(&mut a, &mut b, 5) {
        [
            Err(HandshakeError::InvalidChainId { theirs: t1, .. }),
            Err(HandshakeError::InvalidChainId { theirs: t2, .. }),
        ] => assert_eq!((t1.0, t2.0), (7, 4)),
        other => panic!("{other:?}"),
    }
    // An empty message.
    let mut a = Upgrade::inbound(local(1, &[3], 4));
    a.input(&PeerId::from_u64(2).0).unwrap();
    a.proceed();
    assert!(matches!(
        a.input(&[0, 0]),
        Err(HandshakeError::Malformed { .. })
    ));
}

// ---- Over Noise ----

/// Nodes 1 and 2 over Noise, each in `mode`, node 1 trusted by node 2 if `trusted`.
fn noise_locals(mode: AuthMode, trusted: bool) -> (Arc<Local>, Arc<Local>, NoiseConfig) {
    let (ka, kb) = (
        StaticKeypair::from_private_bytes([0x11; 32]),
        StaticKeypair::from_private_bytes([0x22; 32]),
    );
    let set = TrustedPeers::new();
    set.insert(PeerId::from_u64(2), [kb.public_key()]);
    if trusted {
        set.insert(PeerId::from_u64(1), [ka.public_key()]);
    }
    let ca = NoiseConfig::new(ka, PeerId::from_u64(1), mode, set.clone());
    let cb = NoiseConfig::new(kb, PeerId::from_u64(2), mode, set);
    let msg = |p: u8| {
        HandshakeMsg::v1(
            [ProtocolId(p)].into_iter().collect(),
            ChainId(4),
            NetworkId::Validator,
        )
    };
    let la = Local::new(PeerId::from_u64(1), msg(3), ConnectionSecurity::Noise(ca));
    let lb = Local::new(
        PeerId::from_u64(2),
        msg(3),
        ConnectionSecurity::Noise(cb.clone()),
    );
    (Arc::new(la), Arc::new(lb), cb)
}

fn noise_dial(la: &Arc<Local>, lb: &Arc<Local>) -> Upgrade {
    let ConnectionSecurity::Noise(cb) = &lb.security else {
        unreachable!("a Noise local")
    };
    Upgrade::outbound(
        la.clone(),
        Some(lb.peer_id),
        Some(cb.public_key()),
        SystemTime::now(),
    )
    .expect("the dial starts")
}

#[test]
fn over_noise_both_ends_upgrade_in_any_chunking_and_keep_their_halves() {
    for chunk in [1, 7, 48, usize::MAX] {
        let (la, lb, _) = noise_locals(AuthMode::Mutual, true);
        let (mut a, mut b) = (noise_dial(&la, &lb), Upgrade::inbound(lb.clone()));
        assert_eq!(a.output().len(), crate::noise::CLIENT_MESSAGE_LEN);
        let [ra, rb] = run(&mut a, &mut b, chunk);
        let (ra, rb) = (ra.unwrap(), rb.unwrap());
        assert_eq!(
            (ra.remote, rb.remote),
            (PeerId::from_u64(2), PeerId::from_u64(1))
        );
        assert_eq!(ra.protocols, [ProtocolId(3)].into_iter().collect());
        let Authentication::Noise { trust, .. } = rb.authentication else {
            panic!("{chunk}: {:?}", rb.authentication)
        };
        assert_eq!(trust, Trust::Trusted, "{chunk}");
        assert_eq!(
            (a.want(), b.want()),
            (0, 0),
            "{chunk}: nothing read past the end"
        );
        // The halves go on where the handshake left them: each side sealed one message.
        let (mut wa, _) = a.into_noise().expect("noise halves");
        let (_, mut rb) = b.into_noise().expect("noise halves");
        assert_eq!(wa.messages_sent(), 1);
        assert_eq!(rb.messages_received(), 1);
        let mut sealed = BytesMut::new();
        wa.encrypt([&b"first frame"[..]], &mut sealed).unwrap();
        let mut opened = BytesMut::new();
        assert_eq!(rb.decrypt(&sealed, &mut opened), Ok(Some(11)));
    }
}

/// Feeds `bytes` to `u`, at most what it wants at a time, until it reports something.
fn feed(u: &mut Upgrade, mut bytes: &[u8]) -> Result<Progress, HandshakeError> {
    loop {
        assert!(u.want() > 0, "fed while it wants nothing");
        let n = u.want().min(bytes.len());
        let progress = u.input(&bytes[..n])?;
        bytes = &bytes[n..];
        if progress != Progress::Pending || bytes.is_empty() {
            return Ok(progress);
        }
    }
}

/// A dial and the listener it reached, both identified, the listener waiting for the dial's
/// handshake message (the dial has not queued it yet).
fn identified(la: &Arc<Local>, lb: &Arc<Local>) -> (Upgrade, Upgrade) {
    let (mut a, mut b) = (noise_dial(la, lb), Upgrade::inbound(lb.clone()));
    let hello = a.output().to_vec();
    a.wrote(hello.len());
    assert!(matches!(feed(&mut b, &hello), Ok(Progress::Identified(_))));
    b.proceed();
    let answer = b.output()[..crate::noise::SERVER_MESSAGE_LEN].to_vec();
    b.wrote(b.output().len());
    assert!(matches!(feed(&mut a, &answer), Ok(Progress::Identified(_))));
    (a, b)
}

#[test]
fn over_noise_the_aptos_handshake_is_sealed() {
    let (la, lb, _) = noise_locals(AuthMode::Mutual, true);
    let (mut a, _) = identified(&la, &lb);
    a.proceed();
    let out = a.output();
    assert_eq!(out.len(), crate::noise::encrypted_len(la.frame.len()));
    let frame = &la.frame[..];
    assert!(
        !out.windows(frame.len()).any(|w| w == frame),
        "the handshake message is not in clear"
    );
}

#[test]
fn over_noise_a_tampered_handshake_message_is_refused() {
    let (la, lb, _) = noise_locals(AuthMode::Mutual, true);
    let (mut a, mut b) = identified(&la, &lb);
    a.proceed();
    let mut sealed = a.output().to_vec();
    sealed[5] ^= 0x40;
    assert!(matches!(
        feed(&mut b, &sealed),
        Err(HandshakeError::NoiseMessage(ReadError::Decrypt {
            message: 0
        }))
    ));
}

#[test]
fn over_noise_bytes_after_the_handshake_message_in_its_noise_message_are_refused() {
    let (la, lb, _) = noise_locals(AuthMode::Mutual, true);
    let (mut a, mut b) = identified(&la, &lb);
    let Identity::Secured(s) = &mut a.identity else {
        unreachable!("identified over Noise")
    };
    let mut sealed = BytesMut::new();
    s.writer
        .encrypt([&la.frame[..], &b"a frame too soon"[..]], &mut sealed)
        .unwrap();
    assert!(matches!(
        feed(&mut b, &sealed),
        Err(HandshakeError::TrailingBytes { len: 16 })
    ));
}

#[test]
fn over_noise_refusals_are_typed_and_counted() {
    // Mutual mode, and node 1 is not in node 2's trusted set.
    let (la, lb, cb) = noise_locals(AuthMode::Mutual, false);
    let mut a = noise_dial(&la, &lb);
    let mut b = Upgrade::inbound(lb.clone());
    let hello = a.output().to_vec();
    a.wrote(hello.len());
    match feed(&mut b, &hello) {
        Err(HandshakeError::Noise(e)) => assert_eq!(e.kind(), HandshakeErrorKind::UnknownPeer),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        cb.stats()
            .handshake_failures(HandshakeErrorKind::UnknownPeer),
        1
    );
    // A dial over Noise needs the remote's key.
    assert!(matches!(
        Upgrade::outbound(la, Some(PeerId::from_u64(2)), None, SystemTime::now()),
        Err(HandshakeError::MissingKey)
    ));
}
