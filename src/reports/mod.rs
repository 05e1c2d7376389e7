//! Historical reports (`/reports`): the fleet as of a moment, availability per VM over a
//! period, and allocated capacity over time. Each downloads as CSV with the same filters.
//!
//! The fleet and capacity reports read configuration versions, address intervals and VM
//! lifetimes, which are small. Availability reads raw samples (the time each VM was observed
//! running), so long periods on large fleets are slow until rollups exist (issue 4).

use std::collections::BTreeMap;
use std::sync::Arc;

use rocket::request::FlashMessage;
use rocket::{Route, State};
use rocket_dyn_templates::Template;
use serde::Serialize;
use sqlx::SqlitePool;

use crate::audit::{parse_time, Csv};
use crate::auth::{Chrome, Viewer};
use crate::backend::VmConfig;
use crate::config::Settings;
use crate::db::{now_ms, Db};
use crate::error::AppError;
use crate::poller::Hosts;
use crate::view;

pub fn routes() -> Vec<Route> {
    rocket::routes![index, fleet, fleet_csv, availability, availability_csv, capacity, capacity_csv]
}

#[derive(Serialize)]
struct IndexPage {
    title: &'static str,
    chrome: Chrome,
    now: String,
    month_ago: String,
}

#[rocket::get("/reports")]
async fn index(
    user: Viewer<'_>,
    settings: &State<Settings>,
    flash: Option<FlashMessage<'_>>,
) -> Template {
    let now = now_ms();
    Template::render(
        "reports/index",
        IndexPage {
            title: "Reports",
            chrome: Chrome::new(user.0, flash, settings),
            now: input_time(now),
            month_ago: input_time(now - 30 * 86_400_000),
        },
    )
}

/// `YYYY-MM-DDTHH:MM` (UTC), the form the report inputs take.
fn input_time(ms: i64) -> String {
    let a = view::absolute(ms);
    format!("{}T{}", a.get(0..10).unwrap_or(""), a.get(11..16).unwrap_or(""))
}

/// Parses a time parameter; a bad one falls back to `default` with a notice.
fn time_param(
    text: Option<&str>,
    default: i64,
    end_of_day: bool,
    label: &str,
    notices: &mut Vec<String>,
) -> i64 {
    match text.map(str::trim).filter(|t| !t.is_empty()) {
        None => default,
        Some(t) => match parse_time(t, end_of_day) {
            Some(ms) if (0..=253_402_300_799_000).contains(&ms) => ms,
            _ => {
                notices.push(format!(
                    "Cannot read the {label} time {t:?} (use YYYY-MM-DD or YYYY-MM-DDTHH:MM, UTC): using {}.",
                    view::absolute(default)
                ));
                default
            }
        },
    }
}

/// A period from two parameters: defaults to the last 30 days; reversed ranges are swapped.
fn period(from: Option<&str>, to: Option<&str>, notices: &mut Vec<String>) -> (i64, i64) {
    let now = now_ms();
    let mut a = time_param(from, now - 30 * 86_400_000, false, "from", notices);
    let mut b = time_param(to, now, true, "to", notices);
    if a > b {
        notices.push("The period was reversed: swapped.".into());
        std::mem::swap(&mut a, &mut b);
    }
    (a, b.min(now))
}

// ---------------------------------------------------------------------------------------------
// Fleet as of a moment

#[derive(Serialize, Clone)]
struct FleetRow {
    host: String,
    name: String,
    uuid: String,
    state: String,
    vcpus: Option<u32>,
    memory_mib: Option<u64>,
    disk_gib: Option<f64>,
    ips: String,
}

async fn fleet_rows(pool: &SqlitePool, hosts: &Hosts, at: i64) -> sqlx::Result<Vec<FleetRow>> {
    // VMs that existed at `at`, their configuration version then.
    let rows: Vec<(i64, i64, String, String, String, Option<String>)> = sqlx::query_as(
        "SELECT v.id, v.host_id, h.name, v.name, v.uuid,
                (SELECT c.body FROM vm_configs c WHERE c.vm_id = v.id AND c.valid_from <= ?1
                 ORDER BY c.valid_from DESC, c.id DESC LIMIT 1)
         FROM vms v JOIN hosts h ON h.id = v.host_id
         WHERE v.first_seen <= ?1 AND (v.gone_at IS NULL OR v.gone_at > ?1)
         ORDER BY h.name, v.name",
    )
    .bind(at)
    .fetch_all(pool)
    .await?;
    // The state each VM was seen in by its host's last successful poll at or before `at`.
    let mut states: BTreeMap<i64, String> = BTreeMap::new();
    for h in &hosts.0 {
        let found: Vec<(i64, String)> = sqlx::query_as(
            "SELECT s.vm_id, s.state FROM samples s
             WHERE s.ts = (SELECT max(p.started_at) FROM polls p WHERE p.host_id = ? AND p.ok = 1 AND p.started_at <= ?)",
        )
        .bind(h.id)
        .bind(at)
        .fetch_all(pool)
        .await?;
        states.extend(found);
    }
    // Raw samples of that moment may have been pruned: the rollup bucket holding it then says
    // which state the VM spent most of that bucket in.
    if rows.iter().any(|r| !states.contains_key(&r.0)) {
        for res in crate::history::rollup::RESOLUTIONS {
            let bucket = at.div_euclid(1000) - at.div_euclid(1000).rem_euclid(res);
            let found: Vec<(i64, i64, i64, i64, i64)> = sqlx::query_as(
                "SELECT r.vm_id, r.n, r.up, r.paused, r.off FROM vms v
                 JOIN rollups r ON r.res = ? AND r.vm_id = v.id AND r.bucket = ?",
            )
            .bind(res)
            .bind(bucket)
            .fetch_all(pool)
            .await?;
            for (vm, n, up, paused, off) in found {
                let other = n - up - paused - off;
                let dominant =
                    [(up, "running"), (paused, "paused"), (off, "shut_off"), (other, "unknown")]
                        .into_iter()
                        .max_by_key(|(c, _)| *c)
                        .map_or("unknown", |(_, s)| s);
                states.entry(vm).or_insert_with(|| dominant.to_string());
            }
        }
    }
    let mut out = Vec::with_capacity(rows.len());
    for (id, _host_id, host, name, uuid, body) in rows {
        let cfg: Option<VmConfig> = body.and_then(|b| serde_json::from_str(&b).ok());
        let ips: Vec<(String,)> = sqlx::query_as(
            "SELECT addr FROM vm_addresses WHERE vm_id = ? AND first_seen <= ? AND (ended_at IS NULL OR ended_at > ?) ORDER BY addr",
        )
        .bind(id)
        .bind(at)
        .bind(at)
        .fetch_all(pool)
        .await?;
        let mut ips: Vec<String> = ips.into_iter().map(|(a,)| a).collect();
        ips.sort_by_key(|a| a.contains(':'));
        out.push(FleetRow {
            host,
            name,
            uuid,
            state: states.get(&id).cloned().unwrap_or_else(|| "unknown".into()).replace('_', " "),
            vcpus: cfg.as_ref().map(|c| c.vcpus),
            memory_mib: cfg.as_ref().map(|c| c.memory_max_kib / 1024),
            disk_gib: cfg.as_ref().map(|c| c.disk_capacity_bytes() as f64 / f64::from(1u32 << 30)),
            ips: ips.join(" "),
        });
    }
    Ok(out)
}

#[derive(Serialize)]
struct FleetPage {
    title: &'static str,
    chrome: Chrome,
    at: String,
    at_label: String,
    rows: Vec<FleetRow>,
    notices: Vec<String>,
    csv_href: String,
}

fn at_param(at: Option<&str>, notices: &mut Vec<String>) -> i64 {
    let now = now_ms();
    let t = time_param(at, now, false, "report", notices);
    if t > now {
        notices.push("That moment is in the future: showing now.".into());
        now
    } else {
        t
    }
}

#[rocket::get("/reports/fleet?<at>")]
async fn fleet(
    user: Viewer<'_>,
    at: Option<&str>,
    db: &State<Db>,
    hosts: &State<Arc<Hosts>>,
    settings: &State<Settings>,
) -> Result<Template, AppError> {
    let mut notices = Vec::new();
    let t = at_param(at, &mut notices);
    let rows = fleet_rows(&db.0, hosts, t).await?;
    Ok(Template::render(
        "reports/fleet",
        FleetPage {
            title: "Fleet as of a moment",
            chrome: Chrome::new(user.0, None, settings),
            at: input_time(t),
            at_label: view::absolute(t),
            rows,
            notices,
            csv_href: format!("/reports/fleet.csv?at={}", input_time(t)),
        },
    ))
}

fn csv_of(
    filename: &str,
    header: &[&str],
    rows: impl Iterator<Item = Vec<String>>,
) -> Result<Csv, AppError> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(header).map_err(|e| AppError::Internal(e.into()))?;
    for r in rows {
        w.write_record(&r).map_err(|e| AppError::Internal(e.into()))?;
    }
    let body = w.into_inner().map_err(|e| AppError::Internal(anyhow::anyhow!("csv: {e}")))?;
    Ok(Csv { filename: filename.to_string(), body })
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_default()
}

#[rocket::get("/reports/fleet.csv?<at>")]
async fn fleet_csv(
    _user: Viewer<'_>,
    at: Option<&str>,
    db: &State<Db>,
    hosts: &State<Arc<Hosts>>,
) -> Result<Csv, AppError> {
    let t = at_param(at, &mut Vec::new());
    let rows = fleet_rows(&db.0, hosts, t).await?;
    csv_of(
        "vmdeck-fleet.csv",
        &[
            "as_of_utc",
            "host",
            "vm_name",
            "vm_uuid",
            "state",
            "vcpus",
            "memory_mib",
            "disk_gib",
            "ip_addresses",
        ],
        rows.into_iter().map(|r| {
            vec![
                view::absolute(t),
                r.host,
                r.name,
                r.uuid,
                r.state,
                opt(r.vcpus),
                opt(r.memory_mib),
                r.disk_gib.map(|d| format!("{d:.1}")).unwrap_or_default(),
                r.ips,
            ]
        }),
    )
}

// ---------------------------------------------------------------------------------------------
// Availability

#[derive(Serialize, Clone)]
struct AvailabilityRow {
    host: String,
    name: String,
    uuid: String,
    uptime_pct: Option<f64>,
    observed_hours: f64,
    observed: String,
    longest_outage: String,
    longest_outage_s: i64,
    outage_start: String,
}

/// A stretch of one VM's history: when, how long it was observed running and observed at
/// all, and whether it was down throughout.
struct Stretch {
    start: i64,
    end: i64,
    up: i64,
    known: i64,
    down: bool,
}

/// Uptime and longest outage per VM over `[from, to)`: from rollups for the part they cover
/// (the finest resolution still kept for `from`), then raw samples for the newest part.
async fn availability_rows(
    pool: &SqlitePool,
    settings: &Settings,
    from: i64,
    to: i64,
) -> sqlx::Result<Vec<AvailabilityRow>> {
    let interval = settings.poll_interval.as_millis() as i64;
    let now = now_ms();
    let res = if from >= now - settings.retention.raw.as_millis() as i64 {
        None
    } else {
        Some(
            crate::history::rollup::RESOLUTIONS
                .into_iter()
                .find(|r| from >= now - settings.retention.of(Some(*r)).as_millis() as i64)
                .unwrap_or(86_400),
        )
    };
    let raw_from = match res {
        Some(r) => {
            crate::history::rollup::done_until_ms(pool, r).await?.unwrap_or(from).clamp(from, to)
        }
        None => from,
    };
    let vms: Vec<(i64, String, String, String)> = sqlx::query_as(
        "SELECT v.id, h.name, v.name, v.uuid FROM vms v JOIN hosts h ON h.id = v.host_id",
    )
    .fetch_all(pool)
    .await?;
    let mut stretches: BTreeMap<i64, Vec<Stretch>> = BTreeMap::new();
    if let Some(r) = res {
        let rows: Vec<(i64, i64, i64, i64, i64, i64)> = sqlx::query_as(
            "SELECT r.vm_id, r.bucket, r.n, r.up, r.paused, r.off FROM vms v
             JOIN rollups r ON r.res = ?1 AND r.vm_id = v.id AND r.bucket >= ?2 AND r.bucket < ?3
             ORDER BY r.vm_id, r.bucket",
        )
        .bind(r)
        .bind(from.div_euclid(1000))
        .bind(raw_from.div_euclid(1000))
        .fetch_all(pool)
        .await?;
        for (vm, bucket, _n, up, paused, off) in rows {
            let known = up + paused + off;
            if known == 0 {
                continue;
            }
            stretches.entry(vm).or_default().push(Stretch {
                start: bucket * 1000,
                end: (bucket + r) * 1000,
                up: up * interval,
                known: known * interval,
                down: up == 0,
            });
        }
    }
    let raw: Vec<(i64, i64, String)> = sqlx::query_as(
        "SELECT s.vm_id, s.ts, s.state FROM samples s WHERE s.ts >= ? AND s.ts < ? ORDER BY s.vm_id, s.ts",
    )
    .bind(raw_from)
    .bind(to)
    .fetch_all(pool)
    .await?;
    for (i, (vm, ts, state)) in raw.iter().enumerate() {
        // Each sample stands for the time until the next one, at most three poll intervals.
        let next = raw.get(i + 1).filter(|r| r.0 == *vm).map_or(ts + interval, |r| r.1).min(to);
        let held = (next - ts).clamp(0, 3 * interval);
        let running = state == "running";
        let known = state != "unknown";
        stretches.entry(*vm).or_default().push(Stretch {
            start: *ts,
            end: ts + held,
            up: if running { held } else { 0 },
            known: if known { held } else { 0 },
            down: known && !running,
        });
    }
    let mut out = Vec::new();
    for (id, host, name, uuid) in vms {
        let Some(list) = stretches.get(&id) else { continue };
        let (up, known): (i64, i64) = list.iter().fold((0, 0), |a, s| (a.0 + s.up, a.1 + s.known));
        let (mut longest, mut longest_start, mut current): (i64, i64, Option<i64>) = (0, 0, None);
        for s in list {
            if s.down {
                let begun = *current.get_or_insert(s.start);
                if s.end - begun > longest {
                    longest = s.end - begun;
                    longest_start = begun;
                }
            } else if s.known > 0 {
                current = None;
            }
        }
        out.push(AvailabilityRow {
            host,
            name,
            uuid,
            uptime_pct: (known > 0).then(|| up as f64 / known as f64 * 100.0),
            observed_hours: known as f64 / 3_600_000.0,
            observed: view::duration_words(known),
            longest_outage: if longest > 0 { view::duration_words(longest) } else { "none".into() },
            longest_outage_s: longest / 1000,
            outage_start: if longest > 0 { view::absolute(longest_start) } else { String::new() },
        });
    }
    Ok(out)
}

#[derive(Serialize)]
struct AvailabilityPage {
    title: &'static str,
    chrome: Chrome,
    from: String,
    to: String,
    rows: Vec<AvailabilityRow>,
    notices: Vec<String>,
    csv_href: String,
    sort: String,
}

fn sort_availability(
    rows: &mut [AvailabilityRow],
    sort: Option<&str>,
    notices: &mut Vec<String>,
) -> String {
    match sort.unwrap_or("uptime") {
        // Lowest first; VMs never observed in a known state last.
        "uptime" => rows.sort_by(|a, b| match (a.uptime_pct, b.uptime_pct) {
            (Some(x), Some(y)) => x.total_cmp(&y),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => std::cmp::Ordering::Equal,
        }),
        "outage" => rows.sort_by_key(|r| std::cmp::Reverse(r.longest_outage_s)),
        "name" => rows.sort_by_key(|r| r.name.to_lowercase()),
        other => {
            notices.push(format!("Cannot sort by {other:?}: sorted by uptime."));
            return sort_availability(rows, None, notices);
        }
    }
    sort.unwrap_or("uptime").to_string()
}

#[rocket::get("/reports/availability?<from>&<to>&<sort>")]
async fn availability(
    user: Viewer<'_>,
    from: Option<&str>,
    to: Option<&str>,
    sort: Option<&str>,
    db: &State<Db>,
    settings: &State<Settings>,
) -> Result<Template, AppError> {
    let mut notices = Vec::new();
    let (a, b) = period(from, to, &mut notices);
    let mut rows = availability_rows(&db.0, settings, a, b).await?;
    let sort = sort_availability(&mut rows, sort, &mut notices);
    Ok(Template::render(
        "reports/availability",
        AvailabilityPage {
            title: "Availability",
            chrome: Chrome::new(user.0, None, settings),
            csv_href: format!(
                "/reports/availability.csv?from={}&to={}",
                input_time(a),
                input_time(b)
            ),
            from: input_time(a),
            to: input_time(b),
            rows,
            notices,
            sort,
        },
    ))
}

#[rocket::get("/reports/availability.csv?<from>&<to>")]
async fn availability_csv(
    _user: Viewer<'_>,
    from: Option<&str>,
    to: Option<&str>,
    db: &State<Db>,
    settings: &State<Settings>,
) -> Result<Csv, AppError> {
    let (a, b) = period(from, to, &mut Vec::new());
    let mut rows = availability_rows(&db.0, settings, a, b).await?;
    sort_availability(&mut rows, None, &mut Vec::new());
    csv_of(
        "vmdeck-availability.csv",
        &[
            "from_utc",
            "to_utc",
            "host",
            "vm_name",
            "vm_uuid",
            "uptime_pct",
            "observed_hours",
            "longest_outage_s",
            "longest_outage_start_utc",
        ],
        rows.into_iter().map(|r| {
            vec![
                view::absolute(a),
                view::absolute(b),
                r.host,
                r.name,
                r.uuid,
                r.uptime_pct.map(|u| format!("{u:.3}")).unwrap_or_default(),
                format!("{:.2}", r.observed_hours),
                r.longest_outage_s.to_string(),
                r.outage_start,
            ]
        }),
    )
}

// ---------------------------------------------------------------------------------------------
// Capacity over time

#[derive(Serialize, Clone, Default)]
struct CapacityRow {
    day: String,
    host: String,
    vms: u32,
    vcpus: u64,
    memory_gib: f64,
    disk_gib: f64,
}

/// Allocated vCPUs, memory and disk per host at the end of each day of the period (at most
/// 400 days), from configuration versions and VM lifetimes.
async fn capacity_rows(pool: &SqlitePool, from: i64, to: i64) -> sqlx::Result<Vec<CapacityRow>> {
    let vms: Vec<(i64, String, i64, Option<i64>)> = sqlx::query_as(
        "SELECT v.id, h.name, v.first_seen, v.gone_at FROM vms v JOIN hosts h ON h.id = v.host_id",
    )
    .fetch_all(pool)
    .await?;
    let rows: Vec<(i64, i64, i64, i64, i64)> = sqlx::query_as(
        "SELECT vm_id, valid_from, vcpus, memory_max_kib, disk_capacity_bytes FROM vm_configs ORDER BY vm_id, valid_from, id",
    )
    .fetch_all(pool)
    .await?;
    // Each VM's versions in time order, for a binary search per day.
    let mut configs: std::collections::HashMap<i64, Vec<(i64, i64, i64, i64)>> =
        std::collections::HashMap::new();
    for (vm, from, vcpus, mem, disk) in rows {
        configs.entry(vm).or_default().push((from, vcpus, mem, disk));
    }
    let mut out = Vec::new();
    let day = 86_400_000;
    let first_day = from - from.rem_euclid(day);
    let mut t = first_day;
    let mut days = 0;
    while t < to && days < 400 {
        let at = (t + day - 1).min(to);
        let mut per_host: BTreeMap<String, CapacityRow> = BTreeMap::new();
        for (id, host, first, gone) in &vms {
            if *first > at || gone.is_some_and(|g| g <= at) {
                continue;
            }
            let cfg = configs.get(id).and_then(|v| {
                let n = v.partition_point(|c| c.0 <= at);
                n.checked_sub(1).map(|i| v[i])
            });
            let row = per_host.entry(host.clone()).or_insert_with(|| CapacityRow {
                day: view::absolute(t).get(0..10).unwrap_or("").to_string(),
                host: host.clone(),
                ..CapacityRow::default()
            });
            row.vms += 1;
            if let Some((_, vcpus, mem, disk)) = cfg {
                row.vcpus += vcpus.max(0) as u64;
                row.memory_gib += mem as f64 / 1_048_576.0;
                row.disk_gib += disk as f64 / 1_073_741_824.0;
            }
        }
        out.extend(per_host.into_values());
        t += day;
        days += 1;
    }
    Ok(out)
}

#[derive(Serialize)]
struct Growth {
    host: String,
    name: String,
    uuid: String,
    vcpus: String,
    memory: String,
    disk: String,
}

/// One configuration version with its VM: (vm_id, host, name, uuid, valid_from, vcpus,
/// memory_max_kib, disk_capacity_bytes).
type VersionRow = (i64, String, String, String, i64, i64, i64, i64);

/// The VMs whose allocation grew most over the period (memory plus disk, in bytes), comparing
/// the configuration in force at its start (or when the VM appeared) with the one at its end.
async fn grew_most(pool: &SqlitePool, from: i64, to: i64) -> sqlx::Result<Vec<Growth>> {
    let rows: Vec<VersionRow> = sqlx::query_as(
        "SELECT c.vm_id, h.name, v.name, v.uuid, c.valid_from, c.vcpus, c.memory_max_kib, c.disk_capacity_bytes
         FROM vm_configs c JOIN vms v ON v.id = c.vm_id JOIN hosts h ON h.id = v.host_id
         WHERE c.valid_from <= ? ORDER BY c.vm_id, c.valid_from, c.id",
    )
    .bind(to)
    .fetch_all(pool)
    .await?;
    let mut grown = Vec::new();
    for group in rows.chunk_by(|a, b| a.0 == b.0) {
        let start = group.iter().rev().find(|c| c.4 <= from).unwrap_or(&group[0]);
        let end = group.last().unwrap_or(start);
        let bytes = (end.6 - start.6) * 1024 + (end.7 - start.7);
        if bytes > 0 || end.5 > start.5 {
            grown.push((bytes, start.clone(), end.clone()));
        }
    }
    grown.sort_by_key(|g| std::cmp::Reverse(g.0));
    let change = |a: u64, b: u64, f: &dyn Fn(u64) -> String| {
        if a == b {
            f(b)
        } else {
            format!("{} → {}", f(a), f(b))
        }
    };
    Ok(grown
        .into_iter()
        .take(10)
        .map(|(_, a, b)| Growth {
            host: b.1.clone(),
            name: b.2.clone(),
            uuid: b.3.clone(),
            vcpus: change(a.5.max(0) as u64, b.5.max(0) as u64, &|v| v.to_string()),
            memory: change(a.6.max(0) as u64, b.6.max(0) as u64, &|k| view::bytes(k * 1024)),
            disk: change(a.7.max(0) as u64, b.7.max(0) as u64, &view::bytes),
        })
        .collect())
}

#[derive(Serialize)]
struct CapacityPage {
    grew: Vec<Growth>,
    title: &'static str,
    chrome: Chrome,
    from: String,
    to: String,
    rows: Vec<CapacityRow>,
    charts: Vec<(String, String)>,
    notices: Vec<String>,
    csv_href: String,
}

#[rocket::get("/reports/capacity?<from>&<to>")]
async fn capacity(
    user: Viewer<'_>,
    from: Option<&str>,
    to: Option<&str>,
    db: &State<Db>,
    settings: &State<Settings>,
) -> Result<Template, AppError> {
    let mut notices = Vec::new();
    let (a, b) = period(from, to, &mut notices);
    let rows = capacity_rows(&db.0, a, b).await?;
    // One chart per measure: the fleet total per day.
    let mut totals: BTreeMap<&str, (u64, f64, f64)> = BTreeMap::new();
    for r in &rows {
        let e = totals.entry(r.day.as_str()).or_default();
        e.0 += r.vcpus;
        e.1 += r.memory_gib;
        e.2 += r.disk_gib;
    }
    // Each total holds at the end of its day (or at the end of the period, for the last day).
    let day_ms = |d: &str| parse_time(d, true).unwrap_or(a).min(b);
    let points = |f: &dyn Fn(&(u64, f64, f64)) -> f64| -> Vec<Option<crate::history::Point>> {
        totals
            .iter()
            .map(|(d, v)| {
                Some(crate::history::Point { ts: day_ms(d), min: f(v), avg: f(v), max: f(v), n: 1 })
            })
            .collect()
    };
    let span_end = b.max(a + 1);
    let charts = vec![
        (
            "Allocated vCPUs (all hosts)".to_string(),
            crate::history::line_chart(
                "vCPUs",
                crate::history::Unit::Count,
                a,
                span_end,
                &points(&|v| v.0 as f64),
            ),
        ),
        (
            "Allocated memory (all hosts)".to_string(),
            crate::history::line_chart(
                "memory",
                crate::history::Unit::Bytes,
                a,
                span_end,
                &points(&|v| v.1 * 1_073_741_824.0),
            ),
        ),
        (
            "Allocated disk (all hosts)".to_string(),
            crate::history::line_chart(
                "disk",
                crate::history::Unit::Bytes,
                a,
                span_end,
                &points(&|v| v.2 * 1_073_741_824.0),
            ),
        ),
    ];
    Ok(Template::render(
        "reports/capacity",
        CapacityPage {
            title: "Capacity over time",
            chrome: Chrome::new(user.0, None, settings),
            csv_href: format!("/reports/capacity.csv?from={}&to={}", input_time(a), input_time(b)),
            from: input_time(a),
            to: input_time(b),
            rows,
            charts,
            notices,
            grew: grew_most(&db.0, a, b).await?,
        },
    ))
}

#[rocket::get("/reports/capacity.csv?<from>&<to>")]
async fn capacity_csv(
    _user: Viewer<'_>,
    from: Option<&str>,
    to: Option<&str>,
    db: &State<Db>,
) -> Result<Csv, AppError> {
    let (a, b) = period(from, to, &mut Vec::new());
    let rows = capacity_rows(&db.0, a, b).await?;
    csv_of(
        "vmdeck-capacity.csv",
        &["day_utc", "host", "vms", "vcpus", "memory_gib", "disk_gib"],
        rows.into_iter().map(|r| {
            vec![
                r.day,
                r.host,
                r.vms.to_string(),
                r.vcpus.to_string(),
                format!("{:.2}", r.memory_gib),
                format!("{:.1}", r.disk_gib),
            ]
        }),
    )
}
