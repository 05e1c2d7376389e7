//! Writing the audit log. Entries are inserted, and power entries move along their lifecycle;
//! the database's triggers refuse any other change (see migrations/0002_auth_audit.sql).

use sqlx::SqlitePool;

use crate::db::now_ms;

/// Kinds of audit entries.
pub mod kind {
    pub const POWER: &str = "power";
    pub const LOGIN: &str = "login";
    pub const LOGIN_FAILED: &str = "login_failed";
    pub const LOGOUT: &str = "logout";
    pub const CSRF_REFUSED: &str = "csrf_refused";
    pub const ACCESS_DENIED: &str = "access_denied";
    pub const USER_ADDED: &str = "user_added";
    pub const USER_REMOVED: &str = "user_removed";
    pub const ROLE_CHANGED: &str = "role_changed";
    pub const PASSWORD_CHANGED: &str = "password_changed";

    pub const ALL: &[&str] = &[
        POWER,
        LOGIN,
        LOGIN_FAILED,
        LOGOUT,
        CSRF_REFUSED,
        ACCESS_DENIED,
        USER_ADDED,
        USER_REMOVED,
        ROLE_CHANGED,
        PASSWORD_CHANGED,
    ];
}

/// Outcomes (`status`) of audit entries.
pub mod status {
    pub const REQUESTED: &str = "requested";
    pub const SENT: &str = "sent";
    pub const ACCEPTED: &str = "accepted";
    pub const FAILED: &str = "failed";
    pub const CONFIRMED: &str = "confirmed";
    pub const UNCONFIRMED: &str = "unconfirmed";
    pub const OK: &str = "ok";
    pub const REFUSED: &str = "refused";

    pub const ALL: &[&str] =
        &[REQUESTED, SENT, ACCEPTED, FAILED, CONFIRMED, UNCONFIRMED, OK, REFUSED];
    pub const PENDING: &[&str] = &[REQUESTED, SENT, ACCEPTED];
}

/// Who did something, from where.
#[derive(Debug, Clone, Default)]
pub struct Actor {
    pub user: Option<String>,
    pub addr: Option<String>,
}

/// A settled event (login, logout, refusal, user change).
pub async fn event(
    pool: &SqlitePool,
    kind: &str,
    actor: &Actor,
    status: &str,
    action: Option<&str>,
    detail: Option<&str>,
) -> sqlx::Result<i64> {
    sqlx::query_scalar(
        "INSERT INTO audit_log (ts, kind, user_name, client_addr, action, status, detail, settled_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
    )
    .bind(now_ms())
    .bind(kind)
    .bind(&actor.user)
    .bind(&actor.addr)
    .bind(action)
    .bind(status)
    .bind(detail)
    .bind(now_ms())
    .fetch_one(pool)
    .await
}

/// Records an event, logging instead of failing: an audit write must not turn a refusal into
/// a 500, but its loss must be visible in the log.
pub async fn event_logged(
    pool: &SqlitePool,
    kind: &str,
    actor: &Actor,
    status: &str,
    action: Option<&str>,
    detail: Option<&str>,
) {
    if let Err(e) = event(pool, kind, actor, status, action, detail).await {
        tracing::error!(kind, "could not write audit entry: {e}");
    }
}

/// A power request about to be sent.
pub struct PowerRequest<'a> {
    pub actor: &'a Actor,
    pub host: &'a str,
    pub vm_uuid: &'a str,
    pub vm_name: &'a str,
    pub action: &'a str,
}

/// Why a power request could not be recorded.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("another power action is still pending for this VM")]
    Pending,
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// Persists a power request (status `requested`) before anything is sent. Fails with
/// [`RequestError::Pending`] when the VM already has one in flight.
pub async fn power_requested(pool: &SqlitePool, r: &PowerRequest<'_>) -> Result<i64, RequestError> {
    let res = sqlx::query_scalar(
        "INSERT INTO audit_log (ts, kind, user_name, client_addr, host_name, vm_uuid, vm_name, action, status)
         VALUES (?, 'power', ?, ?, ?, ?, ?, ?, 'requested') RETURNING id",
    )
    .bind(now_ms())
    .bind(&r.actor.user)
    .bind(&r.actor.addr)
    .bind(r.host)
    .bind(r.vm_uuid)
    .bind(r.vm_name)
    .bind(r.action)
    .fetch_one(pool)
    .await;
    match res {
        Ok(id) => Ok(id),
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Err(RequestError::Pending),
        Err(e) => Err(e.into()),
    }
}

/// Records a power request refused before anything was sent (not applicable, already pending).
pub async fn power_refused(
    pool: &SqlitePool,
    r: &PowerRequest<'_>,
    reason: &str,
) -> sqlx::Result<i64> {
    sqlx::query_scalar(
        "INSERT INTO audit_log (ts, kind, user_name, client_addr, host_name, vm_uuid, vm_name, action, status, error, settled_at)
         VALUES (?, 'power', ?, ?, ?, ?, ?, ?, 'refused', ?, ?) RETURNING id",
    )
    .bind(now_ms())
    .bind(&r.actor.user)
    .bind(&r.actor.addr)
    .bind(r.host)
    .bind(r.vm_uuid)
    .bind(r.vm_name)
    .bind(r.action)
    .bind(reason)
    .bind(now_ms())
    .fetch_one(pool)
    .await
}

pub async fn power_sent(pool: &SqlitePool, id: i64) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE audit_log SET status = 'sent', sent_at = ? WHERE id = ? AND status = 'requested'",
    )
    .bind(now_ms())
    .bind(id)
    .execute(pool)
    .await?;
    Ok(())
}

pub async fn power_accepted(pool: &SqlitePool, id: i64) -> sqlx::Result<()> {
    sqlx::query("UPDATE audit_log SET status = 'accepted', accepted_at = ? WHERE id = ? AND status IN ('requested', 'sent')")
        .bind(now_ms())
        .bind(id)
        .execute(pool)
        .await?;
    Ok(())
}

/// Settles a pending power entry: `failed`, `confirmed` or `unconfirmed`.
pub async fn power_settled(
    pool: &SqlitePool,
    id: i64,
    status: &str,
    error: Option<&str>,
    detail: Option<&str>,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE audit_log SET status = ?, error = COALESCE(?, error), detail = COALESCE(?, detail), settled_at = ?
         WHERE id = ? AND status IN ('requested', 'sent', 'accepted')",
    )
    .bind(status)
    .bind(error)
    .bind(detail)
    .bind(now_ms())
    .bind(id)
    .execute(pool)
    .await?;
    Ok(())
}

/// A power entry still in flight.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PendingPower {
    pub id: i64,
    pub ts: i64,
    pub user_name: Option<String>,
    pub host_name: String,
    pub vm_uuid: String,
    pub vm_name: String,
    pub action: String,
    pub status: String,
}

pub async fn pending_power(pool: &SqlitePool) -> sqlx::Result<Vec<PendingPower>> {
    sqlx::query_as(
        "SELECT id, ts, user_name, host_name, vm_uuid, vm_name, action, status FROM audit_log
         WHERE kind = 'power' AND status IN ('requested', 'sent', 'accepted')",
    )
    .fetch_all(pool)
    .await
}

/// Deletes entries older than `days` days, in small batches so writers are never blocked long.
/// Returns how many were removed.
pub async fn prune(pool: &SqlitePool, days: u32) -> sqlx::Result<u64> {
    let cutoff = now_ms() - i64::from(days) * 86_400_000;
    sqlx::query("UPDATE audit_retention SET prune_before = ? WHERE id = 1")
        .bind(cutoff)
        .execute(pool)
        .await?;
    let mut total = 0;
    loop {
        let n = sqlx::query(
            "DELETE FROM audit_log WHERE id IN (SELECT id FROM audit_log WHERE ts < ? LIMIT 500)",
        )
        .bind(cutoff)
        .execute(pool)
        .await?
        .rows_affected();
        total += n;
        if n < 500 {
            return Ok(total);
        }
        tokio::task::yield_now().await;
    }
}
