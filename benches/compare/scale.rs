//! Many connections in one process: resident memory, threads, and the time to close them all.
//!
//! Each measurement runs in a fresh child process (this benchmark binary, re-run with
//! [`CHILD_ENV`] set), so the earlier workloads' heap does not blur the figures. The child
//! connects `peers / 2` loopback pairs, sends one 64-byte message across each pair and waits
//! for all of them (every thread has run), reads `/proc/self/status`, then closes every peer
//! in parallel from [`CLOSERS`] threads (tasks for the async baseline).

use std::process::Command;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use syncpeer::{DisconnectReason, Peer, PeerId};

use crate::async_peer::{self, AsyncConfig, AsyncPeerHandle, Received};
use crate::common::{DIRECT, payload, tcp_pair};

/// Set to `sync` or `async` (and the peer count after a comma) to run one measurement.
pub(crate) const CHILD_ENV: &str = "SYNCPEER_BENCH_SCALE_CHILD";
/// Threads (or tasks) closing peers in parallel.
const CLOSERS: usize = 4;
/// Bound for the whole close; a run past it reports what it has.
const CLOSE_BOUND: Duration = Duration::from_secs(60);

/// What one scale run measured.
#[derive(Clone, Debug, Default)]
pub(crate) struct ScaleRun {
    pub(crate) peers: u64,
    /// Resident memory before spawning and with every peer connected, in KiB.
    pub(crate) rss_before_kib: u64,
    pub(crate) rss_after_kib: u64,
    /// Process threads before and with every peer connected.
    pub(crate) threads_before: u64,
    pub(crate) threads_after: u64,
    /// Connecting and spawning every peer, then the first message across each pair.
    pub(crate) spawn: Duration,
    /// Closing every peer in parallel until each has finished.
    pub(crate) close: Duration,
    /// Threads left after the close.
    pub(crate) threads_end: u64,
}

impl ScaleRun {
    /// Resident memory added by the peers, in MiB.
    pub(crate) fn rss_mib(&self) -> f64 {
        self.rss_after_kib.saturating_sub(self.rss_before_kib) as f64 / 1024.0
    }
}

/// `VmRSS` (KiB) and `Threads` from `/proc/self/status`.
fn status() -> (u64, u64) {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        s.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("Threads:"))
}

/// Runs one measurement in a child process.
pub(crate) fn measure(which: &str, peers: usize) -> Option<ScaleRun> {
    let exe = std::env::current_exe().ok()?;
    let out = Command::new(exe)
        .env(CHILD_ENV, format!("{which},{peers}"))
        .output()
        .ok()?;
    if !out.status.success() {
        eprintln!(
            "scale child ({which}) failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find(|l| l.starts_with("scale "))?;
    let get = |k: &str| -> u64 {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(k)?.strip_prefix('='))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Some(ScaleRun {
        peers: get("peers"),
        rss_before_kib: get("rss_before"),
        rss_after_kib: get("rss_after"),
        threads_before: get("threads_before"),
        threads_after: get("threads_after"),
        spawn: Duration::from_micros(get("spawn_us")),
        close: Duration::from_micros(get("close_us")),
        threads_end: get("threads_end"),
    })
}

/// The child's entry point: `spec` is `sync,N` or `async,N`. Prints one `scale ...` line.
pub(crate) fn child(spec: &str) {
    let (which, peers) = spec.split_once(',').unwrap_or((spec, "1000"));
    let peers: usize = peers.parse().unwrap_or(1000);
    let r = match which {
        "sync" => sync_run(peers / 2),
        _ => async_run(peers / 2),
    };
    println!(
        "scale peers={} rss_before={} rss_after={} threads_before={} threads_after={} \
         spawn_us={} close_us={} threads_end={}",
        r.peers,
        r.rss_before_kib,
        r.rss_after_kib,
        r.threads_before,
        r.threads_after,
        r.spawn.as_micros(),
        r.close.as_micros(),
        r.threads_end
    );
}

fn sync_run(pairs: usize) -> ScaleRun {
    let (rss_before_kib, threads_before) = status();
    let (tx, inbound) = crossbeam_channel::unbounded();
    let (dtx, disconnected) = crossbeam_channel::unbounded();
    let start = Instant::now();
    let mut handles = Vec::with_capacity(2 * pairs);
    for i in 0..pairs as u64 {
        let (a, b) = tcp_pair();
        let spawn = |s, remote, h: bool| {
            let mut builder = Peer::builder(s)
                .remote_peer_id(PeerId::from_u64(remote))
                .on_disconnect(dtx.clone());
            if h {
                builder = builder.handler(DIRECT, tx.clone());
            }
            builder.spawn().expect("spawn syncpeer")
        };
        handles.push(spawn(a, 2 * i + 1, false));
        handles.push(spawn(b, 2 * i, true));
    }
    drop(tx);
    let data = payload(64);
    for a in handles.iter().step_by(2) {
        a.send(DIRECT, data.clone()).expect("send");
    }
    for _ in 0..pairs {
        inbound.recv_timeout(CLOSE_BOUND).expect("first message");
    }
    let spawn = start.elapsed();
    let (rss_after_kib, threads_after) = status();

    let start = Instant::now();
    let handles = Arc::new(handles);
    let closers: Vec<_> = (0..CLOSERS)
        .map(|k| {
            let handles = handles.clone();
            thread::spawn(move || {
                for h in handles.iter().skip(k).step_by(CLOSERS) {
                    h.shutdown(DisconnectReason::RequestedByPeerManager)
                        .unwrap();
                }
            })
        })
        .collect();
    for c in closers {
        c.join().expect("closer thread");
    }
    for _ in 0..2 * pairs {
        if disconnected.recv_timeout(CLOSE_BOUND).is_err() {
            break;
        }
    }
    let close = start.elapsed();
    drop(handles);
    let (_, threads_end) = status();
    ScaleRun {
        peers: 2 * pairs as u64,
        rss_before_kib,
        rss_after_kib,
        threads_before,
        threads_after,
        spawn,
        close,
        threads_end,
    }
}

fn async_run(pairs: usize) -> ScaleRun {
    // The runtime's own workers are not the peers': count from after it started.
    let rt = crate::async_side::runtime();
    let (rss_before_kib, threads_before) = status();
    let (tx, mut inbound) = tokio::sync::mpsc::unbounded_channel::<Received>();
    let start = Instant::now();
    let handles = rt.block_on(async {
        let mut handles = Vec::with_capacity(2 * pairs);
        for _ in 0..pairs {
            let (a, b) = tcp_pair();
            let h = tokio::runtime::Handle::current();
            let config = AsyncConfig::default();
            let a = AsyncPeerHandle::spawn(&h, a, config.clone(), async_peer::handlers(vec![]))
                .expect("spawn async peer");
            let b = AsyncPeerHandle::spawn(
                &h,
                b,
                config,
                async_peer::handlers(vec![(DIRECT, tx.clone())]),
            )
            .expect("spawn async peer");
            handles.push(a);
            handles.push(b);
        }
        let data = payload(64);
        for a in handles.iter().step_by(2) {
            a.send(DIRECT, data.clone()).await.expect("send");
        }
        for _ in 0..pairs {
            inbound.recv().await.expect("first message");
        }
        handles
    });
    drop(tx);
    let spawn = start.elapsed();
    let (rss_after_kib, threads_after) = status();
    let start = Instant::now();
    rt.block_on(async {
        let mut groups: Vec<Vec<AsyncPeerHandle>> = (0..CLOSERS).map(|_| Vec::new()).collect();
        for (i, h) in handles.into_iter().enumerate() {
            groups[i % CLOSERS].push(h);
        }
        let tasks: Vec<_> = groups
            .into_iter()
            .map(|g| {
                tokio::spawn(async move {
                    for h in g {
                        h.shutdown().await;
                    }
                })
            })
            .collect();
        for t in tasks {
            let _ = tokio::time::timeout(CLOSE_BOUND, t).await;
        }
    });
    let close = start.elapsed();
    let (_, threads_end) = status();
    drop(rt);
    ScaleRun {
        peers: 2 * pairs as u64,
        rss_before_kib,
        rss_after_kib,
        threads_before,
        threads_after,
        spawn,
        close,
        threads_end,
    }
}
