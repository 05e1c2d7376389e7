//! Availability per VM over a period: the share of observed time each VM was running, and
//! its longest outage. Rollups cover the part of the period they hold (the finest resolution
//! still kept for its start), raw samples the newest part.

use std::collections::BTreeMap;

use futures::TryStreamExt;
use rocket_dyn_templates::Template;
use serde::Serialize;
use sqlx::SqlitePool;

use super::{input_time, store, PeriodQuery};
use crate::auth::Viewer;
use crate::config::Settings;
use crate::db::now_ms;
use crate::domain::Resolution;
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

/// A stretch of time a VM was down: from its first down observation to the end of its last,
/// gaps without observations included (vmdeck not running is no evidence the VM was up).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Run {
    start: i64,
    end: i64,
}

impl Run {
    /// Two runs with no running observation between them are one.
    fn join(a: Option<Run>, b: Option<Run>) -> Option<Run> {
        match (a, b) {
            (Some(a), Some(b)) => Some(Run { start: a.start, end: b.end }),
            (a, None) => a,
            (None, b) => b,
        }
    }

    /// The longer of two runs, the earlier one on a tie.
    fn longer(a: Option<Run>, b: Option<Run>) -> Option<Run> {
        match (a, b) {
            (Some(x), Some(y)) if y.end - y.start > x.end - x.start => b,
            (None, b) => b,
            (a, _) => a,
        }
    }
}

/// One VM's availability over a stretch of time, summarised so that consecutive stretches
/// combine ([`Availability::then`]): time running and known, and the down runs at either end
/// (which may continue into the neighbouring stretch) and the longest one in between. Memory
/// per VM is constant however many observations are folded in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Availability {
    up: i64,
    known: i64,
    /// Whether any observation in the stretch was of the VM running.
    seen_up: bool,
    /// The down run before the first running observation (the whole stretch if none).
    lead: Option<Run>,
    /// The longest down run between two running observations.
    inner: Option<Run>,
    /// The down run after the last running observation.
    trail: Option<Run>,
}

impl Availability {
    /// One observation: `up` and `known` ms over `[start, end)`. A unit with any running
    /// time breaks a down run; one with no known state neither breaks nor extends it.
    fn unit(start: i64, end: i64, up: i64, known: i64) -> Self {
        if known <= 0 {
            Self::default()
        } else if up > 0 {
            Self { up, known, seen_up: true, ..Self::default() }
        } else {
            Self { known, lead: Some(Run { start, end }), ..Self::default() }
        }
    }

    /// This stretch followed by `next`.
    fn then(self, next: Self) -> Self {
        let (up, known) = (self.up + next.up, self.known + next.known);
        if !self.seen_up {
            let lead = Run::join(self.lead, next.lead);
            Self { up, known, seen_up: next.seen_up, lead, inner: next.inner, trail: next.trail }
        } else if !next.seen_up {
            let trail = Run::join(self.trail, next.lead);
            Self { up, known, trail, ..self }
        } else {
            let middle = Run::join(self.trail, next.lead);
            let inner = Run::longer(Run::longer(self.inner, middle), next.inner);
            Self { up, known, seen_up: true, lead: self.lead, inner, trail: next.trail }
        }
    }

    fn longest(&self) -> Option<Run> {
        Run::longer(Run::longer(self.lead, self.inner), self.trail)
    }
}

/// Where one part of a period is read from: a rollup resolution's buckets or raw samples.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Source {
    Buckets(i64),
    Raw,
}

/// The parts of `[from, to)` and where each is read from, oldest first: the coarsest
/// resolution needed (the finest still kept for `from`) up to where it is rolled up, then
/// each finer resolution, then raw samples for the newest part (and for the start of the
/// period before the first whole bucket). Raw samples thus cover minutes, not days, so a
/// report's work grows with the number of buckets, never with the samples behind them.
async fn plan(
    pool: &SqlitePool,
    settings: &Settings,
    from: i64,
    to: i64,
) -> sqlx::Result<Vec<(Source, i64, i64)>> {
    let now = now_ms();
    let coarsest = RESOLUTIONS
        .iter()
        .position(|r| {
            let kept = settings.retention.of(Resolution::from_bucket_secs(*r));
            from >= now - kept.as_millis() as i64
        })
        .unwrap_or(RESOLUTIONS.len() - 1);
    let mut parts = Vec::new();
    let mut cursor = from;
    for &res in RESOLUTIONS[..=coarsest].iter().rev() {
        let Some(done) = rollup::done_until_ms(pool, res).await? else { continue };
        let len = res * 1000;
        let start = cursor + (len - cursor.rem_euclid(len)) % len;
        let end = done.min(to) - done.min(to).rem_euclid(len);
        if end <= start {
            continue;
        }
        if start > cursor {
            parts.push((Source::Raw, cursor, start));
        }
        parts.push((Source::Buckets(res), start, end));
        cursor = end;
    }
    if cursor < to {
        parts.push((Source::Raw, cursor, to));
    }
    Ok(parts)
}

/// Folds one part of the period into each VM's availability: one summed row per VM, and the
/// observations one by one only for VMs that were both running and not in that part.
async fn fold_part(
    pool: &SqlitePool,
    interval: i64,
    (source, from, to): (Source, i64, i64),
    acc: &mut BTreeMap<i64, Availability>,
) -> sqlx::Result<()> {
    let totals = match source {
        Source::Buckets(res) => {
            store::bucket_totals(pool, res, from / 1000, to / 1000, interval).await?
        }
        Source::Raw => store::raw_totals(pool, from, to, interval).await?,
    };
    let mut mixed = Vec::new();
    let mut parts: BTreeMap<i64, Availability> = BTreeMap::new();
    for (vm, up, known, first, last) in totals {
        if known <= 0 {
            // Observed, never in a known state: listed, with no uptime figure.
            parts.entry(vm).or_default();
            continue;
        }
        if up > 0 && up < known {
            mixed.push(vm);
            continue;
        }
        let (start, end) = (first.unwrap_or(from), last.unwrap_or(to));
        parts.insert(vm, Availability::unit(start, end, up, known));
    }
    if !mixed.is_empty() {
        let ids = serde_json::Value::from(mixed).to_string();
        let mut units = match source {
            Source::Buckets(res) => {
                store::bucket_units(pool, res, from / 1000, to / 1000, interval, ids)
            }
            Source::Raw => store::raw_units(pool, from, to, interval, ids),
        };
        while let Some((vm, start, end, up, known)) = units.try_next().await? {
            let part = parts.entry(vm).or_default();
            *part = part.then(Availability::unit(start, end, up, known));
        }
    }
    for (vm, part) in parts {
        let a = acc.entry(vm).or_default();
        *a = a.then(part);
    }
    Ok(())
}

/// Uptime and longest outage per VM over `[from, to)`, every sample counted as one poll
/// interval. Aggregated by SQLite per part of the period (see [`plan`]); memory is a few
/// words per VM.
async fn availability_rows(
    pool: &SqlitePool,
    settings: &Settings,
    from: i64,
    to: i64,
) -> sqlx::Result<Vec<AvailabilityRow>> {
    let interval = settings.poll_interval.as_millis() as i64;
    let mut acc: BTreeMap<i64, Availability> = BTreeMap::new();
    for part in plan(pool, settings, from, to).await? {
        fold_part(pool, interval, part, &mut acc).await?;
    }
    let mut out = Vec::with_capacity(acc.len());
    for (id, host, name, uuid) in store::all_vms(pool).await? {
        let Some(a) = acc.get(&id) else { continue };
        let longest = a.longest().map_or(0, |r| r.end - r.start);
        out.push(AvailabilityRow {
            host,
            name,
            uuid,
            uptime_pct: (a.known > 0).then(|| a.up as f64 / a.known as f64 * 100.0),
            observed_hours: a.known as f64 / 3_600_000.0,
            observed: view::duration_words(a.known),
            longest_outage: if longest > 0 { view::duration_words(longest) } else { "none".into() },
            longest_outage_s: longest / 1000,
            outage_start: match a.longest() {
                Some(r) if longest > 0 => view::absolute(r.start),
                _ => String::new(),
            },
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The longest down run the straightforward way: walk the observations in order.
    fn brute_force(units: &[(i64, i64, i64, i64)]) -> Option<Run> {
        let (mut best, mut current): (Option<Run>, Option<i64>) = (None, None);
        for &(start, end, up, known) in units {
            if known <= 0 {
                continue;
            }
            if up > 0 {
                current = None;
                continue;
            }
            let begun = *current.get_or_insert(start);
            if best.is_none_or(|b| end - begun > b.end - b.start) {
                best = Some(Run { start: begun, end });
            }
        }
        best
    }

    #[test]
    fn stretches_combine_to_the_same_answer_as_one_walk_through_every_observation() {
        // A small deterministic generator: runs of up, down and unknown units with gaps.
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for _ in 0..500 {
            let mut units = Vec::new();
            let mut t = 0;
            for _ in 0..next(40) {
                t += 10 * next(3) as i64; // sometimes a gap
                let (up, known) = match next(4) {
                    0 => (10, 10),
                    1 => (0, 0),
                    2 => (4, 10),
                    _ => (0, 10),
                };
                units.push((t, t + 10, up, known));
                t += 10;
            }
            // Split anywhere into consecutive stretches: folding them gives the same result.
            let cut = next(units.len() as u64 + 1) as usize;
            let fold = |us: &[(i64, i64, i64, i64)]| {
                us.iter().fold(Availability::default(), |a, &(s, e, u, k)| {
                    a.then(Availability::unit(s, e, u, k))
                })
            };
            let whole = fold(&units);
            let split = fold(&units[..cut]).then(fold(&units[cut..]));
            assert_eq!(whole.longest(), brute_force(&units), "{units:?}");
            assert_eq!(split.longest(), whole.longest(), "cut at {cut}: {units:?}");
            assert_eq!((split.up, split.known), (whole.up, whole.known));
            let up: i64 = units.iter().map(|u| u.2).sum();
            assert_eq!(whole.up, up);
        }
    }
}
