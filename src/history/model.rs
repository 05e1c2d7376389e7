//! What the VM page draws: a range of history read at the finest resolution that fits
//! (raw samples, then 5-minute, hourly or daily rollups), bucketed to at most [`MAX_POINTS`]
//! points with min/avg/max per bucket; the power-state timeline with uptime; and
//! configuration changes in words.

use serde::Serialize;
use sqlx::SqlitePool;

use super::{rollup, store};
use crate::backend::VmConfig;
use crate::config::Settings;
use crate::db::now_ms;
use crate::domain::{PowerState, Resolution};
use crate::web::chart::Point;
use crate::web::format as view;

/// Most points a chart series gets, whatever the range.
pub const MAX_POINTS: i64 = 600;

/// Merges points (raw samples with n = 1, or rollup buckets) into `buckets` equal slices of
/// `[from, to)`: min of the minima, max of the maxima, averages weighted by sample count.
pub fn combine(points: &[Point], from: i64, to: i64, buckets: i64) -> Vec<Option<Point>> {
    let width = ((to - from) / buckets).max(1);
    let mut out: Vec<Option<Point>> = vec![None; buckets as usize];
    let mut sums = vec![0.0f64; buckets as usize];
    for p in points {
        let i = ((p.ts - from) / width).clamp(0, buckets - 1) as usize;
        sums[i] += p.avg * f64::from(p.n);
        let o = out[i].get_or_insert(Point {
            ts: from + i as i64 * width,
            min: p.min,
            avg: p.avg,
            max: p.max,
            n: 0,
        });
        o.min = o.min.min(p.min);
        o.max = o.max.max(p.max);
        o.n += p.n;
        o.avg = sums[i] / f64::from(o.n.max(1));
    }
    out
}

/// What the page draws for a range: six metric series, the state timeline and uptime.
pub struct History {
    /// CPU %, memory bytes, disk read, disk write, net rx, net tx (bytes/s).
    pub series: [Vec<Option<Point>>; 6],
    pub timeline: Vec<Span>,
    pub uptime: Option<f64>,
    pub samples: i64,
    /// Where the points come from, in words.
    pub source: String,
}

impl History {
    /// No samples: the VM page's live fragment shows only its head.
    pub fn empty() -> History {
        History {
            series: Default::default(),
            timeline: Vec::new(),
            uptime: None,
            samples: 0,
            source: String::new(),
        }
    }
}

/// Reads a range at the finest resolution that stays within about twice [`MAX_POINTS`] rows:
/// raw samples for short ranges, else 5-minute, hourly or daily rollups, with raw samples for
/// the part not rolled up yet (the last minutes).
pub async fn load_history(
    pool: &SqlitePool,
    settings: &Settings,
    host_id: i64,
    vm_id: i64,
    start: i64,
    end: i64,
) -> sqlx::Result<History> {
    let poll_ms = settings.poll_interval.as_millis().max(1) as i64;
    let span = end - start;
    let res = if span / poll_ms <= 2 * MAX_POINTS {
        None
    } else {
        Some(
            rollup::RESOLUTIONS
                .iter()
                .copied()
                .find(|r| span / (r * 1000) <= 2 * MAX_POINTS)
                .unwrap_or(86_400),
        )
    };
    let mut points: [Vec<Point>; 6] = Default::default();
    // (start ms, state, how long it may hold) for the timeline; running and known sample counts.
    let mut states: Vec<(i64, PowerState, i64)> = Vec::new();
    let (mut up, mut known, mut samples) = (0i64, 0i64, 0i64);
    let mut raw_from = start;
    // The chosen resolution covers the range up to where it is rolled up; each finer one then
    // covers the rest up to its own progress, and raw samples only the last minutes. (Reading
    // the tail of a daily chart from raw samples would cost a lookup per poll of a whole day.)
    let tiers: Vec<i64> = match res {
        Some(r) => rollup::RESOLUTIONS.iter().copied().filter(|t| *t <= r).rev().collect(),
        None => Vec::new(),
    };
    for res in tiers {
        let done = rollup::done_until_ms(pool, res).await?.unwrap_or(raw_from).clamp(raw_from, end);
        if done <= raw_from {
            continue;
        }
        let rows = rollup::rows(pool, res, vm_id, raw_from, done).await?;
        let tier_from = raw_from;
        raw_from = done;
        let push = |dst: &mut Vec<Point>,
                    ts: i64,
                    n: i64,
                    min: Option<i64>,
                    sum: Option<i64>,
                    max: Option<i64>,
                    scale: f64| {
            if let (true, Some(min), Some(sum), Some(max)) = (n > 0, min, sum, max) {
                dst.push(Point {
                    ts,
                    min: min as f64 * scale,
                    avg: sum as f64 / n as f64 * scale,
                    max: max as f64 * scale,
                    n: n.clamp(0, u32::MAX as i64) as u32,
                });
            }
        };
        // The first tier includes the bucket the range starts in; the finer ones start exactly
        // where the coarser one stopped (progress marks are bucket boundaries).
        let lowest = if tier_from == start { tier_from - res * 1000 + 1 } else { tier_from };
        for r in rows.iter().filter(|r| r.bucket * 1000 >= lowest && r.bucket * 1000 < raw_from) {
            let ts = r.bucket * 1000;
            push(&mut points[0], ts, r.cpu_n, r.cpu_min, r.cpu_sum, r.cpu_max, 0.01);
            push(&mut points[1], ts, r.mem_n, r.mem_min, r.mem_sum, r.mem_max, 1024.0);
            push(&mut points[2], ts, r.rd_n, r.rd_min, r.rd_sum, r.rd_max, 1.0);
            push(&mut points[3], ts, r.wr_n, r.wr_min, r.wr_sum, r.wr_max, 1.0);
            push(&mut points[4], ts, r.rx_n, r.rx_min, r.rx_sum, r.rx_max, 1.0);
            push(&mut points[5], ts, r.tx_n, r.tx_min, r.tx_sum, r.tx_max, 1.0);
            states.push((ts, PowerState::dominant(r.n, r.up, r.paused, r.off), res * 1000));
            up += r.up;
            known += r.up + r.paused + r.off;
            samples += r.n;
        }
    }
    let raw = store::samples_between(pool, host_id, vm_id, raw_from, end).await?;
    for r in &raw {
        let mut add = |i: usize, v: Option<f64>| {
            if let Some(v) = v {
                points[i].push(Point { ts: r.ts, min: v, avg: v, max: v, n: 1 });
            }
        };
        add(0, r.cpu_pct);
        add(1, r.memory_used_kib.map(|k| k as f64 * 1024.0));
        add(2, r.disk_read_bps);
        add(3, r.disk_write_bps);
        add(4, r.net_rx_bps);
        add(5, r.net_tx_bps);
        let state = r.state;
        states.push((r.ts, state, 3 * poll_ms));
        if state != PowerState::Unknown {
            known += 1;
        }
        if state == PowerState::Running {
            up += 1;
        }
        samples += 1;
    }
    let buckets = (span / poll_ms).clamp(1, MAX_POINTS);
    let series = points.map(|p| combine(&p, start, end, buckets));
    let (timeline, _) = timeline(&states, start, end);
    Ok(History {
        series,
        timeline,
        uptime: (known > 0).then(|| up as f64 / known as f64 * 100.0),
        samples,
        source: res.map_or(Resolution::Raw, Resolution::from_bucket_secs).label().to_string(),
    })
}

#[derive(Serialize)]
pub struct Span {
    state: &'static str,
    label: String,
    /// Position and width in percent of the range.
    left: f64,
    width: f64,
    title: String,
}

/// Power-state spans over the range: each entry holds until the next one, or for at most its
/// own hold time (after which the time is unknown: vmdeck had no data). Returns the spans and
/// the share of known time spent running.
fn timeline(rows: &[(i64, PowerState, i64)], from: i64, to: i64) -> (Vec<Span>, Option<f64>) {
    let span = (to - from).max(1) as f64;
    let mut spans: Vec<Span> = Vec::new();
    let (mut running, mut known) = (0i64, 0i64);
    for (i, &(ts, state, hold)) in rows.iter().enumerate() {
        let next = rows.get(i + 1).map_or(to.min(now_ms()), |n| n.0);
        let end = next.min(ts + hold).min(to);
        let begin = ts.max(from);
        if end <= begin {
            continue;
        }
        if state != PowerState::Unknown {
            known += end - begin;
        }
        if state == PowerState::Running {
            running += end - begin;
        }
        let class = state.as_str();
        let left = (begin - from) as f64 / span * 100.0;
        match spans.last_mut() {
            Some(last) if last.state == class && (last.left + last.width - left).abs() < 1e-9 => {
                last.width = (end - from) as f64 / span * 100.0 - last.left;
            }
            _ => spans.push(Span {
                state: class,
                label: state.label().to_string(),
                left,
                width: (end - begin) as f64 / span * 100.0,
                title: String::new(),
            }),
        }
    }
    for s in &mut spans {
        let start = from + (s.left / 100.0 * span) as i64;
        let end = from + ((s.left + s.width) / 100.0 * span) as i64;
        s.title = format!("{} from {} to {}", s.label, view::absolute(start), view::absolute(end));
    }
    let uptime = (known > 0).then(|| running as f64 / known as f64 * 100.0);
    (spans, uptime)
}

/// The timeline as an SVG strip: one rectangle per span with its tooltip (SVG attributes,
/// not inline styles: the Content-Security-Policy allows no inline style). Colour is not the
/// only carrier: a legend names each state shown with its share of the range, and the spans
/// are listed as text in a `<details>` (tooltips need a mouse).
pub fn timeline_svg(spans: &[Span]) -> String {
    let esc = |t: &str| t.replace('&', "&amp;").replace('<', "&lt;").replace('"', "&quot;");
    // Each state shown, in order of first appearance, with its share of the range.
    let mut shares: Vec<(&str, &str, f64)> = Vec::new();
    for s in spans {
        match shares.iter_mut().find(|(state, _, _)| *state == s.state) {
            Some(share) => share.2 += s.width,
            None => shares.push((s.state, &s.label, s.width)),
        }
    }
    let known: f64 = shares.iter().map(|s| s.2).sum();
    let words: Vec<String> =
        shares.iter().map(|(_, label, pct)| format!("{label} {}", share(*pct))).collect();
    let mut label = format!("Power state over the range: {}", words.join(", "));
    if known < 99.5 {
        label.push_str(&format!(", no data {}", share(100.0 - known)));
    }
    let mut svg = format!(
        r#"<svg class="timeline-svg" viewBox="0 0 1000 24" preserveAspectRatio="none" role="img" aria-label="{}" xmlns="http://www.w3.org/2000/svg"><rect class="nodata" x="0" y="0" width="1000" height="24"/>"#,
        esc(&label)
    );
    for s in spans {
        svg.push_str(&format!(
            r#"<rect class="state-{}" x="{:.2}" y="0" width="{:.2}" height="24"><title>{}</title></rect>"#,
            s.state,
            s.left * 10.0,
            (s.width * 10.0).max(0.5),
            esc(&s.title)
        ));
    }
    svg.push_str("</svg>");
    if spans.is_empty() {
        return svg;
    }
    svg.push_str(r#"<ul class="timeline-legend"><li class="muted">Share of this range:</li>"#);
    for (state, label, pct) in &shares {
        svg.push_str(&format!(
            r#"<li><span class="swatch state-{state}" aria-hidden="true"></span>{} ({})</li>"#,
            esc(label),
            share(*pct)
        ));
    }
    if known < 99.5 {
        svg.push_str(&format!(
            r#"<li><span class="swatch nodata" aria-hidden="true"></span>no data ({})</li>"#,
            share(100.0 - known)
        ));
    }
    svg.push_str("</ul>");
    svg.push_str(r#"<details class="chart-data"><summary>Power states as a list</summary><ol>"#);
    for s in spans {
        svg.push_str(&format!("<li>{}</li>", esc(&s.title)));
    }
    svg.push_str("</ol></details>");
    svg
}

/// A share of the range in words: a sliver is "<1 %", not "0 %" (nor "100 %" for all but one).
fn share(pct: f64) -> String {
    match pct {
        p if p > 0.0 && p < 0.5 => "<1 %".to_string(),
        p if p > 99.5 && p < 100.0 => ">99 %".to_string(),
        p => format!("{p:.0} %"),
    }
}

/// What changed between two configuration versions, in words.
pub fn describe_changes(old: &VmConfig, new: &VmConfig) -> Vec<String> {
    let mut c = Vec::new();
    if old.vcpus != new.vcpus {
        c.push(format!("vCPUs {} → {}", old.vcpus, new.vcpus));
    }
    if old.memory_max_kib != new.memory_max_kib {
        c.push(format!(
            "memory {} → {}",
            view::bytes(old.memory_max_kib * 1024),
            view::bytes(new.memory_max_kib * 1024)
        ));
    }
    if old.memory_current_kib != new.memory_current_kib {
        c.push(format!(
            "current memory {} → {}",
            view::bytes(old.memory_current_kib * 1024),
            view::bytes(new.memory_current_kib * 1024)
        ));
    }
    for d in &new.disks {
        match old.disks.iter().find(|o| o.target == d.target) {
            None => c.push(format!(
                "disk {} added ({})",
                d.target,
                d.source.as_deref().unwrap_or("no source")
            )),
            Some(o) if o.capacity_bytes != d.capacity_bytes => c.push(format!(
                "disk {} resized {} → {}",
                d.target,
                o.capacity_bytes.map_or("?".into(), view::bytes),
                d.capacity_bytes.map_or("?".into(), view::bytes)
            )),
            Some(o) if o.source != d.source => {
                c.push(format!("disk {} now {}", d.target, d.source.as_deref().unwrap_or("empty")))
            }
            _ => {}
        }
    }
    for o in old.disks.iter().filter(|o| !new.disks.iter().any(|d| d.target == o.target)) {
        c.push(format!("disk {} removed", o.target));
    }
    for n in new.nics.iter().filter(|n| !old.nics.iter().any(|o| o.mac == n.mac)) {
        c.push(format!("NIC {} added ({})", n.mac, n.source.as_deref().unwrap_or(&n.kind)));
    }
    for o in old.nics.iter().filter(|o| !new.nics.iter().any(|n| n.mac == o.mac)) {
        c.push(format!("NIC {} removed", o.mac));
    }
    if old.autostart != new.autostart {
        c.push(format!("autostart {}", if new.autostart { "on" } else { "off" }));
    }
    if old.graphics != new.graphics {
        let kind = |g: &Option<String>| g.as_deref().map_or("none".into(), str::to_uppercase);
        c.push(format!("display {} → {}", kind(&old.graphics), kind(&new.graphics)));
    }
    if old.os_type != new.os_type {
        c.push(format!("OS type {} → {}", old.os_type, new.os_type));
    }
    if c.is_empty() {
        c.push("other details changed".into());
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(ts: i64, v: f64) -> Point {
        Point { ts, min: v, avg: v, max: v, n: 1 }
    }

    #[test]
    fn buckets_keep_min_avg_max_and_leave_gaps() {
        let b = combine(&[raw(0, 1.0), raw(5, 3.0), raw(25, 7.0)], 0, 30, 3);
        assert_eq!(b[0], Some(Point { ts: 0, min: 1.0, avg: 2.0, max: 3.0, n: 2 }));
        assert_eq!(b[1], None, "no sample, no point: a gap");
        assert_eq!(b[2].unwrap().avg, 7.0);
        // A rollup bucket of 10 samples weighs ten times one raw sample.
        let mixed = combine(
            &[Point { ts: 0, min: 0.0, avg: 10.0, max: 20.0, n: 10 }, raw(1, 21.0)],
            0,
            10,
            1,
        );
        assert_eq!(mixed[0], Some(Point { ts: 0, min: 0.0, avg: 11.0, max: 21.0, n: 11 }));
    }

    #[test]
    fn the_timeline_counts_uptime_and_stops_at_gaps() {
        // Running 0-20, off 20-30, then no data for long (gap), running again at 100.
        use PowerState::{Running, ShutOff};
        let rows = [(0, Running, 10), (10, Running, 10), (20, ShutOff, 10), (100, Running, 10)];
        let (spans, uptime) = timeline(&rows, 0, 110);
        let states: Vec<&str> = spans.iter().map(|s| s.state).collect();
        assert_eq!(states, vec!["running", "shut_off", "running"]);
        // Known time: 0-20 running, 20-30 off, 100-110 running -> 30 of 40 ms.
        assert_eq!(uptime.map(|u| u.round()), Some(75.0));
    }

    /// Colour alone does not tell the states apart: a legend names them with their shares, the
    /// drawing's accessible name says the same, and the spans are listed as text.
    #[test]
    fn the_timeline_has_a_legend_and_its_spans_as_text() {
        use PowerState::{Running, ShutOff};
        let rows = [(0, Running, 10), (10, Running, 10), (20, ShutOff, 10), (100, Running, 10)];
        let (spans, _) = timeline(&rows, 0, 110);
        let html = timeline_svg(&spans);
        assert!(
            html.contains("aria-label=\"Power state over the range: running 27 %, shut off 9 %, no data 64 %\""),
            "{html}"
        );
        assert!(html.contains("<span class=\"swatch state-running\" aria-hidden=\"true\"></span>running (27 %)</li>"), "{html}");
        assert!(html
            .contains("<span class=\"swatch nodata\" aria-hidden=\"true\"></span>no data (64 %)"));
        let list = &html[html.find("<ol>").unwrap()..];
        assert_eq!(list.matches("<li>").count(), 3, "one line per span: {list}");
        assert!(list.contains("shut off from"), "{list}");
        assert_eq!(
            (share(0.2), share(99.8), share(50.0)),
            ("<1 %".into(), ">99 %".into(), "50 %".into())
        );
    }

    #[test]
    fn configuration_changes_are_described() {
        let old = VmConfig { vcpus: 2, memory_max_kib: 1 << 20, ..VmConfig::default() };
        let mut new = old.clone();
        new.vcpus = 4;
        new.memory_max_kib = 2 << 20;
        new.disks.push(crate::backend::Disk {
            target: "vdb".into(),
            device: "disk".into(),
            source: Some("/img/b.qcow2".into()),
            bus: None,
            capacity_bytes: Some(1 << 30),
        });
        let c = describe_changes(&old, &new);
        assert_eq!(c, vec!["vCPUs 2 → 4", "memory 1 GiB → 2 GiB", "disk vdb added (/img/b.qcow2)"]);
    }
}
