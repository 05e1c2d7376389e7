//! Recording a VM's snapshot set: the one function that writes `vm_snapshots` and the VM's
//! snapshot count, used by the poller (after a read) and by a snapshot request's confirmation
//! (which reads the set itself, so the page shows the result at once). A row per snapshot per
//! stretch of time it existed: a snapshot that disappears keeps its row with `gone_at`, so the
//! VM page can show past snapshots and who removed them.

use std::collections::HashMap;

use sqlx::{Row, SqlitePool};

use crate::backend::SnapshotReport;
use crate::domain::SnapshotAction;

/// The request that caused a change, credited on the row it made or removed.
#[derive(Debug, Clone)]
pub struct SnapshotCause {
    pub audit_id: i64,
    pub action: SnapshotAction,
    /// Take: the new snapshot's name; revert and delete: the target's hypervisor id.
    pub subject: String,
}

/// What a recording changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnapshotChanges {
    /// Hypervisor ids of the snapshots that appeared.
    pub appeared: Vec<String>,
    /// Hypervisor ids of the snapshots that disappeared.
    pub disappeared: Vec<String>,
    /// The current snapshot's id after the read, if any.
    pub current: Option<String>,
}

/// Records `snaps` as `vm_id`'s whole snapshot set read at `now` (ms): appeared ones are
/// inserted, vanished ones closed, kept ones updated where the hypervisor changed them (name,
/// description, parent, current), and the VM's count, oldest time and read bookkeeping set, in
/// one transaction. `read_key` is what the poller saw of the VM when it read (None keeps the
/// stored one). `cause` credits the request whose confirmation made this read.
pub async fn record_snapshots(
    pool: &SqlitePool,
    vm_id: i64,
    snaps: &[SnapshotReport],
    now: i64,
    read_key: Option<&str>,
    cause: Option<&SnapshotCause>,
) -> sqlx::Result<SnapshotChanges> {
    // IMMEDIATE: the transaction reads, then writes; a deferred one would fail with
    // SQLITE_BUSY_SNAPSHOT (517) when another writer commits in between (seen at the demo
    // start), where an immediate one waits for the lock under busy_timeout.
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    let rows = sqlx::query(
        "SELECT id, snap_id, name, description, parent_snap_id, is_current
           FROM vm_snapshots WHERE vm_id = ? AND gone_at IS NULL",
    )
    .bind(vm_id)
    .fetch_all(&mut *tx)
    .await?;
    let mut stored: HashMap<String, (i64, String, String, Option<String>, bool)> = rows
        .into_iter()
        .map(|r| {
            (
                r.get::<String, _>("snap_id"),
                (
                    r.get("id"),
                    r.get("name"),
                    r.get("description"),
                    r.get("parent_snap_id"),
                    r.get::<bool, _>("is_current"),
                ),
            )
        })
        .collect();
    let mut changes = SnapshotChanges::default();
    for s in snaps {
        changes.current = changes.current.take().or(s.current.then(|| s.id.clone()));
        match stored.remove(&s.id) {
            Some((id, name, description, parent, current)) => {
                if name != s.name
                    || description != s.description
                    || parent != s.parent_id
                    || current != s.current
                {
                    sqlx::query(
                        "UPDATE vm_snapshots SET name = ?, description = ?, parent_snap_id = ?,
                                is_current = ? WHERE id = ?",
                    )
                    .bind(&s.name)
                    .bind(&s.description)
                    .bind(&s.parent_id)
                    .bind(s.current)
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                }
            }
            None => {
                let taken_by = cause
                    .filter(|c| c.action == SnapshotAction::Take && c.subject == s.name)
                    .map(|c| c.audit_id);
                sqlx::query(
                    "INSERT INTO vm_snapshots (vm_id, snap_id, name, description, parent_snap_id,
                        created_at, vm_state, with_memory, is_current, first_seen,
                        taken_by_audit_id)
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                )
                .bind(vm_id)
                .bind(&s.id)
                .bind(&s.name)
                .bind(&s.description)
                .bind(&s.parent_id)
                .bind(s.created_at_ms)
                .bind(&s.vm_state)
                .bind(s.with_memory)
                .bind(s.current)
                .bind(now)
                .bind(taken_by)
                .execute(&mut *tx)
                .await?;
                changes.appeared.push(s.id.clone());
            }
        }
    }
    for (snap_id, (id, ..)) in stored {
        let removed_by = cause
            .filter(|c| c.action == SnapshotAction::Delete && c.subject == snap_id)
            .map(|c| c.audit_id);
        sqlx::query("UPDATE vm_snapshots SET gone_at = ?, removed_by_audit_id = ? WHERE id = ?")
            .bind(now)
            .bind(removed_by)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        changes.disappeared.push(snap_id);
    }
    // Count and oldest from the rows just written: a snapshot without a creation time counts
    // from when vmdeck first saw it. (`snapshots_read_at` moves at every read, so the row is
    // always written.)
    sqlx::query(
        "UPDATE vms SET
            (snapshot_count, snapshot_oldest) = (SELECT COUNT(*), MIN(COALESCE(created_at, first_seen))
               FROM vm_snapshots WHERE vm_id = vms.id AND gone_at IS NULL),
            snapshots_read_at = ?, snapshots_read_key = COALESCE(?, snapshots_read_key)
          WHERE id = ?",
    )
    .bind(now)
    .bind(read_key)
    .bind(vm_id)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(changes)
}
