//! Side-by-side comparison of syncpeer with the async original's architecture and with a raw
//! socket floor, in one process, on loopback TCP.
//!
//! ```text
//! cargo bench --bench compare                            # full: what the README quotes
//! SYNCPEER_BENCH_QUICK=1 cargo bench --bench compare     # quick: about a minute
//! ```
//!
//! The sides run the same workloads with the same wire format and the same sans-IO codec, so
//! only the concurrency architecture differs:
//!
//! - **syncpeer**: the library (reader, mux and writer threads), the application on threads;
//! - **tuned** (latency sections): syncpeer with a `ThreadTuning` on every thread of the
//!   path, the application's included: `SCHED_FIFO` priority 1 where the process may use it,
//!   else a 100 µs slice (the table's header says which ran);
//! - **async**: `tests/support/async_peer.rs`, the Aptos `Peer` actor's three tasks on a tokio
//!   multi-threaded runtime (one worker per core), the application as tasks; the shutdown
//!   section also runs its fixed variants;
//! - **floor**: a bare blocking socket, the application thread encoding and writing itself;
//! - **syncpeer+noise**: syncpeer with every connection inside a Noise IK session (the
//!   handshake run before the peers start), on the 64 B direct echo and the 64 B and 1 MiB
//!   one-way rows: what Noise adds, paired with plain syncpeer repetition by repetition in
//!   the "noise" section;
//! - **ceiling** (latency sections, echo only): the design ceiling of `ceiling.rs`, syncpeer's
//!   reader → mux → writer threads and crossbeam channels with nothing inside (no codec, no
//!   session), so that what the shape costs stands next to what the library adds. It parks on
//!   every hop, as a plain use of crossbeam does; syncpeer's reader and mux poll for
//!   `PeerConfig::spin` before parking and its reader delivers to the application directly,
//!   so on a quiet machine it can come in under its "ceiling".
//!
//! Repetitions are interleaved (syncpeer, async, floor, ceiling, then again, the starting side
//! rotating each repetition), so a change in machine load hits all sides. Every ratio in the table is
//! the median of the ratios taken within each repetition (syncpeer's figure over the other
//! side's, both measured in the same repetition), followed by their range over the
//! repetitions. Sections:
//!
//! - latency: closed-loop round trips (64 B and 4 KiB direct-send echo, and RPC), percentiles of
//!   all repetitions' samples merged into one histogram, and the process's CPU time per round
//!   trip (both ends, every thread; polling before parking shows here), median of the
//!   repetitions;
//! - contention: the latency workloads again, beside a background load that the bench starts
//!   before and kills after each repetition's runs: one busy process per core at default
//!   priority, each an integer loop with no system calls (`load.rs`). A round trip may wait
//!   for a time slice there, milliseconds, so each run stops after a time budget (0.4 s
//!   quick, 1.5 s full) once it has 50 samples;
//! - throughput: one-way direct sends (64 B, 4 KiB, 1 MiB, a streamed 64 MiB message), timed
//!   until the receiving application has every message; median of the repetitions. The
//!   receiving application is a thread reading the handler's channel, except in the row
//!   "64 B, inline handler", where syncpeer counts in a `Handler::inline` on its reader thread
//!   (the async original has no such handler; the floor counts inline anyway);
//! - shutdown: 100,000 queued 64 B messages, then a graceful close; the remote counts;
//! - scale: 1,000 connected peers in a fresh child process: memory, threads, close time.
//!
//! Prints one table with ratios and checks the project's targets; writes the table as JSON to
//! `$CARGO_TARGET_DIR/compare.json` (default `target/compare.json`) and draws it in
//! `compare.svg` beside it: the latency distributions (CDF, log scale) of every side, quiet and
//! under contention, and the throughput per payload size.
//!
//! `SYNCPEER_BENCH_ONLY=latency,contention,throughput,shutdown,scale` (any subset) runs only
//! those sections, `SYNCPEER_BENCH_SIDE=syncpeer|tuned|async|floor|ceiling` only that side
//! (`syncpeer` takes `syncpeer+noise` along, `async` its fixed variants) and
//! `SYNCPEER_BENCH_SIZE=1048576` only that throughput payload size, e.g.
//! `SYNCPEER_BENCH_QUICK=1 SYNCPEER_BENCH_ONLY=latency SYNCPEER_BENCH_SIDE=syncpeer
//! valgrind --tool=callgrind target/release/deps/compare-*`.

#[path = "../../tests/support/async_peer.rs"]
mod async_peer;
mod async_side;
mod ceiling;
mod common;
mod floor;
mod json;
mod latency;
mod load;
mod plot;
mod report;
mod scale;
mod sync_side;
mod table;

use std::time::{Duration, Instant};

use async_peer::Variant;
use common::{STREAM_SIZE, ShutdownRun, Trips};

/// Environment variable selecting the quick mode.
const QUICK_ENV: &str = "SYNCPEER_BENCH_QUICK";
/// Environment variable restricting the sections run (comma-separated).
const ONLY_ENV: &str = "SYNCPEER_BENCH_ONLY";
/// Environment variable restricting the side run.
const SIDE_ENV: &str = "SYNCPEER_BENCH_SIDE";
/// Environment variable restricting the throughput payload size (bytes).
const SIZE_ENV: &str = "SYNCPEER_BENCH_SIZE";

/// How much of everything to run.
struct Plan {
    quick: bool,
    reps: usize,
    /// Round trips per quiet latency run.
    latency: Trips,
    /// Round trips per run beside the background load, where one may wait milliseconds for
    /// a time slice: bounded in time too.
    contention: Trips,
    /// (label, payload size, messages per run, inline handler).
    throughput: Vec<(&'static str, usize, usize, bool)>,
    shutdown_messages: usize,
    scale_peers: usize,
    /// Sections to run (all if unset).
    only: Option<String>,
    /// Side to run (all if unset): a column name.
    side: Option<String>,
    /// Throughput payload size to run (all if unset).
    size: Option<usize>,
}

impl Plan {
    fn new(quick: bool) -> Plan {
        let k = if quick { 5 } else { 1 };
        Plan {
            quick,
            reps: if quick { 3 } else { 9 },
            latency: Trips {
                iters: if quick { 3_000 } else { 10_000 },
                warmup: if quick { 100 } else { 300 },
                budget: Duration::from_secs(60),
            },
            contention: Trips {
                iters: if quick { 1_000 } else { 5_000 },
                warmup: 20,
                budget: Duration::from_millis(if quick { 400 } else { 1_500 }),
            },
            throughput: vec![
                ("64 B", 64, 1_000_000 / k, false),
                ("64 B, inline handler", 64, 2_000_000 / k, true),
                ("64 B, blocking handler", 64, 1_000_000 / k, false),
                ("4 KiB", 4096, 200_000 / k, false),
                ("1 MiB", 1 << 20, 2_000 / k, false),
                (
                    "64 MiB streamed",
                    STREAM_SIZE,
                    if quick { 2 } else { 8 },
                    false,
                ),
            ],
            shutdown_messages: 100_000,
            scale_peers: 1_000,
            only: std::env::var(ONLY_ENV).ok(),
            side: std::env::var(SIDE_ENV).ok(),
            size: std::env::var(SIZE_ENV).ok().and_then(|s| s.parse().ok()),
        }
    }

    fn runs(&self, section: &str) -> bool {
        self.only
            .as_ref()
            .is_none_or(|o| o.split(',').any(|s| s.trim() == section))
    }

    /// Whether a throughput payload size runs (`SYNCPEER_BENCH_SIZE`, in bytes).
    fn runs_size(&self, size: usize) -> bool {
        self.size.is_none_or(|s| s == size)
    }

    /// Whether a side runs; `name` is its column name (`async+fix` matches `async` too).
    fn runs_side(&self, name: &str) -> bool {
        self.side
            .as_ref()
            .is_none_or(|s| name == s || name.split('+').next() == Some(s.as_str()))
    }
}

/// Column names of the throughput sides.
const TRIO: [&str; 4] = ["syncpeer", "async", "floor", "syncpeer+noise"];
/// Index of syncpeer over Noise in [`TRIO`].
const NOISE: usize = 3;
/// Throughput payload sizes run over Noise too (with a channel handler): 64 B and 1 MiB.
const NOISE_SIZES: [usize; 2] = [64, 1 << 20];
/// Column names of the shutdown sides.
const SHUTDOWN_SIDES: [&str; 5] = ["syncpeer", "async", "async+audit-fix", "async+fix", "floor"];

/// One throughput workload: label, payload size, messages per run, and per side the seconds
/// of each repetition's run, in order.
pub(crate) type Throughput = (&'static str, usize, usize, Vec<Vec<f64>>);

/// Everything measured.
pub(crate) struct Results {
    pub(crate) quick: bool,
    /// Only some sections or sides ran (the JSON goes to `compare-partial.json`).
    pub(crate) partial: bool,
    pub(crate) reps: usize,
    /// The quiet latency section.
    pub(crate) latency: Vec<latency::Workload>,
    /// The same workloads beside the background load (empty if the section did not run).
    pub(crate) contention: Vec<latency::Workload>,
    /// What the background load was.
    pub(crate) load: String,
    pub(crate) throughput: Vec<Throughput>,
    /// Shutdown runs per side (syncpeer, async original, async with the audit's fix, async
    /// fixed, floor), one per repetition, in order.
    pub(crate) shutdown: Vec<Vec<ShutdownRun>>,
    pub(crate) shutdown_messages: usize,
    /// syncpeer, async.
    pub(crate) scale: Vec<Option<scale::ScaleRun>>,
    pub(crate) load_before: String,
    pub(crate) load_after: String,
    pub(crate) elapsed_s: f64,
}

fn main() {
    if let Ok(spec) = std::env::var(scale::CHILD_ENV) {
        scale::child(&spec);
        return;
    }
    if let Ok(parent) = std::env::var(load::BURN_ENV) {
        load::burn(&parent);
        return;
    }
    let quick = std::env::var(QUICK_ENV).is_ok_and(|v| !v.is_empty() && v != "0");
    let plan = Plan::new(quick);
    let started = Instant::now();
    let load_before = loadavg();
    let rt = async_side::runtime();
    eprintln!(
        "compare: {} mode, {} repetitions, sides interleaved",
        if quick { "quick" } else { "full" },
        plan.reps
    );

    let mut quiet = latency::workloads();
    let mut contention = latency::workloads();
    let mut throughput: Vec<Throughput> = plan
        .throughput
        .iter()
        .map(|&(label, size, n, _)| (label, size, n, vec![Vec::new(); TRIO.len()]))
        .collect();
    let mut shutdown: Vec<Vec<ShutdownRun>> = vec![Vec::new(); 5];
    let runs_side = |name: &str| plan.runs_side(name);

    for rep in 0..plan.reps {
        eprintln!("repetition {}/{}", rep + 1, plan.reps);
        if plan.runs("latency") {
            eprintln!(" latency (quiet)");
            latency::repetition(&rt, &mut quiet, rep, plan.latency, &runs_side);
        }
        if plan.runs("contention") {
            eprintln!(" contention: {}", load::description());
            // Killed when dropped, also if a run panics.
            let _load = load::Load::start();
            latency::repetition(&rt, &mut contention, rep, plan.contention, &runs_side);
        }
        for (t, &(.., inline)) in throughput.iter_mut().zip(&plan.throughput) {
            if !plan.runs("throughput") {
                break;
            }
            let (label, size, n) = (t.0, t.1, t.2);
            if !plan.runs_size(size) {
                continue;
            }
            // The async original has no inline handler: its row shows only syncpeer and the
            // floor (whose receiving thread decodes and counts, i.e. is inline already).
            // syncpeer over Noise runs 64 B and 1 MiB, with a channel handler; the blocking
            // handler's row is syncpeer's alone (the others run the "64 B" row).
            let noise_row = !inline && NOISE_SIZES.contains(&size);
            let blocking = label.ends_with("blocking handler");
            let sides = rotation(rep, TRIO.len()).filter(|&s| {
                plan.runs_side(TRIO[s])
                    && !(inline && s == 1)
                    && (s != NOISE || (noise_row && !blocking))
                    && !(blocking && s != 0)
            });
            for side in sides {
                let secs = match side {
                    0 if inline => sync_side::throughput_inline(size, n),
                    0 if blocking => sync_side::throughput_blocking(size, n),
                    0 => sync_side::throughput(size, n, false),
                    NOISE => sync_side::throughput(size, n, true),
                    1 => async_side::throughput(&rt, size, n),
                    _ => floor::throughput(size, n),
                };
                t.3[side].push(secs);
            }
            eprintln!("  throughput {label}: done");
        }
        if !plan.runs("shutdown") {
            continue;
        }
        let (size, n) = (64, plan.shutdown_messages);
        for side in rotation(rep, 5).filter(|&s| plan.runs_side(SHUTDOWN_SIDES[s])) {
            let run = match side {
                0 => sync_side::shutdown(size, n),
                1 => async_side::shutdown(&rt, Variant::Original, size, n),
                2 => async_side::shutdown(&rt, Variant::AuditFix, size, n),
                3 => async_side::shutdown(&rt, Variant::Fixed, size, n),
                _ => floor::shutdown(size, n),
            };
            shutdown[side].push(run);
        }
        eprintln!("  shutdown: done");
    }
    drop(rt);

    eprintln!(
        "scale: {} peers per side, in child processes",
        plan.scale_peers
    );
    let scale = [("sync", "syncpeer"), ("async", "async")]
        .iter()
        .map(|(which, name)| {
            (plan.runs("scale") && plan.runs_side(name))
                .then(|| scale::measure(which, plan.scale_peers))
                .flatten()
        })
        .collect();

    let results = Results {
        quick: plan.quick,
        partial: plan.only.is_some() || plan.side.is_some() || plan.size.is_some(),
        reps: plan.reps,
        latency: quiet,
        contention: if plan.runs("contention") {
            contention
        } else {
            Vec::new()
        },
        load: load::description(),
        throughput,
        shutdown,
        shutdown_messages: plan.shutdown_messages,
        scale,
        load_before,
        load_after: loadavg(),
        elapsed_s: started.elapsed().as_secs_f64(),
    };
    report::print_and_save(&results);
}

/// The sides in the order repetition `rep` runs them: rotated so none always goes first.
fn rotation(rep: usize, sides: usize) -> impl Iterator<Item = usize> {
    (0..sides).map(move |i| (i + rep) % sides)
}

/// The first three fields of `/proc/loadavg`.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}
