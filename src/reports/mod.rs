//! Historical reports (`/reports`): the fleet as of a moment (`fleet`), availability per VM
//! over a period (`availability`), and allocated capacity over time (`capacity`). Each
//! downloads as CSV with the same parameters. The SQL is in `store`.
//!
//! The fleet and capacity reports read configuration versions, address intervals and VM
//! lifetimes, which are small. Availability reads the rollups for the part of the period they
//! cover and raw samples only for the newest part, so a year costs about as much as a day.

mod availability;
mod capacity;
mod fleet;
mod store;

use rocket::form::FromForm;
use rocket::request::FlashMessage;
use rocket::Route;
use rocket_dyn_templates::Template;
use serde::Serialize;

use crate::auth::Viewer;
use crate::db::now_ms;
use crate::domain::time::{time_param, Period};
use crate::web::format as view;
use crate::web::pager::Pager;
use crate::web::{App, Chrome, Notices};

/// Rows per page of a per-VM report (its CSV has every row).
const PAGE_ROWS: usize = 200;

/// The page `requested` of a report's rows, and its pager; `href` links a page.
fn page_of<T>(
    mut rows: Vec<T>,
    requested: Option<&str>,
    href: impl Fn(usize) -> String,
    notices: &mut Notices,
) -> (Vec<T>, Pager) {
    let pager = Pager::new(requested.unwrap_or(""), rows.len(), PAGE_ROWS, href, notices);
    rows.truncate(pager.last);
    rows.drain(..pager.offset().min(rows.len()));
    (rows, pager)
}

pub fn routes() -> Vec<Route> {
    rocket::routes![
        index,
        fleet::fleet,
        fleet::fleet_csv,
        availability::availability,
        availability::availability_csv,
        capacity::capacity,
        capacity::capacity_csv
    ]
}

#[derive(Serialize)]
struct IndexPage {
    title: &'static str,
    chrome: Chrome,
    now: String,
    month_ago: String,
}

#[rocket::get("/reports")]
async fn index(user: Viewer<'_>, app: App<'_>, flash: Option<FlashMessage<'_>>) -> Template {
    let now = now_ms();
    Template::render(
        "reports/index",
        IndexPage {
            title: "Reports",
            chrome: Chrome::new(user.0, flash, app.settings),
            now: input_time(now),
            month_ago: input_time(now - 30 * 86_400_000),
        },
    )
}

/// `YYYY-MM-DDTHH:MM` (UTC), the form the report inputs take.
fn input_time(ms: i64) -> String {
    view::input_time(ms)
}

/// The preset periods of a report as links: `path?from=…&to=…`, with their labels.
fn preset_links(path: &str) -> Vec<(&'static str, String)> {
    view::presets(now_ms())
        .into_iter()
        .map(|p| {
            let to = if p.to.is_empty() { String::new() } else { format!("&to={}", p.to) };
            (p.label, format!("{path}?from={}{to}", p.from))
        })
        .collect()
}

/// `?from=…&to=…` of a report over a period.
#[derive(Debug, Default, FromForm)]
struct PeriodQuery<'r> {
    from: Option<&'r str>,
    to: Option<&'r str>,
}

impl PeriodQuery<'_> {
    /// The period asked for: the last 30 days by default, never past now; a reversed one is
    /// swapped.
    fn read(&self, notices: &mut Notices) -> (i64, i64) {
        let now = now_ms();
        let default_from = now - 30 * 86_400_000;
        let instead = [
            format!("using {}", view::absolute(default_from)),
            format!("using {}", view::absolute(now)),
        ];
        let p = Period::read(
            self.from.unwrap_or(""),
            self.to.unwrap_or(""),
            [&instead[0], &instead[1]],
            notices,
        );
        let (mut a, mut b) = (p.from.unwrap_or(default_from), p.to.unwrap_or(now));
        if a > b {
            notices.push("The period was reversed: swapped.".into());
            std::mem::swap(&mut a, &mut b);
        }
        (a, b.min(now))
    }

    /// The same period as a query string, for the CSV link.
    fn href(path: &str, (a, b): (i64, i64)) -> String {
        format!("{path}?from={}&to={}", input_time(a), input_time(b))
    }

    /// One page of the report over the same period, sorted by `sort`.
    fn page_href(path: &str, period: (i64, i64), sort: &str, page: usize) -> String {
        format!("{}&sort={sort}&page={page}", Self::href(path, period))
    }
}

/// A CSV download's file name: the report and its period, `vmdeck-availability-2026-11-01_2026-11-30.csv`.
fn period_file_name(report: &str, (a, b): (i64, i64)) -> String {
    let day = |ms: i64| view::absolute(ms).get(0..10).unwrap_or("").to_string();
    format!("vmdeck-{report}-{}_{}.csv", day(a), day(b))
}

/// A CSV download's file name: the report and its moment, `vmdeck-fleet-2026-11-30T1200Z.csv`.
fn moment_file_name(report: &str, at: i64) -> String {
    let t = input_time(at).replace(':', "");
    format!("vmdeck-{report}-{t}Z.csv")
}

/// The moment of a report "as of": now by default, never in the future.
fn at_param(at: Option<&str>, notices: &mut Notices) -> i64 {
    let now = now_ms();
    let instead = format!("using {}", view::absolute(now));
    let t = time_param("report", at.unwrap_or(""), false, &instead, notices).unwrap_or(now);
    if t > now {
        notices.push("That moment is in the future: showing now.".into());
        now
    } else {
        t
    }
}

/// An optional value as a CSV cell.
fn opt<T: ToString>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_default()
}
