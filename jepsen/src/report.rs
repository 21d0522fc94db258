//! `report.html`: one self-contained page (inline SVG drawn with plotters, no scripts, no
//! external files) with the verdict, the anomalies, counts per operation and outcome, a
//! timeline of every operation per client under the nemesis's faults, latency over time, and
//! throughput over time.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use history::{Op, Outcome};
use plotters::coord::Shift;
use plotters::prelude::*;

use crate::recorder::NemesisEvent;
use crate::results::{outcome_type, Results};

type Plot = Result<(), Box<dyn std::error::Error>>;

const WIDTH: u32 = 1200;
const OK: RGBColor = RGBColor(46, 139, 87);
const FAIL: RGBColor = RGBColor(214, 39, 40);
const INFO: RGBColor = RGBColor(255, 165, 0);
const FAULT: RGBColor = RGBColor(255, 200, 200);

fn color(outcome: Option<&Outcome>) -> RGBColor {
    match outcome_type(outcome) {
        "ok" => OK,
        "fail" => FAIL,
        _ => INFO,
    }
}

/// A fault as a span of time: `(start s, end s, label)`; one-shot actions last 0.
fn spans(nemesis: &[NemesisEvent], end: f64) -> Vec<(f64, f64, String)> {
    let mut open: BTreeMap<&str, (f64, String)> = BTreeMap::new();
    let mut out = Vec::new();
    for e in nemesis {
        let t = e.time_ms as f64 / 1000.0;
        match e.phase.as_str() {
            "start" => {
                open.insert(e.fault.as_str(), (t, e.fault.clone()));
            }
            "heal" => {
                if let Some((s, label)) = open.remove(e.fault.as_str()) {
                    out.push((s, t, label));
                }
            }
            "done" if e.fault != "final" => out.push((t, t, e.fault.clone())),
            _ => {}
        }
    }
    out.extend(open.into_values().map(|(s, label)| (s, end, label)));
    out
}

/// The pink background of every fault that lasted, from `low` to `high` on the y axis.
fn bands(spans: &[(f64, f64, String)], low: f64, high: f64) -> Vec<Rectangle<(f64, f64)>> {
    spans
        .iter()
        .filter(|(s, e, _)| e > s)
        .map(|(s, e, _)| Rectangle::new([(*s, low), (*e, high)], FAULT.mix(0.5).filled()))
        .collect()
}

fn svg(height: u32, draw: impl FnOnce(&DrawingArea<SVGBackend<'_>, Shift>) -> Plot) -> String {
    let mut buf = String::new();
    {
        let root = SVGBackend::with_string(&mut buf, (WIDTH, height)).into_drawing_area();
        if let Err(e) = root.fill(&WHITE).map_err(Into::into).and_then(|()| draw(&root)) {
            return format!("<p>(plot failed: {})</p>", escape(&e.to_string()));
        }
        let _ = root.present();
    }
    buf
}

/// Every operation as a bar from invocation to completion, one row per client, coloured by
/// outcome (an `info` op runs to the end of its row's time), over the faults.
fn timeline(ops: &[Op], nemesis: &[NemesisEvent], end: f64) -> String {
    let mut rows: Vec<&str> = ops.iter().map(|o| o.client.as_str()).collect();
    rows.sort_unstable();
    rows.dedup();
    let index: BTreeMap<&str, usize> = rows.iter().enumerate().map(|(i, c)| (*c, i + 1)).collect();
    let n = rows.len() + 1;
    let height = 120 + 28 * n as u32;
    svg(height, |root| {
        let mut chart = ChartBuilder::on(root)
            .margin(10)
            .caption("operations by client (green ok, red fail, orange info) and faults (pink)", ("sans-serif", 16))
            .x_label_area_size(30)
            .y_label_area_size(80)
            .build_cartesian_2d(0f64..end.max(1.0), -0.5f64..(n as f64 - 0.5))?;
        let names = rows.clone();
        let label = move |y: &f64| {
            let r = y.round();
            if (y - r).abs() > 1e-6 || r < 0.0 {
                return String::new();
            }
            match r as usize {
                0 => "nemesis".to_string(),
                i => names.get(i - 1).map(|s| s.to_string()).unwrap_or_default(),
            }
        };
        chart
            .configure_mesh()
            .disable_y_mesh()
            .y_labels(n + 1)
            .y_label_formatter(&label)
            .x_desc("seconds since the start")
            .draw()?;
        let spans = spans(nemesis, end);
        chart.draw_series(bands(&spans, -0.5, n as f64 - 0.5))?;
        chart.draw_series(spans.iter().map(|(s, e, label)| {
            EmptyElement::at((*s, 0.0))
                + Rectangle::new(
                    [(0, -6), (((e - s) / end.max(1.0) * (WIDTH as f64 - 100.0)).max(2.0) as i32, 6)],
                    FAIL.filled(),
                )
                + Text::new(label.clone(), (0, -18), ("sans-serif", 11))
        }))?;
        chart.draw_series(ops.iter().map(|o| {
            let row = index.get(o.client.as_str()).copied().unwrap_or(0) as f64;
            let start = o.invoke_ms as f64 / 1000.0;
            let stop = if o.complete.is_some() { o.complete_ms as f64 / 1000.0 } else { end };
            Rectangle::new(
                [(start, row - 0.3), (stop.max(start + 0.02), row + 0.3)],
                color(o.outcome.as_ref()).filled(),
            )
        }))?;
        Ok(())
    })
}

/// Latency of every completed operation over time (log scale), coloured by outcome.
fn latency(ops: &[Op], nemesis: &[NemesisEvent], end: f64) -> String {
    let points: Vec<(f64, f64, RGBColor)> = ops
        .iter()
        .filter(|o| o.complete.is_some())
        .map(|o| {
            let ms = o.complete_ms.saturating_sub(o.invoke_ms).max(1) as f64;
            (o.invoke_ms as f64 / 1000.0, ms, color(o.outcome.as_ref()))
        })
        .collect();
    let top = points.iter().map(|p| p.1).fold(10.0, f64::max) * 1.5;
    svg(420, |root| {
        let mut chart = ChartBuilder::on(root)
            .margin(10)
            .caption("latency of each operation (ms, log scale) by when it was invoked", ("sans-serif", 16))
            .x_label_area_size(30)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..end.max(1.0), (1f64..top).log_scale())?;
        chart.configure_mesh().x_desc("seconds since the start").y_desc("ms").draw()?;
        chart.draw_series(bands(&spans(nemesis, end), 1.0, top))?;
        chart.draw_series(points.iter().map(|(t, ms, c)| Circle::new((*t, *ms), 2, c.filled())))?;
        Ok(())
    })
}

/// Operations completed per second, by outcome.
fn throughput(ops: &[Op], nemesis: &[NemesisEvent], end: f64) -> String {
    let seconds = end.ceil().max(1.0) as usize;
    let mut per: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
    for o in ops.iter().filter(|o| o.complete.is_some()) {
        let s = ((o.complete_ms / 1000) as usize).min(seconds - 1);
        per.entry(outcome_type(o.outcome.as_ref())).or_insert_with(|| vec![0; seconds])[s] += 1;
    }
    let top = per.values().flat_map(|v| v.iter().copied()).max().unwrap_or(1) as f64 * 1.1;
    svg(360, |root| {
        let mut chart = ChartBuilder::on(root)
            .margin(10)
            .caption("operations completed per second, by outcome", ("sans-serif", 16))
            .x_label_area_size(30)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..end.max(1.0), 0f64..top.max(1.0))?;
        chart.configure_mesh().x_desc("seconds since the start").y_desc("ops/s").draw()?;
        chart.draw_series(bands(&spans(nemesis, end), 0.0, top))?;
        for (kind, counts) in &per {
            let c = match *kind {
                "ok" => OK,
                "fail" => FAIL,
                _ => INFO,
            };
            chart
                .draw_series(LineSeries::new(counts.iter().enumerate().map(|(s, n)| (s as f64 + 0.5, *n as f64)), &c))?
                .label(*kind)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c));
        }
        chart.configure_series_labels().border_style(BLACK).background_style(WHITE.mix(0.8)).draw()?;
        Ok(())
    })
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// The whole page.
pub fn html(results: &Results, ops: &[Op], nemesis: &[NemesisEvent]) -> String {
    let end =
        ops.iter().map(|o| o.complete_ms.max(o.invoke_ms)).chain(nemesis.iter().map(|e| e.time_ms)).max().unwrap_or(0)
            as f64
            / 1000.0
            + 1.0;
    let verdict = format!("{:?}", results.valid).to_lowercase();
    let mut page = String::new();
    let _ = write!(
        page,
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>keyquorum jepsen: {verdict}</title>\
         <style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}\
         td,th{{border:1px solid #ccc;padding:2px 8px;text-align:right}}th{{background:#eee}}\
         .valid{{color:#2e8b57}}.invalid{{color:#d62728}}.unknown{{color:#ff8c00}}\
         pre{{white-space:pre-wrap;background:#f6f6f6;padding:8px}}</style></head><body>\
         <h1>keyquorum jepsen run: <span class=\"{verdict}\">{verdict}</span></h1>\
         <p>{} operations; {} keys checked for linearizability, {} unchecked (search budget).</p>",
        results.ops,
        results.keys_checked,
        results.keys_unchecked.len()
    );
    page.push_str("<h2>Anomalies</h2>");
    if results.anomalies.is_empty() {
        page.push_str("<p>None: every checker passed.</p>");
    }
    for (checker, (n, first)) in &results.anomalies {
        let _ = write!(page, "<h3>{} ({n})</h3><pre>", escape(checker));
        for a in first {
            let _ = writeln!(page, "{}", escape(a));
        }
        page.push_str("</pre>");
    }
    page.push_str("<h2>Operations</h2><table><tr><th>f</th><th>ok</th><th>fail</th><th>info</th></tr>");
    for (f, by) in &results.counts {
        let get = |t: &str| by.get(t).copied().unwrap_or(0);
        let _ = write!(
            page,
            "<tr><td style=\"text-align:left\">{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(f),
            get("ok"),
            get("fail"),
            get("info")
        );
    }
    page.push_str("</table><h2>Timeline</h2>");
    page.push_str(&timeline(ops, nemesis, end));
    page.push_str("<h2>Latency</h2>");
    page.push_str(&latency(ops, nemesis, end));
    page.push_str("<h2>Throughput</h2>");
    page.push_str(&throughput(ops, nemesis, end));
    page.push_str("<h2>Nemesis</h2><table><tr><th>s</th><th>fault</th><th>phase</th><th>detail</th></tr>");
    for e in nemesis {
        let _ = write!(
            page,
            "<tr><td>{:.1}</td><td style=\"text-align:left\">{}</td><td style=\"text-align:left\">{}</td>\
             <td style=\"text-align:left\">{}</td></tr>",
            e.time_ms as f64 / 1000.0,
            escape(&e.fault),
            escape(&e.phase),
            escape(&e.detail)
        );
    }
    let _ = write!(
        page,
        "</table><h2>Options</h2><pre>{}</pre></body></html>",
        escape(&serde_json::to_string_pretty(&results.options).unwrap_or_default())
    );
    page
}
