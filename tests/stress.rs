//! Stress: many peer pairs at once, application threads sending (with and without receipts),
//! RPCs both ways, streamed messages, and closes started from random sides at random moments
//! (shutdown, dropping the last handle, abort, shutting the raw socket, a relay that fails or
//! resets). After every round each side's accounting is checked against the other side's
//! observations; see `check_direction`.
//!
//! Size: quick by default (well under 30 s in debug on two loaded cores);
//! `SYNCPEER_STRESS=heavy` runs the heavy size (`scripts/stress.sh`, in release).
//! `SYNCPEER_SEED=n` repeats a run; the seed is printed either way.

mod common;
mod fault;
mod harness;
mod traffic;

use std::collections::{HashMap, HashSet};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use syncpeer::{
    Delivery, DisconnectReason, Disconnected, PeerConfig, PeerHandle, PeerId, PeerMetrics, Socket,
};

use common::{DIRECT, End, RPC, WAIT};
use fault::{Dir, Fault, Trigger};
use harness::{Bounded, Rng, spawn_bounded};
use traffic::{
    ConsumerLog, MAX_FRAME, MAX_MESSAGE, RpcLog, SenderLog, consumer, rpc_caller, sender,
};

#[derive(Clone, Copy, Debug)]
struct Size {
    pairs: usize,
    rounds: usize,
    senders: usize,
    quota: usize,
    rpc_quota: usize,
    linger: Duration,
    max_delay_ms: u64,
}

impl Size {
    fn from_env() -> Size {
        match std::env::var("SYNCPEER_STRESS").as_deref() {
            Ok("heavy") => Size {
                pairs: 24,
                rounds: 25,
                senders: 3,
                quota: 20_000,
                rpc_quota: 2_000,
                linger: Duration::from_secs(5),
                max_delay_ms: 1_500,
            },
            _ => Size {
                pairs: 8,
                rounds: 6,
                senders: 2,
                quota: 1_500,
                rpc_quota: 300,
                linger: Duration::from_secs(2),
                max_delay_ms: 500,
            },
        }
    }

    fn config(&self) -> PeerConfig {
        PeerConfig {
            max_frame_size: MAX_FRAME,
            max_message_size: MAX_MESSAGE,
            outbox_capacity: 64,
            linger: self.linger,
            write_timeout: Duration::from_secs(5),
            inbound_rpc_timeout: Duration::from_secs(5),
            ..PeerConfig::default()
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Close {
    Shutdown,
    HandleDrop,
    Abort,
    /// `shutdown(Both)` on a clone of the side's own socket: its reader reads EOF, its writer
    /// gets `EPIPE`.
    SocketShutdown,
    RelayFail,
    RelayReset,
}

const FIRST_CLOSES: [Close; 6] = [
    Close::Shutdown,
    Close::HandleDrop,
    Close::Abort,
    Close::SocketShutdown,
    Close::RelayFail,
    Close::RelayReset,
];
const SECOND_CLOSES: [Close; 3] = [Close::Shutdown, Close::HandleDrop, Close::Abort];

#[derive(Clone, Copy, Debug)]
enum Wire {
    Tcp,
    Unix,
    /// Through the fault relay, optionally forwarding in short pieces.
    Relay(Option<usize>),
}

#[derive(Clone, Copy, Debug)]
struct Plan {
    wire: Wire,
    /// (side, close, delay): the second is always on the other side.
    first: (usize, Close, u64),
    second: Option<(Close, u64)>,
}

impl Plan {
    fn new(k: usize, size: &Size, rng: &mut Rng) -> Plan {
        let close = FIRST_CLOSES[k % FIRST_CLOSES.len()];
        let short = rng.chance(2).then(|| rng.range(5, 300));
        let wire = match (close, rng.below(3)) {
            (Close::RelayFail | Close::RelayReset, _) | (_, 2) => Wire::Relay(short),
            (_, 0) => Wire::Tcp,
            _ => Wire::Unix,
        };
        let delay = rng.below(size.max_delay_ms);
        let second = rng.chance(2).then(|| {
            let c = SECOND_CLOSES[rng.below(3) as usize];
            (c, delay + rng.below(size.max_delay_ms / 2 + 1))
        });
        Plan {
            wire,
            first: (rng.below(2) as usize, close, delay),
            second,
        }
    }

    fn closes(&self, side: usize) -> Vec<Close> {
        let mut v = Vec::new();
        if self.first.0 == side {
            v.push(self.first.1);
        }
        if let Some((c, _)) = self.second.filter(|_| self.first.0 != side) {
            v.push(c);
        }
        v
    }
}

enum Raw {
    Tcp(std::net::TcpStream),
    Unix(UnixStream),
}

impl Raw {
    fn of(socket: &Socket) -> Raw {
        match socket {
            Socket::Tcp(s) => Raw::Tcp(s.try_clone().expect("clone socket")),
            Socket::Unix(s) => Raw::Unix(s.try_clone().expect("clone socket")),
        }
    }

    fn shutdown(&self) {
        let _ = match self {
            Raw::Tcp(s) => s.shutdown(std::net::Shutdown::Both),
            Raw::Unix(s) => s.shutdown(std::net::Shutdown::Both),
        };
    }
}

/// One side of a pair, with its application threads.
struct Rig {
    handle: Option<PeerHandle>,
    disconnected: Receiver<Disconnected>,
    stop: Arc<AtomicBool>,
    raw: Option<Raw>,
    senders: Vec<Bounded<SenderLog>>,
    rpc: Bounded<RpcLog>,
    consumer: Bounded<ConsumerLog>,
    server: Bounded<ConsumerLog>,
}

fn rig(socket: End, side: usize, size: Size, rng: &mut Rng, keep_raw: bool) -> Rig {
    let raw = keep_raw.then(|| Raw::of(&socket.socket));
    // One handler thread per protocol, so requests do not queue behind direct sends.
    let (tx, inbound) = crossbeam_channel::unbounded();
    let (rtx, requests) = crossbeam_channel::unbounded();
    let (dtx, disconnected) = crossbeam_channel::unbounded();
    let handle = socket
        .builder()
        .config(size.config())
        .remote_peer_id(PeerId::from_u64(2 - side as u64))
        .handler(DIRECT, tx)
        .handler(RPC, rtx)
        .on_disconnect(dtx)
        .spawn()
        .expect("spawn peer");
    let stop = Arc::new(AtomicBool::new(false));
    let me = side as u8;
    let senders = (0..size.senders as u8)
        .map(|t| {
            let (h, s, r) = (handle.clone(), stop.clone(), rng.fork());
            spawn_bounded(format!("send-{side}{t}"), move || {
                sender(h, me, t, size.quota, s, r)
            })
        })
        .collect();
    let (h, s, r) = (handle.clone(), stop.clone(), rng.fork());
    let rpc = spawn_bounded(format!("rpc-{side}"), move || {
        rpc_caller(h, me, size.rpc_quota, s, r)
    });
    let crng = rng.fork();
    let messages = spawn_bounded(format!("handler-{side}"), move || {
        consumer(inbound, 1 - me, crng)
    });
    let crng = rng.fork();
    let server = spawn_bounded(format!("server-{side}"), move || {
        consumer(requests, 1 - me, crng)
    });
    Rig {
        handle: Some(handle),
        disconnected,
        stop,
        raw,
        senders,
        rpc,
        consumer: messages,
        server,
    }
}

/// Everything one side did and saw, once its connection has closed.
struct Outcome {
    notice: Disconnected,
    metrics: Option<PeerMetrics>,
    senders: Vec<SenderLog>,
    rpc: RpcLog,
    consumer: ConsumerLog,
}

/// What a pair's run found.
struct PairResult {
    failures: Vec<String>,
    /// Per side: the close that side started (if any) and the reason it reported.
    closes: [(Option<Close>, DisconnectReason); 2],
    /// Directions checked exactly.
    exact: u32,
    /// Totals over both sides: delivered direct sends (of them streamed), RPCs answered,
    /// messages written and abandoned.
    stats: [u64; 5],
}

/// Runs one pair through its plan and checks both directions.
fn run_pair(name: String, plan: Plan, size: Size, mut rng: Rng) -> PairResult {
    let (sa, sb, relay) = match plan.wire {
        Wire::Tcp => {
            let (a, b) = common::tcp_pair();
            (a, b, None)
        }
        Wire::Unix => {
            let (a, b) = common::unix_pair();
            (a, b, None)
        }
        Wire::Relay(short) => {
            let (a, b, relay) = fault::relay_pair();
            if let Some(n) = short {
                relay.inject(Dir::AToB, Trigger::Now, Fault::ShortWrites(n));
                relay.inject(Dir::BToA, Trigger::Now, Fault::ShortWrites(n));
            }
            let (a, b) = common::secured(a.into(), b.into());
            (a, b, Some(relay))
        }
    };
    let relay = relay.map(Arc::new);
    let wants_raw = |s| plan.closes(s).contains(&Close::SocketShutdown);
    let mut rigs = [
        rig(sa, 0, size, &mut rng, wants_raw(0)),
        rig(sb, 1, size, &mut rng, wants_raw(1)),
    ];
    let mut actions = Vec::new();
    let steps = [
        Some((plan.first.0, plan.first.1, plan.first.2)),
        plan.second.map(|(c, d)| (1 - plan.first.0, c, d)),
    ];
    for (side, close, delay) in steps.into_iter().flatten() {
        let rig = &mut rigs[side];
        let handle = if close == Close::HandleDrop {
            rig.handle.take()
        } else {
            rig.handle.clone()
        };
        let stop = rig.stop.clone();
        let raw = rig.raw.take();
        let relay = relay.clone();
        actions.push(spawn_bounded(format!("close-{side}"), move || {
            std::thread::sleep(Duration::from_millis(delay));
            match close {
                Close::Shutdown => {
                    handle.map(|h| h.shutdown(DisconnectReason::StaleConnection).unwrap())
                }
                Close::Abort => handle.map(|h| h.abort().unwrap()),
                Close::HandleDrop => {
                    stop.store(true, Relaxed);
                    drop(handle);
                    None
                }
                Close::SocketShutdown => {
                    raw.expect("raw socket kept").shutdown();
                    None
                }
                Close::RelayFail => {
                    relay.expect("relay").fail();
                    None
                }
                Close::RelayReset => {
                    let dir = if side == 0 { Dir::AToB } else { Dir::BToA };
                    relay
                        .expect("relay")
                        .inject(dir, Trigger::Now, Fault::Reset);
                    None
                }
            }
        }));
    }
    let mut failures = Vec::new();
    let mut outcomes = Vec::new();
    for (side, rig) in rigs.into_iter().enumerate() {
        let notice = rig
            .disconnected
            .recv_timeout(WAIT)
            .unwrap_or_else(|e| panic!("{name}: side {side}: no Disconnected in time: {e}"));
        if rig.disconnected.recv_timeout(WAIT) != Err(RecvTimeoutError::Disconnected) {
            failures.push(format!(
                "side {side}: a second Disconnected, or the notice channel stayed open"
            ));
        }
        rig.stop.store(true, Relaxed);
        let metrics = rig.handle.map(|h| {
            let report = h.join().unwrap();
            if report != notice.report {
                failures.push(format!("side {side}: join() and the notice disagree"));
            }
            h.metrics()
        });
        outcomes.push(Outcome {
            notice,
            metrics,
            senders: rig.senders.into_iter().map(|s| s.join(WAIT)).collect(),
            rpc: rig.rpc.join(WAIT),
            consumer: rig.consumer.join(WAIT).merge(rig.server.join(WAIT)),
        });
    }
    for a in actions {
        if let Some(report) = a.join(WAIT) {
            // A shutdown or abort returns the connection's one report.
            let side = outcomes.iter().position(|o| o.notice.report == report);
            if side.is_none() {
                failures.push("shutdown()/abort() returned a report matching no notice".into());
            }
        }
    }
    let faulted = relay.as_ref().is_some_and(|r| r.is_closed())
        || [Close::SocketShutdown, Close::RelayFail, Close::RelayReset].contains(&plan.first.1);
    drop(relay);
    let mut exact = 0;
    for s in 0..2 {
        let (me, other) = (&outcomes[s], &outcomes[1 - s]);
        failures.extend(check_side(me).into_iter().map(|f| format!("side {s}: {f}")));
        let (f, e) = check_direction(me, other, faulted, size.linger);
        exact += u32::from(e);
        failures.extend(f.into_iter().map(|f| format!("{s}->{}: {f}", 1 - s)));
    }
    PairResult {
        failures: failures
            .into_iter()
            .map(|f| format!("{name} {plan:?}: {f}"))
            .collect(),
        closes: [0, 1].map(|s| (plan.closes(s).first().copied(), outcomes[s].notice.reason)),
        exact,
        stats: outcomes.iter().fold([0; 5], |mut t, o| {
            let large = o.consumer.delivered.values().flatten();
            t[0] += o.consumer.direct;
            t[1] += large.filter(|(_, l)| *l).count() as u64;
            t[2] += o.rpc.ok;
            t[3] += o.notice.report.messages_written;
            t[4] += o.notice.report.messages_abandoned;
            t
        }),
    }
}

/// One side's own accounting: the report adds up, receipts and RPC outcomes agree with it.
fn check_side(o: &Outcome) -> Vec<String> {
    let mut f = Vec::new();
    let r = &o.notice.report;
    if r.messages_accepted != r.messages_written + r.messages_abandoned
        || r.bytes_accepted != r.bytes_written + r.bytes_abandoned
    {
        f.push(format!("accepted != written + abandoned: {r:?}"));
    }
    let errors = o.senders.iter().flat_map(|s| &s.errors);
    f.extend(
        errors
            .chain(&o.rpc.errors)
            .chain(&o.consumer.errors)
            .cloned(),
    );
    let unresolved: usize = o.senders.iter().map(|s| s.unresolved).sum();
    if unresolved > 0 || o.rpc.no_outcome > 0 {
        f.push(format!(
            "{unresolved} receipts and {} rpcs without an outcome",
            o.rpc.no_outcome
        ));
    }
    let receipts = o.senders.iter().flat_map(|s| &s.receipts);
    let written = receipts
        .clone()
        .filter(|(_, d)| *d == Delivery::Written)
        .count() as u64;
    let abandoned = receipts.count() as u64 - written;
    if written > r.messages_written || abandoned > r.messages_abandoned {
        f.push(format!(
            "receipts ({written} written, {abandoned} abandoned) exceed the report {r:?}"
        ));
    }
    let Some(m) = &o.metrics else {
        return f;
    };
    let direct: usize = o
        .senders
        .iter()
        .map(|s| s.plain.len() + s.receipts.len())
        .sum();
    if m.direct_sends_accepted != direct as u64
        || r.messages_accepted
            != m.direct_sends_accepted + m.rpc_requests_accepted + m.rpc_responses_accepted
    {
        f.push(format!(
            "{direct} direct sends accepted by the application; metrics {m:?}"
        ));
    }
    let rpc = &o.rpc;
    let counted = (
        m.rpcs_succeeded,
        m.rpcs_timed_out,
        m.rpcs_refused,
        m.rpcs_failed_at_close,
    );
    if counted != (rpc.ok, rpc.timed_out, rpc.too_many, rpc.failed_at_close)
        || rpc.started != rpc.ok + rpc.timed_out + rpc.too_many + rpc.failed_at_close
        || r.rpcs_failed_at_close != m.rpcs_failed_at_close
    {
        f.push(format!("rpc outcomes {rpc:?} disagree with metrics {m:?}"));
    }
    if m.requests_delivered != o.consumer.requests || m.direct_sends_delivered != o.consumer.direct
    {
        f.push(format!(
            "handler saw {} requests, {} messages; metrics {m:?}",
            o.consumer.requests, o.consumer.direct
        ));
    }
    if m.malformed_frames + m.stream_errors + m.remote_errors + m.dropped_unknown_protocol > 0 {
        f.push(format!("protocol errors between two honest peers: {m:?}"));
    }
    f
}

/// What `s` sent against what `r` received. Returns failures and whether the exact check
/// (everything accepted was delivered) applied.
fn check_direction(
    s: &Outcome,
    r: &Outcome,
    faulted: bool,
    linger: Duration,
) -> (Vec<String>, bool) {
    let mut f = Vec::new();
    let delivered = &r.consumer.delivered;
    let mut seen = HashSet::new();
    for (thread, seqs) in delivered {
        for kind in [false, true] {
            let order: Vec<u32> = seqs
                .iter()
                .filter(|(_, l)| *l == kind)
                .map(|(s, _)| *s)
                .collect();
            if order.windows(2).any(|w| w[0] >= w[1]) {
                f.push(format!(
                    "thread {thread}: out of order or duplicated (large: {kind})"
                ));
            }
        }
        seen.extend(seqs.iter().map(|(seq, _)| (*thread, *seq)));
    }
    let mut accepted = HashSet::new();
    for log in &s.senders {
        accepted.extend(log.plain.iter().map(|seq| (log.thread, *seq)));
        for (seq, d) in &log.receipts {
            accepted.insert((log.thread, *seq));
            if *d == Delivery::Abandoned && seen.contains(&(log.thread, *seq)) {
                f.push(format!(
                    "thread {} seq {seq}: delivered but its receipt says abandoned",
                    log.thread
                ));
            }
        }
    }
    if let Some(x) = seen.difference(&accepted).next() {
        f.push(format!("delivered {x:?}, which was never accepted"));
    }
    let sr = &s.notice.report;
    let rr = &r.notice.report;
    let read_to_eof = !rr.aborted
        && (rr.reason == DisconnectReason::ConnectionClosed || rr.drain_duration < linger);
    let exact = !faulted && !sr.aborted && sr.is_clean() && read_to_eof;
    if exact && seen != accepted {
        let missing = accepted.difference(&seen).count();
        f.push(format!("clean close, yet {missing} accepted messages were not delivered; sender {sr:?}, receiver {rr:?}"));
    }
    if let Some(m) = &r.metrics {
        let arrived = r.consumer.direct
            + r.consumer.requests
            + m.receive_drops().total()
            + m.responses_matched
            + m.unknown_responses;
        if arrived > sr.messages_written || (exact && arrived != sr.messages_written) {
            f.push(format!(
                "receiver accounts for {arrived} messages, sender wrote {} (exact: {exact}); \
                 receiver {m:?} {rr:?} {:?}; sender {:?} {sr:?} {:?}",
                sr.messages_written, r.rpc, s.metrics, s.rpc
            ));
        }
    }
    (f, exact)
}

#[test]
fn random_closes_lose_nothing() {
    let _serial = harness::serial();
    common::init_logging();
    harness::count_peer_panics();
    let size = Size::from_env();
    let seed = harness::seed("random_closes_lose_nothing");
    eprintln!("size {size:?}");
    let mut rng = Rng::new(seed);
    let baseline = harness::thread_count();
    let started = Instant::now();
    let mut exact_checks = 0;
    let mut seen: HashMap<String, u32> = HashMap::new();
    for round in 0..size.rounds {
        let pairs: Vec<_> = (0..size.pairs)
            .map(|i| {
                let plan = Plan::new(round * size.pairs + i, &size, &mut rng);
                let prng = rng.fork();
                let name = format!("round {round} pair {i}");
                spawn_bounded(name.clone(), move || run_pair(name, plan, size, prng))
            })
            .collect();
        let mut failures = Vec::new();
        let mut stats = [0; 5];
        for p in pairs {
            let result = p.join(WAIT * 3);
            failures.extend(result.failures);
            exact_checks += result.exact;
            stats
                .iter_mut()
                .zip(result.stats)
                .for_each(|(t, n)| *t += n);
            for (c, r) in result.closes {
                *seen.entry(format!("{c:?} -> {r:?}")).or_default() += 1;
            }
        }
        assert!(failures.is_empty(), "seed {seed}: {failures:#?}");
        let [direct, large, rpcs, written, abandoned] = stats;
        eprintln!(
            "round {round} done at {:?}: {direct} direct sends delivered ({large} streamed), \
             {rpcs} rpcs answered, {written} messages written, {abandoned} abandoned",
            started.elapsed()
        );
    }
    let mut seen: Vec<_> = seen.into_iter().collect();
    seen.sort();
    eprintln!("close started by a side -> its reason: {seen:#?}; exact checks {exact_checks}");
    assert!(
        exact_checks > 0,
        "no direction was checked exactly: the run proved little"
    );
    assert_eq!(harness::peer_panics(), 0, "a peer thread panicked");
    harness::assert_threads_back_to(baseline, Duration::from_secs(10));
}
