//! Power requests in the audit log: each request is an `audit_log` row of kind `power` that
//! moves along its lifecycle (requested, sent, accepted, then failed, confirmed or
//! unconfirmed); the database's triggers refuse any other change (migrations/0002). Also the
//! lookup of a VM that can be acted on. One function per statement.

use sqlx::SqlitePool;

use crate::db::now_ms;
use crate::domain::{Actor, AuditOutcome, PowerAction, PowerState, VmKey, VmUuid};

/// A power request about to be sent.
pub struct PowerRequest<'a> {
    pub actor: &'a Actor,
    pub host: &'a str,
    pub vm_uuid: &'a VmUuid,
    pub vm_name: &'a str,
    pub action: PowerAction,
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
/// [`RequestError::Pending`] when the VM already has one in flight (a unique index).
pub async fn requested(pool: &SqlitePool, r: &PowerRequest<'_>) -> Result<i64, RequestError> {
    let res = sqlx::query_scalar(
        "INSERT INTO audit_log (ts, kind, user_name, client_addr, host_name, vm_uuid, vm_name, action, status)
         VALUES (?, 'power', ?, ?, ?, ?, ?, ?, 'requested') RETURNING id",
    )
    .bind(now_ms())
    .bind(&r.actor.user)
    .bind(&r.actor.addr)
    .bind(r.host)
    .bind(r.vm_uuid.as_str())
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
pub async fn refused(pool: &SqlitePool, r: &PowerRequest<'_>, reason: &str) -> sqlx::Result<i64> {
    sqlx::query_scalar(
        "INSERT INTO audit_log (ts, kind, user_name, client_addr, host_name, vm_uuid, vm_name, action, status, error, settled_at)
         VALUES (?, 'power', ?, ?, ?, ?, ?, ?, 'refused', ?, ?) RETURNING id",
    )
    .bind(now_ms())
    .bind(&r.actor.user)
    .bind(&r.actor.addr)
    .bind(r.host)
    .bind(r.vm_uuid.as_str())
    .bind(r.vm_name)
    .bind(r.action)
    .bind(reason)
    .bind(now_ms())
    .fetch_one(pool)
    .await
}

pub async fn sent(pool: &SqlitePool, id: i64) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE audit_log SET status = 'sent', sent_at = ? WHERE id = ? AND status = 'requested'",
    )
    .bind(now_ms())
    .bind(id)
    .execute(pool)
    .await?;
    Ok(())
}

pub async fn accepted(pool: &SqlitePool, id: i64) -> sqlx::Result<()> {
    sqlx::query("UPDATE audit_log SET status = 'accepted', accepted_at = ? WHERE id = ? AND status IN ('requested', 'sent')")
        .bind(now_ms())
        .bind(id)
        .execute(pool)
        .await?;
    Ok(())
}

/// Settles a pending power entry: `failed`, `confirmed` or `unconfirmed`.
pub async fn settled(
    pool: &SqlitePool,
    id: i64,
    outcome: AuditOutcome,
    error: Option<&str>,
    detail: Option<&str>,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE audit_log SET status = ?, error = COALESCE(?, error), detail = COALESCE(?, detail), settled_at = ?
         WHERE id = ? AND status IN ('requested', 'sent', 'accepted')",
    )
    .bind(outcome)
    .bind(error)
    .bind(detail)
    .bind(now_ms())
    .bind(id)
    .execute(pool)
    .await?;
    Ok(())
}

/// A power request still in flight.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PendingPower {
    pub id: i64,
    pub ts: i64,
    pub user_name: Option<String>,
    pub host_name: String,
    pub vm_uuid: String,
    pub vm_name: String,
    pub action: PowerAction,
    pub status: AuditOutcome,
}

impl PendingPower {
    /// In words, for the list and the VM page: `Shut down requested by alice, accepted`.
    pub fn describe(&self) -> String {
        format!(
            "{} requested by {}, {}",
            self.action.label(),
            self.user_name.as_deref().unwrap_or_default(),
            self.status.as_str()
        )
    }
}

/// Every power request in flight.
pub async fn pending(pool: &SqlitePool) -> sqlx::Result<Vec<PendingPower>> {
    sqlx::query_as(
        "SELECT id, ts, user_name, host_name, vm_uuid, vm_name, action, status FROM audit_log
         WHERE kind = 'power' AND status IN ('requested', 'sent', 'accepted')",
    )
    .fetch_all(pool)
    .await
}

/// The power request in flight for one VM, if any.
pub async fn pending_for(pool: &SqlitePool, vm: &VmKey) -> sqlx::Result<Option<PendingPower>> {
    sqlx::query_as(
        "SELECT id, ts, user_name, host_name, vm_uuid, vm_name, action, status FROM audit_log
         WHERE kind = 'power' AND status IN ('requested', 'sent', 'accepted')
           AND host_name = ? AND vm_uuid = ?",
    )
    .bind(vm.host.as_str())
    .bind(vm.uuid.as_str())
    .fetch_optional(pool)
    .await
}

/// The name and state of a VM present on a host (not gone), by host id and uuid.
pub async fn present_vm(
    pool: &SqlitePool,
    host_id: i64,
    uuid: &VmUuid,
) -> sqlx::Result<Option<(String, PowerState)>> {
    sqlx::query_as(
        "SELECT v.name, v.state FROM vms v WHERE v.host_id = ? AND v.uuid = ? AND v.gone_at IS NULL",
    )
    .bind(host_id)
    .bind(uuid.as_str())
    .fetch_optional(pool)
    .await
}
