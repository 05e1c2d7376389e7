//! Server-side SVG charts: a time axis, a value axis with units, an average line with a
//! min-max band, gaps left open, and a `<title>` tooltip on every point.
//!
//! Hand-written rather than drawn with plotters: plotters' SVG backend cannot attach a
//! `<title>` to a point (the per-point hover the pages need), and the whole chart here is one
//! small function of plain string building that Tera embeds as is.

use std::fmt::Write;

use crate::web::format as view;

/// One bucket of a series: None where there was no data (drawn as a gap).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    /// Start of the bucket, Unix ms.
    pub ts: i64,
    pub min: f64,
    pub avg: f64,
    pub max: f64,
    /// Samples in the bucket (1 means min = avg = max).
    pub n: u32,
}

/// How values are written on the axis and in tooltips.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Plain numbers (vCPUs).
    Count,
    Percent,
    /// Values in bytes, written KiB/MiB/GiB.
    Bytes,
    BytesPerSec,
}

impl Unit {
    fn format(self, v: f64) -> String {
        match self {
            Unit::Count => format!("{v:.0}"),
            Unit::Percent => format!("{v:.1} %"),
            Unit::Bytes => view::bytes(v.max(0.0) as u64),
            Unit::BytesPerSec => view::bytes_per_sec(v),
        }
    }
}

/// A line to draw: its name (legend), its CSS class (colour), and its buckets.
pub struct Series<'a> {
    pub name: &'a str,
    pub class: &'a str,
    pub points: &'a [Option<Point>],
}

/// The drawing's size and margins, in SVG user units. The chart is drawn twice: a wide
/// drawing for desktops and a narrow one (fewer, larger labels) that CSS shows instead on
/// small screens, so that the labels stay readable when the drawing is scaled down to a
/// phone's width.
struct Geometry {
    w: f64,
    h: f64,
    left: f64,
    right: f64,
    top: f64,
    bottom: f64,
    /// Labels on the time axis (at least 2: the start and the end).
    time_labels: u32,
    /// Extra CSS class of the `<svg>` (besides `chart`).
    class: &'static str,
    /// Whether each point carries a hover tooltip (the desktop drawing; touch screens have no
    /// hover, and the data table below holds the same values).
    tooltips: bool,
}

const WIDE: Geometry = Geometry {
    w: 760.0,
    h: 200.0,
    left: 78.0,
    right: 12.0,
    top: 14.0,
    bottom: 28.0,
    time_labels: 6,
    class: "",
    tooltips: true,
};

const NARROW: Geometry = Geometry {
    w: 360.0,
    h: 210.0,
    left: 70.0,
    right: 14.0,
    top: 14.0,
    bottom: 30.0,
    time_labels: 3,
    class: " chart-narrow",
    tooltips: false,
};

/// A chart of one series, named `name` (the reports' charts).
pub fn line(name: &str, unit: Unit, from: i64, to: i64, points: &[Option<Point>]) -> String {
    render(name, unit, from, to, &[Series { name, class: "s1", points }], None)
}

/// Renders a chart of `series` over `[from, to)` ms, as HTML: the drawing (wide and narrow),
/// a legend when there are several series, a summary line, and the values as a table in a
/// `<details>` (keyboard- and screen-reader-reachable, unlike the hover tooltips). `ceiling`
/// is a fixed top for the value axis (100 for percentages, the allocation for memory);
/// otherwise the data decides.
pub fn render(
    title: &str,
    unit: Unit,
    from: i64,
    to: i64,
    series: &[Series],
    ceiling: Option<f64>,
) -> String {
    let summary = summary(unit, series);
    let label = if summary.is_empty() {
        format!("{title}: no data in this range")
    } else {
        format!("{title}: {summary}")
    };
    let mut html = String::with_capacity(16384);
    for g in [&WIDE, &NARROW] {
        html.push_str(&svg(g, &label, unit, from, to, series, ceiling));
    }
    if series.len() > 1 {
        html.push_str(r#"<ul class="chart-legend">"#);
        for s in series {
            let _ = write!(
                html,
                r#"<li><span class="key {}" aria-hidden="true"></span>{}</li>"#,
                s.class,
                escape(s.name)
            );
        }
        html.push_str("</ul>");
    }
    if !summary.is_empty() {
        let _ = write!(html, r#"<p class="chart-summary">{}</p>"#, escape(&summary));
        html.push_str(&data_table(title, unit, series));
    }
    html
}

/// "CPU: latest 3.0 %, average 2.1 %, lowest 0.0 %, highest 9.5 %" for each series with data.
fn summary(unit: Unit, series: &[Series]) -> String {
    let mut parts = Vec::new();
    for s in series {
        let pts: Vec<&Point> = s.points.iter().flatten().collect();
        let Some(latest) = pts.last() else { continue };
        let samples: f64 = pts.iter().map(|p| f64::from(p.n.max(1))).sum();
        let mean = pts.iter().map(|p| p.avg * f64::from(p.n.max(1))).sum::<f64>() / samples;
        let low = pts.iter().map(|p| p.min).fold(f64::INFINITY, f64::min);
        let high = pts.iter().map(|p| p.max).fold(f64::NEG_INFINITY, f64::max);
        parts.push(format!(
            "{}: latest {}, average {}, lowest {}, highest {}",
            s.name,
            unit.format(latest.avg),
            unit.format(mean),
            unit.format(low),
            unit.format(high)
        ));
    }
    parts.join("; ")
}

/// The values behind the chart: one row per point in time with data, per series its average
/// and, where a point covers several samples, their range.
fn data_table(title: &str, unit: Unit, series: &[Series]) -> String {
    let mut times: Vec<i64> =
        series.iter().flat_map(|s| s.points.iter().flatten().map(|p| p.ts)).collect();
    times.sort_unstable();
    times.dedup();
    let mut t = String::new();
    let _ = write!(
        t,
        r#"<details class="chart-data"><summary>{} data as a table</summary><div class="table-scroll"><table class="vms"><thead><tr><th scope="col">Time (UTC)</th>"#,
        escape(title)
    );
    for s in series {
        let _ = write!(
            t,
            r#"<th scope="col">{0} (average)</th><th scope="col">{0} (lowest – highest)</th>"#,
            escape(s.name)
        );
    }
    t.push_str("</tr></thead><tbody>");
    for ts in times {
        let _ = write!(t, r#"<tr><th scope="row" class="nowrap">{}</th>"#, view::absolute(ts));
        for s in series {
            match s.points.iter().flatten().find(|p| p.ts == ts) {
                Some(p) => {
                    let range = if p.n > 1 {
                        format!("{} – {}", unit.format(p.min), unit.format(p.max))
                    } else {
                        String::new()
                    };
                    let _ = write!(
                        t,
                        r#"<td class="num">{}</td><td class="num">{}</td>"#,
                        escape(&unit.format(p.avg)),
                        escape(&range)
                    );
                }
                None => t.push_str("<td></td><td></td>"),
            }
        }
        t.push_str("</tr>");
    }
    t.push_str("</tbody></table></div></details>");
    t
}

/// One drawing of the chart in geometry `g`.
fn svg(
    g: &Geometry,
    label: &str,
    unit: Unit,
    from: i64,
    to: i64,
    series: &[Series],
    ceiling: Option<f64>,
) -> String {
    let Geometry { w, h, left, right, top: tm, bottom: bm, .. } = *g;
    let span = (to - from).max(1) as f64;
    let data_max =
        series.iter().flat_map(|s| s.points.iter().flatten()).map(|p| p.max).fold(0.0f64, f64::max);
    let top = nice_ceiling(ceiling.unwrap_or(0.0).max(data_max), unit);
    let x = |ts: i64| left + (ts - from) as f64 / span * (w - left - right);
    let y = |v: f64| tm + (1.0 - (v / top).clamp(0.0, 1.0)) * (h - tm - bm);

    let mut svg = String::with_capacity(8192);
    let _ = write!(
        svg,
        r#"<svg class="chart{}" viewBox="0 0 {w} {h}" role="img" aria-label="{}" xmlns="http://www.w3.org/2000/svg">"#,
        g.class,
        escape(label)
    );
    // Value axis: 4 gridlines with labels.
    for i in 0..=4 {
        let v = top * f64::from(i) / 4.0;
        let yy = y(v);
        let _ = write!(
            svg,
            r#"<line class="grid" x1="{left}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}"/><text class="tick" x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            w - right,
            left - 6.0,
            yy + 4.0,
            escape(&unit.format(v))
        );
    }
    // Time axis, in UTC.
    let last = g.time_labels.max(2) - 1;
    for i in 0..=last {
        let ts = from + ((to - from) as f64 * f64::from(i) / f64::from(last)) as i64;
        let xx = x(ts);
        let anchor = match i {
            0 => "start",
            i if i == last => "end",
            _ => "middle",
        };
        let _ = write!(
            svg,
            r#"<text class="tick" x="{xx:.1}" y="{:.1}" text-anchor="{anchor}">{}</text>"#,
            h - 8.0,
            escape(&time_label(ts, to - from))
        );
    }
    let _ = write!(
        svg,
        r#"<line class="axis" x1="{left}" y1="{:.1}" x2="{:.1}" y2="{:.1}"/>"#,
        h - bm,
        w - right,
        h - bm
    );

    for s in series {
        // Contiguous runs of buckets with data; a missing bucket breaks the line.
        for run in s.points.split(Option::is_none).filter(|r| !r.is_empty()) {
            let pts: Vec<Point> = run.iter().flatten().copied().collect();
            if pts.iter().any(|p| p.n > 1 && p.max > p.min) {
                let mut band = String::new();
                for p in &pts {
                    let _ = write!(band, "{:.1},{:.1} ", x(p.ts), y(p.max));
                }
                for p in pts.iter().rev() {
                    let _ = write!(band, "{:.1},{:.1} ", x(p.ts), y(p.min));
                }
                let _ = write!(
                    svg,
                    r#"<polygon class="band {}" points="{}"/>"#,
                    s.class,
                    band.trim_end()
                );
            }
            if pts.len() == 1 {
                // A lone point has no line to sit on: draw it as a visible dot.
                let (cx, cy) = (x(pts[0].ts), y(pts[0].avg));
                let _ = write!(
                    svg,
                    r#"<circle class="dot {}" cx="{cx:.1}" cy="{cy:.1}" r="3"/>"#,
                    s.class
                );
            }
            let line: Vec<String> =
                pts.iter().map(|p| format!("{:.1},{:.1}", x(p.ts), y(p.avg))).collect();
            let _ =
                write!(svg, r#"<polyline class="line {}" points="{}"/>"#, s.class, line.join(" "));
            for p in pts.iter().filter(|_| g.tooltips) {
                let tip = if p.n > 1 {
                    format!(
                        "{} {}: avg {}, min {}, max {} ({} samples)",
                        s.name,
                        view::absolute(p.ts),
                        unit.format(p.avg),
                        unit.format(p.min),
                        unit.format(p.max),
                        p.n
                    )
                } else {
                    format!("{} {}: {}", s.name, view::absolute(p.ts), unit.format(p.avg))
                };
                let _ = write!(
                    svg,
                    r#"<circle class="pt {}" cx="{:.1}" cy="{:.1}" r="3"><title>{}</title></circle>"#,
                    s.class,
                    x(p.ts),
                    y(p.avg),
                    escape(&tip)
                );
            }
        }
    }
    if series.iter().all(|s| s.points.iter().all(Option::is_none)) {
        let _ = write!(
            svg,
            r#"<text class="nodata" x="{:.1}" y="{:.1}" text-anchor="middle">no data in this range</text>"#,
            (left + w - right) / 2.0,
            (tm + h - bm) / 2.0
        );
    }
    svg.push_str("</svg>");
    svg
}

/// A round top for the value axis at or above `v`.
fn nice_ceiling(v: f64, unit: Unit) -> f64 {
    if unit == Unit::Percent {
        return 100.0;
    }
    if v <= 0.0 {
        return 1024.0;
    }
    let base = if matches!(unit, Unit::Bytes | Unit::BytesPerSec) { 1024f64 } else { 10f64 };
    let mag = base.powf(v.log(base).floor());
    for m in [
        1.0, 2.0, 2.5, 4.0, 5.0, 8.0, 10.0, 16.0, 20.0, 25.0, 40.0, 50.0, 80.0, 100.0, 128.0,
        256.0, 512.0, 1024.0,
    ] {
        if mag * m >= v {
            return mag * m;
        }
    }
    v
}

/// A time label fitting the range: times of day for short ranges, dates for long ones (UTC).
fn time_label(ts: i64, span_ms: i64) -> String {
    let full = view::absolute(ts); // "YYYY-MM-DD HH:MM:SS UTC"
    if span_ms <= 36 * 3_600_000 {
        full.get(11..16).unwrap_or(&full).to_string()
    } else if span_ms <= 90 * 86_400_000 {
        format!("{} {}", full.get(5..10).unwrap_or(&full), full.get(11..16).unwrap_or(""))
    } else {
        full.get(0..10).unwrap_or(&full).to_string()
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(ts: i64, v: f64) -> Option<Point> {
        Some(Point { ts, min: v, avg: v, max: v, n: 1 })
    }

    #[test]
    fn gaps_split_the_line_instead_of_joining_across_them() {
        let pts = [p(0, 10.0), p(10, 20.0), None, p(30, 30.0), p(40, 40.0)];
        let svg = render(
            "cpu",
            Unit::Percent,
            0,
            50,
            &[Series { name: "CPU", class: "cpu", points: &pts }],
            None,
        );
        let wide = &svg[..svg.find("</svg>").unwrap()];
        assert_eq!(wide.matches("<polyline").count(), 2, "one line per run of data");
        assert_eq!(svg.matches("<title>").count(), 4, "a tooltip per point");
        assert!(svg.contains("100.0 %"), "percent axis tops at 100");
        let lone = [None, p(20, 5.0), None];
        let svg = render(
            "cpu",
            Unit::Percent,
            0,
            30,
            &[Series { name: "CPU", class: "cpu", points: &lone }],
            None,
        );
        assert!(svg.contains("<circle class=\"dot cpu\""), "a lone point is drawn as a dot");
    }

    #[test]
    fn buckets_of_many_samples_get_a_min_max_band() {
        let pts = [
            Some(Point { ts: 0, min: 1.0, avg: 2.0, max: 5.0, n: 30 }),
            Some(Point { ts: 10, min: 1.0, avg: 3.0, max: 4.0, n: 30 }),
        ];
        let svg = render(
            "disk",
            Unit::BytesPerSec,
            0,
            20,
            &[Series { name: "read", class: "rd", points: &pts }],
            None,
        );
        assert!(svg.contains("<polygon class=\"band rd\""));
        assert!(svg.contains("min 1 B/s, max 5 B/s (30 samples)"));
    }

    /// The drawing's labels keep their size on a phone only if a narrower drawing exists, and
    /// the values must be readable without a mouse: a summary and a table, and a legend
    /// telling two lines apart.
    #[test]
    fn a_chart_has_a_narrow_drawing_a_summary_a_legend_and_its_data_as_a_table() {
        let read = [p(0, 10.0), p(10, 30.0), None, p(30, 20.0)];
        let write = [p(0, 1.0), None, None, p(30, 4.0)];
        let html = render(
            "Disk",
            Unit::BytesPerSec,
            0,
            40,
            &[
                Series { name: "read", class: "s1", points: &read },
                Series { name: "write", class: "s2", points: &write },
            ],
            None,
        );
        assert_eq!(html.matches("<svg class=\"chart\"").count(), 1, "one wide drawing");
        assert_eq!(
            html.matches("<svg class=\"chart chart-narrow\"").count(),
            1,
            "and a narrow one"
        );
        let narrow = &html[html.find("chart-narrow").unwrap()..];
        let narrow = &narrow[..narrow.find("</svg>").unwrap()];
        assert_eq!(narrow.matches("text-anchor=\"middle\"").count(), 1, "3 time labels: {narrow}");
        assert!(html.contains("aria-label=\"Disk: read: latest 20 B/s, average 20 B/s, lowest 10 B/s, highest 30 B/s; write: latest 4 B/s"), "{html}");
        assert!(html.contains("<ul class=\"chart-legend\"><li><span class=\"key s1\" aria-hidden=\"true\"></span>read</li><li><span class=\"key s2\" aria-hidden=\"true\"></span>write</li></ul>"));
        assert!(
            html.contains("<details class=\"chart-data\"><summary>Disk data as a table</summary>")
        );
        let table = &html[html.find("<tbody>").unwrap()..];
        assert_eq!(table.matches("<tr>").count(), 3, "one row per time with data: {table}");
        let one = line("vCPUs", Unit::Count, 0, 20, &[p(0, 2.0), p(10, 4.0)]);
        assert!(!one.contains("chart-legend"), "one line needs no legend");
    }

    #[test]
    fn an_empty_range_says_so_and_user_text_is_escaped() {
        let svg = render(
            "<script>",
            Unit::Bytes,
            0,
            10,
            &[Series { name: "mem", class: "m", points: &[None, None] }],
            Some(2048.0),
        );
        assert!(svg.contains("no data in this range"));
        assert!(!svg.contains("<details"), "no table of nothing");
        assert!(!svg.contains("<script>"));
        assert!(svg.contains("2 KiB"), "the ceiling sets the axis: {svg}");
    }
}
