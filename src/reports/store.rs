//! The reports' SQL: VM lifetimes, configuration versions, address intervals, the states seen
//! by past polls and the rollups' per-state sample counts. One function per statement.
//!
//! Statements with a row per VM return their rows as one JSON value
//! (`json_group_array(json_array(…))`, decoded by [`rows`]): sqlx's SQLite driver hands rows
//! over one at a time from its worker thread, about 8 µs each here, which made 10,000-VM
//! reports spend most of their time moving rows.

use futures::stream::BoxStream;
use serde::de::DeserializeOwned;
use sqlx::SqlitePool;

use crate::domain::PowerState;

/// Decodes a statement's rows sent as one JSON array of arrays.
fn rows<T: DeserializeOwned>(json: &str) -> sqlx::Result<Vec<T>> {
    serde_json::from_str(json).map_err(|e| sqlx::Error::Decode(Box::new(e)))
}

/// A VM that existed at a moment, with its configuration version then: (vm id, host name, VM
/// name, uuid, vcpus, memory_max_kib, disk_capacity_bytes); no configuration, no figures.
pub type VmAt = (i64, String, String, String, Option<u32>, Option<u64>, Option<u64>);

/// VMs that existed at `at`, with their configuration version then, in no particular order.
pub async fn vms_at(pool: &SqlitePool, at: i64) -> sqlx::Result<Vec<VmAt>> {
    let json: String = sqlx::query_scalar(
        "SELECT COALESCE(json_group_array(json_array(id, host, name, uuid, vcpus, memory, disk)), '[]')
         FROM (SELECT v.id, h.name AS host, v.name, v.uuid, c.vcpus, c.memory_max_kib AS memory,
                      c.disk_capacity_bytes AS disk
               FROM vms v JOIN hosts h ON h.id = v.host_id
               LEFT JOIN vm_configs c ON c.id =
                   (SELECT c2.id FROM vm_configs c2 WHERE c2.vm_id = v.id AND c2.valid_from <= ?1
                    ORDER BY c2.valid_from DESC, c2.id DESC LIMIT 1)
               WHERE v.first_seen <= ?1 AND (v.gone_at IS NULL OR v.gone_at > ?1))",
    )
    .bind(at)
    .fetch_one(pool)
    .await?;
    rows(&json)
}

/// The state each VM was seen in by its host's last successful poll at or before `at`, every
/// host at once. (Hosts polled at the same moment share a timestamp, so the samples must be
/// reached through each host's VMs, not by timestamp alone.)
pub async fn states_at(pool: &SqlitePool, at: i64) -> sqlx::Result<Vec<(i64, PowerState)>> {
    let json: String = sqlx::query_scalar(
        "WITH t(host_id, ts) AS MATERIALIZED (
             SELECT h.id, (SELECT max(p.started_at) FROM polls p
                           WHERE p.host_id = h.id AND p.ok = 1 AND p.started_at <= ?1)
             FROM hosts h)
         SELECT COALESCE(json_group_array(json_array(s.vm_id, s.state)), '[]')
         FROM t CROSS JOIN vms v ON v.host_id = t.host_id
         CROSS JOIN samples s ON s.ts = t.ts AND s.vm_id = v.id",
    )
    .bind(at)
    .fetch_one(pool)
    .await?;
    rows(&json)
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
    let json: String = sqlx::query_scalar(
        "SELECT COALESCE(json_group_array(json_array(vm_id, addr) ORDER BY vm_id, addr), '[]')
         FROM vm_addresses WHERE first_seen <= ?1 AND (ended_at IS NULL OR ended_at > ?1)",
    )
    .bind(at)
    .fetch_one(pool)
    .await?;
    rows(&json)
}

/// Every VM: (id, host name, name, uuid, first seen).
pub async fn all_vms(pool: &SqlitePool) -> sqlx::Result<Vec<(i64, String, String, String, i64)>> {
    let json: String = sqlx::query_scalar(
        "SELECT COALESCE(json_group_array(json_array(v.id, h.name, v.name, v.uuid, v.first_seen)), '[]')
         FROM vms v JOIN hosts h ON h.id = v.host_id",
    )
    .fetch_one(pool)
    .await?;
    rows(&json)
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
    let json: String = sqlx::query_scalar(
        "SELECT COALESCE(json_group_array(json_array(vm, up, known, first, last)), '[]')
         FROM (SELECT r.vm_id AS vm, sum(r.up) * ?4 AS up, sum(r.up + r.paused + r.off) * ?4 AS known,
                      min(CASE WHEN r.up + r.paused + r.off > 0 THEN r.bucket END) * 1000 AS first,
                      (max(CASE WHEN r.up + r.paused + r.off > 0 THEN r.bucket END) + ?1) * 1000 AS last
               FROM vms v CROSS JOIN rollups r ON r.res = ?1 AND r.vm_id = v.id AND r.bucket >= ?2 AND r.bucket < ?3
               GROUP BY v.id)",
    )
    .bind(res)
    .bind(from_s)
    .bind(to_s)
    .bind(interval)
    .fetch_one(pool)
    .await?;
    rows(&json)
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
    let json: String = sqlx::query_scalar(&format!(
        "SELECT COALESCE(json_group_array(json_array(vm, up, known, first, last)), '[]')
         FROM (SELECT s.vm_id AS vm, sum({RAW_UP} * min(?3, ?2 - s.ts)) AS up,
                      sum({RAW_KNOWN} * min(?3, ?2 - s.ts)) AS known,
                      min(CASE WHEN {RAW_KNOWN} THEN s.ts END) AS first,
                      max(CASE WHEN {RAW_KNOWN} THEN min(s.ts + ?3, ?2) END) AS last
               FROM samples s WHERE s.ts >= ?1 AND s.ts < ?2 GROUP BY s.vm_id)"
    ))
    .bind(from)
    .bind(to)
    .bind(interval)
    .fetch_one(pool)
    .await?;
    rows(&json)
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
    let json: String = sqlx::query_scalar(
        "SELECT COALESCE(json_group_array(json_array(v.id, h.name, v.first_seen, v.gone_at)), '[]')
         FROM vms v JOIN hosts h ON h.id = v.host_id",
    )
    .fetch_one(pool)
    .await?;
    rows(&json)
}

/// Every configuration version's allocation, per VM in time order: (vm id, valid from,
/// vcpus, memory_max_kib, disk_capacity_bytes).
pub async fn allocations(pool: &SqlitePool) -> sqlx::Result<Vec<(i64, i64, i64, i64, i64)>> {
    let json: String = sqlx::query_scalar(
        "SELECT COALESCE(json_group_array(
                    json_array(vm_id, valid_from, vcpus, memory_max_kib, disk_capacity_bytes)
                    ORDER BY vm_id, valid_from, id), '[]')
         FROM vm_configs",
    )
    .fetch_one(pool)
    .await?;
    rows(&json)
}

/// One configuration version with its VM: (vm_id, host, name, uuid, valid_from, vcpus,
/// memory_max_kib, disk_capacity_bytes).
pub type VersionRow = (i64, String, String, String, i64, i64, i64, i64);

/// Configuration versions in force by `to`, per VM in time order.
pub async fn versions_until(pool: &SqlitePool, to: i64) -> sqlx::Result<Vec<VersionRow>> {
    let json: String = sqlx::query_scalar(
        "SELECT COALESCE(json_group_array(
                    json_array(c.vm_id, h.name, v.name, v.uuid, c.valid_from, c.vcpus,
                               c.memory_max_kib, c.disk_capacity_bytes)
                    ORDER BY c.vm_id, c.valid_from, c.id), '[]')
         FROM vm_configs c JOIN vms v ON v.id = c.vm_id JOIN hosts h ON h.id = v.host_id
         WHERE c.valid_from <= ?",
    )
    .bind(to)
    .fetch_one(pool)
    .await?;
    rows(&json)
}
