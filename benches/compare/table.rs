//! The one table, as text: per section the sides it ran and the ratios syncpeer/other, each
//! the median of the ratios taken within each repetition followed by their range; then the
//! project's targets.

use std::fmt::Write as _;

use crate::Results;
use crate::report::{
    ASYNC, AUDIT_FIX, CEILING, COLUMNS, FIXED, FLOOR, NOISE, Ratio, Row, SYNC, TUNED, Target,
};

/// The columns a section shows, and its ratios as (numerator, denominator) columns.
type Layout = (&'static [usize], &'static [(usize, usize)]);

fn layout(section: &str) -> Layout {
    match section {
        "latency" | "contention" => (
            &[SYNC, TUNED, ASYNC, FLOOR, CEILING, NOISE],
            &[
                (SYNC, ASYNC),
                (SYNC, FLOOR),
                (SYNC, CEILING),
                (TUNED, ASYNC),
            ],
        ),
        "throughput" => (
            &[SYNC, ASYNC, FLOOR, NOISE],
            &[(SYNC, ASYNC), (SYNC, FLOOR)],
        ),
        "noise" => (&[NOISE], &[]),
        "shutdown" => (
            &[SYNC, ASYNC, AUDIT_FIX, FIXED, FLOOR],
            &[(SYNC, ASYNC), (SYNC, FLOOR)],
        ),
        _ => (&[SYNC, ASYNC], &[(SYNC, ASYNC)]),
    }
}

/// A ratio's column title: `sync/async`, `tuned/async`.
fn ratio_name((of, other): (usize, usize)) -> String {
    let of = if of == SYNC { "sync" } else { COLUMNS[of] };
    format!("{of}/{}", COLUMNS[other])
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

/// A ratio: the median, then the range if there was more than one pair.
fn ratio(r: Option<Ratio>) -> String {
    let f = |v: f64| match v {
        v if v >= 100.0 => format!("{v:.0}"),
        v if v >= 10.0 => format!("{v:.1}"),
        v => format!("{v:.2}"),
    };
    match r {
        None => "-".into(),
        Some(r) if r.pairs < 2 => f(r.median),
        Some(r) => format!("{} ({}-{})", f(r.median), f(r.min), f(r.max)),
    }
}

const METRIC: usize = 46;
const RATIO: usize = 18;

fn width(column: usize) -> usize {
    COLUMNS[column].len().max(9)
}

fn header(out: &mut String, section: &str) {
    let (columns, ratios) = layout(section);
    let better = if section == "throughput" {
        "higher"
    } else {
        "lower"
    };
    let title = match section {
        "latency" => "latency, quiet".to_string(),
        "noise" => "noise: syncpeer over Noise against plain syncpeer, paired within each \
                    repetition; the median of the repetitions (ranges in the targets)"
            .to_string(),
        "contention" => format!(
            "contention: latency beside {} busy processes, one per core, at default priority",
            crate::load::processes()
        ),
        s => s.to_string(),
    };
    let _ = writeln!(out, "-- {title}");
    let _ = write!(
        out,
        "{:<METRIC$} {:>7}",
        if section == "noise" {
            "(figures of syncpeer over Noise)".to_string()
        } else {
            format!("(ratios: {better} is better for syncpeer)")
        },
        "unit"
    );
    for &c in columns {
        let _ = write!(out, " {:>w$}", COLUMNS[c], w = width(c));
    }
    for &pair in ratios {
        let _ = write!(out, " {:>RATIO$}", ratio_name(pair));
    }
    let _ = writeln!(out);
}

/// The table and the targets.
pub(crate) fn text(r: &Results, rows: &[Row], targets: &[Target]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\nsyncpeer compare ({} mode, {} repetitions, {:.0} s; load average {} before, {} \
         after; {} cores)",
        if r.quick { "quick" } else { "full" },
        r.reps,
        r.elapsed_s,
        r.load_before,
        r.load_after,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let _ = writeln!(
        out,
        "ratios: syncpeer's figure (or the tuned syncpeer's) over the other side's, taken within \
         each repetition; the median of the repetitions, then (min-max). tuned: syncpeer with \
         ThreadTuning (SCHED_FIFO priority 1 where permitted, else a 100 us slice) on every thread \
         of the path, the application's included"
    );
    let mut section = "";
    for row in rows
        .iter()
        .filter(|row| row.values.iter().any(Option::is_some))
    {
        if row.section != section {
            section = row.section;
            header(&mut out, section);
        }
        let (columns, ratios) = layout(section);
        let _ = write!(out, "{:<METRIC$} {:>7}", row.metric, row.unit);
        for &c in columns {
            let _ = write!(out, " {:>w$}", num(row.values[c]), w = width(c));
        }
        for &(of, other) in ratios {
            let _ = write!(out, " {:>RATIO$}", ratio(row.ratio_of(of, other)));
        }
        let _ = writeln!(out);
    }
    let _ = writeln!(out, "-- targets");
    for t in targets {
        let verdict = if t.pass { "PASS" } else { "MISS" };
        let _ = writeln!(out, "{verdict:<6} {:<46} {}", t.name, t.value);
    }
    out
}
