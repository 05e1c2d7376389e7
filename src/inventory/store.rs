//! The inventory pages' SQL: each host's last polls, and every VM with its current
//! configuration and latest sample. (Polls are recorded through `hosts::store`.)

use serde::Deserialize;
use sqlx::{FromRow, SqlitePool};

use crate::domain::PowerState;

/// A host's row with its last poll and last successful poll.
#[derive(Debug, FromRow)]
pub struct HostStatusRow {
    pub name: String,
    pub driver: String,
    pub uri_redacted: String,
    pub demo: bool,
    pub last_started: Option<i64>,
    pub last_finished: Option<i64>,
    pub last_ok: Option<bool>,
    pub last_error: Option<String>,
    pub ok_finished: Option<i64>,
    pub ok_vm_count: Option<i64>,
}

pub async fn host_status_rows(pool: &SqlitePool) -> sqlx::Result<Vec<HostStatusRow>> {
    sqlx::query_as(
        "SELECT h.name, h.driver, h.uri_redacted, h.demo,
                lp.started_at AS last_started, lp.finished_at AS last_finished, lp.ok AS last_ok,
                lp.error AS last_error, op.finished_at AS ok_finished, op.vm_count AS ok_vm_count
         FROM hosts h
         LEFT JOIN polls lp ON lp.id = h.last_poll_id
         LEFT JOIN polls op ON op.id = h.last_ok_poll_id",
    )
    .fetch_all(pool)
    .await
}

/// One row of the VM list, as stored.
#[derive(Debug, Deserialize)]
pub struct VmListRow {
    pub uuid: String,
    pub name: String,
    pub host: String,
    pub state: PowerState,
    pub state_since: i64,
    pub state_reason: String,
    pub raw_state: String,
    pub gone_at: Option<i64>,
    /// The current addresses, as JSON.
    pub addresses: String,
    pub vcpus: Option<i64>,
    pub memory_max_kib: Option<i64>,
    pub memory_current_kib: Option<i64>,
    pub disk_capacity_bytes: Option<i64>,
    pub cpu_pct: Option<f64>,
    pub memory_used_kib: Option<i64>,
    /// Snapshots that exist now, and the oldest one's creation (or first-seen) time.
    #[serde(default)]
    pub snapshot_count: i64,
    pub snapshot_oldest: Option<i64>,
    /// Whether the poller has read the VM's snapshot set yet (never, on a backend without
    /// snapshots; for a while after start on a large libvirt host, reads being spread).
    #[serde(default)]
    pub snapshots_read: bool,
    /// The VM's display (`vnc`, `spice`, `rdp`), None when it has none or it is unknown.
    #[serde(default)]
    pub graphics: Option<String>,
}

/// Every VM vmdeck knows, gone ones included.
pub async fn vm_rows(pool: &SqlitePool) -> anyhow::Result<Vec<VmListRow>> {
    // sqlx's SQLite driver hands rows one by one from its worker thread (~8 µs each), which
    // made this query cost 9 ms for 1,000 VMs. SQLite builds the whole result as one JSON
    // document in well under that, so the list is fetched as a single value.
    let json: String = sqlx::query_scalar(
        "SELECT COALESCE(json_group_array(json_object(
                'uuid', v.uuid, 'name', v.name, 'host', h.name, 'state', v.state,
                'state_since', v.state_since, 'state_reason', v.state_reason,
                'raw_state', v.raw_state, 'gone_at', v.gone_at, 'addresses', v.addresses,
                'vcpus', c.vcpus, 'memory_max_kib', c.memory_max_kib,
                'memory_current_kib', c.memory_current_kib,
                'disk_capacity_bytes', c.disk_capacity_bytes, 'cpu_pct', s.cpu_pct,
                'memory_used_kib', s.memory_used_kib, 'snapshot_count', v.snapshot_count,
                'snapshot_oldest', v.snapshot_oldest, 'graphics', v.graphics,
                'snapshots_read', json(CASE WHEN v.snapshots_read_at IS NULL THEN 'false' ELSE 'true' END))), '[]')
         FROM vms v
         JOIN hosts h ON h.id = v.host_id
         LEFT JOIN vm_configs c ON c.id = v.config_id
         LEFT JOIN polls p ON p.id = h.last_ok_poll_id
         LEFT JOIN samples s ON s.vm_id = v.id AND s.ts = p.started_at",
    )
    .fetch_one(pool)
    .await?;
    Ok(serde_json::from_str(&json)?)
}

/// The counter migration 0005's triggers move whenever a host or VM row changes: the list's
/// rows are re-read only when it moved.
pub async fn inventory_version(pool: &SqlitePool) -> sqlx::Result<i64> {
    sqlx::query_scalar("SELECT version FROM inventory_version WHERE id = 1").fetch_one(pool).await
}
