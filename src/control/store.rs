//! Power requests in the audit log: each request is an `audit_log` row of kind `power` that
//! moves along its lifecycle (requested, sent, accepted, then failed, confirmed, unconfirmed,
//! or superseded by a forced action); the database's triggers refuse any other change
//! (migrations/0002, 0004, 0007). A
//! request is sealed into the log's hash chain when it settles (`events::chain`). Also the
//! lookup of a VM that can be acted on. One function per statement.

use sqlx::{SqliteConnection, SqlitePool};

use crate::db::now_ms;
use crate::domain::{Actor, AuditKind, AuditOutcome, PowerAction, PowerState, VmKey, VmUuid};
use crate::events::chain::{self, Content, Seal};

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
    /// The VM has a request in flight that this one may not overrule (the same action, a
    /// graceful one, or a forced one while another forced one is pending): double-click
    /// protection. Carries the pending request when it could be read.
    #[error("another power action is still pending for this VM")]
    Pending(Option<PendingPower>),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// What the database says when a VM already has a request in flight: its trigger speaks
/// before the unique index can (migrations/0004 says why).
const PENDING_REFUSAL: &str = "another request is still pending for this VM";

/// A request recorded: its id, and the graceful request it superseded, if any.
#[derive(Debug)]
pub struct Recorded {
    pub id: i64,
    pub superseded: Option<PendingPower>,
}

/// Persists a power request (status `requested`) before anything is sent. When the VM already
/// has one in flight, an action that overrules it ([`PowerAction::overrules`]: a forced one
/// over a graceful one) settles it as `superseded` (sealed
/// into the chain) and is recorded in the same write transaction; otherwise it fails with
/// [`RequestError::Pending`] (a trigger backed by a unique index keeps this true whoever
/// writes).
pub async fn requested(pool: &SqlitePool, r: &PowerRequest<'_>) -> Result<Recorded, RequestError> {
    requested_at(pool, r, now_ms()).await
}

/// [`requested`] at a given time (ms). The lifecycle's `_at` functions let the demo record its
/// generated past through the same statements (src/demo/history.rs); everything else uses now.
pub async fn requested_at(
    pool: &SqlitePool,
    r: &PowerRequest<'_>,
    at: i64,
) -> Result<Recorded, RequestError> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    let pending = pending_in(&mut tx, r.host, r.vm_uuid.as_str()).await?;
    let superseded = match pending {
        Some(p) if r.action.overrules(p.action) => {
            let detail = format!(
                "superseded by {}, requested by {}",
                r.action.label(),
                r.actor.user.as_deref().unwrap_or("someone")
            );
            settle_in(&mut tx, p.id, AuditOutcome::Superseded, None, Some(&detail), at).await?;
            Some(p)
        }
        Some(p) => return Err(RequestError::Pending(Some(p))),
        None => None,
    };
    let res = sqlx::query_scalar(
        "INSERT INTO audit_log (ts, kind, user_name, client_addr, host_name, vm_uuid, vm_name, action, status)
         VALUES (?, 'power', ?, ?, ?, ?, ?, ?, 'requested') RETURNING id",
    )
    .bind(at)
    .bind(&r.actor.user)
    .bind(&r.actor.addr)
    .bind(r.host)
    .bind(r.vm_uuid.as_str())
    .bind(r.vm_name)
    .bind(r.action)
    .fetch_one(&mut *tx)
    .await;
    let id = match res {
        Ok(id) => id,
        Err(sqlx::Error::Database(e))
            if e.is_unique_violation() || e.message().contains(PENDING_REFUSAL) =>
        {
            return Err(RequestError::Pending(None));
        }
        Err(e) => return Err(e.into()),
    };
    tx.commit().await?;
    Ok(Recorded { id, superseded })
}

/// The request in flight for a VM, read inside a write transaction.
async fn pending_in(
    conn: &mut SqliteConnection,
    host: &str,
    uuid: &str,
) -> sqlx::Result<Option<PendingPower>> {
    sqlx::query_as(
        "SELECT id, ts, user_name, host_name, vm_uuid, vm_name, action, status FROM audit_log
         WHERE kind = 'power' AND status IN ('requested', 'sent', 'accepted')
           AND host_name = ? AND vm_uuid = ?",
    )
    .bind(host)
    .bind(uuid)
    .fetch_optional(conn)
    .await
}

/// Records a power request refused before anything was sent (not applicable, already pending),
/// settled and sealed at once.
pub async fn refused(pool: &SqlitePool, r: &PowerRequest<'_>, reason: &str) -> sqlx::Result<i64> {
    let content = Content {
        host_name: Some(r.host.into()),
        vm_uuid: Some(r.vm_uuid.as_str().into()),
        vm_name: Some(r.vm_name.into()),
        action: Some(r.action.as_str().into()),
        error: Some(reason.into()),
        ..Content::settled(AuditKind::Power, r.actor, AuditOutcome::Refused, now_ms())
    };
    chain::append(pool, content).await
}

/// Marks a request `sent`, just before it goes to the host. False when it is no longer
/// `requested` (superseded while it waited for its host's slot): then it must not be sent.
pub async fn sent(pool: &SqlitePool, id: i64) -> sqlx::Result<bool> {
    sent_at(pool, id, now_ms()).await
}

/// [`sent`] at a given time (ms).
pub async fn sent_at(pool: &SqlitePool, id: i64, at: i64) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "UPDATE audit_log SET status = 'sent', sent_at = ? WHERE id = ? AND status = 'requested'",
    )
    .bind(at)
    .bind(id)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Whether a request is still in flight (a watch stops once it was settled otherwise:
/// superseded, or by the restart's sweep).
pub async fn is_pending(pool: &SqlitePool, id: i64) -> sqlx::Result<bool> {
    let status: Option<AuditOutcome> =
        sqlx::query_scalar("SELECT status FROM audit_log WHERE id = ?")
            .bind(id)
            .fetch_optional(pool)
            .await?;
    Ok(status.is_some_and(AuditOutcome::is_pending))
}

pub async fn accepted(pool: &SqlitePool, id: i64) -> sqlx::Result<()> {
    accepted_at(pool, id, now_ms()).await
}

/// [`accepted`] at a given time (ms).
pub async fn accepted_at(pool: &SqlitePool, id: i64, at: i64) -> sqlx::Result<()> {
    sqlx::query("UPDATE audit_log SET status = 'accepted', accepted_at = ? WHERE id = ? AND status IN ('requested', 'sent')")
        .bind(at)
        .bind(id)
        .execute(pool)
        .await?;
    Ok(())
}

/// Settles a pending power entry (`failed`, `confirmed`, `unconfirmed`) and seals it at the
/// end of the chain, in one write transaction. An entry already settled (by the watch and the
/// restart's sweep both, say) is left as it is.
pub async fn settled(
    pool: &SqlitePool,
    id: i64,
    outcome: AuditOutcome,
    error: Option<&str>,
    detail: Option<&str>,
) -> sqlx::Result<()> {
    settled_at(pool, id, outcome, error, detail, now_ms()).await
}

/// [`settled`] at a given time (ms). The entry still joins the chain at its head: the chain
/// runs in the order entries are written, whatever times they carry.
pub async fn settled_at(
    pool: &SqlitePool,
    id: i64,
    outcome: AuditOutcome,
    error: Option<&str>,
    detail: Option<&str>,
    at: i64,
) -> sqlx::Result<()> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    settle_in(&mut tx, id, outcome, error, detail, at).await?;
    tx.commit().await
}

/// Settles and seals a pending entry inside the caller's write transaction; an entry already
/// settled is left as it is.
async fn settle_in(
    conn: &mut SqliteConnection,
    id: i64,
    outcome: AuditOutcome,
    error: Option<&str>,
    detail: Option<&str>,
    at: i64,
) -> sqlx::Result<()> {
    let Some(mut entry) = chain::content(conn, id).await? else { return Ok(()) };
    if !AuditOutcome::parse(&entry.status).is_some_and(AuditOutcome::is_pending) {
        return Ok(());
    }
    entry.status = outcome.as_str().into();
    entry.error = error.map(Into::into).or(entry.error);
    entry.detail = detail.map(Into::into).or(entry.detail);
    entry.settled_at = Some(at);
    let seal = chain::head(conn).await?.seal(&entry);
    settle(conn, &entry, &seal).await
}

async fn settle(conn: &mut SqliteConnection, entry: &Content, seal: &Seal) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE audit_log SET status = ?, error = ?, detail = ?, settled_at = ?,
             chain_seq = ?, chain_prev = ?, chain_hash = ?
         WHERE id = ? AND status IN ('requested', 'sent', 'accepted')",
    )
    .bind(&entry.status)
    .bind(&entry.error)
    .bind(&entry.detail)
    .bind(entry.settled_at)
    .bind(seal.seq)
    .bind(&seal.prev)
    .bind(&seal.hash)
    .bind(entry.id)
    .execute(conn)
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
    let mut conn = pool.acquire().await?;
    pending_in(&mut conn, vm.host.as_str(), vm.uuid.as_str()).await
}

/// How long a failed (or unconfirmed) request stays shown beside its VM in the list and on its
/// page, counted from when it was asked for: since requests are sent after the answer, this
/// is where an operator sees a hypervisor's refusal. The audit log keeps it for good.
pub const RECENT_FAILURE_MS: i64 = 15 * 60 * 1000;

/// A power request that failed or went unconfirmed lately and is still its VM's newest one
/// (refusals aside: they never reached the host).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RecentFailure {
    pub host_name: String,
    pub vm_uuid: String,
    pub action: PowerAction,
    pub status: AuditOutcome,
    pub error: Option<String>,
    pub detail: Option<String>,
}

impl RecentFailure {
    /// In words: `Shut down failed: The host did not answer…`.
    pub fn describe(&self) -> String {
        let (what, why) = match self.status {
            AuditOutcome::Unconfirmed => ("not confirmed", self.detail.as_deref()),
            _ => ("failed", self.error.as_deref().or(self.detail.as_deref())),
        };
        match why {
            Some(why) => format!("{} {what}: {why}", self.action.label()),
            None => format!("{} {what}.", self.action.label()),
        }
    }
}

const RECENT_FAILURES: &str = "SELECT a.host_name, a.vm_uuid, a.action, a.status, a.error, a.detail
     FROM audit_log a
     WHERE a.kind = 'power' AND a.status IN ('failed', 'unconfirmed') AND a.ts >= ?
       AND NOT EXISTS (SELECT 1 FROM audit_log b
                       WHERE b.vm_uuid = a.vm_uuid AND b.host_name = a.host_name
                         AND b.kind = 'power' AND b.id > a.id AND b.status <> 'refused')";

/// Every VM's recent failure (requests asked for since `since`, ms).
pub async fn recent_failures(pool: &SqlitePool, since: i64) -> sqlx::Result<Vec<RecentFailure>> {
    sqlx::query_as(RECENT_FAILURES).bind(since).fetch_all(pool).await
}

/// One VM's recent failure, if any (asked for since `since`, ms).
pub async fn recent_failure_for(
    pool: &SqlitePool,
    vm: &VmKey,
    since: i64,
) -> sqlx::Result<Option<RecentFailure>> {
    sqlx::query_as(&format!(
        "{RECENT_FAILURES} AND a.host_name = ? AND a.vm_uuid = ? ORDER BY a.id DESC LIMIT 1"
    ))
    .bind(since)
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
) -> sqlx::Result<Option<(String, PowerState, String)>> {
    sqlx::query_as(
        "SELECT v.name, v.state, v.raw_state FROM vms v WHERE v.host_id = ? AND v.uuid = ? AND v.gone_at IS NULL",
    )
    .bind(host_id)
    .bind(uuid.as_str())
    .fetch_optional(pool)
    .await
}
