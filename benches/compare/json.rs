//! The table as JSON (`compare.json`): the run's conditions, then per row the figure of every
//! side, the figures of each repetition, and each ratio as median, range and number of pairs.

use std::fmt::Write as _;

use crate::Results;
use crate::report::{ASYNC, Better, CEILING, COLUMNS, FLOOR, Ratio, Row, TUNED, Target};

fn num(v: Option<f64>) -> String {
    match v {
        Some(v) if v.is_finite() => format!("{v}"),
        _ => "null".into(),
    }
}

fn string(s: &str) -> String {
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

fn ratio(r: Option<Ratio>) -> String {
    match r {
        None => "null".into(),
        Some(r) => format!(
            "{{\"median\": {}, \"min\": {}, \"max\": {}, \"pairs\": {}}}",
            num(Some(r.median)),
            num(Some(r.min)),
            num(Some(r.max)),
            r.pairs
        ),
    }
}

fn row(o: &mut String, row: &Row) {
    let better = match row.better {
        Better::Lower => "lower",
        Better::Higher => "higher",
        Better::Neither => "none",
    };
    let _ = write!(
        o,
        "    {{\"section\": {}, \"metric\": {}, \"unit\": {}, \"better\": {}",
        string(row.section),
        string(&row.metric),
        string(row.unit),
        string(better)
    );
    for (c, name) in COLUMNS.iter().enumerate() {
        let _ = write!(o, ", {}: {}", string(name), num(row.values[c]));
    }
    let reps: Vec<String> = COLUMNS
        .iter()
        .zip(&row.reps)
        .filter(|(_, reps)| !reps.is_empty())
        .map(|(name, reps)| {
            let v: Vec<String> = reps.iter().map(|&x| num(Some(x))).collect();
            format!("{}: [{}]", string(name), v.join(", "))
        })
        .collect();
    let _ = write!(o, ", \"repetitions\": {{{}}}", reps.join(", "));
    let _ = write!(
        o,
        ", \"sync_over_async\": {}, \"sync_over_floor\": {}, \"sync_over_ceiling\": {}, \
         \"tuned_over_async\": {}}}",
        ratio(row.ratio(ASYNC)),
        ratio(row.ratio(FLOOR)),
        ratio(row.ratio(CEILING)),
        ratio(row.ratio_of(TUNED, ASYNC))
    );
}

/// The whole document.
pub(crate) fn text(r: &Results, rows: &[Row], targets: &[Target]) -> String {
    let mut o = String::from("{\n");
    let mode = if r.quick { "quick" } else { "full" };
    let _ = writeln!(o, "  \"mode\": {},", string(mode));
    let _ = writeln!(o, "  \"repetitions\": {},", r.reps);
    let _ = writeln!(o, "  \"elapsed_s\": {:.1},", r.elapsed_s);
    let _ = writeln!(o, "  \"load_before\": {},", string(&r.load_before));
    let _ = writeln!(o, "  \"load_after\": {},", string(&r.load_after));
    let _ = writeln!(o, "  \"contention_load\": {},", string(&r.load));
    let _ = writeln!(
        o,
        "  \"ratios\": {},",
        string("median of the per-repetition ratios syncpeer/other, with their range")
    );
    let _ = writeln!(o, "  \"rows\": [");
    for (i, r) in rows.iter().enumerate() {
        row(&mut o, r);
        let _ = writeln!(o, "{}", if i + 1 < rows.len() { "," } else { "" });
    }
    let _ = writeln!(o, "  ],\n  \"targets\": [");
    for (i, t) in targets.iter().enumerate() {
        let _ = writeln!(
            o,
            "    {{\"target\": {}, \"value\": {}, \"pass\": {}}}{}",
            string(&t.name),
            string(&t.value),
            t.pass,
            if i + 1 < targets.len() { "," } else { "" }
        );
    }
    o.push_str("  ]\n}\n");
    o
}
