//! The VM page's SQL: the VM and its configuration versions, its raw samples and its address
//! history. (Rollups are read through `rollup`.)

use sqlx::SqlitePool;

use crate::domain::{PowerState, VmKey};

/// One VM with its current configuration.
#[derive(sqlx::FromRow)]
pub struct VmRow {
    pub id: i64,
    pub host_id: i64,
    pub name: String,
    pub state: PowerState,
    pub raw_state: String,
    pub state_reason: String,
    pub state_since: i64,
    pub first_seen: i64,
    pub gone_at: Option<i64>,
    pub addresses: String,
    pub body: Option<String>,
    /// The VM's display (`vnc`, `spice`, `rdp`), None when it has none or it is unknown.
    pub graphics: Option<String>,
}

/// One raw sample's state and rates.
#[derive(sqlx::FromRow)]
pub struct SampleRow {
    pub ts: i64,
    pub state: PowerState,
    pub cpu_pct: Option<f64>,
    pub memory_used_kib: Option<i64>,
    pub disk_read_bps: Option<f64>,
    pub disk_write_bps: Option<f64>,
    pub net_rx_bps: Option<f64>,
    pub net_tx_bps: Option<f64>,
}

/// A VM's raw samples of `[from, to)`, through its host's polls (samples are clustered by
/// time, so this is one primary-key lookup per poll).
pub async fn samples_between(
    pool: &SqlitePool,
    host_id: i64,
    vm_id: i64,
    from: i64,
    to: i64,
) -> sqlx::Result<Vec<SampleRow>> {
    sqlx::query_as(
        "SELECT s.ts, s.state, s.cpu_pct, s.memory_used_kib, s.disk_read_bps, s.disk_write_bps,
                s.net_rx_bps, s.net_tx_bps
         FROM polls p JOIN samples s ON s.ts = p.started_at AND s.vm_id = ?
         WHERE p.host_id = ? AND p.ok = 1 AND p.started_at >= ? AND p.started_at < ?
         ORDER BY p.started_at",
    )
    .bind(vm_id)
    .bind(host_id)
    .bind(from)
    .bind(to)
    .fetch_all(pool)
    .await
}

/// The VM `vm`, gone or not.
pub async fn vm(pool: &SqlitePool, vm: &VmKey) -> sqlx::Result<Option<VmRow>> {
    sqlx::query_as(
        "SELECT v.id, v.host_id, v.name, v.state, v.raw_state, v.state_reason, v.state_since, v.first_seen,
                v.gone_at, v.addresses, c.body, v.graphics
         FROM vms v JOIN hosts h ON h.id = v.host_id LEFT JOIN vm_configs c ON c.id = v.config_id
         WHERE h.name = ? AND v.uuid = ?",
    )
    .bind(vm.host.as_str())
    .bind(vm.uuid.as_str())
    .fetch_optional(pool)
    .await
}

/// A VM's figures from its host's last successful poll: (time, CPU %, memory used in KiB).
pub async fn latest_figures(
    pool: &SqlitePool,
    host_id: i64,
    vm_id: i64,
) -> sqlx::Result<Option<(i64, Option<f64>, Option<i64>)>> {
    sqlx::query_as(
        "SELECT s.ts, s.cpu_pct, s.memory_used_kib
         FROM hosts h JOIN polls p ON p.id = h.last_ok_poll_id
         JOIN samples s ON s.vm_id = ? AND s.ts = p.started_at
         WHERE h.id = ?",
    )
    .bind(vm_id)
    .bind(host_id)
    .fetch_optional(pool)
    .await
}

/// Every configuration version of a VM, oldest first: (valid from, JSON body).
pub async fn config_versions(pool: &SqlitePool, vm_id: i64) -> sqlx::Result<Vec<(i64, String)>> {
    sqlx::query_as(
        "SELECT valid_from, body FROM vm_configs WHERE vm_id = ? ORDER BY valid_from, id",
    )
    .bind(vm_id)
    .fetch_all(pool)
    .await
}

/// One address interval of a VM.
#[derive(sqlx::FromRow)]
pub struct AddressRow {
    pub addr: String,
    pub mac: String,
    pub source: crate::domain::AddrSource,
    pub first_seen: i64,
    pub ended_at: Option<i64>,
}

/// A VM's addresses over time, newest first (200 at most).
pub async fn address_history(pool: &SqlitePool, vm_id: i64) -> sqlx::Result<Vec<AddressRow>> {
    sqlx::query_as(
        "SELECT addr, mac, source, first_seen, ended_at FROM vm_addresses WHERE vm_id = ?
         ORDER BY first_seen DESC, addr LIMIT 200",
    )
    .bind(vm_id)
    .fetch_all(pool)
    .await
}

/// One row of `vm_snapshots` for the VM page, with who took and removed it when vmdeck did.
#[derive(sqlx::FromRow)]
pub struct SnapshotRow {
    pub id: i64,
    pub snap_id: String,
    pub name: String,
    pub description: String,
    pub parent_snap_id: Option<String>,
    pub created_at: Option<i64>,
    pub vm_state: String,
    pub with_memory: bool,
    pub is_current: bool,
    pub first_seen: i64,
    pub gone_at: Option<i64>,
    /// The request that took it, when vmdeck did: its user (None for a scheduled one).
    pub taken_by_audit_id: Option<i64>,
    pub taken_by: Option<String>,
    pub removed_by_audit_id: Option<i64>,
    pub removed_by: Option<String>,
}

/// The most past snapshots the VM page lists.
pub const MAX_PAST_SNAPSHOTS: i64 = 200;

const SNAPSHOT_COLUMNS: &str = "s.id, s.snap_id, s.name, s.description, s.parent_snap_id,
    s.created_at, s.vm_state, s.with_memory, s.is_current, s.first_seen, s.gone_at,
    s.taken_by_audit_id, t.user_name AS taken_by, s.removed_by_audit_id,
    r.user_name AS removed_by
    FROM vm_snapshots s
    LEFT JOIN audit_log t ON t.id = s.taken_by_audit_id
    LEFT JOIN audit_log r ON r.id = s.removed_by_audit_id";

/// A VM's snapshots that exist now (as the poller last read them), oldest first.
pub async fn snapshots(pool: &SqlitePool, vm_id: i64) -> sqlx::Result<Vec<SnapshotRow>> {
    sqlx::query_as(&format!(
        "SELECT {SNAPSHOT_COLUMNS} WHERE s.vm_id = ? AND s.gone_at IS NULL
         ORDER BY COALESCE(s.created_at, s.first_seen), s.id"
    ))
    .bind(vm_id)
    .fetch_all(pool)
    .await
}

/// A VM's snapshots that no longer exist, the latest gone first ([`MAX_PAST_SNAPSHOTS`] at
/// most).
pub async fn past_snapshots(pool: &SqlitePool, vm_id: i64) -> sqlx::Result<Vec<SnapshotRow>> {
    sqlx::query_as(&format!(
        "SELECT {SNAPSHOT_COLUMNS} WHERE s.vm_id = ? AND s.gone_at IS NOT NULL
         ORDER BY s.gone_at DESC, s.id DESC LIMIT ?"
    ))
    .bind(vm_id)
    .bind(MAX_PAST_SNAPSHOTS)
    .fetch_all(pool)
    .await
}
