//! Soak: a few nodes keep each other connected (`keep_connected`) and send to each other
//! without pause, while one node at a time is shut down and restarted at its address at random
//! moments. Checked, per restart and at the end:
//!
//! - every other node reconnects to the restarted one within the backoff bound (the cap plus
//!   jitter, plus slack for the dial and handshake). Every other restart is passive (the node
//!   only listens until the mesh is whole again), so that the others' background redials, and
//!   not the restarted node's own dials, have to make it;
//! - every message a `Link` accepted appears in exactly one drain report of its sender, as
//!   written or abandoned, and every message written was delivered to the receiver (all
//!   closes are graceful, so nothing written is lost in a kernel buffer);
//! - no thread and no file descriptor outlives the networks.
//!
//! Size: quick by default (a few seconds under `cargo test`); `SYNCPEER_STRESS=heavy` runs the
//! heavy size (`scripts/stress.sh`, in release). `SYNCPEER_SEED=n` repeats a run.

mod harness;
// Both include the test watchdog (`tests/support/watchdog.rs`); this suite uses netkit's.
#[allow(clippy::duplicate_mod)]
mod netkit;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use harness::{Rng, seed};
use netkit::{VOTES, WAIT, eventually, fds, id, quiet, serial, threads, threads_back_to};
use syncpeer::network::NetworkEvent;
use syncpeer::{Bytes, Inbound, Network, NetworkConfig, PeerConfig, PeerId};

#[derive(Clone, Copy, Debug)]
struct Size {
    nodes: usize,
    restarts: usize,
    /// Up time between two restarts, and down time of a restarted node, in ms.
    up_ms: (usize, usize),
    down_ms: (usize, usize),
}

impl Size {
    fn from_env() -> Size {
        match std::env::var("SYNCPEER_STRESS").as_deref() {
            Ok("heavy") => Size {
                nodes: 6,
                restarts: 40,
                up_ms: (200, 1200),
                down_ms: (0, 1500),
            },
            _ => Size {
                nodes: 4,
                restarts: 5,
                up_ms: (150, 400),
                down_ms: (0, 300),
            },
        }
    }
}

fn config() -> NetworkConfig {
    let mut c = NetworkConfig {
        handshake_timeout: Duration::from_secs(2),
        ..quiet()
    };
    c.reconnect.initial_delay = Duration::from_millis(20);
    c.reconnect.max_delay = Duration::from_millis(250);
    c.reconnect.jitter = Duration::from_millis(20);
    c
}

/// Reconnecting must not take longer than the capped backoff, its jitter, and this much for
/// the dial and the handshake on a loaded machine.
const SLACK: Duration = Duration::from_secs(2);

/// One life of a node: its network, the thread sending to the others, the thread counting
/// what it receives, its event subscription.
struct Life {
    net: Arc<Network>,
    stop: Arc<AtomicBool>,
    sender: JoinHandle<HashMap<PeerId, u64>>,
    consumer: JoinHandle<HashMap<PeerId, u64>>,
    events: Receiver<NetworkEvent>,
}

/// What the soak learns from the lives that ended.
#[derive(Default)]
struct Ledger {
    /// (from, to) → messages a link accepted, as the sender counted them.
    accepted: HashMap<(PeerId, PeerId), u64>,
    /// (from, to) → sums over the sender's drain reports.
    reported_accepted: HashMap<(PeerId, PeerId), u64>,
    written: HashMap<(PeerId, PeerId), u64>,
    abandoned: HashMap<(PeerId, PeerId), u64>,
    /// (from, to) → messages the receiver's handler got.
    delivered: HashMap<(PeerId, PeerId), u64>,
}

/// Keeps every other node connected from node `i`.
fn keep_all(i: usize, net: &Network, addrs: &[SocketAddr]) {
    for (j, a) in addrs.iter().enumerate().filter(|(j, _)| *j != i) {
        netkit::keep(net, j as u64 + 1, *a).expect("keep");
    }
}

/// Starts node `i` at `addr`; a passive node does not dial (yet).
fn start(i: usize, addr: SocketAddr, addrs: &[SocketAddr], passive: bool) -> Life {
    let (tx, rx) = crossbeam_channel::unbounded::<Inbound>();
    let net = netkit::builder(i as u64 + 1)
        .handler(VOTES, tx)
        .config(config())
        .peer_config(PeerConfig {
            linger: Duration::from_secs(3),
            ..Default::default()
        })
        .build()
        .expect("network");
    let events = net.events();
    // The port was ours a moment ago; rebinding it may race with the kernel for a moment.
    let bound = (0..100)
        .find_map(|_| {
            net.listen(addr)
                .inspect_err(|_| thread::sleep(Duration::from_millis(20)))
                .ok()
        })
        .expect("rebind the node's address");
    assert_eq!(bound, addr);
    let others: Vec<PeerId> = (0..addrs.len())
        .filter(|&j| j != i)
        .map(|j| id(j as u64 + 1))
        .collect();
    if !passive {
        keep_all(i, &net, addrs);
    }
    let net = Arc::new(net);
    let stop = Arc::new(AtomicBool::new(false));
    let sender = {
        let (net, stop) = (net.clone(), stop.clone());
        thread::spawn(move || {
            let mut accepted: HashMap<PeerId, u64> = HashMap::new();
            let payload = Bytes::from(vec![i as u8; 48]);
            while !stop.load(Relaxed) {
                for p in &others {
                    if let Some(link) = net.peer(*p)
                        && link.try_send(VOTES, payload.clone()).is_ok()
                    {
                        *accepted.entry(*p).or_default() += 1;
                    }
                }
                thread::sleep(Duration::from_micros(500));
            }
            accepted
        })
    };
    let done = stop.clone();
    let consumer = thread::spawn(move || {
        let mut from: HashMap<PeerId, u64> = HashMap::new();
        loop {
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(m) => {
                    if let Inbound::Message { from: f, .. } = m {
                        *from.entry(f).or_default() += 1;
                    }
                }
                // Set only after the shutdown, when every delivery is in the channel.
                Err(RecvTimeoutError::Timeout) if done.load(Relaxed) => return from,
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return from,
            }
        }
    });
    Life {
        net,
        stop,
        sender,
        consumer,
        events,
    }
}

/// Shuts a life down gracefully and books what it sent, received and reported.
fn end(i: usize, life: Life, ledger: &mut Ledger) {
    let me = id(i as u64 + 1);
    life.stop.store(true, Relaxed); // the sender stops; its links close below anyway
    life.net.shutdown();
    let accepted = life.sender.join().expect("sender");
    let delivered = life.consumer.join().expect("consumer");
    drop(life.net);
    for (to, n) in accepted {
        *ledger.accepted.entry((me, to)).or_default() += n;
    }
    for (from, n) in delivered {
        *ledger.delivered.entry((from, me)).or_default() += n;
    }
    // The subscription disconnected after the shutdown's last event: this ends.
    for e in life.events.iter() {
        if let NetworkEvent::Disconnected {
            peer_id, report, ..
        }
        | NetworkEvent::Replaced { peer_id, report } = e
        {
            let key = (me, peer_id);
            assert_eq!(
                report.messages_accepted,
                report.messages_written + report.messages_abandoned,
                "{report:?}"
            );
            *ledger.reported_accepted.entry(key).or_default() += report.messages_accepted;
            *ledger.written.entry(key).or_default() += report.messages_written;
            *ledger.abandoned.entry(key).or_default() += report.messages_abandoned;
        }
    }
}

#[test]
fn nodes_restarted_at_random_are_reconnected_and_nothing_is_lost() {
    let _serial = serial();
    let size = Size::from_env();
    let mut rng = Rng::new(seed("network soak"));
    let (threads_before, fds_before) = (threads(), fds());
    // Reserve an address per node: bind, note, release.
    let addrs: Vec<SocketAddr> = (0..size.nodes)
        .map(|_| {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr")
        })
        .collect();
    let mut lives: Vec<Option<Life>> = (0..size.nodes)
        .map(|i| Some(start(i, addrs[i], &addrs, false)))
        .collect();
    let all_connected = |lives: &[Option<Life>]| {
        lives
            .iter()
            .flatten()
            .all(|l| l.net.peers().len() == size.nodes - 1)
    };
    eventually("the first full mesh", || all_connected(&lives));
    let cfg = config().reconnect;
    let bound = cfg.max_delay + cfg.jitter + SLACK;
    let mut ledger = Ledger::default();
    let (mut reconnects, mut redialed) = (Vec::new(), Vec::new());
    for round in 0..size.restarts {
        thread::sleep(Duration::from_millis(
            rng.range(size.up_ms.0, size.up_ms.1) as u64
        ));
        let k = rng.range(0, size.nodes);
        let life = lives[k].take().expect("one node down at a time");
        end(k, life, &mut ledger);
        thread::sleep(Duration::from_millis(
            rng.range(size.down_ms.0, size.down_ms.1) as u64,
        ));
        let passive = round % 2 == 1;
        lives[k] = Some(start(k, addrs[k], &addrs, passive));
        let restarted = Instant::now();
        let deadline = restarted + bound.max(WAIT / 4);
        while !all_connected(&lives) {
            assert!(
                Instant::now() < deadline,
                "round {round}: no full mesh in time"
            );
            thread::sleep(Duration::from_millis(2));
        }
        let took = restarted.elapsed();
        assert!(took <= bound, "round {round}: reconnected after {took:?}");
        if passive {
            redialed.push(took);
            let net = &lives[k].as_ref().expect("just started").net;
            keep_all(k, net, &addrs);
        } else {
            reconnects.push(took);
        }
    }
    for (i, life) in lives.iter_mut().enumerate() {
        end(i, life.take().expect("running"), &mut ledger);
    }
    // Every message accepted is in a report; every one written was delivered.
    let mut totals = [0u64; 4];
    for (key, accepted) in &ledger.accepted {
        let get = |m: &HashMap<(PeerId, PeerId), u64>| m.get(key).copied().unwrap_or(0);
        let (reported, written, abandoned) = (
            get(&ledger.reported_accepted),
            get(&ledger.written),
            get(&ledger.abandoned),
        );
        assert_eq!(
            reported, *accepted,
            "{key:?}: every accepted message reported"
        );
        assert_eq!(
            get(&ledger.delivered),
            written,
            "{key:?}: written = delivered"
        );
        totals
            .iter_mut()
            .zip([*accepted, written, abandoned, get(&ledger.delivered)])
            .for_each(|(t, v)| *t += v);
    }
    let summary = |v: &mut Vec<Duration>| {
        v.sort();
        (v[v.len() / 2], v[v.len() - 1])
    };
    let ((median, max), (r_median, r_max)) = (summary(&mut reconnects), summary(&mut redialed));
    eprintln!(
        "network soak: {} restarts of {} nodes; full mesh again after a restart in median \
         {median:?} (max {max:?}), after a passive restart (the others' backoff) in median \
         {r_median:?} (max {r_max:?}), bound {bound:?}; messages accepted {}, written {}, \
         abandoned {}, delivered {}",
        size.restarts, size.nodes, totals[0], totals[1], totals[2], totals[3]
    );
    assert!(totals[1] > 0, "traffic flowed");
    threads_back_to(threads_before, "no thread left");
    eventually("no descriptor left", || fds() == fds_before);
}
