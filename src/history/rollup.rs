//! Rollups: min/sum/max per metric and samples per power state, per VM, in 5-minute buckets
//! computed from raw samples, 1-hour buckets from the 5-minute ones and 1-day buckets from the
//! hourly ones. Each bucket is computed once it has closed, in small transactions;
//! `rollup_progress` records how far each resolution got, so maintenance never rescans.
//! Buckets are aligned to UTC (a day is 00:00 to 24:00 UTC, whatever the viewer's timezone).

use sqlx::SqlitePool;

use crate::domain::Resolution;

/// Bucket lengths in seconds, finest first (see [`Resolution`]).
pub const RESOLUTIONS: [i64; 3] = Resolution::ROLLUP_SECS;

/// Buckets written per transaction, so a catch-up never holds the write lock for long.
const BATCH_BUCKETS: i64 = 12;

/// Raw samples may be stored up to this long after their poll started: a poll can take up to
/// `call_timeout_secs` (600 s at most) before it is written. A bucket is rolled up only once
/// this much time has passed since it closed; charts read raw samples for that tail.
pub const SLACK_SECS: i64 = 660;

/// What one maintenance run did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Maintained {
    /// Rows written, per resolution (finest first).
    pub rows: [u64; 3],
}

const METRICS: [(&str, &str); 6] = [
    ("cpu", "CAST(round(cpu_pct * 100) AS INTEGER)"),
    ("mem", "memory_used_kib"),
    ("rd", "CAST(round(disk_read_bps) AS INTEGER)"),
    ("wr", "CAST(round(disk_write_bps) AS INTEGER)"),
    ("rx", "CAST(round(net_rx_bps) AS INTEGER)"),
    ("tx", "CAST(round(net_tx_bps) AS INTEGER)"),
];

fn columns() -> String {
    let mut c = String::from("res, vm_id, bucket, n, up, paused, off");
    for (m, _) in METRICS {
        c.push_str(&format!(", {m}_n, {m}_min, {m}_sum, {m}_max"));
    }
    c
}

/// The statement rolling raw samples of `[?1, ?2)` (seconds) into 5-minute buckets.
fn from_raw_sql() -> String {
    let mut select = String::from(
        "SELECT 300, vm_id, (ts / 300000) * 300, count(*), sum(state = 'running'),
                sum(state IN ('paused', 'suspended', 'in_transition')), sum(state IN ('shut_off', 'crashed'))",
    );
    for (_, expr) in METRICS {
        select.push_str(&format!(", count({expr}), min({expr}), sum({expr}), max({expr})"));
    }
    format!(
        "INSERT OR IGNORE INTO rollups ({}) {select} FROM samples WHERE ts >= ?1 * 1000 AND ts < ?2 * 1000
         GROUP BY vm_id, ts / 300000",
        columns()
    )
}

/// The statement rolling `?3`-second rows of `[?1, ?2)` into `?4`-second buckets.
fn from_finer_sql() -> String {
    let mut select = String::from(
        "SELECT ?4, r.vm_id, (r.bucket / ?4) * ?4, sum(r.n), sum(r.up), sum(r.paused), sum(r.off)",
    );
    for (m, _) in METRICS {
        select.push_str(&format!(", sum(r.{m}_n), min(r.{m}_min), sum(r.{m}_sum), max(r.{m}_max)"));
    }
    // Driving the loop from `vms` (CROSS JOIN fixes the order; SQLite's planner otherwise
    // picks the rollups as the outer loop and scans every row of the finer resolution, all
    // of its history, per batch) reads each VM's rows as one primary-key range.
    format!(
        "INSERT OR IGNORE INTO rollups ({}) {select}
         FROM vms v CROSS JOIN rollups r ON r.res = ?3 AND r.vm_id = v.id AND r.bucket >= ?1 AND r.bucket < ?2
         GROUP BY r.vm_id, r.bucket / ?4",
        columns()
    )
}

async fn progress(pool: &SqlitePool, res: i64) -> sqlx::Result<Option<i64>> {
    sqlx::query_scalar("SELECT done_until FROM rollup_progress WHERE res = ?")
        .bind(res)
        .fetch_optional(pool)
        .await
}

/// Where a resolution starts when it has never run: the first bucket its source has data for.
async fn start_of(pool: &SqlitePool, res: i64, finer: Option<i64>) -> sqlx::Result<Option<i64>> {
    let first: Option<i64> = match finer {
        None => sqlx::query_scalar("SELECT min(ts) / 1000 FROM samples").fetch_one(pool).await?,
        Some(f) => {
            sqlx::query_scalar("SELECT min(bucket) FROM rollups WHERE res = ?")
                .bind(f)
                .fetch_one(pool)
                .await?
        }
    };
    Ok(first.map(|s| s - s.rem_euclid(res)))
}

/// Rolls up every closed bucket not rolled up yet, at every resolution.
pub async fn maintain(pool: &SqlitePool, now_ms: i64) -> sqlx::Result<Maintained> {
    let mut done = Maintained::default();
    let now = now_ms / 1000 - SLACK_SECS;
    let mut source_done = now; // raw samples are complete up to `now`
    for (i, &res) in RESOLUTIONS.iter().enumerate() {
        let finer = i.checked_sub(1).map(|j| RESOLUTIONS[j]);
        // Only buckets whose source is complete: closed in time, and rolled up below.
        let closed = source_done.min(now) - source_done.min(now).rem_euclid(res);
        let mut at = match progress(pool, res).await? {
            Some(p) => p,
            None => match start_of(pool, res, finer).await? {
                Some(s) => s,
                None => {
                    // Nothing to roll up yet: start from here, never from 1970.
                    source_done = closed;
                    continue;
                }
            },
        };
        let sql = if finer.is_none() { from_raw_sql() } else { from_finer_sql() };
        while at < closed {
            let until = (at + BATCH_BUCKETS * res).min(closed);
            let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
            let q = sqlx::query(&sql).bind(at).bind(until);
            let q = match finer {
                Some(f) => q.bind(f).bind(res),
                None => q,
            };
            done.rows[i] += q.execute(&mut *tx).await?.rows_affected();
            sqlx::query("INSERT INTO rollup_progress (res, done_until) VALUES (?, ?) ON CONFLICT (res) DO UPDATE SET done_until = max(done_until, excluded.done_until)")
                .bind(res)
                .bind(until)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            at = until;
            tokio::task::yield_now().await;
        }
        source_done = at;
    }
    Ok(done)
}

/// Counts every sample rolled up in whole buckets of `[after_s, until_s)` (seconds), at every
/// resolution, as `weight` samples: what the rollups would hold had each sample been taken
/// `weight` times.
///
/// For history generated more sparsely than the poller polls (the demo's month, one sample an
/// hour or per 5 minutes, src/demo/history.rs): reports count each sample as one poll interval
/// (`reports::availability`), so unweighted sparse samples would stand for a fraction of the
/// time they cover. Minima and maxima stay; counts and sums scale, so averages are unchanged
/// and coarser buckets remain the sums of finer ones. Call it only when the stretch holds such
/// history alone, and before buckets straddling its end are rolled up.
pub async fn weigh(
    pool: &SqlitePool,
    after_s: i64,
    until_s: i64,
    weight: i64,
) -> sqlx::Result<u64> {
    let mut set = String::from("n = n * ?1, up = up * ?1, paused = paused * ?1, off = off * ?1");
    for (m, _) in METRICS {
        set.push_str(&format!(", {m}_n = {m}_n * ?1, {m}_sum = {m}_sum * ?1"));
    }
    let sql = format!("UPDATE rollups SET {set} WHERE bucket >= ?2 AND bucket + res <= ?3");
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    let rows = sqlx::query(&sql)
        .bind(weight)
        .bind(after_s)
        .bind(until_s)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    tx.commit().await?;
    Ok(rows)
}

/// What one pruning run removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pruned {
    pub samples: u64,
    pub polls: u64,
    /// Rollup rows, per resolution (finest first).
    pub rollups: [u64; 3],
}

/// Raw-sample timestamps deleted per statement: a few polls' worth, so the write lock is held
/// for milliseconds even with thousands of VMs.
const PRUNE_POLLS: i64 = 5;
/// Poll rows deleted per statement.
const PRUNE_ROWS: i64 = 2000;

/// Deletes what is older than its retention, in small batches, and never anything the next
/// resolution has not been computed from yet.
pub async fn prune(
    pool: &SqlitePool,
    retention: &crate::config::Retention,
    now_ms: i64,
) -> sqlx::Result<Pruned> {
    let mut out = Pruned::default();
    let progress_ms =
        |res| async move { Ok::<_, sqlx::Error>(progress(pool, res).await?.map(|s| s * 1000)) };

    // Raw samples: older than their retention and already rolled up into 5-minute buckets.
    let raw_cutoff = (now_ms - retention.raw.as_millis() as i64)
        .min(progress_ms(300).await?.unwrap_or(i64::MIN));
    loop {
        let n = sqlx::query(
            "DELETE FROM samples WHERE ts IN (SELECT DISTINCT ts FROM samples WHERE ts < ? ORDER BY ts LIMIT ?)",
        )
        .bind(raw_cutoff)
        .bind(PRUNE_POLLS)
        .execute(pool)
        .await?
        .rows_affected();
        out.samples += n;
        if n == 0 {
            break;
        }
        tokio::task::yield_now().await;
    }
    // Polls of that age too, except the ones hosts point at.
    loop {
        let n = sqlx::query(
            "DELETE FROM polls WHERE id IN (
                 SELECT id FROM polls WHERE started_at < ?
                   AND id NOT IN (SELECT last_poll_id FROM hosts WHERE last_poll_id IS NOT NULL)
                   AND id NOT IN (SELECT last_ok_poll_id FROM hosts WHERE last_ok_poll_id IS NOT NULL)
                 LIMIT ?)",
        )
        .bind(raw_cutoff)
        .bind(PRUNE_ROWS)
        .execute(pool)
        .await?
        .rows_affected();
        out.polls += n;
        if n == 0 {
            break;
        }
        tokio::task::yield_now().await;
    }
    // Rollups: each resolution after its retention, once the coarser one has used it.
    for (i, &res) in RESOLUTIONS.iter().enumerate() {
        let mut cutoff =
            now_ms - retention.of(Resolution::from_bucket_secs(res)).as_millis() as i64;
        if let Some(&coarser) = RESOLUTIONS.get(i + 1) {
            cutoff = cutoff.min(progress_ms(coarser).await?.unwrap_or(i64::MIN));
        }
        // One primary-key range per VM: a single DELETE with a subquery made SQLite scan every
        // row of the resolution (1.7 million 5-minute rows for 100 VMs, 200 ms a minute).
        let vms: Vec<i64> = sqlx::query_scalar("SELECT id FROM vms").fetch_all(pool).await?;
        for vm in vms {
            let n = sqlx::query("DELETE FROM rollups WHERE res = ? AND vm_id = ? AND bucket < ?")
                .bind(res)
                .bind(vm)
                .bind(cutoff.div_euclid(1000))
                .execute(pool)
                .await?
                .rows_affected();
            out.rollups[i] += n;
            if n > 0 {
                tokio::task::yield_now().await;
            }
        }
    }
    Ok(out)
}

/// One rollup row as charts read it.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct Row {
    pub bucket: i64,
    pub n: i64,
    pub up: i64,
    pub paused: i64,
    pub off: i64,
    pub cpu_n: i64,
    pub cpu_min: Option<i64>,
    pub cpu_sum: Option<i64>,
    pub cpu_max: Option<i64>,
    pub mem_n: i64,
    pub mem_min: Option<i64>,
    pub mem_sum: Option<i64>,
    pub mem_max: Option<i64>,
    pub rd_n: i64,
    pub rd_min: Option<i64>,
    pub rd_sum: Option<i64>,
    pub rd_max: Option<i64>,
    pub wr_n: i64,
    pub wr_min: Option<i64>,
    pub wr_sum: Option<i64>,
    pub wr_max: Option<i64>,
    pub rx_n: i64,
    pub rx_min: Option<i64>,
    pub rx_sum: Option<i64>,
    pub rx_max: Option<i64>,
    pub tx_n: i64,
    pub tx_min: Option<i64>,
    pub tx_sum: Option<i64>,
    pub tx_max: Option<i64>,
}

/// A VM's rows at one resolution over `[from, to)` (ms).
pub async fn rows(
    pool: &SqlitePool,
    res: i64,
    vm_id: i64,
    from_ms: i64,
    to_ms: i64,
) -> sqlx::Result<Vec<Row>> {
    sqlx::query_as(
        "SELECT bucket, n, up, paused, off, cpu_n, cpu_min, cpu_sum, cpu_max, mem_n, mem_min, mem_sum, mem_max,
                rd_n, rd_min, rd_sum, rd_max, wr_n, wr_min, wr_sum, wr_max, rx_n, rx_min, rx_sum, rx_max,
                tx_n, tx_min, tx_sum, tx_max
         FROM rollups WHERE res = ? AND vm_id = ? AND bucket >= ? AND bucket < ? ORDER BY bucket",
    )
    .bind(res)
    .bind(vm_id)
    .bind(from_ms.div_euclid(1000) - res + 1)
    .bind(to_ms.div_euclid(1000))
    .fetch_all(pool)
    .await
}

/// How far a resolution is rolled up, in ms (None: never run).
pub async fn done_until_ms(pool: &SqlitePool, res: i64) -> sqlx::Result<Option<i64>> {
    Ok(progress(pool, res).await?.map(|s| s * 1000))
}

/// Runs maintenance and pruning every minute from liftoff until shutdown.
pub fn stage() -> rocket::fairing::AdHoc {
    rocket::fairing::AdHoc::on_liftoff("Rollups", |rocket| {
        Box::pin(async move {
            let (Some(db), Some(settings)) =
                (rocket.state::<crate::db::Db>(), rocket.state::<crate::config::Settings>())
            else {
                return;
            };
            let pool = db.0.clone();
            let retention = settings.retention;
            crate::background::every(
                rocket,
                "rollups",
                std::time::Duration::from_secs(60),
                move || {
                    let pool = pool.clone();
                    async move {
                        let t = std::time::Instant::now();
                        match maintain(&pool, crate::db::now_ms()).await {
                            Ok(m) if m.rows.iter().any(|r| *r > 0) => {
                                tracing::debug!(rows = ?m.rows, ms = t.elapsed().as_millis() as u64, "rollups")
                            }
                            Ok(_) => {}
                            Err(e) => tracing::error!("rollup maintenance failed: {e}"),
                        }
                        match prune(&pool, &retention, crate::db::now_ms()).await {
                            Ok(p) if p.samples + p.polls + p.rollups.iter().sum::<u64>() > 0 => {
                                tracing::debug!(?p, "pruned history")
                            }
                            Ok(_) => {}
                            Err(e) => tracing::error!("pruning history failed: {e}"),
                        }
                    }
                },
            );
        })
    })
}
