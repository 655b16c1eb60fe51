//! Helpers for the stress, fault and hostile-input tests: a tiny deterministic PRNG, the
//! process's thread count, a counter of panics on the peer's own threads, a lock that
//! serialises the tests of one binary (so thread counts mean something), and bounded waits.
#![allow(dead_code, unreachable_pub)]

#[path = "../support/watchdog.rs"]
mod watchdog;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, Once};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;

/// xorshift64*: small, fast, and the same sequence for the same seed on every machine.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        // Zero is a fixed point of xorshift; any other value works.
        Rng((seed ^ 0x9e37_79b9_7f4a_7c15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n` (n > 0); the modulo bias is irrelevant here.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// Uniform in `lo..hi`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below((hi - lo) as u64) as usize
    }

    pub fn chance(&mut self, one_in: u64) -> bool {
        self.below(one_in) == 0
    }

    /// A new generator for a sub-task, so tasks do not share a sequence.
    pub fn fork(&mut self) -> Rng {
        Rng::new(self.next_u64())
    }
}

/// The seed from `SYNCPEER_SEED`, or one from the clock; printed either way so a failing run
/// can be repeated.
pub fn seed(test: &str) -> u64 {
    let seed = std::env::var("SYNCPEER_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
    eprintln!("{test}: seed {seed} (repeat with SYNCPEER_SEED={seed})");
    seed
}

/// Threads of this process, from `/proc/self/status`.
pub fn thread_count() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("Threads: line in /proc/self/status")
}

/// Waits (bounded) until the thread count is back to `baseline`; a thread that has been joined
/// may take a moment to leave the count.
#[track_caller]
pub fn assert_threads_back_to(baseline: usize, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let now = thread_count();
        if now <= baseline {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{now} threads still running, baseline {baseline}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Threads of this process that belong to a peer (`syncpeer-*`) or a relay (`relay-*`),
/// by name from `/proc/self/task/*/comm`. Tests in one binary run on the harness's threads at
/// once, so the process-wide count is only meaningful in a binary with a single test.
pub fn peer_thread_count() -> usize {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|name| name.starts_with("syncpeer-") || name.starts_with("relay-"))
        .count()
}

/// Waits (bounded) until no peer or relay thread is left beyond `baseline`.
#[track_caller]
pub fn assert_peer_threads_back_to(baseline: usize, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let now = peer_thread_count();
        if now <= baseline {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{now} peer or relay threads still running, baseline {baseline}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Resident memory of this process in KiB, from `/proc/self/status`.
pub fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS: line in /proc/self/status")
}

static PEER_PANICS: AtomicU64 = AtomicU64::new(0);

/// Counts panics on threads named `syncpeer-*` (the library's own), then runs the default
/// hook. Installed once per process.
pub fn count_peer_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let on_peer = std::thread::current()
                .name()
                .is_some_and(|n| n.starts_with("syncpeer-"));
            if on_peer {
                PEER_PANICS.fetch_add(1, Ordering::SeqCst);
            }
            default(info);
        }));
    });
}

/// Panics seen on the library's threads since the process started.
pub fn peer_panics() -> u64 {
    PEER_PANICS.load(Ordering::SeqCst)
}

/// Serialises the tests of one binary: thread counts and timings are then this test's own.
pub fn serial() -> Serial {
    static LOCK: Mutex<()> = Mutex::new(());
    let lock = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    Serial {
        _watch: watchdog::watch(),
        _lock: lock,
    }
}

/// Held for the whole of a test: the binary's lock and the watchdog that bounds the test.
pub struct Serial {
    _watch: watchdog::Watchdog,
    _lock: MutexGuard<'static, ()>,
}

/// Runs the test body with the binary's tests serialised, then checks that every thread it
/// started has ended and no peer thread panicked.
pub fn isolated(body: impl FnOnce()) {
    let _serial = serial();
    count_peer_panics();
    let baseline = peer_thread_count();
    body();
    assert_peer_threads_back_to(baseline, Duration::from_secs(10));
    assert_eq!(peer_panics(), 0, "a peer thread panicked");
}

/// A thread whose result is awaited with a bound: `join` fails the test instead of hanging.
pub struct Bounded<T> {
    name: String,
    done: Receiver<()>,
    handle: JoinHandle<T>,
}

pub fn spawn_bounded<T: Send + 'static>(
    name: impl Into<String>,
    f: impl FnOnce() -> T + Send + 'static,
) -> Bounded<T> {
    let name = name.into();
    let (tx, done) = crossbeam_channel::bounded(1);
    let handle = std::thread::Builder::new()
        .name(name.clone())
        .spawn(move || {
            let out = f();
            let _ = tx.send(());
            out
        })
        .expect("spawn test thread");
    Bounded { name, done, handle }
}

impl<T> Bounded<T> {
    /// Joins within `within`, or fails the test. A panic in the thread is re-raised.
    #[track_caller]
    pub fn join(self, within: Duration) -> T {
        // `Disconnected` means the thread ended without reporting: it panicked.
        let finished = !matches!(
            self.done.recv_timeout(within),
            Err(crossbeam_channel::RecvTimeoutError::Timeout)
        );
        assert!(
            finished,
            "thread {} did not finish in {within:?}",
            self.name
        );
        match self.handle.join() {
            Ok(v) => v,
            Err(p) => std::panic::resume_unwind(p),
        }
    }
}

/// Polls `cond` until it holds, failing the test after `within`.
#[track_caller]
pub fn wait_until(what: &str, within: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}
