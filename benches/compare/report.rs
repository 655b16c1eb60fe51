//! The one table: rows of medians per side, the ratios syncpeer/async and syncpeer/floor, the
//! project's targets, and the same as JSON.

use std::fmt::Write as _;
use std::path::PathBuf;

use crate::Results;

/// Column order of every row.
const COLUMNS: [&str; 5] = ["syncpeer", "async", "async+audit-fix", "async+fix", "floor"];
const SYNC: usize = 0;
const ASYNC: usize = 1;
const AUDIT_FIX: usize = 2;
const FIXED: usize = 3;
const FLOOR: usize = 4;

/// Whether a larger value is better (for reading the ratios).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Better {
    Lower,
    Higher,
    /// Context, not a score: no ratios.
    Neither,
}

struct Row {
    section: &'static str,
    metric: String,
    unit: &'static str,
    better: Better,
    values: [Option<f64>; 5],
}

impl Row {
    fn ratio(&self, other: usize) -> Option<f64> {
        if self.better == Better::Neither {
            return None;
        }
        match (self.values[SYNC], self.values[other]) {
            (Some(s), Some(o)) if o > 0.0 => Some(s / o),
            _ => None,
        }
    }
}

struct Target {
    name: String,
    value: String,
    pass: bool,
}

fn median(v: &[f64]) -> Option<f64> {
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

/// Sides of the latency/throughput sections (syncpeer, async, floor) in table columns.
const TRIO: [usize; 3] = [SYNC, ASYNC, FLOOR];

fn rows(r: &Results) -> Vec<Row> {
    let mut rows = Vec::new();
    for (label, hists) in &r.latency {
        for (q, name) in [(0.5, "p50"), (0.99, "p99"), (0.999, "p99.9")] {
            let mut values = [None; 5];
            for (side, h) in hists.iter().enumerate() {
                if !h.is_empty() {
                    values[TRIO[side]] = Some(h.value_at_quantile(q) as f64 / 1000.0);
                }
            }
            rows.push(Row {
                section: "latency",
                metric: format!("{label} {name}"),
                unit: "us",
                better: Better::Lower,
                values,
            });
        }
    }
    for ((label, _), sides) in r.latency.iter().zip(&r.latency_cpu) {
        let mut values = [None; 5];
        for (side, &(cpu, trips)) in sides.iter().enumerate() {
            if trips > 0 {
                values[TRIO[side]] = Some(cpu / trips as f64 * 1e6);
            }
        }
        rows.push(Row {
            section: "latency",
            metric: format!("{label} CPU per round trip"),
            unit: "us",
            better: Better::Lower,
            values,
        });
    }
    for (label, size, n, secs) in &r.throughput {
        let mut msgs = [None; 5];
        let mut mbs = [None; 5];
        for (side, runs) in secs.iter().enumerate() {
            let rates: Vec<f64> = runs.iter().map(|s| *n as f64 / s).collect();
            msgs[TRIO[side]] = median(&rates);
            mbs[TRIO[side]] = median(&rates).map(|m| m * *size as f64 / 1e6);
        }
        rows.push(Row {
            section: "throughput",
            metric: format!("{label} one-way"),
            unit: "msg/s",
            better: Better::Higher,
            values: msgs,
        });
        rows.push(Row {
            section: "throughput",
            metric: format!("{label} one-way"),
            unit: "MB/s",
            better: Better::Higher,
            values: mbs,
        });
    }
    let each = |f: &dyn Fn(&[crate::ShutdownRun]) -> Option<f64>| {
        let mut v = [None; 5];
        for (side, runs) in r.shutdown.iter().enumerate() {
            v[side] = f(runs);
        }
        v
    };
    let n = r.shutdown_messages;
    let mut queued = each(&|runs| {
        median(
            &runs
                .iter()
                .map(|x| x.queued_at_close as f64)
                .collect::<Vec<_>>(),
        )
    });
    queued[FLOOR] = None;
    rows.push(Row {
        section: "shutdown",
        metric: format!("{n} x 64 B sent: still queued at close"),
        unit: "msgs",
        better: Better::Neither,
        values: queued,
    });
    // The floor has no queue to drain: its "close" is a half-close, not comparable.
    let mut close = each(&|runs| {
        median(
            &runs
                .iter()
                .map(|x| x.close.as_secs_f64() * 1e3)
                .collect::<Vec<_>>(),
        )
    });
    close[FLOOR] = None;
    rows.push(Row {
        section: "shutdown",
        metric: "close call -> closed (the drain)".into(),
        unit: "ms",
        better: Better::Lower,
        values: close,
    });
    rows.push(Row {
        section: "shutdown",
        metric: "first send -> last message received".into(),
        unit: "ms",
        better: Better::Lower,
        values: each(&|runs| {
            median(
                &runs
                    .iter()
                    .map(|x| x.total.as_secs_f64() * 1e3)
                    .collect::<Vec<_>>(),
            )
        }),
    });
    rows.push(Row {
        section: "shutdown",
        metric: "messages lost per run (median)".into(),
        unit: "msgs",
        better: Better::Lower,
        values: each(&|runs| median(&runs.iter().map(|x| x.lost() as f64).collect::<Vec<_>>())),
    });
    rows.push(Row {
        section: "shutdown",
        metric: "messages lost per run (max)".into(),
        unit: "msgs",
        better: Better::Lower,
        values: each(&|runs| runs.iter().map(|x| x.lost() as f64).reduce(f64::max)),
    });
    rows.push(Row {
        section: "shutdown",
        metric: "runs that lost messages".into(),
        unit: "runs",
        better: Better::Lower,
        values: each(&|runs| {
            (!runs.is_empty()).then(|| runs.iter().filter(|x| x.lost() > 0).count() as f64)
        }),
    });
    let scale = |f: &dyn Fn(&crate::scale::ScaleRun) -> f64| {
        let mut v = [None; 5];
        v[SYNC] = r.scale[0].as_ref().map(f);
        v[ASYNC] = r.scale[1].as_ref().map(f);
        v
    };
    let peers = r.scale.iter().flatten().map(|s| s.peers).max().unwrap_or(0);
    rows.push(Row {
        section: "scale",
        metric: format!("{peers} peers: resident memory added"),
        unit: "MiB",
        better: Better::Lower,
        values: scale(&|s| s.rss_mib()),
    });
    rows.push(Row {
        section: "scale",
        metric: format!("{peers} peers: threads added"),
        unit: "threads",
        better: Better::Lower,
        values: scale(&|s| s.threads_after.saturating_sub(s.threads_before) as f64),
    });
    rows.push(Row {
        section: "scale",
        metric: format!("{peers} peers: connect, spawn, first message"),
        unit: "ms",
        better: Better::Lower,
        values: scale(&|s| s.spawn.as_secs_f64() * 1e3),
    });
    rows.push(Row {
        section: "scale",
        metric: format!("{peers} peers: close all (4 closers)"),
        unit: "ms",
        better: Better::Lower,
        values: scale(&|s| s.close.as_secs_f64() * 1e3),
    });
    rows
}

fn find<'a>(rows: &'a [Row], section: &str, metric: &str, unit: &str) -> Option<&'a Row> {
    rows.iter()
        .find(|r| r.section == section && r.metric == metric && r.unit == unit)
}

fn targets(r: &Results, rows: &[Row]) -> Vec<Target> {
    let mut t = Vec::new();
    let fmt = |v: Option<f64>| v.map_or("n/a".to_string(), |v| format!("{v:.2}"));
    for (label, _) in &r.latency {
        for q in ["p50", "p99"] {
            let row = find(rows, "latency", &format!("{label} {q}"), "us");
            let ratio = row.and_then(|x| x.ratio(ASYNC));
            t.push(Target {
                name: format!("latency {label} {q} <= async"),
                value: format!("syncpeer/async {}", fmt(ratio)),
                pass: ratio.is_some_and(|x| x <= 1.0),
            });
        }
    }
    let ratio = find(rows, "throughput", "64 B one-way", "msg/s").and_then(|x| x.ratio(ASYNC));
    t.push(Target {
        name: "throughput 64 B >= 2x async".into(),
        value: format!("syncpeer/async {}", fmt(ratio)),
        pass: ratio.is_some_and(|x| x >= 2.0),
    });
    let rate = find(rows, "throughput", "64 B, inline handler one-way", "msg/s")
        .and_then(|x| x.values[SYNC]);
    t.push(Target {
        name: "throughput 64 B >= 5 M msg/s (inline handler)".into(),
        value: format!("{} M msg/s", fmt(rate.map(|r| r / 1e6))),
        pass: rate.is_some_and(|r| r >= 5e6),
    });
    let ratio = find(rows, "throughput", "1 MiB one-way", "MB/s").and_then(|x| x.ratio(FLOOR));
    t.push(Target {
        name: "throughput 1 MiB >= 0.5x floor".into(),
        value: format!("syncpeer/floor {}", fmt(ratio)),
        pass: ratio.is_some_and(|x| x >= 0.5),
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
    t.push(Target {
        name: "1000 peers < 256 MiB resident".into(),
        value: format!("{} MiB", fmt(s.map(|s| s.rss_mib()))),
        pass: s.is_some_and(|s| s.peers >= 1000 && s.rss_mib() < 256.0),
    });
    t.push(Target {
        name: "1000 peers closed within 2 s".into(),
        value: format!("{} s", fmt(s.map(|s| s.close.as_secs_f64()))),
        pass: s.is_some_and(|s| s.peers >= 1000 && s.close.as_secs_f64() < 2.0),
    });
    t
}

/// A number in at most about 8 characters.
fn num(v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(v) if v >= 1e7 => format!("{:.2}M", v / 1e6),
        Some(v) if v >= 100.0 => format!("{v:.0}"),
        Some(v) if v >= 10.0 => format!("{v:.1}"),
        Some(v) => format!("{v:.2}"),
    }
}

fn ratio(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.2}x"))
}

fn table(r: &Results, rows: &[Row], targets: &[Target]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\nsyncpeer compare ({} mode, {:.0} s; load average {} before, {} after; {} cores)",
        if r.quick { "quick" } else { "full" },
        r.elapsed_s,
        r.load_before,
        r.load_after,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let _ = writeln!(
        out,
        "{:<46} {:>7} {:>9} {:>9} {:>15} {:>9} {:>9} {:>10} {:>10}",
        "metric",
        "unit",
        COLUMNS[SYNC],
        COLUMNS[ASYNC],
        COLUMNS[AUDIT_FIX],
        COLUMNS[FIXED],
        COLUMNS[FLOOR],
        "sync/async",
        "sync/floor"
    );
    let mut section = "";
    for row in rows {
        if row.section != section {
            section = row.section;
            let better = if section == "throughput" {
                "higher"
            } else {
                "lower"
            };
            let _ = writeln!(
                out,
                "-- {section} (ratios: {better} is better for syncpeer)"
            );
        }
        let _ = writeln!(
            out,
            "{:<46} {:>7} {:>9} {:>9} {:>15} {:>9} {:>9} {:>10} {:>10}",
            row.metric,
            row.unit,
            num(row.values[SYNC]),
            num(row.values[ASYNC]),
            num(row.values[AUDIT_FIX]),
            num(row.values[FIXED]),
            num(row.values[FLOOR]),
            ratio(row.ratio(ASYNC)),
            ratio(row.ratio(FLOOR)),
        );
    }
    let _ = writeln!(out, "-- targets");
    for t in targets {
        let _ = writeln!(
            out,
            "{:<6} {:<46} {}",
            if t.pass { "PASS" } else { "MISS" },
            t.name,
            t.value
        );
    }
    out
}

fn json_num(v: Option<f64>) -> String {
    match v {
        Some(v) if v.is_finite() => format!("{v}"),
        _ => "null".into(),
    }
}

fn json_str(s: &str) -> String {
    let mut o = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(o, "\\u{:04x}", c as u32);
            }
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

fn json(r: &Results, rows: &[Row], targets: &[Target]) -> String {
    let mut o = String::from("{\n");
    let _ = writeln!(
        o,
        "  \"mode\": {},",
        json_str(if r.quick { "quick" } else { "full" })
    );
    let _ = writeln!(o, "  \"elapsed_s\": {:.1},", r.elapsed_s);
    let _ = writeln!(o, "  \"load_before\": {},", json_str(&r.load_before));
    let _ = writeln!(o, "  \"load_after\": {},", json_str(&r.load_after));
    let _ = writeln!(o, "  \"rows\": [");
    for (i, row) in rows.iter().enumerate() {
        let _ = write!(
            o,
            "    {{\"section\": {}, \"metric\": {}, \"unit\": {}, \"better\": {}",
            json_str(row.section),
            json_str(&row.metric),
            json_str(row.unit),
            json_str(match row.better {
                Better::Lower => "lower",
                Better::Higher => "higher",
                Better::Neither => "none",
            })
        );
        for (c, name) in COLUMNS.iter().enumerate() {
            let _ = write!(o, ", {}: {}", json_str(name), json_num(row.values[c]));
        }
        let _ = write!(
            o,
            ", \"sync_over_async\": {}, \"sync_over_floor\": {}}}",
            json_num(row.ratio(ASYNC)),
            json_num(row.ratio(FLOOR))
        );
        let _ = writeln!(o, "{}", if i + 1 < rows.len() { "," } else { "" });
    }
    let _ = writeln!(o, "  ],\n  \"targets\": [");
    for (i, t) in targets.iter().enumerate() {
        let _ = writeln!(
            o,
            "    {{\"target\": {}, \"value\": {}, \"pass\": {}}}{}",
            json_str(&t.name),
            json_str(&t.value),
            t.pass,
            if i + 1 < targets.len() { "," } else { "" }
        );
    }
    o.push_str("  ]\n}\n");
    o
}

/// Where the JSON goes: `$CARGO_TARGET_DIR`, or `target/` at the crate root.
fn json_path(partial: bool) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"))
        .join(if partial {
            "compare-partial.json"
        } else {
            "compare.json"
        })
}

/// Prints the table and writes the JSON.
pub(crate) fn print_and_save(r: &Results) {
    let rows = rows(r);
    let targets = targets(r, &rows);
    println!("{}", table(r, &rows, &targets));
    let path = json_path(r.partial);
    match std::fs::create_dir_all(path.parent().unwrap_or(&path))
        .and_then(|()| std::fs::write(&path, json(r, &rows, &targets)))
    {
        Ok(()) => println!("wrote {}", path.display()),
        Err(e) => eprintln!("cannot write {}: {e}", path.display()),
    }
}
