//! Allocated capacity over time: vCPUs, memory and disk per host at the end of each day (each
//! week, month or year over long periods), the fleet totals as charts, and the VMs whose
//! allocation grew most.

use std::collections::BTreeMap;

use rocket_dyn_templates::Template;
use serde::Serialize;
use sqlx::SqlitePool;

use super::{input_time, period_file_name, store, PeriodQuery};
use crate::auth::Viewer;
use crate::domain::time::parse_time;
use crate::web::chart::{self, Point, Unit};
use crate::web::csv::Csv;
use crate::web::format as view;
use crate::web::{App, AppError, Chrome, Notices};

#[derive(Serialize, Clone, Default)]
struct CapacityRow {
    day: String,
    host: String,
    vms: u32,
    vcpus: u64,
    memory_gib: f64,
    disk_gib: f64,
}

/// How finely the capacity report steps through its period: one row per host at the end of
/// each day, or of each week (Monday to Sunday, UTC), month or year once the period has more
/// than [`MAX_STEPS`] days (weeks, months).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum Grain {
    Day,
    Week,
    Month,
    Year,
}

/// At most this many steps per report: the table is not paged, and each step costs a pass
/// over every VM. (Before grains, the report stopped after 400 days, silently.)
const MAX_STEPS: i64 = 400;

const DAY_MS: i64 = 86_400_000;

impl Grain {
    /// The finest grain giving at most [`MAX_STEPS`] steps over `[from, to)`.
    pub(super) fn for_period(from: i64, to: i64) -> Grain {
        [Grain::Day, Grain::Week, Grain::Month]
            .into_iter()
            .find(|g| g.steps(from, to) <= MAX_STEPS)
            .unwrap_or(Grain::Year)
    }

    /// How many steps of this grain `[from, to)` touches.
    fn steps(self, from: i64, to: i64) -> i64 {
        let mut n = 0;
        let mut t = from;
        while t < to && n <= MAX_STEPS {
            t = self.next(t);
            n += 1;
        }
        n
    }

    /// The start of the step after the one holding `t` (UTC; weeks start on Mondays).
    pub(super) fn next(self, t: i64) -> i64 {
        match self {
            Grain::Day => t - t.rem_euclid(DAY_MS) + DAY_MS,
            // 1970-01-05 was a Monday.
            Grain::Week => t - (t - 4 * DAY_MS).rem_euclid(7 * DAY_MS) + 7 * DAY_MS,
            Grain::Month | Grain::Year => {
                let Ok(at) =
                    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(t) * 1_000_000)
                else {
                    return t + DAY_MS; // out of range: never for times vmdeck accepts
                };
                let (mut y, mut m) = (at.year(), at.month());
                if self == Grain::Year || m == time::Month::December {
                    y += 1;
                }
                m = if self == Grain::Year { time::Month::January } else { m.next() };
                time::Date::from_calendar_date(y, m, 1)
                    .map(|d| d.midnight().assume_utc().unix_timestamp() * 1000)
                    .unwrap_or(t + DAY_MS)
            }
        }
    }

    /// The page's words for it: "figures by week".
    pub(super) fn noun(self) -> &'static str {
        match self {
            Grain::Day => "day",
            Grain::Week => "week",
            Grain::Month => "month",
            Grain::Year => "year",
        }
    }
}

/// Allocated vCPUs, memory and disk per host at the end of each step of the period (a day,
/// or a week, month or year for long periods: [`Grain`]), from configuration versions and VM
/// lifetimes. Each row is labelled with the last day of its step and holds the allocation at
/// that day's end (or the period's, for the last). The period starts no earlier than the day
/// the first VM was seen: before that there is nothing to show, and a period starting years
/// back would otherwise spend its steps on empty time.
async fn capacity_rows(
    pool: &SqlitePool,
    from: i64,
    to: i64,
) -> sqlx::Result<(Vec<CapacityRow>, Grain)> {
    let vms = store::lifetimes(pool).await?;
    let rows = store::allocations(pool).await?;
    // Each VM's versions in time order, for a binary search per step.
    let mut configs: std::collections::HashMap<i64, Vec<(i64, i64, i64, i64)>> =
        std::collections::HashMap::new();
    for (vm, from, vcpus, mem, disk) in rows {
        configs.entry(vm).or_default().push((from, vcpus, mem, disk));
    }
    let first_seen = vms.iter().map(|v| v.2).min();
    let from = match first_seen {
        Some(f) if f > from => f - f.rem_euclid(DAY_MS),
        _ => from,
    };
    let grain = Grain::for_period(from, to);
    let mut out = Vec::new();
    let mut t = from;
    while t < to {
        let next = grain.next(t);
        let at = (next - 1).min(to);
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
                day: view::absolute(at).get(0..10).unwrap_or("").to_string(),
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
        t = next;
    }
    Ok((out, grain))
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

/// The VMs whose allocation grew most over the period (memory plus disk, in bytes), comparing
/// the configuration in force at its start (or when the VM appeared) with the one at its end.
async fn grew_most(pool: &SqlitePool, from: i64, to: i64) -> sqlx::Result<Vec<Growth>> {
    let rows = store::versions_until(pool, to).await?;
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
    /// The step of the rows: "day", or "week", "month", "year" for long periods.
    grain: &'static str,
    charts: Vec<(String, String)>,
    notices: Notices,
    /// Preset periods as links: (label, href).
    presets: Vec<(&'static str, String)>,
    csv_href: String,
}

#[rocket::get("/reports/capacity?<period..>")]
pub async fn capacity(
    user: Viewer<'_>,
    period: PeriodQuery<'_>,
    app: App<'_>,
) -> Result<Template, AppError> {
    let mut notices = Notices::new();
    let (a, b) = period.read(&mut notices);
    let (rows, grain) = capacity_rows(app.pool, a, b).await?;
    Ok(Template::render(
        "reports/capacity",
        CapacityPage {
            title: "Capacity over time",
            chrome: Chrome::new(user.0, None, app.settings),
            csv_href: PeriodQuery::href("/reports/capacity.csv", (a, b)),
            presets: super::preset_links("/reports/capacity"),
            from: input_time(a),
            to: input_time(b),
            charts: charts(&rows, a, b),
            grain: grain.noun(),
            rows,
            notices,
            grew: grew_most(app.pool, a, b).await?,
        },
    ))
}

/// One chart per measure: the fleet total per step (day, week…).
fn charts(rows: &[CapacityRow], a: i64, b: i64) -> Vec<(String, String)> {
    let mut totals: BTreeMap<&str, (u64, f64, f64)> = BTreeMap::new();
    for r in rows {
        let e = totals.entry(r.day.as_str()).or_default();
        e.0 += r.vcpus;
        e.1 += r.memory_gib;
        e.2 += r.disk_gib;
    }
    // Each total holds at the end of its day (or at the end of the period, for the last day).
    let day_ms = |d: &str| parse_time(d, true).unwrap_or(a).min(b);
    let points = |f: &dyn Fn(&(u64, f64, f64)) -> f64| -> Vec<Option<Point>> {
        totals
            .iter()
            .map(|(d, v)| Some(Point { ts: day_ms(d), min: f(v), avg: f(v), max: f(v), n: 1 }))
            .collect()
    };
    let span_end = b.max(a + 1);
    let gib = 1_073_741_824.0;
    vec![
        (
            "Allocated vCPUs (all hosts)".to_string(),
            chart::line("vCPUs", Unit::Count, a, span_end, &points(&|v| v.0 as f64)),
        ),
        (
            "Allocated memory (all hosts)".to_string(),
            chart::line("memory", Unit::Bytes, a, span_end, &points(&|v| v.1 * gib)),
        ),
        (
            "Allocated disk (all hosts)".to_string(),
            chart::line("disk", Unit::Bytes, a, span_end, &points(&|v| v.2 * gib)),
        ),
    ]
}

#[rocket::get("/reports/capacity.csv?<period..>")]
pub async fn capacity_csv(
    _user: Viewer<'_>,
    period: PeriodQuery<'_>,
    app: App<'_>,
) -> Result<Csv, AppError> {
    let (a, b) = period.read(&mut Notices::new());
    let (rows, _) = capacity_rows(app.pool, a, b).await?;
    Ok(Csv::build(
        &period_file_name("capacity", (a, b)),
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
    ))
}
