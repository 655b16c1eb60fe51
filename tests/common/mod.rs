//! Helpers shared by the loopback integration tests.
//!
//! The suites run in plaintext, or inside Noise when `SYNCPEER_SECURITY=noise` is set
//! ([`Security::current`]): every connection the helpers make ([`sockets`], [`tcp_pair`],
//! [`unix_pair`], [`secured`] for a pair made elsewhere, [`raw_pair`]) is then a Noise session,
//! its handshake run here before the peer starts, and a [`Raw`] end driven by a test seals
//! what it writes and opens what it reads, so a test that speaks frames speaks them inside
//! Noise unchanged. A socket reaches a peer only through an [`End`], so no test can forget it.
#![allow(dead_code, unreachable_pub)]

mod raw;

#[allow(unused_imports)] // each test binary uses some of them
pub use raw::{Raw, RawSock, raw_pair, raw_pair_with, secured_raw};

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};

use bytes::BytesMut;
use crossbeam_channel::{Receiver, Sender};
use syncpeer::noise::{
    Accepted, AuthMode, CLIENT_MESSAGE_LEN, Initiator, NoiseConfig, NoiseSession, Responder,
    SERVER_MESSAGE_LEN, StaticKeypair, TrustedPeers,
};
use syncpeer::proto::codec::encode_frame;
use syncpeer::proto::{DirectSendMsg, MultiplexMessage, NetworkMessage};
use syncpeer::{
    Bytes, Disconnected, DrainReport, Inbound, Peer, PeerBuilder, PeerConfig, PeerHandle, PeerId,
    PendingRpc, ProtocolId, RpcError, Socket,
};

/// Bound for every blocking wait in tests: long enough for a loaded 2-core machine.
pub const WAIT: Duration = Duration::from_secs(20);

pub const DIRECT: ProtocolId = ProtocolId(2);
pub const RPC: ProtocolId = ProtocolId(0);

pub fn init_logging() {
    let _ = env_logger::builder().is_test(true).try_init();
}

/// Whether connections run in plaintext or inside Noise.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Security {
    Plain,
    Noise,
}

impl Security {
    /// The suites' security: `SYNCPEER_SECURITY=noise`, or plaintext (unset or `plain`).
    pub fn current() -> Security {
        static CURRENT: OnceLock<Security> = OnceLock::new();
        *CURRENT.get_or_init(|| match std::env::var("SYNCPEER_SECURITY").as_deref() {
            Err(_) | Ok("" | "plain") => Security::Plain,
            Ok("noise") => Security::Noise,
            Ok(other) => panic!("SYNCPEER_SECURITY={other}: expected `noise` or `plain`"),
        })
    }

    pub fn is_noise(self) -> bool {
        self == Security::Noise
    }
}

/// One end of a test connection: its socket and, over Noise, the session established on it.
#[derive(Debug)]
pub struct End {
    pub socket: Socket,
    pub session: Option<NoiseSession>,
}

impl End {
    /// A peer builder on this end, inside its session if it has one.
    pub fn builder(self) -> PeerBuilder {
        let builder = Peer::builder(self.socket);
        match self.session {
            Some(session) => builder.noise(session),
            None => builder,
        }
    }
}

/// Two connected sockets of the given transport, secured as [`Security::current`] says.
pub fn sockets(kind: Transport) -> (End, End) {
    match kind {
        Transport::Tcp => tcp_pair(),
        Transport::Unix => unix_pair(),
    }
}

/// A connected TCP pair on loopback, secured as [`Security::current`] says.
#[track_caller]
pub fn tcp_pair() -> (End, End) {
    let (a, b) = plain_tcp_pair();
    secured(a.into(), b.into())
}

/// A connected TCP pair on loopback, never secured (for the tests' own remotes).
#[track_caller]
pub fn plain_tcp_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let a = TcpStream::connect(listener.local_addr().unwrap()).expect("connect");
    let (b, _) = listener.accept().expect("accept");
    (a, b)
}

/// A connected Unix socket pair, secured as [`Security::current`] says.
#[track_caller]
pub fn unix_pair() -> (End, End) {
    let (a, b) = UnixStream::pair().expect("socketpair");
    secured(a.into(), b.into())
}

/// Secures a connected pair made elsewhere (a relay's, say) as [`Security::current`] says: `a`
/// dials (the Noise initiator), `b` answers.
#[track_caller]
pub fn secured(a: Socket, b: Socket) -> (End, End) {
    secured_with(a, b, Security::current())
}

/// [`secured`] with the security given.
#[track_caller]
pub fn secured_with(a: Socket, b: Socket, security: Security) -> (End, End) {
    if !security.is_noise() {
        return (
            End {
                socket: a,
                session: None,
            },
            End {
                socket: b,
                session: None,
            },
        );
    }
    let (sa, sb) = noise_handshake(&mut SocketIo(&a), &mut SocketIo(&b));
    (
        End {
            socket: a,
            session: Some(sa),
        },
        End {
            socket: b,
            session: Some(sb),
        },
    )
}

/// Node 1 (the dialer) and node 2 (the listener) of a test connection: fresh configurations
/// (a fresh anti-replay table, so handshakes in quick succession are not replays), mutual
/// authentication, each trusting the other.
pub fn noise_configs() -> (NoiseConfig, NoiseConfig) {
    static KEYS: OnceLock<(StaticKeypair, StaticKeypair)> = OnceLock::new();
    let (ka, kb) = KEYS.get_or_init(|| {
        (
            StaticKeypair::from_private_bytes([0xa1; 32]),
            StaticKeypair::from_private_bytes([0xb2; 32]),
        )
    });
    let (ia, ib) = (PeerId::from_u64(1), PeerId::from_u64(2));
    let trusted: TrustedPeers = [(ia, [ka.public_key()]), (ib, [kb.public_key()])]
        .into_iter()
        .collect();
    (
        NoiseConfig::new(ka.clone(), ia, AuthMode::Mutual, trusted.clone()),
        NoiseConfig::new(kb.clone(), ib, AuthMode::Mutual, trusted),
    )
}

/// Runs a Noise IK handshake between two blocking ends of one connection, on this thread (the
/// two messages fit the socket buffers): `a` initiates. Reads are bounded by [`WAIT`].
#[track_caller]
pub fn noise_handshake(
    a: &mut (impl Read + Write),
    b: &mut (impl Read + Write),
) -> (NoiseSession, NoiseSession) {
    let (ca, cb) = noise_configs();
    let mut init = Initiator::new(&ca, cb.peer_id(), cb.public_key(), SystemTime::now())
        .expect("start the handshake");
    a.write_all(init.first_message())
        .expect("write the client message");
    let mut msg = [0u8; CLIENT_MESSAGE_LEN];
    b.read_exact(&mut msg).expect("read the client message");
    let mut responder = Responder::new(&cb);
    responder.read(&msg);
    let Accepted { response, session } = responder.accept().expect("the client is let in");
    b.write_all(&response).expect("write the answer");
    let mut answer = [0u8; SERVER_MESSAGE_LEN];
    a.read_exact(&mut answer).expect("read the answer");
    init.read(&answer);
    (init.finish().expect("the server is who we dialed"), session)
}

/// Blocking reads and writes on a [`Socket`], each read bounded by [`WAIT`].
struct SocketIo<'a>(&'a Socket);

impl Read for SocketIo<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.0 {
            Socket::Tcp(s) => {
                s.set_read_timeout(Some(WAIT))?;
                (&*s).read(buf)
            }
            Socket::Unix(s) => {
                s.set_read_timeout(Some(WAIT))?;
                (&*s).read(buf)
            }
        }
    }
}

impl Write for SocketIo<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.0 {
            Socket::Tcp(s) => (&*s).write(buf),
            Socket::Unix(s) => (&*s).write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// One side of a test connection: the handle and what it receives.
pub struct Side {
    pub handle: PeerHandle,
    pub inbound: Receiver<Inbound>,
    pub disconnected: Receiver<Disconnected>,
}

pub fn spawn_side(socket: End, me: u64, remote: u64, config: PeerConfig, capacity: usize) -> Side {
    let (tx, inbound): (Sender<Inbound>, _) = crossbeam_channel::bounded(capacity);
    let (dtx, disconnected) = crossbeam_channel::unbounded();
    let _ = me;
    let handle = socket
        .builder()
        .config(config)
        .remote_peer_id(PeerId::from_u64(remote))
        .handler(DIRECT, tx.clone())
        .handler(RPC, tx)
        .on_disconnect(dtx)
        .spawn()
        .expect("spawn peer");
    Side {
        handle,
        inbound,
        disconnected,
    }
}

/// Two connected peers, A (id 1) and B (id 2).
pub fn pair_with(kind: Transport, config: PeerConfig, capacity: usize) -> (Side, Side) {
    init_logging();
    let (a, b) = sockets(kind);
    (
        spawn_side(a, 1, 2, config.clone(), capacity),
        spawn_side(b, 2, 1, config, capacity),
    )
}

#[derive(Clone, Copy, Debug)]
pub enum Transport {
    Tcp,
    Unix,
}

pub const TRANSPORTS: [Transport; 2] = [Transport::Tcp, Transport::Unix];

/// Receives one inbound item or fails the test.
#[track_caller]
pub fn recv(side: &Side) -> Inbound {
    side.inbound
        .recv_timeout(WAIT)
        .expect("inbound message in time")
}

#[track_caller]
pub fn disconnected(side: &Side) -> Disconnected {
    side.disconnected
        .recv_timeout(WAIT)
        .expect("disconnect notice in time")
}

/// A short bound, for checking that something does *not* happen (a second notice, a message
/// that must not arrive).
pub const SHORT: Duration = Duration::from_millis(200);

/// Runs `f` on its own thread and waits at most `limit` for it: a blocking call that has no
/// timeout of its own (`shutdown`, `abort`, a send loop) fails the test instead of hanging it.
#[track_caller]
pub fn within<T: Send + 'static>(
    what: &str,
    limit: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = crossbeam_channel::bounded(1);
    std::thread::Builder::new()
        .name(format!("test-{what}"))
        .spawn(move || {
            let _ = tx.send(f());
        })
        .expect("spawn test thread");
    match rx.recv_timeout(limit) {
        Ok(v) => v,
        Err(crossbeam_channel::RecvTimeoutError::Disconnected) => panic!("{what} panicked"),
        Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
            panic!("{what} did not finish within {limit:?}")
        }
    }
}

/// Polls `cond` until it holds, failing after [`WAIT`]. Only for counters, which have no
/// channel to wait on.
#[track_caller]
pub fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "{what}: not reached within {WAIT:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Every accepted message (and byte) has exactly one outcome in the report.
#[track_caller]
pub fn assert_balanced(r: &syncpeer::DrainReport) {
    assert_eq!(
        r.messages_accepted,
        r.messages_written + r.messages_abandoned,
        "{r:?}"
    );
    assert_eq!(
        r.bytes_accepted,
        r.bytes_written + r.bytes_abandoned,
        "{r:?}"
    );
}

/// Receives the one disconnect notice, then checks that no second one follows.
#[track_caller]
pub fn one_notice(rx: &Receiver<Disconnected>) -> Disconnected {
    let notice = rx.recv_timeout(WAIT).expect("disconnect notice in time");
    assert!(
        rx.recv_timeout(SHORT).is_err(),
        "a second disconnect notice arrived"
    );
    notice
}

/// Spawns a peer with one handler channel per `(protocol, capacity)`; returns the handle, the
/// handler receivers (in the order given) and the disconnect receiver.
pub fn spawn_peer(
    socket: End,
    remote: u64,
    config: PeerConfig,
    handlers: &[(ProtocolId, usize)],
) -> (PeerHandle, Vec<Receiver<Inbound>>, Receiver<Disconnected>) {
    init_logging();
    let (dtx, drx) = crossbeam_channel::unbounded();
    let mut builder = socket
        .builder()
        .config(config)
        .remote_peer_id(PeerId::from_u64(remote))
        .on_disconnect(dtx);
    let mut receivers = Vec::new();
    for &(protocol, capacity) in handlers {
        let (tx, rx) = crossbeam_channel::bounded(capacity);
        builder = builder.handler(protocol, tx);
        receivers.push(rx);
    }
    (builder.spawn().expect("spawn peer"), receivers, drx)
}

/// One whole frame (length prefix included) for `msg`.
pub fn frame(msg: &MultiplexMessage) -> Vec<u8> {
    let mut out = BytesMut::new();
    encode_frame(msg, usize::MAX >> 1, &mut out).expect("frame fits");
    out.to_vec()
}

/// A direct-send frame.
pub fn direct_frame(protocol: ProtocolId, data: &[u8]) -> Vec<u8> {
    frame(&MultiplexMessage::Message(NetworkMessage::DirectSendMsg(
        DirectSendMsg {
            protocol_id: protocol,
            priority: 0,
            raw_msg: Bytes::copy_from_slice(data),
        },
    )))
}

/// `len` pseudo-random bytes from `seed` (xorshift, eight bytes at a time).
pub fn pattern(len: usize, seed: u64) -> Bytes {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v.into()
}

/// A 64-bit checksum (FNV-1a over 8-byte words, then the tail), so that large payloads are
/// compared without printing them.
pub fn checksum(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut words = data.chunks_exact(8);
    for w in &mut words {
        h = (h ^ u64::from_le_bytes(w.try_into().unwrap())).wrapping_mul(0x0000_0100_0000_01b3);
    }
    for &b in words.remainder() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^ data.len() as u64
}

/// A payload carrying `index` in its first 8 bytes, `len` bytes long (at least 8).
pub fn numbered(index: u64, len: usize) -> Bytes {
    let mut v = vec![0u8; len.max(8)];
    v[..8].copy_from_slice(&index.to_be_bytes());
    v.into()
}

/// The index written by [`numbered`].
#[track_caller]
pub fn index_of(data: &[u8]) -> u64 {
    u64::from_be_bytes(data[..8].try_into().expect("numbered payload"))
}

/// The outcome of an RPC, which must come within `WAIT`.
#[track_caller]
pub fn outcome(call: PendingRpc) -> Result<Bytes, RpcError> {
    match call.wait_timeout(WAIT) {
        Ok(answer) => Ok(answer),
        Err(Err(e)) => Err(e),
        Err(Ok(_)) => panic!("no outcome within {WAIT:?}"),
    }
}

/// Checks the equation across a pair: what `sender` wrote (it sent only direct sends and
/// requests) is what `receiver` delivered plus what it dropped, by cause.
#[track_caller]
pub fn assert_accounted(what: &str, sender: &DrainReport, receiver: &DrainReport) {
    assert_eq!(
        sender.messages_written,
        receiver.delivered() + receiver.receive_drops.total(),
        "{what}: written by the sender {sender:?}, delivered and dropped by the receiver \
         {receiver:?}"
    );
}
