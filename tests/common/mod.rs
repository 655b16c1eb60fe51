//! Helpers shared by the loopback integration tests.
#![allow(dead_code, unreachable_pub)]

use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use syncpeer::{Disconnected, Inbound, Peer, PeerConfig, PeerHandle, PeerId, ProtocolId, Socket};

/// Bound for every blocking wait in tests: long enough for a loaded 2-core machine.
pub const WAIT: Duration = Duration::from_secs(20);

pub const DIRECT: ProtocolId = ProtocolId(2);
pub const RPC: ProtocolId = ProtocolId(0);

pub fn init_logging() {
    let _ = env_logger::builder().is_test(true).try_init();
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
