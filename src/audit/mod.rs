//! The audit log: who asked for what, when, from where, and what actually happened.
//! `GET /audit` shows it filtered and paginated; `GET /audit.csv` downloads the same view.

pub mod store;

use rocket::http::{ContentType, Header};
use rocket::request::FlashMessage;
use rocket::{Route, State};
use rocket_dyn_templates::Template;
use serde::Serialize;
use sqlx::{QueryBuilder, Sqlite, SqlitePool};
use time::format_description::FormatItem;
use time::macros::format_description;
use time::{PrimitiveDateTime, Time};

use crate::auth::{Chrome, Viewer};
use crate::backend::PowerAction;
use crate::config::Settings;
use crate::db::Db;
use crate::error::AppError;
use crate::view;
use store::{kind, status};

pub fn routes() -> Vec<Route> {
    rocket::routes![audit_page, audit_csv]
}

const PAGE_SIZE: i64 = 50;
/// Most rows one CSV export returns.
const CSV_LIMIT: i64 = 100_000;

#[derive(Debug, Default, Clone)]
struct Filters {
    user: String,
    vm: String,
    host: String,
    action: String,
    outcome: String,
    from: Option<i64>,
    to: Option<i64>,
    /// The texts as given, echoed into the form.
    from_text: String,
    to_text: String,
}

const DATE_TIME: &[FormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]");
const DATE_TIME_SECS: &[FormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]");
const DATE: &[FormatItem<'static>] = format_description!("[year]-[month]-[day]");

/// Parses `YYYY-MM-DD`, `YYYY-MM-DDTHH:MM[:SS]` (or with a space) as UTC milliseconds. A bare
/// date means its start, or with `end_of_day` its last millisecond.
pub fn parse_time(s: &str, end_of_day: bool) -> Option<i64> {
    let s = s.trim().replace(' ', "T");
    let dt = PrimitiveDateTime::parse(&s, DATE_TIME_SECS)
        .or_else(|_| PrimitiveDateTime::parse(&s, DATE_TIME))
        .or_else(|_| {
            time::Date::parse(&s, DATE).map(|d| {
                if end_of_day {
                    PrimitiveDateTime::new(
                        d,
                        Time::from_hms_milli(23, 59, 59, 999).unwrap_or(Time::MIDNIGHT),
                    )
                } else {
                    PrimitiveDateTime::new(d, Time::MIDNIGHT)
                }
            })
        })
        .ok()?;
    Some((dt.assume_utc().unix_timestamp_nanos() / 1_000_000) as i64)
}

#[allow(clippy::too_many_arguments)]
fn filters(
    user: Option<String>,
    vm: Option<String>,
    host: Option<String>,
    action: Option<String>,
    outcome: Option<String>,
    from: Option<String>,
    to: Option<String>,
    notices: &mut Vec<String>,
) -> Filters {
    let clean = |v: Option<String>| {
        v.map(|s| s.trim().chars().take(200).collect::<String>()).unwrap_or_default()
    };
    let mut f = Filters {
        user: clean(user),
        vm: clean(vm),
        host: clean(host),
        action: clean(action),
        outcome: clean(outcome),
        from_text: clean(from),
        to_text: clean(to),
        ..Filters::default()
    };
    if !f.action.is_empty()
        && PowerAction::parse(&f.action).is_none()
        && !kind::ALL.contains(&f.action.as_str())
    {
        notices.push(format!("Unknown action {:?}: showing every action.", f.action));
        f.action.clear();
    }
    if !f.outcome.is_empty() && !status::ALL.contains(&f.outcome.as_str()) && f.outcome != "pending"
    {
        notices.push(format!("Unknown outcome {:?}: showing every outcome.", f.outcome));
        f.outcome.clear();
    }
    for (text, slot, end, label) in
        [(&f.from_text, &mut f.from, false, "from"), (&f.to_text, &mut f.to, true, "to")]
    {
        if text.is_empty() {
            continue;
        }
        match parse_time(text, end) {
            Some(t) if (0..=253_402_300_799_000).contains(&t) => *slot = Some(t),
            _ => notices.push(format!("Cannot read the {label} time {text:?} (use YYYY-MM-DD or YYYY-MM-DDTHH:MM, UTC): ignored.")),
        }
    }
    if let (Some(a), Some(b)) = (f.from, f.to) {
        if a > b {
            notices.push("The time range was reversed: swapped.".into());
            f.from = Some(b);
            f.to = Some(a);
            std::mem::swap(&mut f.from_text, &mut f.to_text);
        }
    }
    f
}

fn push_where(qb: &mut QueryBuilder<'_, Sqlite>, f: &Filters) {
    qb.push(" WHERE 1 = 1");
    if !f.user.is_empty() {
        qb.push(" AND user_name LIKE ").push_bind(format!("%{}%", f.user));
    }
    if !f.vm.is_empty() {
        qb.push(" AND (vm_uuid = ").push_bind(f.vm.clone());
        qb.push(" OR vm_name LIKE ").push_bind(format!("%{}%", f.vm)).push(")");
    }
    if !f.host.is_empty() {
        qb.push(" AND host_name = ").push_bind(f.host.clone());
    }
    if !f.action.is_empty() {
        qb.push(" AND (action = ").push_bind(f.action.clone());
        qb.push(" OR kind = ").push_bind(f.action.clone()).push(")");
    }
    if f.outcome == "pending" {
        qb.push(" AND status IN ('requested', 'sent', 'accepted')");
    } else if !f.outcome.is_empty() {
        qb.push(" AND status = ").push_bind(f.outcome.clone());
    }
    if let Some(t) = f.from {
        qb.push(" AND ts >= ").push_bind(t);
    }
    if let Some(t) = f.to {
        qb.push(" AND ts <= ").push_bind(t);
    }
}

#[derive(Debug, sqlx::FromRow)]
struct Row {
    id: i64,
    ts: i64,
    kind: String,
    user_name: Option<String>,
    client_addr: Option<String>,
    host_name: Option<String>,
    vm_uuid: Option<String>,
    vm_name: Option<String>,
    action: Option<String>,
    status: String,
    error: Option<String>,
    detail: Option<String>,
    accepted_at: Option<i64>,
    settled_at: Option<i64>,
}

impl Row {
    /// Request to confirmation, for confirmed power actions.
    fn confirm_ms(&self) -> Option<i64> {
        (self.kind == kind::POWER && self.status == status::CONFIRMED)
            .then(|| self.settled_at.map(|s| s - self.ts))
            .flatten()
    }
}

async fn fetch(pool: &SqlitePool, f: &Filters, limit: i64, offset: i64) -> sqlx::Result<Vec<Row>> {
    let mut qb = QueryBuilder::new(
        "SELECT id, ts, kind, user_name, client_addr, host_name, vm_uuid, vm_name, action, status, error, detail,
                accepted_at, settled_at FROM audit_log",
    );
    push_where(&mut qb, f);
    qb.push(" ORDER BY ts DESC, id DESC LIMIT ")
        .push_bind(limit)
        .push(" OFFSET ")
        .push_bind(offset);
    qb.build_query_as().fetch_all(pool).await
}

async fn count(pool: &SqlitePool, f: &Filters) -> sqlx::Result<i64> {
    let mut qb = QueryBuilder::new("SELECT COUNT(*) FROM audit_log");
    push_where(&mut qb, f);
    qb.build_query_scalar().fetch_one(pool).await
}

#[derive(Serialize)]
struct EntryView {
    id: i64,
    time: String,
    kind: String,
    user: String,
    addr: String,
    host: String,
    vm_name: String,
    vm_uuid: String,
    action: String,
    outcome: String,
    pending: bool,
    confirm_time: String,
    error: String,
    detail: String,
}

#[derive(Serialize)]
struct AuditPage {
    title: &'static str,
    chrome: Chrome,
    entries: Vec<EntryView>,
    total: i64,
    page: i64,
    pages: i64,
    prev: Option<String>,
    next: Option<String>,
    csv_href: String,
    user: String,
    vm: String,
    host: String,
    action: String,
    outcome: String,
    from: String,
    to: String,
    actions: Vec<&'static str>,
    outcomes: Vec<&'static str>,
    hosts: Vec<String>,
    notices: Vec<String>,
    filtered: bool,
}

fn query_string(f: &Filters, page: Option<i64>) -> String {
    let mut s = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in [
        ("user", &f.user),
        ("vm", &f.vm),
        ("host", &f.host),
        ("action", &f.action),
        ("outcome", &f.outcome),
        ("from", &f.from_text),
        ("to", &f.to_text),
    ] {
        if !v.is_empty() {
            s.append_pair(k, v);
        }
    }
    if let Some(p) = page.filter(|p| *p > 1) {
        s.append_pair("page", &p.to_string());
    }
    s.finish()
}

fn with_query(path: &str, qs: String) -> String {
    if qs.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{qs}")
    }
}

#[allow(clippy::too_many_arguments)] // one argument per query parameter
#[rocket::get("/audit?<user>&<vm>&<host>&<action>&<outcome>&<from>&<to>&<page>")]
async fn audit_page(
    me: Viewer<'_>,
    user: Option<String>,
    vm: Option<String>,
    host: Option<String>,
    action: Option<String>,
    outcome: Option<String>,
    from: Option<String>,
    to: Option<String>,
    page: Option<String>,
    db: &State<Db>,
    settings: &State<Settings>,
    flash: Option<FlashMessage<'_>>,
) -> Result<Template, AppError> {
    let mut notices = Vec::new();
    let f = filters(user, vm, host, action, outcome, from, to, &mut notices);
    let total = count(&db.0, &f).await?;
    let pages = ((total + PAGE_SIZE - 1) / PAGE_SIZE).max(1);
    let mut page = match page.as_deref().map(str::trim) {
        None | Some("") => 1,
        Some(p) => p.parse::<i64>().ok().filter(|p| *p >= 1).unwrap_or_else(|| {
            notices.push(format!("There is no page {p:?}: showing the first."));
            1
        }),
    };
    if page > pages {
        notices.push(format!("There are only {pages} page(s): showing the last."));
        page = pages;
    }
    let rows = fetch(&db.0, &f, PAGE_SIZE, (page - 1) * PAGE_SIZE).await?;
    let entries = rows
        .into_iter()
        .map(|r| EntryView {
            confirm_time: r
                .confirm_ms()
                .map(|ms| format!("{:.1} s", ms as f64 / 1000.0))
                .unwrap_or_default(),
            pending: status::PENDING.contains(&r.status.as_str()),
            id: r.id,
            time: view::absolute(r.ts),
            kind: r.kind,
            user: r.user_name.unwrap_or_default(),
            addr: r.client_addr.unwrap_or_default(),
            host: r.host_name.unwrap_or_default(),
            vm_name: r.vm_name.unwrap_or_default(),
            vm_uuid: r.vm_uuid.unwrap_or_default(),
            action: r.action.unwrap_or_default(),
            outcome: r.status,
            error: r.error.unwrap_or_default(),
            detail: r.detail.unwrap_or_default(),
        })
        .collect();
    let mut actions: Vec<&'static str> = PowerAction::ALL.iter().map(|a| a.as_str()).collect();
    actions.extend(kind::ALL.iter().filter(|k| **k != kind::POWER));
    let mut outcomes = status::ALL.to_vec();
    outcomes.push("pending");
    Ok(Template::render(
        "audit/list",
        AuditPage {
            title: "Audit log",
            chrome: Chrome::new(me.0, flash, settings),
            entries,
            total,
            page,
            pages,
            prev: (page > 1).then(|| with_query("/audit", query_string(&f, Some(page - 1)))),
            next: (page < pages).then(|| with_query("/audit", query_string(&f, Some(page + 1)))),
            csv_href: with_query("/audit.csv", query_string(&f, None)),
            filtered: !query_string(&f, None).is_empty(),
            user: f.user,
            vm: f.vm,
            host: f.host,
            action: f.action,
            outcome: f.outcome,
            from: f.from_text,
            to: f.to_text,
            actions,
            outcomes,
            hosts: settings.hosts.iter().map(|h| h.name.to_string()).collect(),
            notices,
        },
    ))
}

/// A CSV download.
pub struct Csv {
    pub filename: String,
    pub body: Vec<u8>,
}

impl<'r> rocket::response::Responder<'r, 'static> for Csv {
    fn respond_to(self, _: &'r rocket::Request<'_>) -> rocket::response::Result<'static> {
        rocket::Response::build()
            .header(ContentType::CSV)
            .header(Header::new(
                "Content-Disposition",
                format!("attachment; filename=\"{}\"", self.filename),
            ))
            .sized_body(self.body.len(), std::io::Cursor::new(self.body))
            .ok()
    }
}

#[allow(clippy::too_many_arguments)] // one argument per query parameter
#[rocket::get("/audit.csv?<user>&<vm>&<host>&<action>&<outcome>&<from>&<to>")]
async fn audit_csv(
    _me: Viewer<'_>,
    user: Option<String>,
    vm: Option<String>,
    host: Option<String>,
    action: Option<String>,
    outcome: Option<String>,
    from: Option<String>,
    to: Option<String>,
    db: &State<Db>,
) -> Result<Csv, AppError> {
    let mut notices = Vec::new();
    let f = filters(user, vm, host, action, outcome, from, to, &mut notices);
    let rows = fetch(&db.0, &f, CSV_LIMIT, 0).await?;
    let mut w = csv::Writer::from_writer(Vec::new());
    let write = |w: &mut csv::Writer<Vec<u8>>, rec: &[String]| {
        w.write_record(rec).map_err(|e| AppError::Internal(e.into()))
    };
    write(
        &mut w,
        &[
            "id",
            "time_utc",
            "kind",
            "user",
            "client_address",
            "host",
            "vm_name",
            "vm_uuid",
            "action",
            "outcome",
            "request_to_confirmation_ms",
            "accepted_at_utc",
            "error",
            "detail",
        ]
        .map(String::from),
    )?;
    for r in &rows {
        write(
            &mut w,
            &[
                r.id.to_string(),
                view::absolute(r.ts),
                r.kind.clone(),
                r.user_name.clone().unwrap_or_default(),
                r.client_addr.clone().unwrap_or_default(),
                r.host_name.clone().unwrap_or_default(),
                r.vm_name.clone().unwrap_or_default(),
                r.vm_uuid.clone().unwrap_or_default(),
                r.action.clone().unwrap_or_default(),
                r.status.clone(),
                r.confirm_ms().map(|v| v.to_string()).unwrap_or_default(),
                r.accepted_at.map(view::absolute).unwrap_or_default(),
                r.error.clone().unwrap_or_default(),
                r.detail.clone().unwrap_or_default(),
            ],
        )?;
    }
    let body = w.into_inner().map_err(|e| AppError::Internal(anyhow::anyhow!("csv: {e}")))?;
    Ok(Csv { filename: "vmdeck-audit.csv".into(), body })
}

/// Prunes the audit log daily when a retention is configured.
pub fn retention_stage() -> rocket::fairing::AdHoc {
    rocket::fairing::AdHoc::on_liftoff("Audit retention", |rocket| {
        Box::pin(async move {
            let (Some(db), Some(settings)) = (rocket.state::<Db>(), rocket.state::<Settings>())
            else {
                return;
            };
            let Some(days) = settings.audit_retention_days else { return };
            let pool = db.0.clone();
            let mut shutdown = rocket.shutdown();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(std::time::Duration::from_secs(3600));
                loop {
                    tokio::select! {
                        _ = tick.tick() => match store::prune(&pool, days).await {
                            Ok(0) => {}
                            Ok(n) => tracing::info!(removed = n, days, "pruned old audit entries"),
                            Err(e) => tracing::error!("audit pruning failed: {e}"),
                        },
                        _ = &mut shutdown => return,
                    }
                }
            });
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_as_utc_with_dates_covering_whole_days() {
        assert_eq!(parse_time("1970-01-02", false), Some(86_400_000));
        assert_eq!(parse_time("1970-01-01", true), Some(86_399_999));
        assert_eq!(parse_time("1970-01-01T00:01", false), Some(60_000));
        assert_eq!(parse_time("1970-01-01 00:00:05", false), Some(5_000));
        for bad in ["", "yesterday", "2026-13-01", "2026-02-30", "1970-01-01T25:00"] {
            assert_eq!(parse_time(bad, false), None, "{bad:?}");
        }
    }
}
