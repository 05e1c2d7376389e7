//! `GET /metrics`: the Prometheus exposition of what vmdeck holds (README "Monitoring with
//! Prometheus" lists every series). Built from the database and the hosts' in-memory poll
//! state only, never by asking a hypervisor, so a scrape costs the same however slow the
//! hosts are.
//!
//! Access (`metrics_tokens`, `metrics_allow`): off (404) unless one is set; with both set a
//! scrape needs both. Nothing about a refused scrape is stored: scrapers are not users, and an
//! anonymous client must not be able to grow the audit log.

use std::collections::BTreeMap;
use std::sync::Arc;

use rocket::http::{Header, Status};
use rocket::request::{FromRequest, Outcome};
use rocket::response::{self, Responder};
use rocket::{Request, Response, State};
use sha2::{Digest, Sha256};
use sqlx::SqlitePool;
use tokio::sync::Mutex;

use crate::config::{MetricsAccess, Settings};
use crate::db::{now_ms, Db};
use crate::hosts::Hosts;
use crate::web::AppError;

pub mod exposition;
pub mod store;

use exposition::{HostFigures, Scrape};
use store::VmRow;

pub fn routes() -> Vec<rocket::Route> {
    rocket::routes![metrics]
}

/// The metrics' Rocket state.
pub fn stage() -> rocket::fairing::AdHoc {
    rocket::fairing::AdHoc::on_ignite("Metrics", |rocket| async move {
        rocket.manage(Metrics::default())
    })
}

/// What scrapes keep between them: the VM rows at one inventory version (re-read only when it
/// moved, i.e. after a poll or any VM change) and the audit log's counts by kind.
#[derive(Default)]
pub struct Metrics {
    vms: Mutex<Option<(i64, Arc<Vec<VmRow>>)>>,
    audit: Mutex<AuditTally>,
}

/// Audit entries counted by kind up to the entry `after`. The first scrape counts the whole
/// log; later ones only entries written since (ids only grow).
#[derive(Default)]
struct AuditTally {
    after: i64,
    by_kind: BTreeMap<String, u64>,
}

impl Metrics {
    async fn vm_rows(&self, pool: &SqlitePool) -> anyhow::Result<Arc<Vec<VmRow>>> {
        // The version is read before the rows, so rows newer than their tag are re-read next
        // time, never the other way round (as inventory::snapshot does).
        let version = store::inventory_version(pool).await?;
        let mut held = self.vms.lock().await;
        if let Some((v, rows)) = held.as_ref() {
            if *v == version {
                return Ok(Arc::clone(rows));
            }
        }
        let rows = Arc::new(store::vm_rows(pool).await?);
        *held = Some((version, Arc::clone(&rows)));
        Ok(rows)
    }

    async fn audit_counts(&self, pool: &SqlitePool) -> sqlx::Result<BTreeMap<String, u64>> {
        let mut tally = self.audit.lock().await;
        for (kind, n, max_id) in store::audit_counts_after(pool, tally.after).await? {
            *tally.by_kind.entry(kind).or_default() += u64::try_from(n).unwrap_or(0);
            tally.after = tally.after.max(max_id);
        }
        Ok(tally.by_kind.clone())
    }
}

/// Whether this request may scrape, decided from the settings, its bearer token and its
/// address.
pub enum Access {
    Granted,
    /// Neither key is set: `/metrics` does not exist (404).
    Off,
    /// No token, or a wrong one (401).
    Unauthorized,
    /// The address is not in `metrics_allow` (403).
    Forbidden,
}

/// Whether `bearer` is one of `tokens`, in constant time: both sides are hashed first, so
/// neither the tokens' contents nor their lengths shape the comparison's timing.
fn token_matches(tokens: &[String], bearer: &str) -> bool {
    use subtle::ConstantTimeEq;
    let given = Sha256::digest(bearer.as_bytes());
    tokens.iter().fold(false, |ok, t| ok | bool::from(Sha256::digest(t.as_bytes()).ct_eq(&given)))
}

/// The decision, apart from Rocket: tested on its own below.
fn decide(
    access: &MetricsAccess,
    addr: Option<std::net::IpAddr>,
    authorization: Option<&str>,
) -> Access {
    if !access.enabled() {
        return Access::Off;
    }
    if !access.allow.is_empty()
        && !addr.is_some_and(|a| access.allow.iter().any(|n| n.contains(&a)))
    {
        return Access::Forbidden;
    }
    if !access.tokens.is_empty() {
        let bearer = authorization.and_then(|h| h.strip_prefix("Bearer ")).map(str::trim);
        if !bearer.is_some_and(|b| token_matches(&access.tokens, b)) {
            return Access::Unauthorized;
        }
    }
    Access::Granted
}

#[rocket::async_trait]
impl<'r> FromRequest<'r> for Access {
    type Error = ();

    async fn from_request(req: &'r Request<'_>) -> Outcome<Self, ()> {
        let off = MetricsAccess::default();
        let access = req.rocket().state::<Settings>().map_or(&off, |s| &s.metrics);
        let addr = crate::auth::client_addr(req);
        Outcome::Success(decide(access, addr, req.headers().get_one("Authorization")))
    }
}

/// `/metrics`'s answer: the exposition, or a refusal in words (never an error page: the
/// client is a scraper).
pub enum Answer {
    Exposition(String),
    Refused(Access),
}

impl<'r> Responder<'r, 'static> for Answer {
    fn respond_to(self, _: &'r Request<'_>) -> response::Result<'static> {
        let (status, text) = match self {
            Answer::Exposition(body) => {
                return Response::build()
                    .raw_header("Content-Type", exposition::CONTENT_TYPE)
                    .sized_body(body.len(), std::io::Cursor::new(body))
                    .ok();
            }
            Answer::Refused(Access::Off) => (
                Status::NotFound,
                "The Prometheus metrics are off. To turn them on, set metrics_tokens (bearer \
                 tokens of at least 16 characters) and/or metrics_allow (scrapers' addresses or \
                 networks) in vmdeck's configuration; see README, \"Monitoring with Prometheus\".\n",
            ),
            Answer::Refused(Access::Unauthorized) => (
                Status::Unauthorized,
                "A bearer token listed in metrics_tokens is required: send Authorization: \
                 Bearer <token>.\n",
            ),
            Answer::Refused(Access::Forbidden) | Answer::Refused(Access::Granted) => (
                Status::Forbidden,
                "This address may not read the metrics: it is not in metrics_allow.\n",
            ),
        };
        let mut res = Response::build();
        res.status(status)
            .raw_header("Content-Type", "text/plain; charset=utf-8")
            .sized_body(text.len(), std::io::Cursor::new(text));
        if status == Status::Unauthorized {
            res.header(Header::new("WWW-Authenticate", "Bearer realm=\"vmdeck metrics\""));
        }
        res.ok()
    }
}

#[rocket::get("/metrics")]
pub async fn metrics(
    access: Access,
    db: &State<Db>,
    hosts: &State<Arc<Hosts>>,
    state: &State<Metrics>,
    consoles: Option<&State<Arc<crate::console::Consoles>>>,
) -> Result<Answer, AppError> {
    if !matches!(access, Access::Granted) {
        return Ok(Answer::Refused(access));
    }
    let pool = &db.0;
    let vms = state.vm_rows(pool).await?;
    let host_rows = store::host_rows(pool).await?;
    let hosts = hosts
        .0
        .iter()
        .map(|entry| {
            let row = host_rows.iter().find(|r| r.name == entry.config.name.as_str());
            let rt = entry.runtime();
            let db_duration = row
                .and_then(|r| Some(r.last_finished? - r.last_started?))
                .map(|ms| ms.max(0) as f64 / 1000.0);
            HostFigures {
                name: entry.config.name.as_str().to_string(),
                up: row.and_then(|r| r.last_ok) == Some(true) && rt.store_fault.is_none(),
                last_duration_secs: rt
                    .last_duration_ms
                    .map(|ms| ms as f64 / 1000.0)
                    .or(db_duration),
                last_success_secs: row.and_then(|r| r.ok_finished).map(|ms| ms as f64 / 1000.0),
                consecutive_failures: rt.consecutive_failures,
                vms: row.map_or(0, |r| r.present_vms),
            }
        })
        .collect();
    let mut pending: BTreeMap<String, i64> =
        [("power".to_string(), 0), ("snapshot".to_string(), 0)].into();
    pending.extend(store::pending_requests(pool).await?);
    let audit = state.audit_counts(pool).await?;
    let login_failures = audit.get("login_failed").copied().unwrap_or(0);
    let mut alerts: BTreeMap<(String, String), i64> = ["pending", "firing"]
        .into_iter()
        .flat_map(|state| {
            crate::alerts::rules::Severity::ALL
                .into_iter()
                .map(move |s| ((state.to_string(), s.as_str().to_string()), 0))
        })
        .collect();
    for (state, severity, n) in store::open_alerts(pool).await? {
        alerts.insert((state, severity), n);
    }
    let scrape = Scrape {
        now_ms: now_ms(),
        vms,
        hosts,
        pending: pending.into_iter().collect(),
        audit: audit.into_iter().collect(),
        login_failures,
        consoles_open: consoles.map_or(0, |c| c.open().len()),
        alerts: alerts.into_iter().collect(),
    };
    let body = exposition::encode(scrape)
        .map_err(|e| AppError::Internal(anyhow::anyhow!("encoding the metrics: {e}")))?;
    Ok(Answer::Exposition(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access(tokens: &[&str], allow: &[&str]) -> MetricsAccess {
        MetricsAccess {
            tokens: tokens.iter().map(|t| t.to_string()).collect(),
            allow: allow.iter().map(|a| a.parse().unwrap()).collect(),
        }
    }

    #[test]
    fn decides_by_token_and_address() {
        let local = Some("127.0.0.1".parse().unwrap());
        let other = Some("192.0.2.7".parse().unwrap());
        let tok = "Bearer 0123456789abcdef";
        assert!(matches!(decide(&access(&[], &[]), local, Some(tok)), Access::Off));
        let t = access(&["0123456789abcdef", "fedcba9876543210"], &[]);
        assert!(matches!(decide(&t, other, Some(tok)), Access::Granted));
        assert!(matches!(decide(&t, other, Some("Bearer fedcba9876543210")), Access::Granted));
        assert!(matches!(decide(&t, other, Some("Bearer 0123456789abcdeX")), Access::Unauthorized));
        assert!(matches!(decide(&t, other, Some("Bearer 0123")), Access::Unauthorized));
        assert!(matches!(decide(&t, other, None), Access::Unauthorized));
        let a = access(&[], &["127.0.0.0/8"]);
        assert!(matches!(decide(&a, local, None), Access::Granted));
        assert!(matches!(decide(&a, other, Some(tok)), Access::Forbidden));
        assert!(matches!(decide(&a, None, None), Access::Forbidden));
        let both = access(&["0123456789abcdef"], &["127.0.0.1/32"]);
        assert!(matches!(decide(&both, local, None), Access::Unauthorized));
        assert!(matches!(decide(&both, other, Some(tok)), Access::Forbidden));
        assert!(matches!(decide(&both, local, Some(tok)), Access::Granted));
    }
}
