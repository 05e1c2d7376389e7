//! Availability per VM over a period: the share of observed time each VM was running, and
//! its longest outage. Rollups cover the part of the period they hold (the finest resolution
//! still kept for its start), raw samples the newest part.

use std::collections::BTreeMap;

use futures::TryStreamExt;
use rocket_dyn_templates::Template;
use serde::Serialize;
use sqlx::SqlitePool;

use super::{input_time, page_of, period_file_name, store, PeriodQuery};
use crate::auth::Viewer;
use crate::config::Settings;
use crate::db::now_ms;
use crate::domain::Resolution;
use crate::history::rollup::{self, RESOLUTIONS};
use crate::web::csv::Csv;
use crate::web::format as view;
use crate::web::pager::Pager;
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
    /// Outages in the period (runs of down observations between running ones).
    outages: u32,
}

/// An outage: down observations with no running one between them, from the start of its
/// first to the end of its last. Its length is the time observed down (`down`, ms), like
/// uptime only observed time: a gap without observations (vmdeck not running, the VM not yet
/// known) is counted neither as up nor as down, so an outage never begins before the VM was
/// first seen nor grows across a gap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Run {
    start: i64,
    end: i64,
    down: i64,
}

impl Run {
    /// Two runs with no running observation between them are one.
    fn join(a: Option<Run>, b: Option<Run>) -> Option<Run> {
        match (a, b) {
            (Some(a), Some(b)) => Some(Run { start: a.start, end: b.end, down: a.down + b.down }),
            (a, None) => a,
            (None, b) => b,
        }
    }

    /// The longer of two runs, the earlier one on a tie.
    fn longer(a: Option<Run>, b: Option<Run>) -> Option<Run> {
        match (a, b) {
            (Some(x), Some(y)) if y.down > x.down => b,
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
    /// How many down runs lie wholly between two running observations.
    inner_count: u32,
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
            Self { known, lead: Some(Run { start, end, down: known }), ..Self::default() }
        }
    }

    /// This stretch followed by `next`.
    fn then(self, next: Self) -> Self {
        let (up, known) = (self.up + next.up, self.known + next.known);
        if !self.seen_up {
            let lead = Run::join(self.lead, next.lead);
            Self { up, known, lead, ..next }
        } else if !next.seen_up {
            let trail = Run::join(self.trail, next.lead);
            Self { up, known, trail, ..self }
        } else {
            let middle = Run::join(self.trail, next.lead);
            let inner = Run::longer(Run::longer(self.inner, middle), next.inner);
            let inner_count = self.inner_count + u32::from(middle.is_some()) + next.inner_count;
            Self {
                up,
                known,
                seen_up: true,
                lead: self.lead,
                inner,
                trail: next.trail,
                inner_count,
            }
        }
    }

    fn longest(&self) -> Option<Run> {
        Run::longer(Run::longer(self.lead, self.inner), self.trail)
    }

    /// How many outages: the runs between running observations and those at either end.
    fn count(&self) -> u32 {
        self.inner_count + u32::from(self.lead.is_some()) + u32::from(self.trail.is_some())
    }
}

/// Where one part of a period is read from: a rollup resolution's buckets or raw samples.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Source {
    Buckets(i64),
    Raw,
}

/// The parts of `[from, to)` and where each is read from, oldest first, given each rollup
/// resolution (finest first) with how far it is rolled up (ms): the whole buckets of the
/// coarsest resolution that are rolled up, the rest (the start of the period before its first
/// whole bucket, the end after its last) from the finer resolutions in the same way, and
/// finally raw samples. Raw samples thus cover minutes, not days, so the work grows with the
/// number of buckets, never with the samples behind them.
fn split(from: i64, to: i64, tiers: &[(i64, Option<i64>)]) -> Vec<(Source, i64, i64)> {
    if from >= to {
        return Vec::new();
    }
    let Some((&(res, done), finer)) = tiers.split_last() else {
        return vec![(Source::Raw, from, to)];
    };
    let Some(done) = done else { return split(from, to, finer) };
    let len = res * 1000;
    let start = from + (len - from.rem_euclid(len)) % len;
    let end = done.min(to) - done.min(to).rem_euclid(len);
    if end <= start {
        return split(from, to, finer);
    }
    let mut parts = split(from, start, finer);
    parts.push((Source::Buckets(res), start, end));
    parts.extend(split(end, to, finer));
    parts
}

/// Outages are traced through at most about this many rows (buckets or samples) per report.
const DETAIL_ROWS: i64 = 200_000;

/// One VM's totals over the period: time running and known (ms), first and last moment known.
#[derive(Default)]
struct Totals {
    up: i64,
    known: i64,
    first: Option<i64>,
    last: Option<i64>,
}

/// What the availability report found, and the resolution its outages were traced at.
struct Found {
    rows: Vec<AvailabilityRow>,
    /// Bucket length in seconds when coarser than 5 minutes.
    coarse_outages: Option<i64>,
}

/// Uptime and longest outage per VM over `[from, to)`, every sample counted as one poll
/// interval. Two passes, both aggregated or streamed by SQLite, memory a few words per VM:
/// totals from the coarsest rollups that cover the period (exact: coarser buckets are sums
/// of finer ones); then, only for VMs that were both running and not, their outages traced
/// through the finest resolution kept for the period (coarser when that would take more
/// than [`DETAIL_ROWS`] rows).
async fn availability_rows(
    pool: &SqlitePool,
    settings: &Settings,
    from: i64,
    to: i64,
) -> sqlx::Result<Found> {
    let interval = settings.poll_interval.as_millis() as i64;
    let mut tiers = Vec::with_capacity(RESOLUTIONS.len());
    for res in RESOLUTIONS {
        tiers.push((res, rollup::done_until_ms(pool, res).await?));
    }
    let mut totals: BTreeMap<i64, Totals> = BTreeMap::new();
    for (source, a, b) in split(from, to, &tiers) {
        let rows = match source {
            Source::Buckets(res) => {
                store::bucket_totals(pool, res, a / 1000, b / 1000, interval).await?
            }
            Source::Raw => store::raw_totals(pool, a, b, interval).await?,
        };
        for (vm, up, known, first, last) in rows {
            let t = totals.entry(vm).or_default();
            t.up += up;
            t.known += known;
            t.first = t.first.or(first);
            t.last = last.or(t.last);
        }
    }

    let mixed: Vec<i64> =
        totals.iter().filter(|(_, t)| t.up > 0 && t.up < t.known).map(|(id, _)| *id).collect();
    let mut runs: BTreeMap<i64, Availability> = BTreeMap::new();
    let mut coarse_outages = None;
    if !mixed.is_empty() {
        let now = now_ms();
        let kept = |r: &i64| {
            from >= now - settings.retention.of(Resolution::from_bucket_secs(*r)).as_millis() as i64
        };
        let affordable = |r: &i64| mixed.len() as i64 * ((to - from) / (r * 1000)) <= DETAIL_ROWS;
        let finest = RESOLUTIONS
            .iter()
            .position(|r| kept(r) && affordable(r))
            .unwrap_or(RESOLUTIONS.len() - 1);
        if RESOLUTIONS[finest] > RESOLUTIONS[0] {
            coarse_outages = Some(RESOLUTIONS[finest]);
        }
        let ids = serde_json::Value::from(mixed).to_string();
        // Parts come oldest first, and each VM's units in time order within a part: folding
        // them straight into one summary per VM follows time.
        for (source, a, b) in split(from, to, &tiers[..=finest]) {
            let mut units = match source {
                Source::Buckets(res) => {
                    store::bucket_units(pool, res, a / 1000, b / 1000, interval, ids.clone())
                }
                Source::Raw => store::raw_units(pool, a, b, interval, ids.clone()),
            };
            while let Some((vm, start, end, up, known)) = units.try_next().await? {
                let run = runs.entry(vm).or_default();
                *run = run.then(Availability::unit(start, end, up, known));
            }
        }
    }

    let mut out = Vec::with_capacity(totals.len());
    for (id, host, name, uuid, first_seen) in store::all_vms(pool).await? {
        let Some(t) = totals.get(&id) else { continue };
        let (longest, outages) = match runs.get(&id) {
            Some(a) => (a.longest(), a.count()),
            // Never running: one outage, as long as the VM was observed.
            None if t.known > 0 && t.up == 0 => {
                (t.first.zip(t.last).map(|(start, end)| Run { start, end, down: t.known }), 1)
            }
            None => (None, 0),
        };
        // A bucket starts on the clock, maybe before the VM was first seen in it.
        let longest = longest.map(|r| Run { start: r.start.max(first_seen), ..r });
        let length = longest.map_or(0, |r| r.down);
        out.push(AvailabilityRow {
            host,
            name,
            uuid,
            uptime_pct: (t.known > 0).then(|| t.up as f64 / t.known as f64 * 100.0),
            observed_hours: t.known as f64 / 3_600_000.0,
            observed: view::duration_words(t.known),
            longest_outage: if length > 0 { view::duration_words(length) } else { "none".into() },
            longest_outage_s: length / 1000,
            outage_start: match longest {
                Some(r) if length > 0 => view::absolute(r.start),
                _ => String::new(),
            },
            outages,
        });
    }
    Ok(Found { rows: out, coarse_outages })
}

#[derive(Serialize)]
struct AvailabilityPage {
    title: &'static str,
    chrome: Chrome,
    from: String,
    to: String,
    /// One page of the rows; the pager tells how many VMs there are.
    rows: Vec<AvailabilityRow>,
    pager: Pager,
    notices: Notices,
    /// Preset periods as links: (label, href).
    presets: Vec<(&'static str, String)>,
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

#[rocket::get("/reports/availability?<sort>&<page>&<period..>")]
pub async fn availability(
    user: Viewer<'_>,
    sort: Option<&str>,
    page: Option<&str>,
    period: PeriodQuery<'_>,
    app: App<'_>,
) -> Result<Template, AppError> {
    let mut notices = Notices::new();
    let (a, b) = period.read(&mut notices);
    let found = availability_rows(app.pool, app.settings, a, b).await?;
    if let Some(res) = found.coarse_outages {
        notices.push(format!(
            "Outages in this period are traced through {} (a finer trace would read too many rows); uptime figures are exact.",
            Resolution::from_bucket_secs(res).label()
        ));
    }
    let mut rows = found.rows;
    let sort = sort_availability(&mut rows, sort, &mut notices);
    let href = |p| PeriodQuery::page_href("/reports/availability", (a, b), &sort, p);
    let (rows, pager) = page_of(rows, page, href, &mut notices);
    Ok(Template::render(
        "reports/availability",
        AvailabilityPage {
            title: "Availability",
            chrome: Chrome::new(user.0, None, app.settings),
            csv_href: PeriodQuery::href("/reports/availability.csv", (a, b)),
            presets: super::preset_links("/reports/availability"),
            from: input_time(a),
            to: input_time(b),
            rows,
            pager,
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
    let mut rows = availability_rows(app.pool, app.settings, a, b).await?.rows;
    sort_availability(&mut rows, None, &mut Notices::new());
    Ok(Csv::build(
        &period_file_name("availability", (a, b)),
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
            "outages",
        ],
        rows.into_iter().map(move |r| {
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
                r.outages.to_string(),
            ]
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The longest down run and the number of runs the straightforward way: walk the
    /// observations in order, adding up the time observed down.
    fn brute_force(units: &[(i64, i64, i64, i64)]) -> (Option<Run>, u32) {
        let (mut best, mut current, mut count): (Option<Run>, Option<(i64, i64)>, u32) =
            (None, None, 0);
        for &(start, end, up, known) in units {
            if known <= 0 {
                continue;
            }
            if up > 0 {
                current = None;
                continue;
            }
            if current.is_none() {
                count += 1;
            }
            let (begun, down) = current.get_or_insert((start, 0));
            *down += known;
            if best.is_none_or(|b| *down > b.down) {
                best = Some(Run { start: *begun, end, down: *down });
            }
        }
        (best, count)
    }

    #[test]
    fn a_period_is_read_from_the_coarsest_whole_buckets_then_finer_ones_then_raw_samples() {
        const H: i64 = 3_600_000;
        const M5: i64 = 300_000;
        // 5-minute buckets rolled up to 10:00, hourly to 09:00, daily not at all.
        let tiers = [(300, Some(10 * H)), (3600, Some(9 * H)), (86_400, None)];
        let parts = split(2 * H + 7 * 60_000, 10 * H + 90_000, &tiers);
        assert_eq!(
            parts,
            vec![
                (Source::Raw, 2 * H + 7 * 60_000, 2 * H + 2 * M5),
                (Source::Buckets(300), 2 * H + 2 * M5, 3 * H),
                (Source::Buckets(3600), 3 * H, 9 * H),
                (Source::Buckets(300), 9 * H, 10 * H),
                (Source::Raw, 10 * H, 10 * H + 90_000),
            ]
        );
        // Contiguous, whatever the period.
        for (from, to) in [(0, 1), (H - 1, 30 * H), (5 * M5 + 3, 9 * H + 1), (7 * H, 7 * H + M5)] {
            let parts = split(from, to, &tiers);
            assert_eq!(parts.first().map(|p| p.1), Some(from));
            assert_eq!(parts.last().map(|p| p.2), Some(to));
            assert!(parts.windows(2).all(|w| w[0].2 == w[1].1), "{parts:?}");
        }
        assert_eq!(split(5, 5, &tiers), vec![]);
        assert_eq!(split(0, H, &[]), vec![(Source::Raw, 0, H)]);
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
            let (longest, count) = brute_force(&units);
            assert_eq!(whole.longest(), longest, "{units:?}");
            assert_eq!(whole.count(), count, "{units:?}");
            assert_eq!(split.longest(), whole.longest(), "cut at {cut}: {units:?}");
            assert_eq!(split.count(), whole.count(), "cut at {cut}: {units:?}");
            assert_eq!((split.up, split.known), (whole.up, whole.known));
            let up: i64 = units.iter().map(|u| u.2).sum();
            assert_eq!(whole.up, up);
        }
    }
}
