//! The latency sections: closed-loop round trips per workload and side, quiet (`latency`) and
//! beside the background load of `load.rs` (`contention`). Each repetition runs every
//! workload on every side, the starting side rotating, and keeps that repetition's
//! percentiles and CPU time apart, so that ratios can be taken between sides of the same
//! repetition (measured minutes, not hours, apart).

use hdrhistogram::Histogram;
use tokio::runtime::Runtime;

use crate::common::{Kind, Trips, cpu_seconds, histogram};
use crate::{async_side, ceiling, floor, sync_side};

/// The sides of the latency sections, in this order.
pub(crate) const SIDES: [&str; 6] = [
    "syncpeer",
    "async",
    "floor",
    "ceiling",
    "syncpeer+noise",
    "tuned",
];
/// Index of the design ceiling in [`SIDES`].
pub(crate) const CEILING: usize = 3;
/// Index of syncpeer over Noise in [`SIDES`].
pub(crate) const NOISE: usize = 4;

/// Workloads: (label, kind, payload size).
const WORKLOADS: [(&str, Kind, usize); 4] = [
    ("direct echo 64 B", Kind::Direct, 64),
    ("direct echo 4 KiB", Kind::Direct, 4096),
    ("rpc 64 B", Kind::Rpc, 64),
    ("rpc 4 KiB", Kind::Rpc, 4096),
];

/// Percentiles reported per workload: (quantile, name).
pub(crate) const QUANTILES: [(f64, &str); 3] = [(0.5, "p50"), (0.99, "p99"), (0.999, "p99.9")];

/// One repetition of one workload on one side.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Rep {
    /// [`QUANTILES`] of the repetition's round trips, in microseconds.
    pub(crate) quantiles: [f64; 3],
    /// The process's CPU time per round trip, in microseconds (warm-up and the pair's set-up
    /// and close included); `None` without `/proc`.
    pub(crate) cpu_us: Option<f64>,
    /// Round trips recorded (fewer than asked when the run's time budget ran out).
    pub(crate) recorded: u64,
}

/// One workload's measurements in one section.
pub(crate) struct Workload {
    pub(crate) label: &'static str,
    pub(crate) kind: Kind,
    size: usize,
    /// Per side, every repetition's samples merged (empty if the side never ran).
    pub(crate) merged: Vec<Histogram<u64>>,
    /// Per side, one entry per repetition, in order.
    pub(crate) reps: Vec<Vec<Rep>>,
}

/// The workloads of a section, nothing measured yet.
pub(crate) fn workloads() -> Vec<Workload> {
    WORKLOADS
        .iter()
        .map(|&(label, kind, size)| Workload {
            label,
            kind,
            size,
            merged: SIDES.iter().map(|_| histogram()).collect(),
            reps: SIDES.iter().map(|_| Vec::new()).collect(),
        })
        .collect()
}

/// Whether `side` has workload `kind` of `size` bytes (the ceiling has no RPC; syncpeer over
/// Noise runs the 64 B direct echo only, to show what Noise adds).
pub(crate) fn has(side: usize, kind: Kind, size: usize) -> bool {
    match side {
        CEILING => kind == Kind::Direct,
        NOISE => kind == Kind::Direct && size == 64,
        _ => true,
    }
}

/// Runs repetition `rep` of every workload on every side `runs_side` allows.
pub(crate) fn repetition(
    rt: &Runtime,
    section: &mut [Workload],
    rep: usize,
    trips: Trips,
    runs_side: &dyn Fn(&str) -> bool,
) {
    for w in section.iter_mut() {
        let sides = (0..SIDES.len()).map(|i| (i + rep) % SIDES.len());
        for side in sides.filter(|&s| runs_side(SIDES[s]) && has(s, w.kind, w.size)) {
            let cpu_before = cpu_seconds();
            let h = match side {
                0 => sync_side::latency(w.kind, w.size, trips, false),
                NOISE => sync_side::latency(w.kind, w.size, trips, true),
                1 => async_side::latency(rt, w.kind, w.size, trips),
                2 => floor::latency(w.kind, w.size, trips),
                CEILING => ceiling::latency(w.size, trips),
                _ => sync_side::latency_tuned(w.kind, w.size, trips),
            };
            let made = h.len() as f64 + trips.warmup as f64;
            let cpu_us = match (cpu_before, cpu_seconds()) {
                (Some(a), Some(b)) => Some((b - a) / made * 1e6),
                _ => None,
            };
            let quantiles = QUANTILES.map(|(q, _)| h.value_at_quantile(q) as f64 / 1000.0);
            let recorded = h.len();
            w.reps[side].push(Rep {
                quantiles,
                cpu_us,
                recorded,
            });
            w.merged[side].add(&h).expect("same histogram bounds");
        }
        eprintln!("  {}: done", w.label);
    }
}
