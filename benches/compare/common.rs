//! What every side of the comparison shares: the protocols, socket pairs, payloads, the
//! latency histogram and the result of one shutdown run.

use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use syncpeer::{Bytes, ProtocolId};

/// Protocol of direct sends.
pub(crate) const DIRECT: ProtocolId = ProtocolId(2);
/// Protocol of RPCs.
pub(crate) const RPC: ProtocolId = ProtocolId(0);
/// Timeout of every RPC in the benchmark: only a broken run reaches it.
pub(crate) const RPC_TIMEOUT: Duration = Duration::from_secs(30);
/// The streamed message of the throughput section (64 MiB, the default `max_message_size`).
pub(crate) const STREAM_SIZE: usize = 64 * 1024 * 1024;

/// The closed-loop round trips measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A direct send, echoed back as a direct send.
    Direct,
    /// An RPC, answered with the request's payload.
    Rpc,
}

/// A connected loopback TCP pair with Nagle off on both ends (every side of the comparison
/// sets it; syncpeer sets it itself too).
pub(crate) fn tcp_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let a = TcpStream::connect(listener.local_addr().expect("local addr")).expect("connect");
    let (b, _) = listener.accept().expect("accept");
    a.set_nodelay(true).expect("nodelay");
    b.set_nodelay(true).expect("nodelay");
    (a, b)
}

/// How many round trips a latency run makes: `warmup` unrecorded, then `iters` recorded, but
/// no more once `budget` has passed since the run started (beside the background load a round
/// trip may wait for a time slice, milliseconds) and at least [`Trips::MIN_RECORDED`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct Trips {
    pub(crate) iters: usize,
    pub(crate) warmup: usize,
    pub(crate) budget: Duration,
}

impl Trips {
    /// Recorded round trips made whatever the budget.
    const MIN_RECORDED: usize = 50;

    /// Whether round trip `i` (from 0, warm-up included) is to be made.
    pub(crate) fn go_on(&self, i: usize, started: Instant) -> bool {
        i < self.warmup + self.iters
            && (i < self.warmup + Self::MIN_RECORDED || started.elapsed() < self.budget)
    }

    /// Whether round trip `i` is recorded.
    pub(crate) fn records(&self, i: usize) -> bool {
        i >= self.warmup
    }
}

/// A payload of `size` bytes, shared by every send (cloning `Bytes` does not copy).
pub(crate) fn payload(size: usize) -> Bytes {
    Bytes::from((0..size).map(|i| i as u8).collect::<Vec<u8>>())
}

/// A histogram of round trips in nanoseconds, 1 ns to 60 s, 3 significant digits.
pub(crate) fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid histogram bounds")
}

/// Records the time since `start`.
pub(crate) fn record(h: &mut Histogram<u64>, start: Instant) {
    h.saturating_record(start.elapsed().as_nanos().max(1) as u64);
}

/// CPU time this process has used so far, user and system, in seconds: fields 14 and 15 of
/// `/proc/self/stat`, in clock ticks of 1/100 s (Linux's `USER_HZ`). Exited threads count.
/// `None` where `/proc` is not there.
pub(crate) fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name, in parentheses, may hold spaces: count fields after it.
    let fields: Vec<&str> = stat[stat.rfind(')')? + 2..].split(' ').collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

/// One queue-then-close run.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ShutdownRun {
    /// Messages the application handed over (all of them were accepted).
    pub(crate) accepted: u64,
    /// Messages the remote application received.
    pub(crate) received: u64,
    /// Messages still waiting in the application's queue when the close was called (syncpeer:
    /// the outbox; async: `peer_reqs`, not counting up to 2 x 1024 more in `write_reqs` and
    /// `msg`; floor: none, it has no queue).
    pub(crate) queued_at_close: u64,
    /// From the close call to its return (syncpeer: the report; async: the writer task has
    /// ended; floor: the half-close).
    pub(crate) close: Duration,
    /// From the first send to the last message reaching the remote application.
    pub(crate) total: Duration,
}

impl ShutdownRun {
    /// Accepted messages the remote never received.
    pub(crate) fn lost(&self) -> u64 {
        self.accepted.saturating_sub(self.received)
    }
}
