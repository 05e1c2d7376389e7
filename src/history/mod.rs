//! The page of one VM (`GET /vms/<host>/<uuid>`): its configuration now, history charts over a
//! chosen range, a power-state timeline with uptime, configuration and IP address history, and
//! links to its audit entries. A VM that is gone keeps its page.
//!
//! Charts read raw samples through the `polls` table (one primary-key lookup per poll of the
//! VM's host: samples are clustered by time, not by VM), bucketed to at most
//! [`MAX_POINTS`] points with min/avg/max per bucket.

mod chart;

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
    rocket::routes![vm_page]
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

async fn samples(
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

/// Buckets `(ts, value)` pairs into `buckets` equal slices of `[from, to)`; a slice without
/// samples is None (a gap).
fn bucket(values: &[(i64, f64)], from: i64, to: i64, buckets: i64) -> Vec<Option<Point>> {
    let width = ((to - from) / buckets).max(1);
    let mut out: Vec<Option<Point>> = vec![None; buckets as usize];
    let mut sums = vec![0.0f64; buckets as usize];
    for &(ts, v) in values {
        let i = ((ts - from) / width).clamp(0, buckets - 1) as usize;
        sums[i] += v;
        let p = out[i].get_or_insert(Point {
            ts: from + i as i64 * width,
            min: v,
            avg: v,
            max: v,
            n: 0,
        });
        p.min = p.min.min(v);
        p.max = p.max.max(v);
        p.n += 1;
        p.avg = sums[i] / f64::from(p.n);
    }
    out
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

/// Power-state spans over the range: each sample holds until the next one, or for at most
/// `max_gap` (after which the time is unknown: vmdeck had no data).
fn timeline(rows: &[SampleRow], from: i64, to: i64, max_gap: i64) -> (Vec<Span>, Option<f64>) {
    let span = (to - from).max(1) as f64;
    let mut spans: Vec<Span> = Vec::new();
    let (mut running, mut known) = (0i64, 0i64);
    for (i, r) in rows.iter().enumerate() {
        let next = rows.get(i + 1).map_or(to.min(now_ms()), |n| n.ts);
        let end = next.min(r.ts + max_gap).min(to);
        if end <= r.ts {
            continue;
        }
        let state = PowerState::parse(&r.state).unwrap_or(PowerState::Unknown);
        known += end - r.ts;
        if state == PowerState::Running {
            running += end - r.ts;
        }
        let class = state.as_str();
        match spans.last_mut() {
            Some(last)
                if last.state == class
                    && (last.left + last.width) * span / 100.0 + from as f64
                        >= r.ts as f64 - 1.0 =>
            {
                last.width = (end - from) as f64 / span * 100.0 - last.left;
            }
            _ => spans.push(Span {
                state: class,
                label: state.label().to_string(),
                left: (r.ts - from) as f64 / span * 100.0,
                width: (end - r.ts) as f64 / span * 100.0,
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
    range_label: String,
    from_text: String,
    to_text: String,
    notices: Vec<String>,
    charts: Vec<ChartView>,
    timeline: Vec<Span>,
    timeline_svg: String,
    uptime: Option<String>,
    samples: usize,
    changes: Vec<ChangeView>,
    ip_history: Vec<IpHistoryView>,
    audit_href: String,
    power_href: String,
    back: String,
}

#[allow(clippy::too_many_arguments)] // route parameters and guards
#[rocket::get("/vms/<host>/<uuid>?<range>&<from>&<to>")]
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

    let rows = samples(pool, vm.host_id, vm.id, start, end).await?;
    let buckets =
        ((end - start) / settings.poll_interval.as_millis().max(1) as i64).clamp(1, MAX_POINTS);
    let series = |f: fn(&SampleRow) -> Option<f64>| -> Vec<Option<Point>> {
        let values: Vec<(i64, f64)> = rows.iter().filter_map(|r| f(r).map(|v| (r.ts, v))).collect();
        bucket(&values, start, end, buckets)
    };
    let config: Option<VmConfig> = vm.body.as_deref().and_then(|b| serde_json::from_str(b).ok());
    let allocated = config.as_ref().map(|c| c.memory_current_kib as f64 * 1024.0);
    let cpu = series(|r| r.cpu_pct);
    let mem = series(|r| r.memory_used_kib.map(|k| k as f64 * 1024.0));
    let (rd, wr) = (series(|r| r.disk_read_bps), series(|r| r.disk_write_bps));
    let (rx, tx) = (series(|r| r.net_rx_bps), series(|r| r.net_tx_bps));
    let charts = vec![
        ChartView {
            title: "CPU (% of the VM's vCPUs)",
            svg: chart::render(
                "CPU",
                Unit::Percent,
                start,
                end,
                &[Series { name: "CPU", class: "s1", points: &cpu }],
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
                &[Series { name: "used", class: "s1", points: &mem }],
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
                    Series { name: "read", class: "s1", points: &rd },
                    Series { name: "write", class: "s2", points: &wr },
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
                    Series { name: "received", class: "s1", points: &rx },
                    Series { name: "sent", class: "s2", points: &tx },
                ],
                None,
            ),
        },
    ];
    let max_gap = settings.poll_interval.as_millis() as i64 * 3;
    let (timeline, uptime) = timeline(&rows, start, end, max_gap);

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
            range_label: label,
            from_text,
            to_text,
            notices,
            charts,
            timeline_svg: timeline_svg(&timeline),
            timeline,
            uptime: uptime.map(|u| format!("{u:.2} %")),
            samples: rows.len(),
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

    fn row(ts: i64, state: &str) -> SampleRow {
        SampleRow {
            ts,
            state: state.into(),
            cpu_pct: None,
            memory_used_kib: None,
            disk_read_bps: None,
            disk_write_bps: None,
            net_rx_bps: None,
            net_tx_bps: None,
        }
    }

    #[test]
    fn buckets_keep_min_avg_max_and_leave_gaps() {
        let b = bucket(&[(0, 1.0), (5, 3.0), (25, 7.0)], 0, 30, 3);
        assert_eq!(b[0], Some(Point { ts: 0, min: 1.0, avg: 2.0, max: 3.0, n: 2 }));
        assert_eq!(b[1], None, "no sample, no point: a gap");
        assert_eq!(b[2].unwrap().avg, 7.0);
    }

    #[test]
    fn the_timeline_counts_uptime_and_stops_at_gaps() {
        // Running 0-20, off 20-30, then no data for long (gap), running again at 100.
        let rows =
            [row(0, "running"), row(10, "running"), row(20, "shut_off"), row(100, "running")];
        let (spans, uptime) = timeline(&rows, 0, 110, 10);
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
