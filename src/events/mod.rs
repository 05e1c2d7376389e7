//! Recording settled events in the audit log: logins, logouts, refusals, user changes. Every
//! feature and the CLI write through here; the audit page (`audit`) only reads. (Power requests,
//! which move along a lifecycle, are written by `control::store`.) `chain` seals every
//! settled entry into the log's hash chain.

pub mod chain;

use sqlx::SqlitePool;

use crate::db::now_ms;
use crate::domain::{Actor, AuditKind, AuditOutcome};

/// A settled event (login, logout, refusal, user change), appended to the hash chain.
pub async fn record(
    pool: &SqlitePool,
    kind: AuditKind,
    actor: &Actor,
    outcome: AuditOutcome,
    action: Option<&str>,
    detail: Option<&str>,
) -> sqlx::Result<i64> {
    let content = chain::Content {
        action: action.map(Into::into),
        detail: detail.map(Into::into),
        ..chain::Content::settled(kind, actor, outcome, now_ms())
    };
    chain::append(pool, content).await
}

/// Records an event, logging instead of failing: an audit write must not turn a refusal into
/// a 500, but its loss must be visible in the log.
pub async fn record_logged(
    pool: &SqlitePool,
    kind: AuditKind,
    actor: &Actor,
    outcome: AuditOutcome,
    action: Option<&str>,
    detail: Option<&str>,
) {
    if let Err(e) = record(pool, kind, actor, outcome, action, detail).await {
        tracing::error!(kind = kind.as_str(), "could not write audit entry: {e}");
    }
}
