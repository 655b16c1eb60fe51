//! The results as rows: per metric, one figure per side and the figures of every repetition,
//! from which each ratio is taken as the median of the per-repetition ratios (syncpeer's
//! figure over the other side's in the same repetition) with their range; then the project's
//! targets. `table.rs` prints the rows, `json.rs` writes them, `plot.rs` draws the results.

use std::path::PathBuf;

use crate::latency::{self, QUANTILES};
use crate::{Results, ShutdownRun};

/// Column order of every row.
pub(crate) const COLUMNS: [&str; 8] = [
    "syncpeer",
    "async",
    "async+audit-fix",
    "async+fix",
    "floor",
    "ceiling",
    "syncpeer+noise",
    "tuned",
];
pub(crate) const SYNC: usize = 0;
pub(crate) const ASYNC: usize = 1;
pub(crate) const AUDIT_FIX: usize = 2;
pub(crate) const FIXED: usize = 3;
pub(crate) const FLOOR: usize = 4;
pub(crate) const CEILING: usize = 5;
pub(crate) const NOISE: usize = 6;
/// syncpeer with `ThreadTuning` (SCHED_FIFO where permitted, else a 100 µs slice, on every
/// thread of the path).
pub(crate) const TUNED: usize = 7;

/// Table columns of the latency sides, in `latency::SIDES` order.
const LATENCY_COLUMNS: [usize; 6] = [SYNC, ASYNC, FLOOR, CEILING, NOISE, TUNED];
/// Table columns of the throughput sides (syncpeer, async, floor, syncpeer over Noise).
const TRIO: [usize; 4] = [SYNC, ASYNC, FLOOR, NOISE];

/// Whether a larger value is better (for reading the ratios).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Better {
    Lower,
    Higher,
    /// Context, not a score: no ratios.
    Neither,
}

/// The median of per-repetition ratios and their range.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ratio {
    pub(crate) median: f64,
    pub(crate) min: f64,
    pub(crate) max: f64,
    /// Repetitions in which both sides ran.
    pub(crate) pairs: usize,
}

pub(crate) struct Row {
    pub(crate) section: &'static str,
    pub(crate) metric: String,
    pub(crate) unit: &'static str,
    pub(crate) better: Better,
    /// The figure per column (what the table shows).
    pub(crate) values: [Option<f64>; 8],
    /// Per column, the figure of each repetition in order (the pairs behind the ratios).
    pub(crate) reps: [Vec<f64>; 8],
}

impl Row {
    fn new(section: &'static str, metric: String, unit: &'static str, better: Better) -> Row {
        Row {
            section,
            metric,
            unit,
            better,
            values: [None; 8],
            reps: Default::default(),
        }
    }

    /// Sets a column from its per-repetition figures, the figure being their median.
    fn set(&mut self, column: usize, reps: Vec<f64>) {
        self.values[column] = median(&reps);
        self.reps[column] = reps;
    }

    /// syncpeer over `other`: the median and range of the ratios within each repetition.
    pub(crate) fn ratio(&self, other: usize) -> Option<Ratio> {
        self.ratio_of(SYNC, other)
    }

    /// Column `of` over column `other`, likewise.
    pub(crate) fn ratio_of(&self, of: usize, other: usize) -> Option<Ratio> {
        if self.better == Better::Neither {
            return None;
        }
        let ratios: Vec<f64> = self.reps[of]
            .iter()
            .zip(&self.reps[other])
            .filter(|&(_, &o)| o > 0.0)
            .map(|(s, o)| s / o)
            .collect();
        Some(Ratio {
            median: median(&ratios)?,
            min: ratios.iter().copied().fold(f64::INFINITY, f64::min),
            max: ratios.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            pairs: ratios.len(),
        })
    }
}

pub(crate) fn median(v: &[f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    })
}

/// Rows of a latency section: percentiles of the merged samples (ratios from each
/// repetition's own percentiles), then CPU per round trip (quiet section) or the round trips
/// recorded within the time budget (contention section).
fn latency_rows(section: &'static str, workloads: &[latency::Workload], cpu: bool) -> Vec<Row> {
    let mut rows = Vec::new();
    for w in workloads {
        for (i, &(q, name)) in QUANTILES.iter().enumerate() {
            let mut row = Row::new(section, format!("{} {name}", w.label), "us", Better::Lower);
            for (side, &column) in LATENCY_COLUMNS.iter().enumerate() {
                if !w.merged[side].is_empty() {
                    row.values[column] = Some(w.merged[side].value_at_quantile(q) as f64 / 1e3);
                    row.reps[column] = w.reps[side].iter().map(|r| r.quantiles[i]).collect();
                }
            }
            rows.push(row);
        }
    }
    for w in workloads.iter().filter(|_| cpu) {
        let metric = format!("{} CPU per round trip", w.label);
        let mut row = Row::new(section, metric, "us", Better::Lower);
        for (side, &column) in LATENCY_COLUMNS.iter().enumerate() {
            let reps: Vec<f64> = w.reps[side].iter().filter_map(|r| r.cpu_us).collect();
            if !reps.is_empty() {
                row.set(column, reps);
            }
        }
        rows.push(row);
    }
    for w in workloads.iter().filter(|_| !cpu) {
        let metric = format!("{} round trips recorded per run", w.label);
        let mut row = Row::new(section, metric, "trips", Better::Neither);
        for (side, &column) in LATENCY_COLUMNS.iter().enumerate() {
            if !w.reps[side].is_empty() {
                row.set(
                    column,
                    w.reps[side].iter().map(|r| r.recorded as f64).collect(),
                );
            }
        }
        rows.push(row);
    }
    rows
}

/// A row to compute: metric, unit, which way is better, and the figure of one run.
type Metric<T> = (String, &'static str, Better, fn(&T) -> f64);

fn shutdown_rows(r: &Results) -> Vec<Row> {
    let n = r.shutdown_messages;
    let metrics: [Metric<ShutdownRun>; 4] = [
        (
            format!("{n} x 64 B sent: still queued at close"),
            "msgs",
            Better::Neither,
            |x| x.queued_at_close as f64,
        ),
        // The floor has no queue to drain: its "close" is a half-close, not comparable.
        (
            "close call -> closed (the drain)".into(),
            "ms",
            Better::Lower,
            |x| x.close.as_secs_f64() * 1e3,
        ),
        (
            "first send -> last message received".into(),
            "ms",
            Better::Lower,
            |x| x.total.as_secs_f64() * 1e3,
        ),
        (
            "messages lost per run (median)".into(),
            "msgs",
            Better::Lower,
            |x| x.lost() as f64,
        ),
    ];
    let mut rows = Vec::new();
    for (i, (metric, unit, better, f)) in metrics.into_iter().enumerate() {
        let mut row = Row::new("shutdown", metric, unit, better);
        for (side, runs) in r.shutdown.iter().enumerate() {
            // The floor has no queue (row 0) and its close is a half-close (row 1).
            let not_comparable = side == FLOOR && i < 2;
            if !runs.is_empty() && !not_comparable {
                row.set(side, runs.iter().map(f).collect());
            }
        }
        rows.push(row);
    }
    let mut max = Row::new(
        "shutdown",
        "messages lost per run (max)".into(),
        "msgs",
        Better::Lower,
    );
    let mut runs_lost = Row::new(
        "shutdown",
        "runs that lost messages".into(),
        "runs",
        Better::Lower,
    );
    for (side, runs) in r.shutdown.iter().enumerate() {
        let lost: Vec<f64> = runs.iter().map(|x| x.lost() as f64).collect();
        max.values[side] = lost.iter().copied().reduce(f64::max);
        let count = lost.iter().filter(|&&l| l > 0.0).count() as f64;
        runs_lost.values[side] = (!runs.is_empty()).then_some(count);
    }
    // Not ratios of repetitions: one figure over all of them (both rows are 0 for syncpeer).
    max.better = Better::Neither;
    runs_lost.better = Better::Neither;
    rows.extend([max, runs_lost]);
    rows
}

pub(crate) fn rows(r: &Results) -> Vec<Row> {
    let mut rows = latency_rows("latency", &r.latency, true);
    rows.extend(latency_rows("contention", &r.contention, false));
    for (label, size, n, secs) in &r.throughput {
        let mut msgs = Row::new(
            "throughput",
            format!("{label} one-way"),
            "msg/s",
            Better::Higher,
        );
        let mut mbs = Row::new(
            "throughput",
            format!("{label} one-way"),
            "MB/s",
            Better::Higher,
        );
        for (side, runs) in secs.iter().enumerate().filter(|(_, runs)| !runs.is_empty()) {
            let rates: Vec<f64> = runs.iter().map(|s| *n as f64 / s).collect();
            mbs.set(
                TRIO[side],
                rates.iter().map(|m| m * *size as f64 / 1e6).collect(),
            );
            msgs.set(TRIO[side], rates);
        }
        rows.extend([msgs, mbs]);
    }
    rows.extend(noise_rows(&rows));
    rows.extend(shutdown_rows(r));
    let peers = r.scale.iter().flatten().map(|s| s.peers).max().unwrap_or(0);
    let scale: [Metric<crate::scale::ScaleRun>; 4] = [
        (
            format!("{peers} peers: resident memory added"),
            "MiB",
            Better::Lower,
            |s| s.rss_mib(),
        ),
        (
            format!("{peers} peers: threads added"),
            "threads",
            Better::Lower,
            |s| s.threads_after.saturating_sub(s.threads_before) as f64,
        ),
        (
            format!("{peers} peers: connect, spawn, first message"),
            "ms",
            Better::Lower,
            |s| s.spawn.as_secs_f64() * 1e3,
        ),
        (
            format!("{peers} peers: close all (4 closers)"),
            "ms",
            Better::Lower,
            |s| s.close.as_secs_f64() * 1e3,
        ),
    ];
    for (metric, unit, better, f) in scale {
        // One run per side: its "ratio of repetitions" is the ratio of the two runs.
        let mut row = Row::new("scale", metric, unit, better);
        for (side, run) in [SYNC, ASYNC].into_iter().zip(&r.scale) {
            if let Some(run) = run {
                row.set(side, vec![f(run)]);
            }
        }
        rows.push(row);
    }
    rows
}

/// What Noise adds, syncpeer over Noise against plain syncpeer, paired repetition by
/// repetition: the 64 B and 1 MiB one-way rates as ratios, the 1 MiB rate in GB/s, and the
/// 64 B echo's p50 as microseconds added. Each row's figure is the median of the
/// repetitions', all of them kept for the range.
fn noise_rows(rows: &[Row]) -> Vec<Row> {
    let mut out = Vec::new();
    let paired = |row: Option<&Row>, f: fn(f64, f64) -> f64| -> Vec<f64> {
        row.map(|r| {
            r.reps[NOISE]
                .iter()
                .zip(&r.reps[SYNC])
                .map(|(&n, &p)| f(n, p))
                .collect()
        })
        .unwrap_or_default()
    };
    let ratio = |n: f64, p: f64| if p > 0.0 { n / p } else { 0.0 };
    let mut add = |metric: &str, unit: &'static str, reps: Vec<f64>| {
        if !reps.is_empty() {
            let mut row = Row::new("noise", metric.into(), unit, Better::Neither);
            row.set(NOISE, reps);
            out.push(row);
        }
    };
    let r64 = find(rows, "throughput", "64 B one-way", "msg/s");
    add("64 B one-way: over Noise / plain", "x", paired(r64, ratio));
    let r1m = find(rows, "throughput", "1 MiB one-way", "MB/s");
    add("1 MiB one-way: over Noise / plain", "x", paired(r1m, ratio));
    let gbs = r1m.map(|r| r.reps[NOISE].iter().map(|m| m / 1e3).collect());
    add("1 MiB one-way over Noise", "GB/s", gbs.unwrap_or_default());
    let p50 = find(rows, "latency", "direct echo 64 B p50", "us");
    add(
        "direct echo 64 B p50: added by Noise",
        "us",
        paired(p50, |n, p| n - p),
    );
    out
}

/// A row's figure and range, for a target's line: `median (min-max)`.
fn spread(row: Option<&Row>) -> (Option<f64>, String) {
    let Some(reps) = row.map(|r| &r.reps[NOISE]).filter(|r| !r.is_empty()) else {
        return (None, "n/a".into());
    };
    let m = median(reps);
    let lo = reps.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = reps.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (m, format!("{:.2} ({lo:.2}-{hi:.2})", m.unwrap_or_default()))
}

pub(crate) struct Target {
    pub(crate) name: String,
    pub(crate) value: String,
    pub(crate) pass: bool,
}

fn find<'a>(rows: &'a [Row], section: &str, metric: &str, unit: &str) -> Option<&'a Row> {
    rows.iter()
        .find(|r| r.section == section && r.metric == metric && r.unit == unit)
}

pub(crate) fn targets(r: &Results, rows: &[Row]) -> Vec<Target> {
    let mut t = Vec::new();
    let fmt = |v: Option<f64>| v.map_or("n/a".to_string(), |v| format!("{v:.2}"));
    let ratio_of = |section: &str, metric: &str, unit: &str, of: usize, other: usize| {
        find(rows, section, metric, unit)
            .and_then(|x| x.ratio_of(of, other))
            .map(|x| x.median)
    };
    let mut at_most = |name: String, (of, other): (usize, usize), ratio: Option<f64>, max: f64| {
        t.push(Target {
            name,
            value: format!("{}/{} {}", COLUMNS[of], COLUMNS[other], fmt(ratio)),
            pass: ratio.is_some_and(|x| x <= max),
        });
    };
    // Issue "the peer's core in the shape": quiet latency and CPU against async.
    for (metric, max) in [("direct echo 64 B p50", 1.5), ("rpc 64 B p50", 2.0)] {
        let ratio = ratio_of("latency", metric, "us", SYNC, ASYNC);
        at_most(
            format!("latency {metric} <= {max}x async"),
            (SYNC, ASYNC),
            ratio,
            max,
        );
    }
    for metric in ["direct echo 64 B", "rpc 64 B"] {
        let metric = format!("{metric} CPU per round trip");
        let ratio = ratio_of("latency", &metric, "us", SYNC, ASYNC);
        at_most(format!("{metric} <= 2.5x async"), (SYNC, ASYNC), ratio, 2.5);
    }
    // Issue "latency under CPU contention": p50 within 2x async, p99 within 5x, for the
    // default configuration and for the tuned one.
    for side in [SYNC, TUNED] {
        for workload in ["direct echo 64 B", "rpc 64 B"] {
            for (q, max) in [("p50", 2.0), ("p99", 5.0)] {
                let metric = format!("{workload} {q}");
                let ratio = ratio_of("contention", &metric, "us", side, ASYNC);
                let name = format!("loaded {metric} <= {max}x async ({})", COLUMNS[side]);
                at_most(name, (side, ASYNC), ratio, max);
            }
        }
    }
    let mut at_least = |name: String, value: String, pass: bool| {
        t.push(Target { name, value, pass });
    };
    let rate = find(rows, "throughput", "64 B one-way", "msg/s").and_then(|x| x.values[SYNC]);
    let ratio = ratio_of("throughput", "64 B one-way", "msg/s", SYNC, ASYNC);
    at_least(
        "throughput 64 B >= 4 M msg/s and >= 10x async".into(),
        format!(
            "{} M msg/s, syncpeer/async {}",
            fmt(rate.map(|r| r / 1e6)),
            fmt(ratio)
        ),
        rate.is_some_and(|r| r >= 4e6) && ratio.is_some_and(|x| x >= 10.0),
    );
    let rate = find(rows, "throughput", "64 B, inline handler one-way", "msg/s")
        .and_then(|x| x.values[SYNC]);
    at_least(
        "throughput 64 B >= 8 M msg/s (inline handler)".into(),
        format!("{} M msg/s", fmt(rate.map(|r| r / 1e6))),
        rate.is_some_and(|r| r >= 8e6),
    );
    for (metric, min) in [("1 MiB one-way", 0.6), ("64 MiB streamed one-way", 0.9)] {
        let ratio = ratio_of("throughput", metric, "MB/s", SYNC, FLOOR);
        at_least(
            format!("throughput {metric} >= {min}x floor"),
            format!("syncpeer/floor {}", fmt(ratio)),
            ratio.is_some_and(|x| x >= min),
        );
    }
    let (v, text) = spread(find(rows, "noise", "64 B one-way: over Noise / plain", "x"));
    t.push(Target {
        name: "noise: 64 B one-way >= 0.7x plain syncpeer".into(),
        value: format!("noise/plain {text}"),
        pass: v.is_some_and(|x| x >= 0.7),
    });
    let (v, text) = spread(find(rows, "noise", "1 MiB one-way over Noise", "GB/s"));
    t.push(Target {
        name: "noise: 1 MiB one-way >= 1 GB/s".into(),
        value: format!("{text} GB/s"),
        pass: v.is_some_and(|x| x >= 1.0),
    });
    let row = find(rows, "noise", "direct echo 64 B p50: added by Noise", "us");
    let (v, text) = spread(row);
    t.push(Target {
        name: "noise: echo 64 B p50 added <= 5 us".into(),
        value: format!("{text} us"),
        pass: v.is_some_and(|x| x <= 5.0),
    });
    let runs = &r.shutdown[SYNC];
    let lost: u64 = runs.iter().map(|x| x.lost()).sum();
    let close = median(
        &runs
            .iter()
            .map(|x| x.close.as_secs_f64())
            .collect::<Vec<_>>(),
    );
    t.push(Target {
        name: format!(
            "{} queued drained, 0 lost, close < 1 s",
            r.shutdown_messages
        ),
        value: format!(
            "close {} s median, {lost} lost over {} runs",
            fmt(close),
            runs.len()
        ),
        pass: lost == 0 && !runs.is_empty() && close.is_some_and(|c| c < 1.0),
    });
    let s = r.scale[0].as_ref();
    let peers = s.is_some_and(|s| s.peers >= 1000);
    t.push(Target {
        name: "1000 peers <= 64 MiB resident".into(),
        value: format!("{} MiB", fmt(s.map(|s| s.rss_mib()))),
        pass: peers && s.is_some_and(|s| s.rss_mib() <= 64.0),
    });
    let connect = rows
        .iter()
        .find(|x| x.section == "scale" && x.metric.ends_with("connect, spawn, first message"))
        .and_then(|x| x.ratio(ASYNC))
        .map(|x| x.median);
    t.push(Target {
        name: "1000 peers connect <= 2x async".into(),
        value: format!("syncpeer/async {}", fmt(connect)),
        pass: peers && connect.is_some_and(|x| x <= 2.0),
    });
    t.push(Target {
        name: "1000 peers closed within 0.25 s".into(),
        value: format!("{} s", fmt(s.map(|s| s.close.as_secs_f64()))),
        pass: peers && s.is_some_and(|s| s.close.as_secs_f64() <= 0.25),
    });
    t
}

/// Where the JSON and the SVG go: `$CARGO_TARGET_DIR`, or `target/` at the crate root.
fn output(partial: bool, extension: &str) -> PathBuf {
    let stem = if partial {
        "compare-partial"
    } else {
        "compare"
    };
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"))
        .join(format!("{stem}.{extension}"))
}

/// Prints the table, writes the JSON and draws the SVG.
pub(crate) fn print_and_save(r: &Results) {
    let rows = rows(r);
    let targets = targets(r, &rows);
    println!("{}", crate::table::text(r, &rows, &targets));
    let json = output(r.partial, "json");
    let written = std::fs::create_dir_all(json.parent().unwrap_or(&json))
        .and_then(|()| std::fs::write(&json, crate::json::text(r, &rows, &targets)));
    match written {
        Ok(()) => println!("wrote {}", json.display()),
        Err(e) => eprintln!("cannot write {}: {e}", json.display()),
    }
    let svg = output(r.partial, "svg");
    match crate::plot::draw(r, &svg) {
        Ok(()) => println!("wrote {}", svg.display()),
        Err(e) => eprintln!("cannot draw {}: {e}", svg.display()),
    }
}
