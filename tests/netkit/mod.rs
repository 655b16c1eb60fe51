//! Helpers shared by the network tests: nodes on loopback, bounded polling, thread and
//! descriptor counts, and a hand-written remote that speaks the plaintext upgrade byte by byte
//! (to check the wire bytes independently of the library's encoder, and to play a misbehaving
//! peer).
//!
//! Nodes run over Noise when `SYNCPEER_SECURITY=noise` is set, as the loopback harness does
//! (`common`), and in insecure plaintext otherwise: node `n` holds the key [`key`]`(n)`, runs
//! mutual authentication and trusts nodes 1 to [`TRUSTED`]. Dial through [`dial`], [`keep`]
//! or [`Node::dial`], which pass the key when there is one. Tests that check the plaintext
//! wire bytes build their nodes with [`plain_node`].
#![allow(dead_code, unreachable_pub)]

#[path = "../support/watchdog.rs"]
mod watchdog;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, unbounded};
use syncpeer::network::{ConnectError, KeepError, NetworkBuilder, NetworkEvent};
use syncpeer::noise::{AuthMode, NoiseConfig, StaticKeypair, TrustedPeers};
use syncpeer::{Inbound, Network, NetworkConfig, PeerId, ProtocolId};

/// Nodes 1 to `TRUSTED` trust each other.
pub const TRUSTED: u64 = 32;

/// Whether the network suites run over Noise (`SYNCPEER_SECURITY=noise`).
pub fn noise_on() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| match std::env::var("SYNCPEER_SECURITY").as_deref() {
        Err(_) | Ok("" | "plain") => false,
        Ok("noise") => true,
        Ok(other) => panic!("SYNCPEER_SECURITY={other}: expected `noise` or `plain`"),
    })
}

/// Node `n`'s static key pair (the same in every test).
pub fn key(n: u64) -> StaticKeypair {
    static KEYS: OnceLock<Vec<StaticKeypair>> = OnceLock::new();
    let keys = KEYS.get_or_init(|| (0..=TRUSTED).map(key_of).collect());
    keys.get(n as usize).cloned().unwrap_or_else(|| key_of(n))
}

fn key_of(n: u64) -> StaticKeypair {
    // Away from the bits x25519 clamps (the low three of byte 0, the top of byte 31).
    let mut private = [0x5a; 32];
    private[8..16].copy_from_slice(&n.to_le_bytes());
    StaticKeypair::from_private_bytes(private)
}

/// Nodes 1 to [`TRUSTED`] with their keys.
pub fn trusted() -> TrustedPeers {
    (1..=TRUSTED)
        .map(|n| (id(n), [key(n).public_key()]))
        .collect()
}

/// Node `n`'s Noise configuration: its key, mutual authentication, nodes 1 to [`TRUSTED`]
/// trusted.
pub fn noise_config(n: u64) -> NoiseConfig {
    NoiseConfig::new(key(n), id(n), AuthMode::Mutual, trusted())
}

/// A builder for node `n`, secured as the suites run.
pub fn builder(n: u64) -> NetworkBuilder {
    let b = Network::builder(id(n));
    if noise_on() {
        b.noise(noise_config(n))
    } else {
        b.insecure_plaintext()
    }
}

/// Dials node `n` at `addr`: on a Noise network naming its id and key, in plaintext whoever
/// answers.
pub fn dial(net: &Network, addr: impl ToSocketAddrs, n: u64) -> Result<PeerId, ConnectError> {
    if net.noise_config().is_some() {
        net.connect(addr, id(n), key(n).public_key())
    } else {
        net.connect_insecure(addr)
    }
}

/// Keeps node `n`, at `addr`, connected.
pub fn keep(net: &Network, n: u64, addr: impl ToSocketAddrs) -> Result<(), KeepError> {
    if net.noise_config().is_some() {
        net.keep_connected(id(n), addr, key(n).public_key())
    } else {
        net.keep_connected_insecure(id(n), addr)
    }
}

/// Bound for every blocking wait: long enough for a loaded 2-core machine.
pub const WAIT: Duration = Duration::from_secs(20);
pub const VOTES: ProtocolId = ProtocolId(1);

static SERIAL: Mutex<()> = Mutex::new(());

/// Held for the whole of a test: the lock that runs one test at a time (thread and descriptor
/// counts see the whole process) and the watchdog that bounds it.
pub struct Serial {
    _watch: watchdog::Watchdog,
    _lock: MutexGuard<'static, ()>,
}

/// One test at a time, and within the watchdog's limit.
pub fn serial() -> Serial {
    let _ = env_logger::builder().is_test(true).try_init();
    let lock = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    Serial {
        _watch: watchdog::watch(),
        _lock: lock,
    }
}

pub struct Node {
    pub n: u64,
    pub net: Network,
    pub addr: SocketAddr,
    pub inbound: Receiver<Inbound>,
    pub events: Receiver<NetworkEvent>,
}

impl Node {
    /// Dials `other` (see [`dial`]).
    pub fn dial(&self, other: &Node) -> Result<PeerId, ConnectError> {
        dial(&self.net, other.addr, other.n)
    }
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

/// Node `n` with a handler for `VOTES`, listening on `listen` (port 0 for any), secured as the
/// suites run.
pub fn node_at(n: u64, config: NetworkConfig, listen: &str) -> Node {
    start(n, builder(n), config, listen)
}

/// Node `n` in insecure plaintext whatever the suites run, for tests that check the
/// plaintext wire bytes.
pub fn plain_node(n: u64, config: NetworkConfig) -> Node {
    let b = Network::builder(id(n)).insecure_plaintext();
    start(n, b, config, "127.0.0.1:0")
}

/// Node `n` from `builder` (its security chosen), listening on any port.
pub fn node_from(n: u64, builder: NetworkBuilder, config: NetworkConfig) -> Node {
    start(n, builder, config, "127.0.0.1:0")
}

fn start(n: u64, builder: NetworkBuilder, config: NetworkConfig, listen: &str) -> Node {
    let (tx, inbound) = unbounded();
    let net = builder
        .handler(VOTES, tx)
        .config(config)
        .build()
        .expect("build network");
    let events = net.events();
    let addr = net.listen(listen).expect("listen");
    Node {
        n,
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

/// Waits until [`threads`] is back to `count`, failing after `WAIT` with the names of the
/// library's threads still running, so that a leak says which thread it is.
#[track_caller]
pub fn threads_back_to(count: usize, what: &str) {
    let deadline = Instant::now() + WAIT;
    while threads() != count {
        if std::time::Instant::now() >= deadline {
            let ours: Vec<String> = thread_names()
                .into_iter()
                .filter(|n| n.starts_with("sp-") || n.starts_with("syncpeer"))
                .collect();
            panic!(
                "{what}: {} library threads, expected {count}: {ours:?}",
                ours.len()
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
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
