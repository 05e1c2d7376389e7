//! The reports' SQL: VM lifetimes, configuration versions, address intervals, the states seen
//! by past polls and the rollups' per-state sample counts. One function per statement.

use futures::stream::BoxStream;
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
         CROSS JOIN rollups r ON r.res = ? AND r.vm_id = v.id AND r.bucket = ?",
    )
    .bind(res)
    .bind(bucket)
    .fetch_all(pool)
    .await
}

/// Every VM's addresses at `at`: (vm id, address), by VM and address. One statement for the
/// fleet rather than one per VM (10,000 of those took 4 s).
pub async fn addresses_at(pool: &SqlitePool, at: i64) -> sqlx::Result<Vec<(i64, String)>> {
    sqlx::query_as(
        "SELECT vm_id, addr FROM vm_addresses
         WHERE first_seen <= ?1 AND (ended_at IS NULL OR ended_at > ?1) ORDER BY vm_id, addr",
    )
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

/// Per VM over one source of availability (a rollup resolution's buckets, or raw samples)
/// in a stretch of time: time observed running and in a known state (ms), and the first and
/// last moment observed in a known state (ms).
pub type SourceTotals = (i64, i64, i64, Option<i64>, Option<i64>);

/// One unit of observation (a bucket or a sample) of one VM: (vm id, start ms, end ms, time
/// running ms, time in a known state ms).
pub type Unit = (i64, i64, i64, i64, i64);

/// [`SourceTotals`] of a resolution's buckets in `[from_s, to_s)` (seconds), each sample
/// standing for `interval` ms. One row per VM, summed by SQLite.
///
/// `CROSS JOIN` fixes the loop order (SQLite's planner otherwise may scan every row of the
/// resolution and filter): VM by VM, each VM's buckets of the period as one primary-key range,
/// so the work follows the period asked for, not the history kept.
pub async fn bucket_totals(
    pool: &SqlitePool,
    res: i64,
    from_s: i64,
    to_s: i64,
    interval: i64,
) -> sqlx::Result<Vec<SourceTotals>> {
    sqlx::query_as(
        "SELECT r.vm_id, sum(r.up) * ?4, sum(r.up + r.paused + r.off) * ?4,
                min(CASE WHEN r.up + r.paused + r.off > 0 THEN r.bucket END) * 1000,
                (max(CASE WHEN r.up + r.paused + r.off > 0 THEN r.bucket END) + ?1) * 1000
         FROM vms v CROSS JOIN rollups r ON r.res = ?1 AND r.vm_id = v.id AND r.bucket >= ?2 AND r.bucket < ?3
         GROUP BY v.id",
    )
    .bind(res)
    .bind(from_s)
    .bind(to_s)
    .bind(interval)
    .fetch_all(pool)
    .await
}

/// The buckets of the VMs in `vm_ids` (a JSON array) in `[from_s, to_s)`, per VM in time
/// order, as a stream: memory stays flat however long the stretch.
pub fn bucket_units<'a>(
    pool: &'a SqlitePool,
    res: i64,
    from_s: i64,
    to_s: i64,
    interval: i64,
    vm_ids: String,
) -> BoxStream<'a, sqlx::Result<Unit>> {
    sqlx::query_as(
        "SELECT r.vm_id, r.bucket * 1000, (r.bucket + ?1) * 1000, r.up * ?4, (r.up + r.paused + r.off) * ?4
         FROM json_each(?5) j CROSS JOIN rollups r ON r.res = ?1 AND r.vm_id = j.value AND r.bucket >= ?2 AND r.bucket < ?3
         ORDER BY r.vm_id, r.bucket",
    )
    .bind(res)
    .bind(from_s)
    .bind(to_s)
    .bind(interval)
    .bind(vm_ids)
    .fetch(pool)
}

/// The SQL classifying a raw sample's state as running / known, as the 5-minute rollups do.
const RAW_UP: &str = "(s.state = 'running')";
const RAW_KNOWN: &str =
    "(s.state IN ('running', 'paused', 'suspended', 'in_transition', 'shut_off', 'crashed'))";

/// [`SourceTotals`] of the raw samples in `[from, to)` (ms), each sample standing for
/// `interval` ms (cut at `to`).
pub async fn raw_totals(
    pool: &SqlitePool,
    from: i64,
    to: i64,
    interval: i64,
) -> sqlx::Result<Vec<SourceTotals>> {
    sqlx::query_as(&format!(
        "SELECT s.vm_id, sum({RAW_UP} * min(?3, ?2 - s.ts)), sum({RAW_KNOWN} * min(?3, ?2 - s.ts)),
                min(CASE WHEN {RAW_KNOWN} THEN s.ts END), max(CASE WHEN {RAW_KNOWN} THEN min(s.ts + ?3, ?2) END)
         FROM samples s WHERE s.ts >= ?1 AND s.ts < ?2 GROUP BY s.vm_id"
    ))
    .bind(from)
    .bind(to)
    .bind(interval)
    .fetch_all(pool)
    .await
}

/// The raw samples of the VMs in `vm_ids` (a JSON array) in `[from, to)` (ms), per VM in
/// time order, as a stream.
pub fn raw_units<'a>(
    pool: &'a SqlitePool,
    from: i64,
    to: i64,
    interval: i64,
    vm_ids: String,
) -> BoxStream<'a, sqlx::Result<Unit>> {
    // The statement must live as long as the stream: built once, leaked never (it is static).
    static SQL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let sql = SQL.get_or_init(|| {
        format!(
            "SELECT s.vm_id, s.ts, min(s.ts + ?3, ?2), {RAW_UP} * min(?3, ?2 - s.ts), {RAW_KNOWN} * min(?3, ?2 - s.ts)
             FROM samples s WHERE s.ts >= ?1 AND s.ts < ?2 AND s.vm_id IN (SELECT value FROM json_each(?4))
             ORDER BY s.vm_id, s.ts"
        )
    });
    sqlx::query_as(sql).bind(from).bind(to).bind(interval).bind(vm_ids).fetch(pool)
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
