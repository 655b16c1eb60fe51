//! Helpers shared by the loopback integration tests.
#![allow(dead_code, unreachable_pub)]

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use crossbeam_channel::{Receiver, Sender};
use syncpeer::proto::codec::encode_frame;
use syncpeer::proto::{DirectSendMsg, FrameDecoder, MultiplexMessage, NetworkMessage};
use syncpeer::{
    Bytes, Disconnected, DrainReport, Inbound, Peer, PeerConfig, PeerHandle, PeerId, PendingRpc,
    ProtocolId, RpcError, Socket,
};

/// Bound for every blocking wait in tests: long enough for a loaded 2-core machine.
pub const WAIT: Duration = Duration::from_secs(20);

pub const DIRECT: ProtocolId = ProtocolId(2);
pub const RPC: ProtocolId = ProtocolId(0);

pub fn init_logging() {
    let _ = env_logger::builder().is_test(true).try_init();
}

/// Two connected sockets of the given transport.
pub fn sockets(kind: Transport) -> (Socket, Socket) {
    match kind {
        Transport::Tcp => tcp_pair(),
        Transport::Unix => unix_pair(),
    }
}

/// A connected TCP pair on loopback.
#[track_caller]
pub fn tcp_pair() -> (Socket, Socket) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let a = TcpStream::connect(listener.local_addr().unwrap()).expect("connect");
    let (b, _) = listener.accept().expect("accept");
    (a.into(), b.into())
}

/// A connected Unix socket pair.
#[track_caller]
pub fn unix_pair() -> (Socket, Socket) {
    let (a, b) = UnixStream::pair().expect("socketpair");
    (a.into(), b.into())
}

/// One side of a test connection: the handle and what it receives.
pub struct Side {
    pub handle: PeerHandle,
    pub inbound: Receiver<Inbound>,
    pub disconnected: Receiver<Disconnected>,
}

pub fn spawn_side(
    socket: Socket,
    me: u64,
    remote: u64,
    config: PeerConfig,
    capacity: usize,
) -> Side {
    let (tx, inbound): (Sender<Inbound>, _) = crossbeam_channel::bounded(capacity);
    let (dtx, disconnected) = crossbeam_channel::unbounded();
    let _ = me;
    let handle = Peer::builder(socket)
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
    let (a, b) = match kind {
        Transport::Tcp => tcp_pair(),
        Transport::Unix => unix_pair(),
    };
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
    socket: Socket,
    remote: u64,
    config: PeerConfig,
    handlers: &[(ProtocolId, usize)],
) -> (PeerHandle, Vec<Receiver<Inbound>>, Receiver<Disconnected>) {
    init_logging();
    let (dtx, drx) = crossbeam_channel::unbounded();
    let mut builder = Peer::builder(socket)
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

/// The far end of a connection driven by hand, without a peer: it reads and writes raw bytes.
#[derive(Debug)]
pub enum Raw {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Read for Raw {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Raw::Tcp(s) => s.read(buf),
            Raw::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Raw {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Raw::Tcp(s) => s.write(buf),
            Raw::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Raw {
    /// Bounds every later read and write by `t`.
    pub fn set_timeouts(&self, t: Duration) {
        match self {
            Raw::Tcp(s) => {
                s.set_read_timeout(Some(t)).unwrap();
                s.set_write_timeout(Some(t)).unwrap();
            }
            Raw::Unix(s) => {
                s.set_read_timeout(Some(t)).unwrap();
                s.set_write_timeout(Some(t)).unwrap();
            }
        }
    }

    pub fn shutdown_write(&self) {
        let _ = match self {
            Raw::Tcp(s) => s.shutdown(std::net::Shutdown::Write),
            Raw::Unix(s) => s.shutdown(std::net::Shutdown::Write),
        };
    }

    /// Reads the next frame, waiting at most [`WAIT`] in all; `None` at a clean EOF.
    #[track_caller]
    pub fn read_frame(&mut self, decoder: &mut FrameDecoder) -> Option<MultiplexMessage> {
        let deadline = Instant::now() + WAIT;
        let mut buf = [0u8; 4096];
        loop {
            if let Some(m) = decoder.decode().expect("the peer sends valid frames") {
                return Some(m);
            }
            assert!(Instant::now() < deadline, "no frame within {WAIT:?}");
            match self.read(&mut buf) {
                Ok(0) => {
                    assert!(decoder.is_idle(), "EOF inside a frame");
                    return None;
                }
                Ok(n) => decoder.extend(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => panic!("raw read failed: {e}"),
            }
        }
    }

    /// Reads until EOF (bounded by [`WAIT`]) and returns every byte.
    #[track_caller]
    pub fn read_to_eof(&mut self) -> Vec<u8> {
        self.set_timeouts(WAIT);
        let mut all = Vec::new();
        self.read_to_end(&mut all).expect("raw read to EOF in time");
        all
    }
}

/// A peer's socket and, connected to it, a raw end driven by the test.
pub fn raw_pair(kind: Transport) -> (Socket, Raw) {
    init_logging();
    let raw = match kind {
        Transport::Tcp => {
            let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
            let a = TcpStream::connect(listener.local_addr().unwrap()).expect("connect");
            let (b, _) = listener.accept().expect("accept");
            b.set_nodelay(true).unwrap();
            return (a.into(), Raw::Tcp(b));
        }
        Transport::Unix => UnixStream::pair().expect("socketpair"),
    };
    (raw.0.into(), Raw::Unix(raw.1))
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
