//! Power requests in the audit log: each request is an `audit_log` row of kind `power` that
//! moves along its lifecycle (requested, sent, accepted, then failed, confirmed, unconfirmed,
//! or superseded by a forced action); the database's triggers refuse any other change
//! (migrations/0002, 0004, 0007). A
//! request is sealed into the log's hash chain when it settles (`events::chain`). Also the
//! lookup of a VM that can be acted on. One function per statement.

use sqlx::{SqliteConnection, SqlitePool};

use crate::db::now_ms;
use crate::domain::{
    Actor, AfterRevert, AuditKind, AuditOutcome, PowerAction, PowerState, RequestAction,
    SnapshotAction, VmKey, VmUuid,
};
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
        Some(p) if p.action.overruled_by(r.action) => {
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

/// The columns of a [`PendingPower`]: the entry, and the snapshot's name for a snapshot
/// request.
const PENDING: &str = "SELECT a.id, a.ts, a.user_name, a.host_name, a.vm_uuid, a.vm_name, a.action,
            a.status, s.snapshot_name
       FROM audit_log a LEFT JOIN snapshot_requests s ON s.audit_id = a.id
      WHERE a.kind IN ('power', 'snapshot') AND a.status IN ('requested', 'sent', 'accepted')";

/// The request in flight for a VM (power or snapshot), read inside a write transaction.
async fn pending_in(
    conn: &mut SqliteConnection,
    host: &str,
    uuid: &str,
) -> sqlx::Result<Option<PendingPower>> {
    sqlx::query_as(&format!("{PENDING} AND a.host_name = ? AND a.vm_uuid = ?"))
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

/// A request still in flight: a power action, or a snapshot action (then with its
/// snapshot's name).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PendingPower {
    pub id: i64,
    pub ts: i64,
    pub user_name: Option<String>,
    pub host_name: String,
    pub vm_uuid: String,
    pub vm_name: String,
    pub action: RequestAction,
    pub status: AuditOutcome,
    pub snapshot_name: Option<String>,
}

impl PendingPower {
    /// In words, for the list and the VM page: `Shut down requested by alice, accepted`,
    /// `Take snapshot "before-upgrade" requested by alice, sent`.
    pub fn describe(&self) -> String {
        format!(
            "{} requested by {}, {}",
            what(self.action, self.snapshot_name.as_deref()),
            self.user_name.as_deref().unwrap_or("the system"),
            self.status.as_str()
        )
    }
}

/// An action in words, with its snapshot's name for a snapshot action: `Take snapshot “x”`.
pub fn what(action: RequestAction, snapshot: Option<&str>) -> String {
    match (action, snapshot) {
        (RequestAction::Snapshot(_), Some(name)) => {
            format!("{} {}", action.label(), crate::domain::quoted(name))
        }
        _ => action.label().to_string(),
    }
}

/// Every request in flight, power or snapshot.
pub async fn pending(pool: &SqlitePool) -> sqlx::Result<Vec<PendingPower>> {
    sqlx::query_as(PENDING).fetch_all(pool).await
}

/// The request in flight for one VM, if any.
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
    pub action: RequestAction,
    pub status: AuditOutcome,
    pub error: Option<String>,
    pub detail: Option<String>,
    pub snapshot_name: Option<String>,
}

impl RecentFailure {
    /// In words: `Shut down failed: The host did not answer…`.
    pub fn describe(&self) -> String {
        let (what, why) = match self.status {
            AuditOutcome::Unconfirmed => ("not confirmed", self.detail.as_deref()),
            _ => ("failed", self.error.as_deref().or(self.detail.as_deref())),
        };
        let action = self::what(self.action, self.snapshot_name.as_deref());
        match why {
            Some(why) => format!("{action} {what}: {why}"),
            None => format!("{action} {what}."),
        }
    }
}

const RECENT_FAILURES: &str =
    "SELECT a.host_name, a.vm_uuid, a.action, a.status, a.error, a.detail,
            s.snapshot_name
     FROM audit_log a LEFT JOIN snapshot_requests s ON s.audit_id = a.id
     WHERE a.kind IN ('power', 'snapshot') AND a.status IN ('failed', 'unconfirmed') AND a.ts >= ?
       AND NOT EXISTS (SELECT 1 FROM audit_log b
                       WHERE b.vm_uuid = a.vm_uuid AND b.host_name = a.host_name
                         AND b.kind IN ('power', 'snapshot') AND b.id > a.id
                         AND b.status <> 'refused')";

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

/// The name, state and display of a VM present on a host (not gone), by host id and uuid.
pub async fn present_vm(
    pool: &SqlitePool,
    host_id: i64,
    uuid: &VmUuid,
) -> sqlx::Result<Option<(String, PowerState, String, Option<String>)>> {
    sqlx::query_as(
        "SELECT v.name, v.state, v.raw_state, v.graphics FROM vms v WHERE v.host_id = ? AND v.uuid = ? AND v.gone_at IS NULL",
    )
    .bind(host_id)
    .bind(uuid.as_str())
    .fetch_optional(pool)
    .await
}

/// A snapshot request about to be sent: the VM, who asked, and the request's parameters
/// (its `snapshot_requests` row).
pub struct SnapshotRecord<'a> {
    pub actor: &'a Actor,
    pub host: &'a str,
    pub vm_uuid: &'a VmUuid,
    pub vm_name: &'a str,
    pub action: SnapshotAction,
    pub snapshot_name: &'a str,
    pub snap_id: Option<&'a str>,
    pub description: &'a str,
    pub with_memory: bool,
    pub after: Option<AfterRevert>,
    pub schedule_id: Option<i64>,
}

/// The settled detail that names a request's snapshot, so the hash chain covers it:
/// `snapshot “before-upgrade”`. Entries sealed earlier keep their `snapshot "…"` text.
pub fn snapshot_detail(name: &str) -> String {
    format!("snapshot {}", crate::domain::quoted(name))
}

/// Persists a snapshot request (audit entry of kind `snapshot`, status `requested`, and its
/// `snapshot_requests` row) in one write transaction before anything is sent. A VM with any
/// request in flight (power or snapshot) refuses it with [`RequestError::Pending`]: nothing
/// overrules a snapshot request, and a snapshot request overrules nothing.
pub async fn snapshot_requested(
    pool: &SqlitePool,
    r: &SnapshotRecord<'_>,
) -> Result<i64, RequestError> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    if let Some(p) = pending_in(&mut tx, r.host, r.vm_uuid.as_str()).await? {
        return Err(RequestError::Pending(Some(p)));
    }
    let res = sqlx::query_scalar(
        "INSERT INTO audit_log (ts, kind, user_name, client_addr, host_name, vm_uuid, vm_name, action, status)
         VALUES (?, 'snapshot', ?, ?, ?, ?, ?, ?, 'requested') RETURNING id",
    )
    .bind(now_ms())
    .bind(&r.actor.user)
    .bind(&r.actor.addr)
    .bind(r.host)
    .bind(r.vm_uuid.as_str())
    .bind(r.vm_name)
    .bind(r.action)
    .fetch_one(&mut *tx)
    .await;
    let id: i64 = match res {
        Ok(id) => id,
        Err(sqlx::Error::Database(e))
            if e.is_unique_violation() || e.message().contains(PENDING_REFUSAL) =>
        {
            return Err(RequestError::Pending(None));
        }
        Err(e) => return Err(e.into()),
    };
    sqlx::query(
        "INSERT INTO snapshot_requests (audit_id, snapshot_name, snap_id, description, with_memory,
             after_revert, schedule_id)
         VALUES (?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(id)
    .bind(r.snapshot_name)
    .bind(r.snap_id)
    .bind(r.description)
    .bind(r.with_memory)
    .bind(r.after.map(AfterRevert::as_str))
    .bind(r.schedule_id)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(id)
}

/// Records a snapshot request refused before anything was sent (bad name, already pending, no
/// snapshots on this host), settled and sealed at once; its detail names the snapshot.
pub async fn snapshot_refused(
    pool: &SqlitePool,
    r: &SnapshotRecord<'_>,
    reason: &str,
) -> sqlx::Result<i64> {
    let content = Content {
        host_name: Some(r.host.into()),
        vm_uuid: Some(r.vm_uuid.as_str().into()),
        vm_name: Some(r.vm_name.into()),
        action: Some(r.action.as_str().into()),
        error: Some(reason.into()),
        detail: Some(snapshot_detail(r.snapshot_name)),
        ..Content::settled(AuditKind::Snapshot, r.actor, AuditOutcome::Refused, now_ms())
    };
    chain::append(pool, content).await
}

/// A snapshot request left in flight, with its parameters (for the restart's sweep).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SnapshotParams {
    pub snapshot_name: String,
    pub snap_id: Option<String>,
}

/// The parameters of the snapshot request recorded as audit entry `audit_id`.
pub async fn snapshot_params(
    pool: &SqlitePool,
    audit_id: i64,
) -> sqlx::Result<Option<SnapshotParams>> {
    sqlx::query_as("SELECT snapshot_name, snap_id FROM snapshot_requests WHERE audit_id = ?")
        .bind(audit_id)
        .fetch_optional(pool)
        .await
}

/// Notes the hypervisor id of the snapshot a take made, once it is seen.
pub async fn snapshot_taken_as(
    pool: &SqlitePool,
    audit_id: i64,
    snap_id: &str,
) -> sqlx::Result<()> {
    sqlx::query("UPDATE snapshot_requests SET snap_id = ? WHERE audit_id = ? AND snap_id IS NULL")
        .bind(snap_id)
        .bind(audit_id)
        .execute(pool)
        .await?;
    Ok(())
}

/// One snapshot of a VM as the forms show it (a row of `vm_snapshots` that exists now).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PresentSnapshot {
    pub id: i64,
    pub vm_id: i64,
    pub snap_id: String,
    pub name: String,
    pub description: String,
    pub parent_snap_id: Option<String>,
    pub created_at: Option<i64>,
    pub first_seen: i64,
    pub vm_state: String,
    pub with_memory: bool,
    pub is_current: bool,
}

const PRESENT_SNAPSHOT: &str = "SELECT s.id, s.vm_id, s.snap_id, s.name, s.description,
        s.parent_snap_id, s.created_at, s.first_seen, s.vm_state, s.with_memory, s.is_current
   FROM vm_snapshots s JOIN vms v ON v.id = s.vm_id
  WHERE s.gone_at IS NULL AND v.gone_at IS NULL";

/// Snapshot row `row_id` if it exists now and belongs to VM `uuid` on host `host_id`.
pub async fn present_snapshot(
    pool: &SqlitePool,
    host_id: i64,
    uuid: &VmUuid,
    row_id: i64,
) -> sqlx::Result<Option<PresentSnapshot>> {
    sqlx::query_as(&format!("{PRESENT_SNAPSHOT} AND v.host_id = ? AND v.uuid = ? AND s.id = ?"))
        .bind(host_id)
        .bind(uuid.as_str())
        .bind(row_id)
        .fetch_optional(pool)
        .await
}

/// How many snapshots of the VM (`vm_id`) exist now whose parent is `snap_id`.
pub async fn snapshot_children(pool: &SqlitePool, vm_id: i64, snap_id: &str) -> sqlx::Result<i64> {
    sqlx::query_scalar(
        "SELECT COUNT(*) FROM vm_snapshots WHERE vm_id = ? AND parent_snap_id = ? AND gone_at IS NULL",
    )
    .bind(vm_id)
    .bind(snap_id)
    .fetch_one(pool)
    .await
}

/// The names of the VM's snapshots that exist now (as last read), for a take's suggestion
/// and its "name already used" check.
pub async fn snapshot_names(
    pool: &SqlitePool,
    host_id: i64,
    uuid: &VmUuid,
) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar(&format!(
        "SELECT s.name FROM ({PRESENT_SNAPSHOT} AND v.host_id = ? AND v.uuid = ?) s"
    ))
    .bind(host_id)
    .bind(uuid.as_str())
    .fetch_all(pool)
    .await
}

/// The `vms` row id of a VM present on a host.
pub async fn vm_row_id(
    pool: &SqlitePool,
    host_id: i64,
    uuid: &VmUuid,
) -> sqlx::Result<Option<i64>> {
    sqlx::query_scalar("SELECT id FROM vms WHERE host_id = ? AND uuid = ? AND gone_at IS NULL")
        .bind(host_id)
        .bind(uuid.as_str())
        .fetch_optional(pool)
        .await
}
