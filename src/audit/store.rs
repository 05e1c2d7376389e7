//! The audit log page's SQL: filtered reads and retention. Entries are written through
//! `events` (settled events) and `control::store` (power requests and their lifecycle); the
//! database's triggers refuse any change to a settled entry (migrations/0002_auth_audit.sql,
//! 0004_audit_chain.sql), and retention prunes the hash chain from its old end.

use sqlx::{QueryBuilder, Sqlite, SqliteConnection, SqlitePool};

use crate::db::now_ms;
use crate::domain::{AuditKind, AuditOutcome, PowerAction, SnapshotAction};

/// What the audit page and CSV filter on, validated.
#[derive(Debug, Default, Clone)]
pub struct Filter {
    /// Part of a user name.
    pub user: String,
    /// A VM's uuid, or part of its name.
    pub vm: String,
    pub host: String,
    /// Any of these actions or kinds (none: every one).
    pub actions: Vec<ActionFilter>,
    pub outcome: Option<OutcomeFilter>,
    pub from: Option<i64>,
    pub to: Option<i64>,
}

/// The "action" filter matches power actions and event kinds alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActionFilter {
    Power(PowerAction),
    Snapshot(SnapshotAction),
    Kind(AuditKind),
}

impl ActionFilter {
    pub fn parse(s: &str) -> Option<ActionFilter> {
        PowerAction::parse(s)
            .map(ActionFilter::Power)
            .or_else(|| SnapshotAction::parse(s).map(ActionFilter::Snapshot))
            .or_else(|| AuditKind::parse(s).map(ActionFilter::Kind))
    }
}

/// An outcome, or every outcome still in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutcomeFilter {
    Is(AuditOutcome),
    Pending,
}

fn push_where(qb: &mut QueryBuilder<'_, Sqlite>, f: &Filter) {
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
    if !f.actions.is_empty() {
        qb.push(" AND (0");
        for a in &f.actions {
            match *a {
                ActionFilter::Power(a) => qb.push(" OR action = ").push_bind(a),
                ActionFilter::Snapshot(a) => qb.push(" OR action = ").push_bind(a),
                ActionFilter::Kind(k) => qb.push(" OR kind = ").push_bind(k),
            };
        }
        qb.push(")");
    }
    match f.outcome {
        Some(OutcomeFilter::Pending) => {
            qb.push(" AND status IN ('requested', 'sent', 'accepted')");
        }
        Some(OutcomeFilter::Is(o)) => {
            qb.push(" AND status = ").push_bind(o);
        }
        None => {}
    }
    if let Some(t) = f.from {
        qb.push(" AND ts >= ").push_bind(t);
    }
    if let Some(t) = f.to {
        qb.push(" AND ts <= ").push_bind(t);
    }
}

/// One audit entry as the page and the CSV show it.
#[derive(Debug, sqlx::FromRow)]
pub struct Entry {
    pub id: i64,
    pub ts: i64,
    pub kind: AuditKind,
    pub user_name: Option<String>,
    pub client_addr: Option<String>,
    pub host_name: Option<String>,
    pub vm_uuid: Option<String>,
    pub vm_name: Option<String>,
    pub action: Option<String>,
    pub status: AuditOutcome,
    pub error: Option<String>,
    pub detail: Option<String>,
    pub accepted_at: Option<i64>,
    pub settled_at: Option<i64>,
}

impl Entry {
    /// Request to confirmation, for confirmed power actions.
    pub fn confirm_ms(&self) -> Option<i64> {
        (self.kind == AuditKind::Power && self.status == AuditOutcome::Confirmed)
            .then(|| self.settled_at.map(|s| s - self.ts))
            .flatten()
    }
}

/// The entries matching `f`, newest first.
pub async fn entries(
    pool: &SqlitePool,
    f: &Filter,
    limit: i64,
    offset: i64,
) -> sqlx::Result<Vec<Entry>> {
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

/// One entry by its id.
pub async fn entry(pool: &SqlitePool, id: i64) -> sqlx::Result<Option<Entry>> {
    sqlx::query_as(
        "SELECT id, ts, kind, user_name, client_addr, host_name, vm_uuid, vm_name, action, status, error, detail,
                accepted_at, settled_at FROM audit_log WHERE id = ?",
    )
    .bind(id)
    .fetch_optional(pool)
    .await
}

/// How many entries match `f`.
pub async fn count(pool: &SqlitePool, f: &Filter) -> sqlx::Result<i64> {
    let mut qb = QueryBuilder::new("SELECT COUNT(*) FROM audit_log");
    push_where(&mut qb, f);
    qb.build_query_scalar().fetch_one(pool).await
}

/// How many entries one pruning transaction removes, so writers are never blocked long.
const PRUNE_BATCH: i64 = 500;

/// Deletes entries older than `days` days from the old end of the hash chain, in small batches,
/// and moves the chain's anchor onto the last one removed so the rest still verifies. Pruning
/// stops at the first chained entry that is not old enough (the chain runs in settlement order,
/// so a few old entries may wait behind a newer one); pending entries are not in the chain and
/// stay until they settle. Returns how many were removed.
pub async fn prune(pool: &SqlitePool, days: u32) -> sqlx::Result<u64> {
    let cutoff = now_ms() - i64::from(days) * 86_400_000;
    let mut total = 0;
    loop {
        let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
        let anchor = anchor(&mut tx).await?;
        let oldest = oldest_chained(&mut tx, anchor).await?;
        let old = oldest.iter().take_while(|e| e.ts < cutoff).count();
        let Some(last) = old.checked_sub(1).map(|i| &oldest[i]) else { return Ok(total) };
        move_anchor(&mut tx, cutoff, last).await?;
        total += delete_up_to(&mut tx, anchor, last.seq).await?;
        tx.commit().await?;
        if (old as i64) < PRUNE_BATCH {
            return Ok(total);
        }
        tokio::task::yield_now().await;
    }
}

/// A chained entry as pruning sees it.
#[derive(sqlx::FromRow)]
struct Chained {
    seq: i64,
    hash: String,
    ts: i64,
}

/// Where the chain starts: the seq retention last pruned up to.
async fn anchor(conn: &mut SqliteConnection) -> sqlx::Result<i64> {
    sqlx::query_scalar("SELECT anchor_seq FROM audit_retention WHERE id = 1").fetch_one(conn).await
}

/// The oldest chained entries after the anchor, in chain order.
async fn oldest_chained(conn: &mut SqliteConnection, anchor: i64) -> sqlx::Result<Vec<Chained>> {
    sqlx::query_as(
        "SELECT chain_seq AS seq, chain_hash AS hash, ts FROM audit_log
         WHERE chain_seq > ? ORDER BY chain_seq LIMIT ?",
    )
    .bind(anchor)
    .bind(PRUNE_BATCH)
    .fetch_all(conn)
    .await
}

/// Anchors the chain on `last`; the database refuses unless every entry passed over is older
/// than `prune_before`, which never moves back (a shorter retention configured later keeps it).
async fn move_anchor(conn: &mut SqliteConnection, cutoff: i64, last: &Chained) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE audit_retention SET prune_before = MAX(prune_before, ?), anchor_seq = ?, anchor_hash = ?
         WHERE id = 1",
    )
    .bind(cutoff)
    .bind(last.seq)
    .bind(&last.hash)
    .execute(conn)
    .await?;
    Ok(())
}

/// Deletes the entries the anchor has just passed over.
async fn delete_up_to(conn: &mut SqliteConnection, from: i64, to: i64) -> sqlx::Result<u64> {
    let done = sqlx::query("DELETE FROM audit_log WHERE chain_seq > ? AND chain_seq <= ?")
        .bind(from)
        .bind(to)
        .execute(conn)
        .await?;
    Ok(done.rows_affected())
}
