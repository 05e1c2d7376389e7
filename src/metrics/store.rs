//! The metrics' SQL: every present VM with its configuration and latest sample, each host's
//! last polls, pending requests, and audit entries counted by kind. Nothing here asks a
//! hypervisor anything: a scrape reads only what the poller stored.

use serde::Deserialize;
use sqlx::{FromRow, SqlitePool};

/// One present VM (not gone) as the metrics show it.
#[derive(Debug, Deserialize)]
pub struct VmRow {
    pub host: String,
    pub uuid: String,
    pub name: String,
    pub driver: String,
    pub state: String,
    pub raw_state: String,
    pub os_type: Option<String>,
    pub autostart: Option<bool>,
    pub persistent: Option<bool>,
    pub vcpus: Option<i64>,
    pub memory_max_kib: Option<i64>,
    pub memory_current_kib: Option<i64>,
    pub disk_capacity_bytes: Option<i64>,
    pub memory_used_kib: Option<i64>,
    pub cpu_time_ns: Option<i64>,
    pub disk_read_bytes: Option<i64>,
    pub disk_write_bytes: Option<i64>,
    pub net_rx_bytes: Option<i64>,
    pub net_tx_bytes: Option<i64>,
    #[serde(default)]
    pub snapshot_count: i64,
    pub snapshot_oldest: Option<i64>,
    #[serde(default)]
    pub snapshots_read: bool,
}

/// Every VM that is present now (`gone_at` unset), with its latest stored sample: the one its
/// host's last successful poll wrote.
pub async fn vm_rows(pool: &SqlitePool) -> anyhow::Result<Vec<VmRow>> {
    // One JSON value rather than a row at a time: sqlx hands SQLite rows over one by one at
    // ~8 µs each (see inventory::store::vm_rows).
    let json: String = sqlx::query_scalar(
        "SELECT COALESCE(json_group_array(json_object(
                'host', h.name, 'uuid', v.uuid, 'name', v.name, 'driver', h.driver,
                'state', v.state, 'raw_state', v.raw_state, 'os_type', c.os_type,
                'autostart', json(CASE c.autostart WHEN 1 THEN 'true' WHEN 0 THEN 'false' END),
                'persistent', json(CASE c.persistent WHEN 1 THEN 'true' WHEN 0 THEN 'false' END),
                'vcpus', c.vcpus, 'memory_max_kib', c.memory_max_kib,
                'memory_current_kib', c.memory_current_kib,
                'disk_capacity_bytes', c.disk_capacity_bytes,
                'memory_used_kib', s.memory_used_kib, 'cpu_time_ns', s.cpu_time_ns,
                'disk_read_bytes', s.disk_read_bytes, 'disk_write_bytes', s.disk_write_bytes,
                'net_rx_bytes', s.net_rx_bytes, 'net_tx_bytes', s.net_tx_bytes,
                'snapshot_count', v.snapshot_count, 'snapshot_oldest', v.snapshot_oldest,
                'snapshots_read', json(CASE WHEN v.snapshots_read_at IS NULL THEN 'false' ELSE 'true' END))), '[]')
         FROM vms v
         JOIN hosts h ON h.id = v.host_id
         LEFT JOIN vm_configs c ON c.id = v.config_id
         LEFT JOIN polls p ON p.id = h.last_ok_poll_id
         LEFT JOIN samples s ON s.vm_id = v.id AND s.ts = p.started_at
         WHERE v.gone_at IS NULL",
    )
    .fetch_one(pool)
    .await?;
    Ok(serde_json::from_str(&json)?)
}

/// A host's last poll and last successful poll.
#[derive(Debug, FromRow)]
pub struct HostRow {
    pub name: String,
    pub last_ok: Option<bool>,
    pub last_started: Option<i64>,
    pub last_finished: Option<i64>,
    pub ok_finished: Option<i64>,
    pub present_vms: i64,
}

pub async fn host_rows(pool: &SqlitePool) -> sqlx::Result<Vec<HostRow>> {
    sqlx::query_as(
        "SELECT h.name, lp.ok AS last_ok, lp.started_at AS last_started,
                lp.finished_at AS last_finished, op.finished_at AS ok_finished,
                (SELECT COUNT(*) FROM vms v WHERE v.host_id = h.id AND v.gone_at IS NULL)
                    AS present_vms
         FROM hosts h
         LEFT JOIN polls lp ON lp.id = h.last_poll_id
         LEFT JOIN polls op ON op.id = h.last_ok_poll_id",
    )
    .fetch_all(pool)
    .await
}

/// Power and snapshot requests not settled yet, by kind. The condition is the partial index
/// `audit_one_pending_per_vm`'s own (migration 0008), so SQLite reads that index, not the log.
pub async fn pending_requests(pool: &SqlitePool) -> sqlx::Result<Vec<(String, i64)>> {
    sqlx::query_as(
        "SELECT kind, COUNT(*) FROM audit_log
         WHERE kind IN ('power', 'snapshot') AND status IN ('requested', 'sent', 'accepted')
         GROUP BY kind",
    )
    .fetch_all(pool)
    .await
}

/// Audit entries with an id above `after`, counted by kind, and the highest id among them:
/// the log's ids only grow, so a scrape counts only what was written since the last one.
pub async fn audit_counts_after(
    pool: &SqlitePool,
    after: i64,
) -> sqlx::Result<Vec<(String, i64, i64)>> {
    sqlx::query_as("SELECT kind, COUNT(*), MAX(id) FROM audit_log WHERE id > ? GROUP BY kind")
        .bind(after)
        .fetch_all(pool)
        .await
}

/// The counter migration 0005's triggers move on any host or VM change (every poll moves it).
pub async fn inventory_version(pool: &SqlitePool) -> sqlx::Result<i64> {
    sqlx::query_scalar("SELECT version FROM inventory_version WHERE id = 1").fetch_one(pool).await
}

/// Open (pending and firing) alerts, counted by state and severity.
pub async fn open_alerts(pool: &SqlitePool) -> sqlx::Result<Vec<(String, String, i64)>> {
    sqlx::query_as(
        "SELECT state, severity, COUNT(*) FROM alerts
         WHERE state IN ('pending', 'firing') GROUP BY state, severity",
    )
    .fetch_all(pool)
    .await
}
