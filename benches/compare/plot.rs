//! The comparison drawn (`compare.svg`, beside `compare.json`): for each latency workload the
//! distribution of round trips of every side (a CDF on a logarithmic time axis), quiet and,
//! when the contention section ran, beside the background load; under them the one-way
//! throughput per payload size as bars, one per side, on a logarithmic axis. Drawn with
//! plotters' SVG backend; the text is left to whatever displays the SVG.

use std::path::Path;

use hdrhistogram::Histogram;
use plotters::coord::combinators::IntoLogRange;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::Results;
use crate::latency::{SIDES, Workload};
use crate::report::median;

/// One colour per side of the latency sections (syncpeer, async, floor, ceiling, syncpeer over
/// Noise, tuned).
const COLOURS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(110, 110, 110),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
];
const WIDTH: u32 = 1200;
const TITLE: u32 = 50;
const PANEL: u32 = 300;
const BARS: u32 = 380;

type Error = Box<dyn std::error::Error>;

/// Writes the SVG to `path`.
pub(crate) fn draw(r: &Results, path: &Path) -> Result<(), Error> {
    let sections: Vec<(&[Workload], String)> = [
        (&r.latency[..], "quiet".to_string()),
        (&r.contention[..], "beside the background load".to_string()),
    ]
    .into_iter()
    .filter(|(s, _)| s.iter().any(|w| w.merged.iter().any(|h| !h.is_empty())))
    .collect();
    let rows = sections.iter().map(|(s, _)| s.len()).max().unwrap_or(0) as u32;
    let has_bars = r
        .throughput
        .iter()
        .any(|t| t.3.iter().any(|runs| !runs.is_empty()));
    let height = TITLE + rows * PANEL + if has_bars { BARS } else { 0 };
    let root = SVGBackend::new(path, (WIDTH, height)).into_drawing_area();
    root.fill(&WHITE)?;
    let (title, rest) = root.split_vertically(TITLE);
    let mode = if r.quick { "quick" } else { "full" };
    let caption = format!(
        "syncpeer compare, {mode} mode, {} repetitions, {:.0} s; load average {} before, {} after",
        r.reps, r.elapsed_s, r.load_before, r.load_after
    );
    title.titled(&caption, ("sans-serif", 18))?;
    let (latency, throughput) = rest.split_vertically(rows * PANEL);
    // One time axis for every panel, so that quiet and loaded compare at a glance.
    let all = sections
        .iter()
        .flat_map(|(s, _)| s.iter())
        .flat_map(|w| &w.merged);
    let (lo, hi) = all
        .filter(|h| !h.is_empty())
        .fold((f64::MAX, 0f64), |(lo, hi), h| {
            (lo.min(h.min() as f64 / 1e3), hi.max(h.max() as f64 / 1e3))
        });
    let x_range = decade_below(lo)..decade_above(hi);
    if !sections.is_empty() {
        let columns = sections.len();
        let panels = latency.split_evenly((rows as usize, columns));
        for (c, (section, condition)) in sections.iter().enumerate() {
            for (row, w) in section.iter().enumerate() {
                cdf_panel(&panels[row * columns + c], w, condition, x_range.clone())?;
            }
        }
    }
    if has_bars {
        throughput_panel(&throughput, r)?;
    }
    root.present()?;
    Ok(())
}

fn cdf_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    w: &Workload,
    condition: &str,
    x_range: std::ops::Range<f64>,
) -> Result<(), Error>
where
    DB::ErrorType: 'static,
{
    let mut chart = ChartBuilder::on(area)
        .caption(format!("{}, {condition}", w.label), ("sans-serif", 15))
        .margin(8)
        .margin_right(24)
        .x_label_area_size(34)
        .y_label_area_size(44)
        .build_cartesian_2d(x_range.log_scale(), 0f64..1f64)?;
    chart
        .configure_mesh()
        .x_desc("round trip (log scale)")
        .y_desc("fraction of round trips")
        .x_label_formatter(&|&x| duration(x))
        .draw()?;
    for (side, h) in w.merged.iter().enumerate().filter(|(_, h)| !h.is_empty()) {
        let colour = COLOURS[side];
        chart
            .draw_series(LineSeries::new(cdf(h), colour.stroke_width(2)))?
            .label(SIDES[side])
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], colour.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

/// A time axis label: microseconds in, the unit that reads best out.
fn duration(us: f64) -> String {
    match us {
        us if us >= 1e6 => format!("{} s", us / 1e6),
        us if us >= 1e3 => format!("{} ms", us / 1e3),
        us => format!("{us} µs"),
    }
}

/// The empirical distribution: (round trip in µs, fraction of round trips no longer). Points
/// closer than the drawing can show (0.1% of the fraction and 0.5% of the time) are merged,
/// which keeps the SVG small.
fn cdf(h: &Histogram<u64>) -> Vec<(f64, f64)> {
    let total = h.len() as f64;
    let mut seen = 0;
    let mut points = vec![(h.min() as f64 / 1e3, 0.0)];
    let mut recorded = h.iter_recorded().peekable();
    while let Some(v) = recorded.next() {
        seen += v.count_since_last_iteration();
        let point = (
            h.highest_equivalent(v.value_iterated_to()) as f64 / 1e3,
            seen as f64 / total,
        );
        let &(x, y) = points.last().expect("starts with one point");
        let visible = point.1 - y >= 1e-3 || point.0 / x >= 1.005;
        if visible || recorded.peek().is_none() {
            points.push(point);
        }
    }
    points
}

fn throughput_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    r: &Results,
) -> Result<(), Error>
where
    DB::ErrorType: 'static,
{
    // Per workload, per side (syncpeer, async, floor): the median MB/s of the repetitions.
    let bars: Vec<(&str, Vec<Option<f64>>)> = r
        .throughput
        .iter()
        .map(|(label, size, n, secs)| {
            let mbs = secs.iter().map(|runs| {
                let rates: Vec<f64> = runs.iter().map(|s| (*n * *size) as f64 / s / 1e6).collect();
                median(&rates)
            });
            (*label, mbs.collect())
        })
        .filter(|(_, v): &(&str, Vec<Option<f64>>)| v.iter().any(Option::is_some))
        .collect();
    if bars.is_empty() {
        return Ok(());
    }
    let values = bars.iter().flat_map(|(_, v)| v.iter().flatten());
    let (lo, hi) = values.fold((f64::MAX, 0f64), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    let n = bars.len();
    let centres: Vec<f64> = (0..n).map(|i| i as f64 + 0.5).collect();
    let labels: Vec<String> = bars.iter().map(|(l, _)| l.to_string()).collect();
    let mut chart = ChartBuilder::on(area)
        .caption(
            "one-way throughput (median of the repetitions)",
            ("sans-serif", 15),
        )
        .margin(12)
        .x_label_area_size(34)
        .y_label_area_size(60)
        .build_cartesian_2d(
            0f64..n as f64,
            (decade_below(lo)..decade_above(hi)).log_scale(),
        )?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .y_desc("MB/s (log scale)")
        .y_label_formatter(&|v| format!("{v:.0}"))
        .draw()?;
    let bottom = decade_below(lo);
    // The payload under each group of bars (an axis of categories, drawn by hand).
    let (base_x, base_y) = area.get_base_pixel();
    for (label, centre) in labels.iter().zip(centres) {
        let (x, y) = chart.backend_coord(&(centre, bottom));
        let style = ("sans-serif", 14)
            .into_text_style(area)
            .pos(Pos::new(HPos::Center, VPos::Top));
        area.draw(&Text::new(
            label.clone(),
            (x - base_x, y - base_y + 6),
            style,
        ))?;
    }
    // syncpeer, async, floor: the first three latency colours.
    for (side, name) in ["syncpeer", "async", "floor"].iter().enumerate() {
        let colour = COLOURS[side];
        let rects = bars.iter().enumerate().filter_map(|(i, (_, v))| {
            let x = i as f64 + 0.15 + side as f64 * 0.24;
            v[side].map(|mbs| Rectangle::new([(x, bottom), (x + 0.22, mbs)], colour.filled()))
        });
        chart
            .draw_series(rects)?
            .label(*name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], colour.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

fn decade_below(v: f64) -> f64 {
    10f64.powf(v.max(1e-3).log10().floor())
}

fn decade_above(v: f64) -> f64 {
    10f64.powf(
        v.max(1e-3)
            .log10()
            .ceil()
            .max(v.max(1e-3).log10().floor() + 1.0),
    )
}
