//! Helpers shared by the network tests: nodes on loopback, bounded polling, thread and
//! descriptor counts, and a hand-written remote that speaks the upgrade byte by byte (to check
//! the wire bytes independently of the library's encoder, and to play a misbehaving peer).
#![allow(dead_code, unreachable_pub)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, unbounded};
use syncpeer::network::NetworkEvent;
use syncpeer::{Inbound, Network, NetworkConfig, PeerId, ProtocolId};

/// Bound for every blocking wait: long enough for a loaded 2-core machine.
pub const WAIT: Duration = Duration::from_secs(20);
pub const VOTES: ProtocolId = ProtocolId(1);

static SERIAL: Mutex<()> = Mutex::new(());

/// One test at a time: thread and descriptor counts see the whole process.
pub fn serial() -> MutexGuard<'static, ()> {
    let _ = env_logger::builder().is_test(true).try_init();
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

pub struct Node {
    pub net: Network,
    pub addr: SocketAddr,
    pub inbound: Receiver<Inbound>,
    pub events: Receiver<NetworkEvent>,
}

/// No health checks, short handshakes, fast redials.
pub fn quiet() -> NetworkConfig {
    let mut c = NetworkConfig {
        handshake_timeout: Duration::from_millis(300),
        health_check: None,
        ..Default::default()
    };
    c.reconnect.initial_delay = Duration::from_millis(40);
    c.reconnect.max_delay = Duration::from_millis(160);
    c.reconnect.jitter = Duration::from_millis(10);
    c
}

pub fn id(n: u64) -> PeerId {
    PeerId::from_u64(n)
}

/// Node `n` with a handler for `VOTES`, listening on `listen` (port 0 for any).
pub fn node_at(n: u64, config: NetworkConfig, listen: &str) -> Node {
    let (tx, inbound) = unbounded();
    let net = Network::builder(id(n))
        .handler(VOTES, tx)
        .config(config)
        .build()
        .expect("build network");
    let events = net.events();
    let addr = net.listen(listen).expect("listen");
    Node {
        net,
        addr,
        inbound,
        events,
    }
}

pub fn node(n: u64, config: NetworkConfig) -> Node {
    node_at(n, config, "127.0.0.1:0")
}

/// Polls `f` until it holds, failing the test after `WAIT`.
#[track_caller]
pub fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(5));
    }
}

#[track_caller]
pub fn next_event(events: &Receiver<NetworkEvent>) -> NetworkEvent {
    events.recv_timeout(WAIT).expect("network event in time")
}

/// The next event that `pick` accepts, skipping the others.
#[track_caller]
pub fn event_where<T>(
    events: &Receiver<NetworkEvent>,
    mut pick: impl FnMut(&NetworkEvent) -> Option<T>,
) -> T {
    loop {
        if let Some(t) = pick(&next_event(events)) {
            return t;
        }
    }
}

/// Names of this process's threads (from `/proc/self/task/*/comm`).
pub fn thread_names() -> Vec<String> {
    std::fs::read_dir("/proc/self/task")
        .expect("read /proc/self/task")
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|n| n.trim_end().to_owned())
        .collect()
}

/// Threads started by the library: the network's (`sp-*`) and the connections'
/// (`syncpeer-*`). Counted by name, so the test harness's own threads do not disturb it.
pub fn threads() -> usize {
    thread_names()
        .iter()
        .filter(|n| n.starts_with("sp-") || n.starts_with("syncpeer"))
        .count()
}

/// The library's threads at the start of a test that counts them: none, once those of earlier
/// tests have ended (a connection's closer may outlive its test by a moment, and counting it
/// in would make the test wait for a count it can never get back to). Bounded by `WAIT`.
pub fn threads_at_start() -> usize {
    eventually("the threads of earlier tests to end", || threads() == 0);
    0
}

/// Open file descriptors of this process.
pub fn fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("read /proc/self/fd")
        .count()
}

/// The upgrade's bytes as a remote sends them, written by hand from the Aptos definitions:
/// the plain identity (32 bytes), then the `u16` big-endian length and the BCS
/// `HandshakeMsg` (V1 with the `BitVec` `bits`, one chain byte, the network id's bytes).
pub fn hello(peer: PeerId, bits: &[u8], chain: u8, network: &[u8]) -> Vec<u8> {
    let mut msg = vec![0x01, 0x00, bits.len() as u8];
    msg.extend_from_slice(bits);
    msg.push(chain);
    msg.extend_from_slice(network);
    let mut out = peer.0.to_vec();
    out.extend_from_slice(&(msg.len() as u16).to_be_bytes());
    out.extend_from_slice(&msg);
    out
}

/// A `quiet()` node's handshake as it must appear on the wire: protocols {1 (`VOTES`), 5
/// (health checks)} are bits `0x40 | 0x04` of byte 0; chain 4; network Public (`01`).
pub fn quiet_node_hello(n: u64) -> Vec<u8> {
    hello(id(n), &[0x44], 4, &[0x01])
}

/// Connects to `addr`, writes `bytes`, and returns everything read until the remote closes
/// or `within` passes.
pub fn raw_exchange(addr: SocketAddr, bytes: &[u8], within: Duration) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.write_all(bytes).expect("write");
    s.set_read_timeout(Some(within)).expect("timeout");
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got); // EOF, reset or timeout: what came is what counts
    got
}
