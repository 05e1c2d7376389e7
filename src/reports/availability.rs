//! Availability per VM over a period: the share of observed time each VM was running, and
//! its longest outage. Rollups cover the part of the period they hold (the finest resolution
//! still kept for its start), raw samples the newest part.

use std::collections::BTreeMap;

use rocket_dyn_templates::Template;
use serde::Serialize;
use sqlx::SqlitePool;

use super::{input_time, store, PeriodQuery};
use crate::auth::Viewer;
use crate::config::Settings;
use crate::db::now_ms;
use crate::domain::{PowerState, Resolution};
use crate::history::rollup::{self, RESOLUTIONS};
use crate::web::csv::Csv;
use crate::web::format as view;
use crate::web::{App, AppError, Chrome, Notices};

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
            RESOLUTIONS
                .into_iter()
                .find(|r| {
                    let kept = settings.retention.of(Resolution::from_bucket_secs(*r));
                    from >= now - kept.as_millis() as i64
                })
                .unwrap_or(86_400),
        )
    };
    let raw_from = match res {
        Some(r) => rollup::done_until_ms(pool, r).await?.unwrap_or(from).clamp(from, to),
        None => from,
    };
    let vms = store::all_vms(pool).await?;
    let mut stretches: BTreeMap<i64, Vec<Stretch>> = BTreeMap::new();
    if let Some(r) = res {
        let rows =
            store::bucket_states_between(pool, r, from.div_euclid(1000), raw_from.div_euclid(1000))
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
    let raw = store::raw_states(pool, raw_from, to).await?;
    for (i, (vm, ts, state)) in raw.iter().enumerate() {
        // Each sample stands for the time until the next one, at most three poll intervals.
        let next = raw.get(i + 1).filter(|r| r.0 == *vm).map_or(ts + interval, |r| r.1).min(to);
        let held = (next - ts).clamp(0, 3 * interval);
        let running = *state == PowerState::Running;
        let known = *state != PowerState::Unknown;
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
    notices: Notices,
    csv_href: String,
    sort: String,
}

fn sort_availability(
    rows: &mut [AvailabilityRow],
    sort: Option<&str>,
    notices: &mut Notices,
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

#[rocket::get("/reports/availability?<sort>&<period..>")]
pub async fn availability(
    user: Viewer<'_>,
    sort: Option<&str>,
    period: PeriodQuery<'_>,
    app: App<'_>,
) -> Result<Template, AppError> {
    let mut notices = Notices::new();
    let (a, b) = period.read(&mut notices);
    let mut rows = availability_rows(app.pool, app.settings, a, b).await?;
    let sort = sort_availability(&mut rows, sort, &mut notices);
    Ok(Template::render(
        "reports/availability",
        AvailabilityPage {
            title: "Availability",
            chrome: Chrome::new(user.0, None, app.settings),
            csv_href: PeriodQuery::href("/reports/availability.csv", (a, b)),
            from: input_time(a),
            to: input_time(b),
            rows,
            notices,
            sort,
        },
    ))
}

#[rocket::get("/reports/availability.csv?<period..>")]
pub async fn availability_csv(
    _user: Viewer<'_>,
    period: PeriodQuery<'_>,
    app: App<'_>,
) -> Result<Csv, AppError> {
    let (a, b) = period.read(&mut Notices::new());
    let mut rows = availability_rows(app.pool, app.settings, a, b).await?;
    sort_availability(&mut rows, None, &mut Notices::new());
    Csv::build(
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
