//! `--plot FILE.svg`: throughput and latency over time, as a plain SVG file.
use std::fmt::Write;

use super::stats::Sample;

const W: f64 = 800.0;
const H: f64 = 220.0;
const PAD: f64 = 50.0;

/// A named, coloured line of (x, y) points.
type Series<'a> = (&'a str, &'a str, Vec<(f64, f64)>);

fn chart(out: &mut String, y0: f64, title: &str, series: &[Series<'_>], unit: &str) {
    let max_x = series.iter().flat_map(|s| s.2.iter().map(|p| p.0)).fold(1.0f64, f64::max);
    let max_y = series.iter().flat_map(|s| s.2.iter().map(|p| p.1)).fold(1.0f64, f64::max) * 1.1;
    let x = |v: f64| PAD + v / max_x * (W - 2.0 * PAD);
    let y = |v: f64| y0 + H - PAD / 2.0 - v / max_y * (H - PAD);
    let _ = writeln!(out, r#"<text x="{PAD}" y="{}" font-size="14">{title}</text>"#, y0 + 16.0);
    let _ = writeln!(
        out,
        r#"<line x1="{PAD}" y1="{}" x2="{}" y2="{}" stroke="black"/><line x1="{PAD}" y1="{}" x2="{PAD}" y2="{}" stroke="black"/>"#,
        y(0.0),
        W - PAD,
        y(0.0),
        y(0.0),
        y(max_y)
    );
    let _ = writeln!(out, r#"<text x="4" y="{}" font-size="10">{:.0} {unit}</text>"#, y(max_y) + 10.0, max_y);
    let _ =
        writeln!(out, r#"<text x="{}" y="{}" font-size="10">{:.0} s</text>"#, W - PAD, y(0.0) + 14.0, max_x);
    for (i, (name, color, points)) in series.iter().enumerate() {
        let pts: Vec<String> = points.iter().map(|(a, b)| format!("{:.1},{:.1}", x(*a), y(*b))).collect();
        let _ = writeln!(
            out,
            r#"<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{}"/>"#,
            pts.join(" ")
        );
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{}" font-size="11" fill="{color}">{name}</text>"#,
            W - 200.0 + 90.0 * i as f64,
            y0 + 16.0
        );
    }
}

/// The SVG document for a run's samples.
pub fn svg(title: &str, samples: &[Sample]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{}" font-family="sans-serif">"#,
        2.0 * H + 30.0
    );
    let _ = writeln!(
        out,
        r#"<rect width="100%" height="100%" fill="white"/><text x="{PAD}" y="18" font-size="15">{title}</text>"#
    );
    let thr = |f: fn(&Sample) -> f64| samples.iter().map(|s| (s.t, f(s))).collect::<Vec<_>>();
    chart(
        &mut out,
        25.0,
        "throughput",
        &[("sent", "#1f77b4", thr(|s| s.sent_per_sec)), ("received", "#d62728", thr(|s| s.received_per_sec))],
        "msg/s",
    );
    // Flat-out runs measure no latency: no empty chart for them.
    if samples.iter().any(|s| s.p50_us > 0 || s.p99_us > 0) {
        chart(
            &mut out,
            25.0 + H,
            "latency",
            &[("p50", "#2ca02c", thr(|s| s.p50_us as f64)), ("p99", "#ff7f0e", thr(|s| s.p99_us as f64))],
            "µs",
        );
    }
    out.push_str("</svg>\n");
    out
}
