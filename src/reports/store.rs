//! The reports' SQL: VM lifetimes, configuration versions, address intervals, the states seen
//! by past polls and the rollups' per-state sample counts. One function per statement.

use sqlx::SqlitePool;

use crate::domain::PowerState;

/// A VM that existed at a moment, with its configuration version then: (vm id, host id, host
/// name, VM name, uuid, configuration JSON).
pub type VmAt = (i64, i64, String, String, String, Option<String>);

/// VMs that existed at `at`, with their configuration version then, by host and name.
pub async fn vms_at(pool: &SqlitePool, at: i64) -> sqlx::Result<Vec<VmAt>> {
    sqlx::query_as(
        "SELECT v.id, v.host_id, h.name, v.name, v.uuid,
                (SELECT c.body FROM vm_configs c WHERE c.vm_id = v.id AND c.valid_from <= ?1
                 ORDER BY c.valid_from DESC, c.id DESC LIMIT 1)
         FROM vms v JOIN hosts h ON h.id = v.host_id
         WHERE v.first_seen <= ?1 AND (v.gone_at IS NULL OR v.gone_at > ?1)
         ORDER BY h.name, v.name",
    )
    .bind(at)
    .fetch_all(pool)
    .await
}

/// The state each VM was seen in by a host's last successful poll at or before `at`.
pub async fn states_at(
    pool: &SqlitePool,
    host_id: i64,
    at: i64,
) -> sqlx::Result<Vec<(i64, PowerState)>> {
    sqlx::query_as(
        "SELECT s.vm_id, s.state FROM samples s
         WHERE s.ts = (SELECT max(p.started_at) FROM polls p WHERE p.host_id = ? AND p.ok = 1 AND p.started_at <= ?)",
    )
    .bind(host_id)
    .bind(at)
    .fetch_all(pool)
    .await
}

/// Per-state sample counts of one rollup bucket, per VM: (vm id, n, up, paused, off).
pub async fn bucket_states(
    pool: &SqlitePool,
    res: i64,
    bucket: i64,
) -> sqlx::Result<Vec<(i64, i64, i64, i64, i64)>> {
    sqlx::query_as(
        "SELECT r.vm_id, r.n, r.up, r.paused, r.off FROM vms v
         JOIN rollups r ON r.res = ? AND r.vm_id = v.id AND r.bucket = ?",
    )
    .bind(res)
    .bind(bucket)
    .fetch_all(pool)
    .await
}

/// A VM's addresses at `at`.
pub async fn addresses_at(pool: &SqlitePool, vm_id: i64, at: i64) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar(
        "SELECT addr FROM vm_addresses WHERE vm_id = ? AND first_seen <= ? AND (ended_at IS NULL OR ended_at > ?) ORDER BY addr",
    )
    .bind(vm_id)
    .bind(at)
    .bind(at)
    .fetch_all(pool)
    .await
}

/// Every VM: (id, host name, name, uuid).
pub async fn all_vms(pool: &SqlitePool) -> sqlx::Result<Vec<(i64, String, String, String)>> {
    sqlx::query_as(
        "SELECT v.id, h.name, v.name, v.uuid FROM vms v JOIN hosts h ON h.id = v.host_id",
    )
    .fetch_all(pool)
    .await
}

/// Per-state sample counts of a resolution's buckets in `[from, to)` (seconds), per VM in
/// bucket order: (vm id, bucket, n, up, paused, off).
pub async fn bucket_states_between(
    pool: &SqlitePool,
    res: i64,
    from_s: i64,
    to_s: i64,
) -> sqlx::Result<Vec<(i64, i64, i64, i64, i64, i64)>> {
    sqlx::query_as(
        "SELECT r.vm_id, r.bucket, r.n, r.up, r.paused, r.off FROM vms v
         JOIN rollups r ON r.res = ?1 AND r.vm_id = v.id AND r.bucket >= ?2 AND r.bucket < ?3
         ORDER BY r.vm_id, r.bucket",
    )
    .bind(res)
    .bind(from_s)
    .bind(to_s)
    .fetch_all(pool)
    .await
}

/// Every raw sample's state in `[from, to)` (ms), per VM in time order: (vm id, ts, state).
pub async fn raw_states(
    pool: &SqlitePool,
    from: i64,
    to: i64,
) -> sqlx::Result<Vec<(i64, i64, PowerState)>> {
    sqlx::query_as(
        "SELECT s.vm_id, s.ts, s.state FROM samples s WHERE s.ts >= ? AND s.ts < ? ORDER BY s.vm_id, s.ts",
    )
    .bind(from)
    .bind(to)
    .fetch_all(pool)
    .await
}

/// Every VM's lifetime: (id, host name, first seen, gone at).
pub async fn lifetimes(pool: &SqlitePool) -> sqlx::Result<Vec<(i64, String, i64, Option<i64>)>> {
    sqlx::query_as(
        "SELECT v.id, h.name, v.first_seen, v.gone_at FROM vms v JOIN hosts h ON h.id = v.host_id",
    )
    .fetch_all(pool)
    .await
}

/// Every configuration version's allocation, per VM in time order: (vm id, valid from,
/// vcpus, memory_max_kib, disk_capacity_bytes).
pub async fn allocations(pool: &SqlitePool) -> sqlx::Result<Vec<(i64, i64, i64, i64, i64)>> {
    sqlx::query_as(
        "SELECT vm_id, valid_from, vcpus, memory_max_kib, disk_capacity_bytes FROM vm_configs ORDER BY vm_id, valid_from, id",
    )
    .fetch_all(pool)
    .await
}

/// One configuration version with its VM: (vm_id, host, name, uuid, valid_from, vcpus,
/// memory_max_kib, disk_capacity_bytes).
pub type VersionRow = (i64, String, String, String, i64, i64, i64, i64);

/// Configuration versions in force by `to`, per VM in time order.
pub async fn versions_until(pool: &SqlitePool, to: i64) -> sqlx::Result<Vec<VersionRow>> {
    sqlx::query_as(
        "SELECT c.vm_id, h.name, v.name, v.uuid, c.valid_from, c.vcpus, c.memory_max_kib, c.disk_capacity_bytes
         FROM vm_configs c JOIN vms v ON v.id = c.vm_id JOIN hosts h ON h.id = v.host_id
         WHERE c.valid_from <= ? ORDER BY c.vm_id, c.valid_from, c.id",
    )
    .bind(to)
    .fetch_all(pool)
    .await
}
