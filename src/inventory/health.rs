//! Each host's poll health: the banner above the VM list and `GET /healthz` (JSON). Anyone gets
//! the overall and per-host status, nothing more (no host names, URIs, command lines or
//! errors: the endpoint is open, and readable through DNS rebinding); a session or a bearer
//! token from `healthz_tokens` gets the details.

use std::sync::Arc;

use rocket::serde::json::Json;
use rocket::State;
use serde::Serialize;
use sqlx::SqlitePool;

use super::store;
use crate::config::Settings;
use crate::db::{now_ms, Db, Storage, StorageFault};
use crate::hosts::Hosts;
use crate::web::format as view;
use crate::web::AppError;

/// A host's data is stale once it is older than this many poll intervals.
const STALE_INTERVALS: i64 = 3;

/// One host's poll health, as the banner and `/healthz` show it.
#[derive(Debug, Serialize)]
pub struct HostStatus {
    pub name: String,
    driver: String,
    uri: String,
    demo: bool,
    /// `ok`, `failing`, `unstored` (polled, but the database refuses the poll: full,
    /// read-only...), `stale` or `pending` (no poll finished yet).
    pub status: &'static str,
    pub polling: bool,
    last_poll_started_ms: Option<i64>,
    last_poll_finished_ms: Option<i64>,
    pub last_success_ms: Option<i64>,
    pub last_error: Option<String>,
    vm_count: Option<i64>,
    consecutive_failures: u32,
    last_duration_ms: Option<u64>,
    last_success_ago: Option<String>,
    last_success_abs: Option<String>,
}

/// The configured hosts' health, in configuration order.
pub async fn host_statuses(
    pool: &SqlitePool,
    hosts: &Hosts,
    settings: &Settings,
) -> sqlx::Result<Vec<HostStatus>> {
    let rows = store::host_status_rows(pool).await?;
    let now = now_ms();
    let stale_after = settings.poll_interval.as_millis() as i64 * STALE_INTERVALS;
    Ok(hosts
        .0
        .iter()
        .filter_map(|entry| {
            let row = rows.iter().find(|r| r.name == entry.config.name.as_str())?;
            let rt = entry.runtime();
            let status = match (row.last_ok, row.ok_finished) {
                _ if rt.store_fault.is_some() => "unstored",
                (None, _) => "pending",
                (Some(false), _) => "failing",
                (Some(true), Some(t)) if now - t > stale_after => "stale",
                _ => "ok",
            };
            Some(HostStatus {
                name: row.name.clone(),
                driver: row.driver.clone(),
                uri: row.uri_redacted.clone(),
                demo: row.demo,
                status,
                polling: rt.polling,
                last_poll_started_ms: row.last_started,
                last_poll_finished_ms: row.last_finished,
                last_success_ms: row.ok_finished,
                last_error: match rt.store_fault {
                    Some(fault) => Some(format!("{}: cannot store polls", fault.label())),
                    None if row.last_ok == Some(false) => row.last_error.clone(),
                    None => None,
                },
                vm_count: row.ok_vm_count,
                consecutive_failures: rt.consecutive_failures,
                last_duration_ms: rt.last_duration_ms,
                last_success_ago: row.ok_finished.map(|t| view::ago(t, now)),
                last_success_abs: row.ok_finished.map(view::absolute),
            })
        })
        .collect())
}

#[derive(Serialize)]
pub struct Health {
    /// `ok` when every host's last poll succeeded and is fresh and the database takes writes,
    /// else `degraded`.
    status: &'static str,
    poll_interval_secs: u64,
    /// `ok`, or why the database refuses writes: `full`, `read-only`, `io-error`.
    database: &'static str,
    /// What that means, in words; absent when the database is fine.
    #[serde(skip_serializing_if = "Option::is_none")]
    database_error: Option<String>,
    hosts: Vec<HostStatus>,
}

/// What anyone may read: the overall status and each host's (in configuration order).
#[derive(Serialize)]
pub struct PublicHealth {
    status: &'static str,
    hosts: Vec<PublicHostStatus>,
}

#[derive(Serialize)]
pub struct PublicHostStatus {
    /// `ok` or `degraded`.
    status: &'static str,
}

/// Whether the request may see `/healthz`'s details: a logged-in user, or a configured token.
pub struct HealthDetails(bool);

#[rocket::async_trait]
impl<'r> rocket::request::FromRequest<'r> for HealthDetails {
    type Error = ();

    async fn from_request(req: &'r rocket::Request<'_>) -> rocket::request::Outcome<Self, ()> {
        use subtle::ConstantTimeEq;
        let tokens = req.rocket().state::<Settings>().map_or(&[][..], |s| &s.healthz_tokens[..]);
        let bearer = req
            .headers()
            .get_one("Authorization")
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim);
        let token_ok = bearer.is_some_and(|b| {
            tokens.iter().fold(false, |ok, t| ok | bool::from(t.as_bytes().ct_eq(b.as_bytes())))
        });
        let session = token_ok || req.guard::<&crate::domain::CurrentUser>().await.is_success();
        rocket::request::Outcome::Success(HealthDetails(session))
    }
}

#[rocket::get("/healthz")]
pub async fn healthz(
    details: HealthDetails,
    db: &State<Db>,
    hosts: &State<Arc<Hosts>>,
    storage: &State<Arc<Storage>>,
    settings: &State<Settings>,
) -> Result<Result<Json<Health>, Json<PublicHealth>>, AppError> {
    let hosts = host_statuses(&db.0, hosts, settings).await?;
    let fault = storage.fault();
    let status =
        if fault.is_none() && hosts.iter().all(|h| h.status == "ok") { "ok" } else { "degraded" };
    if details.0 {
        return Ok(Ok(Json(Health {
            status,
            poll_interval_secs: settings.poll_interval.as_secs(),
            database: fault.map_or("ok", StorageFault::as_str),
            database_error: fault.map(|f| {
                format!(
                    "{}: cannot store polls or record power requests; {}",
                    f.label(),
                    f.remedy()
                )
            }),
            hosts,
        })));
    }
    let hosts = hosts
        .iter()
        .map(|h| PublicHostStatus { status: if h.status == "ok" { "ok" } else { "degraded" } })
        .collect();
    Ok(Err(Json(PublicHealth { status, hosts })))
}
