//! The page of one VM (`GET /vms/<host>/<uuid>`): its configuration now, history charts over a
//! chosen range, a power-state timeline with uptime, configuration and IP address history, and
//! links to its audit entries. A VM that is gone keeps its page.
//!
//! Charts read raw samples through the `polls` table (one primary-key lookup per poll of the
//! VM's host: samples are clustered by time, not by VM), bucketed to at most
//! [`MAX_POINTS`] points with min/avg/max per bucket.

mod chart;
pub mod rollup;

use std::sync::Arc;

use rocket::request::FlashMessage;
use rocket::{Route, State};
use rocket_dyn_templates::Template;
use serde::Serialize;
use sqlx::SqlitePool;

use crate::audit::store as audit;
use crate::auth::{Chrome, Role, Viewer};
use crate::backend::{IpAddress, PowerAction, PowerState, VmConfig};
use crate::config::Settings;
use crate::db::{now_ms, Db};
use crate::error::AppError;
use crate::poller::Hosts;
use crate::view;
use chart::Series;
pub use chart::{Point, Unit};

/// A one-line chart, for pages outside this module (reports).
pub fn line_chart(name: &str, unit: Unit, from: i64, to: i64, points: &[Option<Point>]) -> String {
    chart::render(name, unit, from, to, &[Series { name, class: "s1", points }], None)
}

pub fn routes() -> Vec<Route> {
    rocket::routes![vm_page, vm_csv]
}

/// Most points a chart series gets, whatever the range.
pub const MAX_POINTS: i64 = 600;

/// The ranges offered, by their query value.
const RANGES: [(&str, &str, i64); 5] = [
    ("1h", "1 hour", 3_600_000),
    ("24h", "24 hours", 86_400_000),
    ("7d", "7 days", 7 * 86_400_000),
    ("30d", "30 days", 30 * 86_400_000),
    ("1y", "1 year", 365 * 86_400_000),
];

#[derive(sqlx::FromRow)]
struct VmRow {
    id: i64,
    host_id: i64,
    name: String,
    state: String,
    raw_state: String,
    state_reason: String,
    state_since: i64,
    first_seen: i64,
    gone_at: Option<i64>,
    addresses: String,
    body: Option<String>,
}

#[derive(sqlx::FromRow)]
struct SampleRow {
    ts: i64,
    state: String,
    cpu_pct: Option<f64>,
    memory_used_kib: Option<i64>,
    disk_read_bps: Option<f64>,
    disk_write_bps: Option<f64>,
    net_rx_bps: Option<f64>,
    net_tx_bps: Option<f64>,
}

async fn samples_between(
    pool: &SqlitePool,
    host_id: i64,
    vm_id: i64,
    from: i64,
    to: i64,
) -> sqlx::Result<Vec<SampleRow>> {
    sqlx::query_as(
        "SELECT s.ts, s.state, s.cpu_pct, s.memory_used_kib, s.disk_read_bps, s.disk_write_bps,
                s.net_rx_bps, s.net_tx_bps
         FROM polls p JOIN samples s ON s.ts = p.started_at AND s.vm_id = ?
         WHERE p.host_id = ? AND p.ok = 1 AND p.started_at >= ? AND p.started_at < ?
         ORDER BY p.started_at",
    )
    .bind(vm_id)
    .bind(host_id)
    .bind(from)
    .bind(to)
    .fetch_all(pool)
    .await
}

/// Merges points (raw samples with n = 1, or rollup buckets) into `buckets` equal slices of
/// `[from, to)`: min of the minima, max of the maxima, averages weighted by sample count.
fn combine(points: &[Point], from: i64, to: i64, buckets: i64) -> Vec<Option<Point>> {
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
struct History {
    /// CPU %, memory bytes, disk read, disk write, net rx, net tx (bytes/s).
    series: [Vec<Option<Point>>; 6],
    timeline: Vec<Span>,
    uptime: Option<f64>,
    samples: i64,
    /// Where the points come from, in words.
    source: String,
}

/// Reads a range at the finest resolution that stays within about twice [`MAX_POINTS`] rows:
/// raw samples for short ranges, else 5-minute, hourly or daily rollups, with raw samples for
/// the part not rolled up yet (the last minutes).
async fn load_history(
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
    let mut states: Vec<(i64, &'static str, i64)> = Vec::new();
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
            let other = r.n - r.up - r.paused - r.off;
            let dominant =
                [(r.up, "running"), (r.paused, "paused"), (r.off, "shut_off"), (other, "unknown")]
                    .into_iter()
                    .max_by_key(|(c, _)| *c)
                    .map_or("unknown", |(_, s)| s);
            states.push((ts, dominant, res * 1000));
            up += r.up;
            known += r.up + r.paused + r.off;
            samples += r.n;
        }
    }
    let raw = samples_between(pool, host_id, vm_id, raw_from, end).await?;
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
        let state = PowerState::parse(&r.state).unwrap_or(PowerState::Unknown);
        states.push((r.ts, state.as_str(), 3 * poll_ms));
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
        source: match res {
            None => "raw samples".into(),
            Some(300) => "5-minute rollups".into(),
            Some(3600) => "hourly rollups".into(),
            Some(_) => "daily rollups".into(),
        },
    })
}

#[derive(Serialize)]
struct Span {
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
fn timeline(rows: &[(i64, &'static str, i64)], from: i64, to: i64) -> (Vec<Span>, Option<f64>) {
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
        let state = PowerState::parse(state).unwrap_or(PowerState::Unknown);
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

/// The timeline as an SVG strip: one rectangle per span with its tooltip. (SVG attributes,
/// not inline styles: the Content-Security-Policy allows no inline style.)
fn timeline_svg(spans: &[Span]) -> String {
    let mut svg = String::from(
        r#"<svg class="timeline-svg" viewBox="0 0 1000 24" preserveAspectRatio="none" xmlns="http://www.w3.org/2000/svg"><rect class="nodata" x="0" y="0" width="1000" height="24"/>"#,
    );
    for s in spans {
        svg.push_str(&format!(
            r#"<rect class="state-{}" x="{:.2}" y="0" width="{:.2}" height="24"><title>{}</title></rect>"#,
            s.state,
            s.left * 10.0,
            (s.width * 10.0).max(0.5),
            s.title.replace('&', "&amp;").replace('<', "&lt;")
        ));
    }
    svg.push_str("</svg>");
    svg
}

#[derive(Serialize)]
struct ChangeView {
    when: String,
    changes: Vec<String>,
}

/// What changed between two configuration versions, in words.
fn describe_changes(old: &VmConfig, new: &VmConfig) -> Vec<String> {
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
    if old.os_type != new.os_type {
        c.push(format!("OS type {} → {}", old.os_type, new.os_type));
    }
    if c.is_empty() {
        c.push("other details changed".into());
    }
    c
}

#[derive(Serialize)]
struct IpHistoryView {
    addr: String,
    mac: String,
    source: String,
    from: String,
    to: String,
}

#[derive(Serialize)]
struct ChartView {
    title: &'static str,
    svg: String,
}

#[derive(Serialize)]
struct RangeOption {
    key: &'static str,
    label: &'static str,
    href: String,
    selected: bool,
}

#[derive(Serialize)]
struct VmPage {
    title: String,
    chrome: Chrome,
    host: String,
    uuid: String,
    name: String,
    gone: Option<String>,
    state: &'static str,
    state_label: &'static str,
    since: String,
    raw_state: String,
    reason: String,
    first_seen: String,
    config: Option<VmConfig>,
    memory: String,
    memory_current: String,
    disks: Vec<(String, String, String, String, String)>,
    ips: Vec<String>,
    actions: Vec<(&'static str, &'static str, Option<String>)>,
    pending: Option<String>,
    ranges: Vec<RangeOption>,
    range_key: String,
    range_label: String,
    from_text: String,
    to_text: String,
    notices: Vec<String>,
    charts: Vec<ChartView>,
    timeline: Vec<Span>,
    timeline_svg: String,
    uptime: Option<String>,
    samples: i64,
    source: String,
    changes: Vec<ChangeView>,
    ip_history: Vec<IpHistoryView>,
    audit_href: String,
    power_href: String,
    back: String,
}

/// The range a page or CSV asked for.
struct RangeChoice {
    start: i64,
    end: i64,
    label: String,
    chosen: String,
    notices: Vec<String>,
    from_text: String,
    to_text: String,
}

/// Reads `range` (a named range or `custom`) and `from`/`to` (UTC); anything wrong becomes a
/// notice and the last 24 hours.
fn parse_range(range: Option<&str>, from: Option<&str>, to: Option<&str>, now: i64) -> RangeChoice {
    let mut notices = Vec::new();
    let parse = |s: &str| crate::audit::parse_time(s, false);
    let (mut start, mut end, mut label) = (now - 86_400_000, now, "24 hours".to_string());
    let chosen = range.unwrap_or("24h");
    match RANGES.iter().find(|(k, ..)| *k == chosen) {
        Some((_, l, ms)) => {
            start = now - ms;
            label = l.to_string();
        }
        None if chosen == "custom" => {}
        None => notices.push(format!("Unknown range {chosen:?}: showing 24 hours.")),
    }
    let (from_text, to_text) =
        (from.unwrap_or("").trim().to_string(), to.unwrap_or("").trim().to_string());
    if chosen == "custom" || !from_text.is_empty() || !to_text.is_empty() {
        match (parse(&from_text), parse(&to_text).or(Some(now))) {
            (Some(a), Some(b)) if a < b && b - a <= 10 * 366 * 86_400_000 && a >= 0 => {
                start = a;
                end = b;
                label = format!("{} to {}", view::absolute(a), view::absolute(b));
            }
            (Some(a), Some(b)) if a >= b => notices.push("The custom range ends before it starts: showing 24 hours.".into()),
            (Some(a), Some(_)) if a < 0 => notices.push("The custom range starts before 1970: showing 24 hours.".into()),
            (Some(_), Some(_)) => notices.push("The custom range is longer than ten years: showing 24 hours.".into()),
            _ => notices.push("Cannot read the custom range (use YYYY-MM-DD or YYYY-MM-DDTHH:MM, UTC): showing 24 hours.".into()),
        }
    }

    RangeChoice { start, end, label, chosen: chosen.to_string(), notices, from_text, to_text }
}

#[allow(clippy::too_many_arguments)] // route parameters and guards
#[rocket::get("/vms/<host>/<uuid>?<range>&<from>&<to>", rank = 2)]
async fn vm_page(
    user: Viewer<'_>,
    host: &str,
    uuid: &str,
    range: Option<&str>,
    from: Option<&str>,
    to: Option<&str>,
    db: &State<Db>,
    hosts: &State<Arc<Hosts>>,
    settings: &State<Settings>,
    flash: Option<FlashMessage<'_>>,
) -> Result<Template, AppError> {
    let pool = &db.0;
    let vm: VmRow = sqlx::query_as(
        "SELECT v.id, v.host_id, v.name, v.state, v.raw_state, v.state_reason, v.state_since, v.first_seen,
                v.gone_at, v.addresses, c.body
         FROM vms v JOIN hosts h ON h.id = v.host_id LEFT JOIN vm_configs c ON c.id = v.config_id
         WHERE h.name = ? AND v.uuid = ?",
    )
    .bind(host)
    .bind(uuid)
    .fetch_optional(pool)
    .await?
    .ok_or_else(|| AppError::NotFound(format!("vmdeck has never seen a VM {uuid:?} on a host named {host:?}.")))?;

    // The range: a named one, or a custom from/to (UTC); anything wrong is said, not fatal.
    let now = now_ms();
    let RangeChoice { start, end, label, chosen, notices, from_text, to_text } =
        parse_range(range, from, to, now);
    let history = load_history(pool, settings, vm.host_id, vm.id, start, end).await?;
    let [cpu, mem, rd, wr, rx, tx] = &history.series;
    let config: Option<VmConfig> = vm.body.as_deref().and_then(|b| serde_json::from_str(b).ok());
    let allocated = config.as_ref().map(|c| c.memory_current_kib as f64 * 1024.0);
    let charts = vec![
        ChartView {
            title: "CPU (% of the VM's vCPUs)",
            svg: chart::render(
                "CPU",
                Unit::Percent,
                start,
                end,
                &[Series { name: "CPU", class: "s1", points: cpu }],
                None,
            ),
        },
        ChartView {
            title: "Memory used (against the memory assigned)",
            svg: chart::render(
                "Memory",
                Unit::Bytes,
                start,
                end,
                &[Series { name: "used", class: "s1", points: mem }],
                allocated,
            ),
        },
        ChartView {
            title: "Disk read / write (bytes/s)",
            svg: chart::render(
                "Disk",
                Unit::BytesPerSec,
                start,
                end,
                &[
                    Series { name: "read", class: "s1", points: rd },
                    Series { name: "write", class: "s2", points: wr },
                ],
                None,
            ),
        },
        ChartView {
            title: "Network received / sent (bytes/s)",
            svg: chart::render(
                "Network",
                Unit::BytesPerSec,
                start,
                end,
                &[
                    Series { name: "received", class: "s1", points: rx },
                    Series { name: "sent", class: "s2", points: tx },
                ],
                None,
            ),
        },
    ];
    let (timeline, uptime) = (history.timeline, history.uptime);

    // Configuration history, newest first.
    let versions: Vec<(i64, String)> = sqlx::query_as(
        "SELECT valid_from, body FROM vm_configs WHERE vm_id = ? ORDER BY valid_from, id",
    )
    .bind(vm.id)
    .fetch_all(pool)
    .await?;
    let parsed: Vec<(i64, Option<VmConfig>)> =
        versions.into_iter().map(|(t, b)| (t, serde_json::from_str(&b).ok())).collect();
    let mut changes: Vec<ChangeView> = parsed
        .windows(2)
        .filter_map(|w| match (&w[0].1, &w[1].1) {
            (Some(a), Some(b)) => {
                Some(ChangeView { when: view::absolute(w[1].0), changes: describe_changes(a, b) })
            }
            _ => None,
        })
        .collect();
    changes.reverse();

    let ip_rows: Vec<(String, String, String, i64, Option<i64>)> = sqlx::query_as(
        "SELECT addr, mac, source, first_seen, ended_at FROM vm_addresses WHERE vm_id = ? ORDER BY first_seen DESC, addr LIMIT 200",
    )
    .bind(vm.id)
    .fetch_all(pool)
    .await?;
    let ip_history = ip_rows
        .into_iter()
        .map(|(addr, mac, source, first, ended)| IpHistoryView {
            addr,
            mac,
            source: source.replace('_', " "),
            from: view::absolute(first),
            to: ended.map_or_else(|| "now".into(), view::absolute),
        })
        .collect();

    let state = PowerState::parse(&vm.state).unwrap_or(PowerState::Unknown);
    let pending = audit::pending_power(pool)
        .await?
        .into_iter()
        .find(|p| p.host_name == host && p.vm_uuid == uuid)
        .map(|p| {
            format!("{} requested by {}, {}", p.action, p.user_name.unwrap_or_default(), p.status)
        });
    let back = format!("/vms/{host}/{uuid}");
    let power_href = format!("/vms/{host}/{uuid}/power");
    let actions = if user.0.can(Role::Operator)
        && vm.gone_at.is_none()
        && pending.is_none()
        && hosts.get(host).is_some()
    {
        PowerAction::ALL
            .iter()
            .filter(|a| a.applies_to(state))
            .map(|a| {
                let confirm = a.is_forced().then(|| {
                    let q = url::form_urlencoded::Serializer::new(String::new())
                        .append_pair("action", a.as_str())
                        .append_pair("back", &back)
                        .finish();
                    format!("{power_href}/confirm?{q}")
                });
                (a.as_str(), a.label(), confirm)
            })
            .collect()
    } else {
        Vec::new()
    };
    let ips: Vec<IpAddress> = serde_json::from_str(&vm.addresses).unwrap_or_default();
    let disks = config
        .as_ref()
        .map(|c| {
            c.disks
                .iter()
                .map(|d| {
                    (
                        d.target.clone(),
                        d.device.clone(),
                        d.bus.clone().unwrap_or_default(),
                        d.source.clone().unwrap_or_else(|| "(empty)".into()),
                        d.capacity_bytes.map_or("–".into(), view::bytes),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let ranges = RANGES
        .iter()
        .map(|(k, l, _)| RangeOption {
            key: k,
            label: l,
            href: format!("/vms/{host}/{uuid}?range={k}"),
            selected: *k == chosen,
        })
        .collect();
    Ok(Template::render(
        "history/vm",
        VmPage {
            title: vm.name.clone(),
            chrome: Chrome::new(user.0, flash, settings),
            host: host.to_string(),
            uuid: uuid.to_string(),
            gone: vm.gone_at.map(view::absolute),
            state: if vm.gone_at.is_some() { "gone" } else { state.as_str() },
            state_label: if vm.gone_at.is_some() { "gone" } else { state.label() },
            since: view::absolute(vm.state_since),
            raw_state: vm.raw_state,
            reason: vm.state_reason,
            first_seen: view::absolute(vm.first_seen),
            memory: config.as_ref().map_or("–".into(), |c| view::bytes(c.memory_max_kib * 1024)),
            memory_current: config
                .as_ref()
                .map_or("–".into(), |c| view::bytes(c.memory_current_kib * 1024)),
            config,
            disks,
            ips: ips
                .iter()
                .map(|i| {
                    format!(
                        "{}/{} ({}, {})",
                        i.addr,
                        i.prefix,
                        i.mac,
                        format!("{:?}", i.source).to_lowercase()
                    )
                })
                .collect(),
            actions,
            pending,
            ranges,
            range_key: chosen.clone(),
            range_label: label,
            from_text,
            to_text,
            notices,
            charts,
            timeline_svg: timeline_svg(&timeline),
            timeline,
            uptime: uptime.map(|u| format!("{u:.2} %")),
            samples: history.samples,
            source: history.source,
            changes,
            ip_history,
            audit_href: format!("/audit?vm={uuid}"),
            power_href,
            back,
            name: vm.name,
        },
    ))
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
        let rows =
            [(0, "running", 10), (10, "running", 10), (20, "shut_off", 10), (100, "running", 10)];
        let (spans, uptime) = timeline(&rows, 0, 110);
        let states: Vec<&str> = spans.iter().map(|s| s.state).collect();
        assert_eq!(states, vec!["running", "shut_off", "running"]);
        // Known time: 0-20 running, 20-30 off, 100-110 running -> 30 of 40 ms.
        assert_eq!(uptime.map(|u| u.round()), Some(75.0));
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

/// `GET /vms/<host>/<uuid>.csv`: the same history as the page's charts, one row per point.
/// A `<uuid>.csv` path segment; anything else does not match, so the page route gets it.
struct CsvFile<'r>(&'r str);

impl<'r> rocket::request::FromParam<'r> for CsvFile<'r> {
    type Error = ();

    fn from_param(param: &'r str) -> Result<Self, ()> {
        param.strip_suffix(".csv").map(CsvFile).ok_or(())
    }
}

#[allow(clippy::too_many_arguments)] // route parameters and guards
#[rocket::get("/vms/<host>/<file>?<range>&<from>&<to>", rank = 1)]
async fn vm_csv(
    _user: Viewer<'_>,
    host: &str,
    file: CsvFile<'_>,
    range: Option<&str>,
    from: Option<&str>,
    to: Option<&str>,
    db: &State<Db>,
    settings: &State<Settings>,
) -> Result<crate::audit::Csv, AppError> {
    let uuid = file.0;
    let pool = &db.0;
    let vm: Option<(i64, i64, String)> = sqlx::query_as(
        "SELECT v.id, v.host_id, v.name FROM vms v JOIN hosts h ON h.id = v.host_id WHERE h.name = ? AND v.uuid = ?",
    )
    .bind(host)
    .bind(uuid)
    .fetch_optional(pool)
    .await?;
    let (vm_id, host_id, name) = vm.ok_or_else(|| {
        AppError::NotFound(format!("vmdeck has never seen a VM {uuid:?} on a host named {host:?}."))
    })?;
    let r = parse_range(range, from, to, now_ms());
    let h = load_history(pool, settings, host_id, vm_id, r.start, r.end).await?;
    let mut w = csv::Writer::from_writer(Vec::new());
    let mut header = vec!["time_utc".to_string(), "samples".to_string()];
    for m in [
        "cpu_pct",
        "memory_used_bytes",
        "disk_read_bytes_per_s",
        "disk_write_bytes_per_s",
        "net_rx_bytes_per_s",
        "net_tx_bytes_per_s",
    ] {
        for k in ["avg", "min", "max"] {
            header.push(format!("{m}_{k}"));
        }
    }
    w.write_record(&header).map_err(|e| AppError::Internal(e.into()))?;
    let len = h.series[0].len();
    for i in 0..len {
        let points: Vec<Option<Point>> = h.series.iter().map(|s| s[i]).collect();
        let Some(ts) = points.iter().flatten().map(|p| p.ts).next() else { continue };
        let n = points.iter().flatten().map(|p| p.n).max().unwrap_or(0);
        let mut row = vec![view::absolute(ts), n.to_string()];
        for p in &points {
            match p {
                Some(p) => row.extend([
                    format!("{:.3}", p.avg),
                    format!("{:.3}", p.min),
                    format!("{:.3}", p.max),
                ]),
                None => row.extend([String::new(), String::new(), String::new()]),
            }
        }
        w.write_record(&row).map_err(|e| AppError::Internal(e.into()))?;
    }
    let body = w.into_inner().map_err(|e| AppError::Internal(anyhow::anyhow!("csv: {e}")))?;
    let safe: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect();
    Ok(crate::audit::Csv { filename: format!("vmdeck-{safe}-history.csv"), body })
}
