//! Recording what the hosts report: hosts, polls, VM identity and state, configuration
//! versions, samples and address history. One function per statement or per transaction.
//! (The pages read these tables through their own feature's store.)
//!
//! Writes are incremental: the poller keeps a [`HostCache`] of what the database already says
//! about each VM, so a steady-state poll writes one multi-row sample insert and one poll row,
//! and touches `vms`, `vm_configs` and `vm_addresses` only for what changed.
//!
//! Long because one poll's transaction touches five tables incrementally; each statement is its
//! own function.

use std::collections::{HashMap, HashSet};

use sqlx::{QueryBuilder, Row, Sqlite, SqlitePool, Transaction};

use crate::backend::{Counters, DiskUsage, IpAddress, SnapshotReport, VmConfig, VmReport, VmState};
use crate::config::HostConfig;
use crate::domain::PowerState;

/// Registers the configured hosts (insert or refresh) and returns their ids in config order.
pub async fn upsert_hosts(
    pool: &SqlitePool,
    hosts: &[HostConfig],
    demo: bool,
) -> sqlx::Result<Vec<i64>> {
    let mut ids = Vec::with_capacity(hosts.len());
    for h in hosts {
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO hosts (name, driver, uri_redacted, demo) VALUES (?, ?, ?, ?)
             ON CONFLICT (name) DO UPDATE SET driver = excluded.driver,
                uri_redacted = excluded.uri_redacted, demo = excluded.demo
             RETURNING id",
        )
        .bind(h.name.as_str())
        .bind(h.driver_name())
        .bind(h.uri().redacted())
        .bind(demo)
        .fetch_one(pool)
        .await?;
        ids.push(id);
    }
    Ok(ids)
}

/// What the database holds for one VM, mirrored in memory between polls.
#[derive(Debug, Clone)]
struct CachedVm {
    id: i64,
    name: String,
    state: PowerState,
    raw_state: String,
    state_reason: String,
    gone: bool,
    config: Option<VmConfig>,
    /// The `vm_configs` row of `config`: part of the snapshot read key.
    config_id: Option<i64>,
    addresses: Vec<IpAddress>,
    disk_usage: Vec<DiskUsage>,
    last: Option<LastSample>,
    snapshots: SnapshotMark,
}

/// What the poller knows of a VM's last snapshot read, so a steady-state poll decides without
/// a query which VMs need one (mirrors `vms.snapshots_read_at`/`snapshots_read_key`).
#[derive(Debug, Clone, Default)]
struct SnapshotMark {
    read_at: Option<i64>,
    read_key: Option<String>,
    /// A hash of the set last recorded from a report that carried it (VirtualBox); None
    /// after a restart, so the first such poll records it once.
    set_hash: Option<u64>,
}

#[derive(Debug, Clone, Copy)]
struct LastSample {
    ts: i64,
    counters: Counters,
}

/// The poller's per-host mirror of the database, loaded on first use.
#[derive(Debug, Default)]
pub struct HostCache {
    loaded: bool,
    vms: HashMap<String, CachedVm>,
}

impl HostCache {
    async fn load(&mut self, pool: &SqlitePool, host_id: i64) -> sqlx::Result<()> {
        if self.loaded {
            return Ok(());
        }
        let rows = sqlx::query(
            "SELECT v.id, v.uuid, v.name, v.state, v.raw_state, v.state_reason, v.gone_at,
                    v.addresses, v.disk_usage, v.config_id, v.snapshots_read_at,
                    v.snapshots_read_key, c.body, s.ts AS s_ts, s.cpu_time_ns, s.disk_read_bytes,
                    s.disk_write_bytes, s.net_rx_bytes, s.net_tx_bytes
             FROM vms v
             JOIN hosts h ON h.id = v.host_id
             LEFT JOIN vm_configs c ON c.id = v.config_id
             LEFT JOIN polls p ON p.id = h.last_ok_poll_id
             LEFT JOIN samples s ON s.vm_id = v.id AND s.ts = p.started_at
             WHERE v.host_id = ?",
        )
        .bind(host_id)
        .fetch_all(pool)
        .await?;
        for row in rows {
            let uuid: String = row.get("uuid");
            let body: Option<String> = row.get("body");
            let s_ts: Option<i64> = row.get("s_ts");
            let opt = |c: &str| row.get::<Option<i64>, _>(c).map(|v| v as u64);
            self.vms.insert(
                uuid,
                CachedVm {
                    id: row.get("id"),
                    name: row.get("name"),
                    state: row.try_get("state").unwrap_or(PowerState::Unknown),
                    raw_state: row.get("raw_state"),
                    state_reason: row.get("state_reason"),
                    gone: row.get::<Option<i64>, _>("gone_at").is_some(),
                    config: body.and_then(|b| serde_json::from_str(&b).ok()),
                    config_id: row.get("config_id"),
                    addresses: serde_json::from_str(row.get("addresses")).unwrap_or_default(),
                    disk_usage: serde_json::from_str(row.get("disk_usage")).unwrap_or_default(),
                    last: s_ts.map(|ts| LastSample {
                        ts,
                        counters: Counters {
                            cpu_time_ns: opt("cpu_time_ns"),
                            disk_read_bytes: opt("disk_read_bytes"),
                            disk_write_bytes: opt("disk_write_bytes"),
                            net_rx_bytes: opt("net_rx_bytes"),
                            net_tx_bytes: opt("net_tx_bytes"),
                        },
                    }),
                    snapshots: SnapshotMark {
                        read_at: row.get("snapshots_read_at"),
                        read_key: row.get("snapshots_read_key"),
                        set_hash: None,
                    },
                },
            );
        }
        self.loaded = true;
        Ok(())
    }
}

/// Rates derived from two consecutive samples of one VM.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Rates {
    pub cpu_pct: Option<f64>,
    pub disk_read_bps: Option<f64>,
    pub disk_write_bps: Option<f64>,
    pub net_rx_bps: Option<f64>,
    pub net_tx_bps: Option<f64>,
}

/// Above this a byte rate is a broken counter, not traffic (1 TB/s).
const MAX_BYTE_RATE: f64 = 1e12;
/// A gap longer than this between samples says nothing about the current rate.
const MAX_RATE_GAP_MS: i64 = 3_600_000;

/// Derives rates between two samples taken `dt_ms` apart. A counter that went backwards (the VM
/// restarted) or is missing on either side gives no rate rather than a negative or absurd one.
pub fn derive_rates(prev: &Counters, cur: &Counters, dt_ms: i64, vcpus: u32) -> Rates {
    if dt_ms <= 0 || dt_ms > MAX_RATE_GAP_MS {
        return Rates::default();
    }
    let secs = dt_ms as f64 / 1000.0;
    let per_sec = |p: Option<u64>, c: Option<u64>| -> Option<f64> {
        let (p, c) = (p?, c?);
        let r = c.checked_sub(p)? as f64 / secs;
        (r <= MAX_BYTE_RATE).then_some(r)
    };
    let cpu_pct = per_sec(prev.cpu_time_ns, cur.cpu_time_ns).and_then(|ns_per_sec| {
        if vcpus == 0 {
            return None;
        }
        let pct = ns_per_sec / 1e9 / f64::from(vcpus) * 100.0;
        // Sampling jitter can push a busy VM slightly past 100 %; far past it is a bad counter.
        (pct <= 110.0).then_some(pct.min(100.0))
    });
    Rates {
        cpu_pct,
        disk_read_bps: per_sec(prev.disk_read_bytes, cur.disk_read_bytes),
        disk_write_bps: per_sec(prev.disk_write_bytes, cur.disk_write_bytes),
        net_rx_bps: per_sec(prev.net_rx_bytes, cur.net_rx_bytes),
        net_tx_bps: per_sec(prev.net_tx_bytes, cur.net_tx_bytes),
    }
}

struct SampleRow {
    vm_id: i64,
    state: PowerState,
    memory_used_kib: Option<u64>,
    counters: Counters,
    rates: Rates,
}

/// Summary of one recorded poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recorded {
    pub poll_id: i64,
    pub vms: usize,
    pub new_vms: usize,
    pub gone_vms: usize,
    pub config_changes: usize,
}

/// Records a successful poll: every sample in one transaction, plus whatever changed.
pub async fn record_success(
    pool: &SqlitePool,
    cache: &mut HostCache,
    host_id: i64,
    started_at: i64,
    finished_at: i64,
    reports: &[VmReport],
) -> sqlx::Result<Recorded> {
    let result = write_success(pool, cache, host_id, started_at, finished_at, reports).await;
    if result.is_err() {
        // The transaction rolled back; the cache may hold changes that never landed.
        *cache = HostCache::default();
    }
    result
}

async fn write_success(
    pool: &SqlitePool,
    cache: &mut HostCache,
    host_id: i64,
    started_at: i64,
    finished_at: i64,
    reports: &[VmReport],
) -> sqlx::Result<Recorded> {
    cache.load(pool, host_id).await?;
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    let poll_id =
        insert_poll(&mut tx, host_id, started_at, finished_at, None, Some(reports.len())).await?;

    // The cache is updated in place as rows are written. If anything below fails the
    // transaction rolls back, and the caller drops the cache so the next poll reloads it from
    // the database: cheaper than cloning every cached VM on every poll to stage changes.
    let mut samples = Vec::with_capacity(reports.len());
    let mut seen: HashSet<&str> = HashSet::with_capacity(reports.len());
    let (mut new_vms, mut config_changes) = (0, 0);
    for r in reports {
        if !seen.insert(r.uuid.as_str()) {
            tracing::warn!(vm = %r.name, uuid = %r.uuid, "duplicate uuid in one poll; ignored");
            continue;
        }
        let vm = match cache.vms.get_mut(&r.uuid) {
            Some(vm) => {
                if vm.gone
                    || vm.name != r.name
                    || vm.state != r.state
                    || vm.raw_state != r.raw_state
                    || vm.state_reason != r.state_reason
                {
                    let since = (vm.state != r.state || vm.gone).then_some(started_at);
                    update_vm_state(&mut tx, vm.id, r, since).await?;
                    vm.gone = false;
                    vm.name.clone_from(&r.name);
                    vm.state = r.state;
                    vm.raw_state.clone_from(&r.raw_state);
                    vm.state_reason.clone_from(&r.state_reason);
                }
                vm
            }
            None => {
                new_vms += 1;
                let id = insert_vm(&mut tx, host_id, r, started_at).await?;
                cache.vms.entry(r.uuid.clone()).or_insert(CachedVm {
                    id,
                    name: r.name.clone(),
                    state: r.state,
                    raw_state: r.raw_state.clone(),
                    state_reason: r.state_reason.clone(),
                    gone: false,
                    config: None,
                    config_id: None,
                    addresses: Vec::new(),
                    disk_usage: Vec::new(),
                    last: None,
                    snapshots: SnapshotMark::default(),
                })
            }
        };
        if vm.config.as_ref() != Some(&r.config) {
            vm.config_id = Some(insert_config(&mut tx, vm.id, started_at, &r.config).await?);
            config_changes += 1;
            vm.config = Some(r.config.clone());
        }
        if !same_addresses(&vm.addresses, &r.addresses) {
            let mut addresses = r.addresses.clone();
            crate::backend::sort_addresses(&mut addresses);
            update_addresses(&mut tx, vm.id, &vm.addresses, &addresses, started_at).await?;
            vm.addresses = addresses;
        }
        if vm.disk_usage != r.disk_usage {
            let json = serde_json::to_string(&r.disk_usage)
                .map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
            sqlx::query("UPDATE vms SET disk_usage = ? WHERE id = ?")
                .bind(json)
                .bind(vm.id)
                .execute(&mut *tx)
                .await?;
            vm.disk_usage.clone_from(&r.disk_usage);
        }
        let rates = match (&vm.last, r.state) {
            (Some(last), PowerState::Running) => {
                derive_rates(&last.counters, &r.counters, started_at - last.ts, r.config.vcpus)
            }
            _ => Rates::default(),
        };
        vm.last = Some(LastSample { ts: started_at, counters: r.counters });
        samples.push(SampleRow {
            vm_id: vm.id,
            state: r.state,
            memory_used_kib: r.memory_used_kib,
            counters: r.counters,
            rates,
        });
    }
    insert_samples(&mut tx, started_at, &samples).await?;

    let mut gone_vms = 0;
    for (uuid, vm) in cache.vms.iter_mut() {
        if !vm.gone && !seen.contains(uuid.as_str()) {
            mark_gone(&mut tx, vm.id, started_at).await?;
            vm.gone = true;
            vm.last = None;
            vm.addresses.clear();
            gone_vms += 1;
        }
    }
    sqlx::query("UPDATE hosts SET last_poll_id = ?, last_ok_poll_id = ? WHERE id = ?")
        .bind(poll_id)
        .bind(poll_id)
        .bind(host_id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    let count = samples.len();
    Ok(Recorded { poll_id, vms: count, new_vms, gone_vms, config_changes })
}

/// Records one VM's state observed outside a poll (a power action's confirmation), so the list
/// shows it at once without re-polling the whole host. Keeps the cache in step.
pub async fn record_state(
    pool: &SqlitePool,
    cache: &mut HostCache,
    host_id: i64,
    uuid: &str,
    state: &VmState,
    at: i64,
) -> sqlx::Result<()> {
    cache.load(pool, host_id).await?;
    let Some(vm) = cache.vms.get_mut(uuid) else { return Ok(()) };
    if vm.state == state.state && vm.raw_state == state.raw_state {
        return Ok(());
    }
    sqlx::query(
        "UPDATE vms SET state = ?, raw_state = ?, state_reason = ?, state_since = ? WHERE id = ?",
    )
    .bind(state.state)
    .bind(&state.raw_state)
    .bind(&state.state_reason)
    .bind(at)
    .bind(vm.id)
    .execute(pool)
    .await?;
    vm.state = state.state;
    vm.raw_state.clone_from(&state.raw_state);
    vm.state_reason.clone_from(&state.state_reason);
    Ok(())
}

/// Records a failed poll.
pub async fn record_failure(
    pool: &SqlitePool,
    host_id: i64,
    started_at: i64,
    finished_at: i64,
    error: &str,
) -> sqlx::Result<i64> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    let poll_id = insert_poll(&mut tx, host_id, started_at, finished_at, Some(error), None).await?;
    sqlx::query("UPDATE hosts SET last_poll_id = ? WHERE id = ?")
        .bind(poll_id)
        .bind(host_id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(poll_id)
}

async fn insert_poll(
    tx: &mut Transaction<'_, Sqlite>,
    host_id: i64,
    started_at: i64,
    finished_at: i64,
    error: Option<&str>,
    vm_count: Option<usize>,
) -> sqlx::Result<i64> {
    sqlx::query_scalar(
        "INSERT INTO polls (host_id, started_at, finished_at, ok, error, vm_count)
         VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
    )
    .bind(host_id)
    .bind(started_at)
    .bind(finished_at)
    .bind(error.is_none())
    .bind(error)
    .bind(vm_count.map(|n| n as i64))
    .fetch_one(&mut **tx)
    .await
}

async fn insert_vm(
    tx: &mut Transaction<'_, Sqlite>,
    host_id: i64,
    r: &VmReport,
    now: i64,
) -> sqlx::Result<i64> {
    // A VM seen before under this host (e.g. while vmdeck's cache was cold) keeps its row.
    sqlx::query_scalar(
        "INSERT INTO vms (host_id, uuid, name, first_seen, state, raw_state, state_reason, state_since)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT (host_id, uuid) DO UPDATE SET name = excluded.name, gone_at = NULL
         RETURNING id",
    )
    .bind(host_id)
    .bind(&r.uuid)
    .bind(&r.name)
    .bind(now)
    .bind(r.state)
    .bind(&r.raw_state)
    .bind(&r.state_reason)
    .bind(now)
    .fetch_one(&mut **tx)
    .await
}

async fn update_vm_state(
    tx: &mut Transaction<'_, Sqlite>,
    vm_id: i64,
    r: &VmReport,
    state_since: Option<i64>,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE vms SET name = ?, state = ?, raw_state = ?, state_reason = ?,
                state_since = COALESCE(?, state_since), gone_at = NULL
         WHERE id = ?",
    )
    .bind(&r.name)
    .bind(r.state)
    .bind(&r.raw_state)
    .bind(&r.state_reason)
    .bind(state_since)
    .bind(vm_id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn insert_config(
    tx: &mut Transaction<'_, Sqlite>,
    vm_id: i64,
    now: i64,
    c: &VmConfig,
) -> sqlx::Result<i64> {
    let body = serde_json::to_string(c).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    let config_id: i64 = sqlx::query_scalar(
        "INSERT INTO vm_configs (vm_id, valid_from, vcpus, memory_max_kib, memory_current_kib,
             os_type, autostart, persistent, disk_capacity_bytes, body)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
    )
    .bind(vm_id)
    .bind(now)
    .bind(c.vcpus as i64)
    .bind(c.memory_max_kib as i64)
    .bind(c.memory_current_kib as i64)
    .bind(&c.os_type)
    .bind(c.autostart)
    .bind(c.persistent)
    .bind(c.disk_capacity_bytes() as i64)
    .bind(body)
    .fetch_one(&mut **tx)
    .await?;
    sqlx::query("UPDATE vms SET config_id = ?, graphics = ? WHERE id = ?")
        .bind(config_id)
        .bind(c.graphics.as_deref())
        .bind(vm_id)
        .execute(&mut **tx)
        .await?;
    Ok(config_id)
}

/// Whether a report's addresses (in backend order) equal the cached ones (sorted).
fn same_addresses(cached: &[IpAddress], reported: &[IpAddress]) -> bool {
    cached.len() == reported.len() && reported.iter().all(|a| cached.contains(a))
}

async fn update_addresses(
    tx: &mut Transaction<'_, Sqlite>,
    vm_id: i64,
    old: &[IpAddress],
    new: &[IpAddress],
    now: i64,
) -> sqlx::Result<()> {
    let key = |a: &IpAddress| (a.mac.clone(), a.addr, a.prefix);
    let new_keys: HashSet<_> = new.iter().map(key).collect();
    let old_keys: HashSet<_> = old.iter().map(key).collect();
    for a in old.iter().filter(|a| !new_keys.contains(&key(a))) {
        sqlx::query(
            "UPDATE vm_addresses SET ended_at = ?
             WHERE vm_id = ? AND mac = ? AND addr = ? AND prefix = ? AND ended_at IS NULL",
        )
        .bind(now)
        .bind(vm_id)
        .bind(&a.mac)
        .bind(a.addr.to_string())
        .bind(a.prefix)
        .execute(&mut **tx)
        .await?;
    }
    for a in new.iter().filter(|a| !old_keys.contains(&key(a))) {
        sqlx::query(
            "INSERT INTO vm_addresses (vm_id, mac, addr, prefix, source, first_seen) VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(vm_id)
        .bind(&a.mac)
        .bind(a.addr.to_string())
        .bind(a.prefix)
        .bind(a.source)
        .bind(now)
        .execute(&mut **tx)
        .await?;
    }
    let json = serde_json::to_string(new).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    sqlx::query("UPDATE vms SET addresses = ? WHERE id = ?")
        .bind(json)
        .bind(vm_id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

async fn mark_gone(tx: &mut Transaction<'_, Sqlite>, vm_id: i64, now: i64) -> sqlx::Result<()> {
    sqlx::query("UPDATE vms SET gone_at = ?, addresses = '[]' WHERE id = ?")
        .bind(now)
        .bind(vm_id)
        .execute(&mut **tx)
        .await?;
    sqlx::query("UPDATE vm_addresses SET ended_at = ? WHERE vm_id = ? AND ended_at IS NULL")
        .bind(now)
        .bind(vm_id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Rows per INSERT: 14 bound values each stays far below SQLite's 32766-variable limit.
const SAMPLE_CHUNK: usize = 1000;

async fn insert_samples(
    tx: &mut Transaction<'_, Sqlite>,
    ts: i64,
    rows: &[SampleRow],
) -> sqlx::Result<()> {
    let as_i64 = |v: Option<u64>| v.map(|v| v.min(i64::MAX as u64) as i64);
    for chunk in rows.chunks(SAMPLE_CHUNK) {
        let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new(
            "INSERT INTO samples (vm_id, ts, state, memory_used_kib, cpu_time_ns, disk_read_bytes,
                disk_write_bytes, net_rx_bytes, net_tx_bytes, cpu_pct, disk_read_bps, disk_write_bps,
                net_rx_bps, net_tx_bps) ",
        );
        qb.push_values(chunk, |mut b, s| {
            b.push_bind(s.vm_id)
                .push_bind(ts)
                .push_bind(s.state)
                .push_bind(as_i64(s.memory_used_kib))
                .push_bind(as_i64(s.counters.cpu_time_ns))
                .push_bind(as_i64(s.counters.disk_read_bytes))
                .push_bind(as_i64(s.counters.disk_write_bytes))
                .push_bind(as_i64(s.counters.net_rx_bytes))
                .push_bind(as_i64(s.counters.net_tx_bytes))
                .push_bind(s.rates.cpu_pct)
                .push_bind(s.rates.disk_read_bps)
                .push_bind(s.rates.disk_write_bps)
                .push_bind(s.rates.net_rx_bps)
                .push_bind(s.rates.net_tx_bps);
        });
        // Two polls of one host in the same millisecond would collide; keep the first.
        qb.push(" ON CONFLICT (ts, vm_id) DO NOTHING");
        qb.build().execute(&mut **tx).await?;
    }
    Ok(())
}

/// How often snapshot sets are read, for [`HostCache::snapshots_due`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotPolicy {
    /// A set is read again after this long (ms) even when the VM's state and configuration
    /// did not change.
    pub interval_ms: i64,
    /// The host's poll interval (ms): the reads that come due by age are spread over the polls
    /// of one interval.
    pub poll_interval_ms: i64,
}

impl Default for SnapshotPolicy {
    fn default() -> Self {
        SnapshotPolicy {
            interval_ms: crate::config::DEFAULT_SNAPSHOT_INTERVAL_SECS as i64 * 1000,
            poll_interval_ms: crate::config::DEFAULT_POLL_INTERVAL_SECS as i64 * 1000,
        }
    }
}

impl SnapshotPolicy {
    /// How many never-read or stale sets one poll of `vms` VMs reads: twice the share that
    /// keeps every VM within the interval, so a backlog (the first polls after a start) clears
    /// in half an interval, and never fewer than [`MIN_SPREAD_READS`].
    pub fn spread_budget(&self, vms: usize) -> usize {
        let polls_per_interval = (self.interval_ms / self.poll_interval_ms.max(1)).max(1) as usize;
        (2 * vms).div_ceil(polls_per_interval).max(MIN_SPREAD_READS)
    }
}

/// The fewest never-read or stale snapshot sets one poll reads (small hosts read them all).
pub const MIN_SPREAD_READS: usize = 16;

/// Why a VM's snapshot set is recorded in this poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotReason {
    /// The inventory report carried a set that differs from the one last recorded.
    Reported,
    /// The VM's state or configuration changed since its last read.
    Changed,
    /// Never read.
    Never,
    /// Its last read is older than the snapshot interval.
    Stale,
}

/// One VM whose snapshot set a poll records.
#[derive(Debug, Clone)]
pub struct SnapshotDue {
    pub vm_id: i64,
    pub uuid: String,
    /// What the poller saw of the VM (state and configuration version), stored with the read.
    pub read_key: String,
    pub reason: SnapshotReason,
    /// The set the inventory report carried, with its hash; None: ask the backend.
    pub reported: Option<(Vec<SnapshotReport>, u64)>,
}

impl HostCache {
    /// The VMs of a just-recorded poll whose snapshot sets need recording, without touching
    /// the database: those whose report carries a set different from the last one recorded;
    /// and when the backend can list snapshots (`readable`), those whose state or
    /// configuration changed since their last read (all of them), then those never read or
    /// read longer than the interval ago (oldest first, at most the policy's spread budget).
    pub fn snapshots_due(
        &self,
        reports: &[VmReport],
        now: i64,
        policy: SnapshotPolicy,
        readable: bool,
    ) -> Vec<SnapshotDue> {
        let mut due = Vec::new();
        let mut by_age: Vec<(Option<i64>, SnapshotDue)> = Vec::new();
        for r in reports {
            let Some(vm) = self.vms.get(&r.uuid).filter(|vm| !vm.gone) else { continue };
            let key = read_key(vm);
            let mark = &vm.snapshots;
            let item = |reason, reported| SnapshotDue {
                vm_id: vm.id,
                uuid: r.uuid.clone(),
                read_key: key.clone(),
                reason,
                reported,
            };
            if let Some(snaps) = &r.snapshots {
                let hash = set_hash(snaps);
                if mark.set_hash != Some(hash) {
                    due.push(item(SnapshotReason::Reported, Some((snaps.clone(), hash))));
                }
                continue;
            }
            if !readable {
                continue;
            }
            match mark.read_at {
                None => by_age.push((None, item(SnapshotReason::Never, None))),
                Some(_) if mark.read_key.as_deref() != Some(key.as_str()) => {
                    due.push(item(SnapshotReason::Changed, None))
                }
                Some(at) if now - at >= policy.interval_ms => {
                    by_age.push((Some(at), item(SnapshotReason::Stale, None)))
                }
                Some(_) => {}
            }
        }
        // Never read first (None sorts first), then the oldest reads.
        by_age.sort_by_key(|(at, _)| *at);
        let budget = policy.spread_budget(reports.len());
        due.extend(by_age.into_iter().take(budget).map(|(_, d)| d));
        due
    }

    /// Notes a recorded snapshot set, as [`HostCache::snapshots_due`] will compare it.
    pub fn snapshots_recorded(&mut self, due: &SnapshotDue, at: i64) {
        if let Some(vm) = self.vms.get_mut(&due.uuid) {
            vm.snapshots.read_at = Some(at);
            vm.snapshots.read_key = Some(due.read_key.clone());
            if let Some((_, hash)) = &due.reported {
                vm.snapshots.set_hash = Some(*hash);
            }
        }
    }
}

/// A VM's snapshot read key: its state words and configuration version. A snapshot taken,
/// reverted to or deleted outside vmdeck without either changing shows at the next read by age.
fn read_key(vm: &CachedVm) -> String {
    format!("{}/{}/{}", vm.state.as_str(), vm.raw_state, vm.config_id.unwrap_or(0))
}

/// A hash of a reported snapshot set, to tell an unchanged one without the database.
fn set_hash(snaps: &[SnapshotReport]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for s in snaps {
        (&s.id, &s.name, &s.description, &s.parent_id, s.created_at_ms).hash(&mut h);
        (&s.vm_state, s.with_memory, s.current).hash(&mut h);
    }
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(cpu: u64, rd: u64) -> Counters {
        Counters { cpu_time_ns: Some(cpu), disk_read_bytes: Some(rd), ..Counters::default() }
    }

    fn report(i: usize, snapshots: Option<Vec<SnapshotReport>>) -> VmReport {
        VmReport {
            uuid: format!("vm-{i}"),
            name: format!("vm-{i}"),
            state: PowerState::Running,
            raw_state: "running".into(),
            state_reason: "booted".into(),
            config: VmConfig::default(),
            memory_used_kib: None,
            counters: Counters::default(),
            disk_usage: Vec::new(),
            addresses: Vec::new(),
            snapshots,
        }
    }

    fn cached(i: usize, read_at: Option<i64>, read_key: Option<&str>) -> CachedVm {
        CachedVm {
            id: i as i64,
            name: format!("vm-{i}"),
            state: PowerState::Running,
            raw_state: "running".into(),
            state_reason: "booted".into(),
            gone: false,
            config: None,
            config_id: Some(7),
            addresses: Vec::new(),
            disk_usage: Vec::new(),
            last: None,
            snapshots: SnapshotMark {
                read_at,
                read_key: read_key.map(str::to_string),
                set_hash: None,
            },
        }
    }

    #[test]
    fn changed_vms_are_all_read_and_never_read_then_stale_ones_within_the_budget() {
        const NOW: i64 = 10_000_000;
        let key = "running/running/7";
        let mut cache = HostCache { loaded: true, vms: HashMap::new() };
        for i in 0..40 {
            let vm = match i {
                0..10 => cached(i, None, None),
                // Stale: read 1,000 s ago or more, the older the higher the index.
                10..20 => cached(i, Some(NOW - 1_000_000 - i as i64 * 1000), Some(key)),
                20..25 => cached(i, Some(NOW - 5_000), Some("paused/paused/7")),
                _ => cached(i, Some(NOW - 5_000), Some(key)),
            };
            cache.vms.insert(format!("vm-{i}"), vm);
        }
        let reports: Vec<VmReport> = (0..40).map(|i| report(i, None)).collect();
        let policy = SnapshotPolicy { interval_ms: 900_000, poll_interval_ms: 10_000 };
        let due = cache.snapshots_due(&reports, NOW, policy, true);
        let ids = |r: SnapshotReason| -> Vec<i64> {
            due.iter().filter(|d| d.reason == r).map(|d| d.vm_id).collect()
        };
        assert_eq!(ids(SnapshotReason::Changed), (20..25).collect::<Vec<_>>(), "all changed");
        assert_eq!(ids(SnapshotReason::Never), (0..10).collect::<Vec<_>>(), "never read next");
        assert_eq!(ids(SnapshotReason::Stale), vec![19, 18, 17, 16, 15, 14], "oldest first");
        assert_eq!(due.len(), 5 + MIN_SPREAD_READS, "the budget caps never-read and stale ones");
        assert!(due.iter().all(|d| d.read_key == key && d.reported.is_none()));

        // Once recorded, a VM is not due again; a backend without snapshots reads nothing.
        for d in &due {
            cache.snapshots_recorded(d, NOW);
        }
        let again = cache.snapshots_due(&reports, NOW, policy, true);
        assert_eq!(again.len(), 4, "the four stale ones the budget left: {again:?}");
        assert!(cache.snapshots_due(&reports, NOW, policy, false).is_empty());
    }

    #[test]
    fn a_reported_set_is_recorded_only_when_it_differs_from_the_last_one() {
        let snap = SnapshotReport {
            id: "{0000}".into(),
            name: "before upgrade".into(),
            description: String::new(),
            parent_id: None,
            created_at_ms: None,
            vm_state: String::new(),
            with_memory: false,
            current: true,
        };
        let mut cache = HostCache { loaded: true, vms: HashMap::new() };
        cache.vms.insert("vm-0".into(), cached(0, None, None));
        let policy = SnapshotPolicy::default();
        let reports = vec![report(0, Some(vec![snap.clone()]))];
        let due = cache.snapshots_due(&reports, 1, policy, true);
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].reason, SnapshotReason::Reported);
        cache.snapshots_recorded(&due[0], 1);
        assert!(cache.snapshots_due(&reports, 2, policy, true).is_empty(), "unchanged: nothing");
        let renamed = SnapshotReport { name: "renamed".into(), ..snap };
        let reports = vec![report(0, Some(vec![renamed]))];
        assert_eq!(cache.snapshots_due(&reports, 3, policy, true).len(), 1, "changed: recorded");
    }

    #[test]
    fn interval_reads_are_spread_over_the_polls_of_one_interval() {
        let p = SnapshotPolicy { interval_ms: 900_000, poll_interval_ms: 10_000 };
        // 1,000 VMs, 90 polls per interval: 23 a poll, so every VM is read within 45 polls.
        assert_eq!(p.spread_budget(1000), 23);
        assert_eq!(p.spread_budget(10), MIN_SPREAD_READS, "a small host reads them all");
        let slow = SnapshotPolicy { interval_ms: 60_000, poll_interval_ms: 3_600_000 };
        assert_eq!(slow.spread_budget(1000), 2000, "polls rarer than the interval read all");
    }

    #[test]
    fn rates_come_from_counter_deltas() {
        // 2 vCPUs, 10 s apart, 10 s of CPU time used = 50 %.
        let r = derive_rates(&c(0, 0), &c(10_000_000_000, 5_000), 10_000, 2);
        assert_eq!(r.cpu_pct, Some(50.0));
        assert_eq!(r.disk_read_bps, Some(500.0));
        assert_eq!(r.net_rx_bps, None, "a counter missing on both sides gives no rate");
    }

    #[test]
    fn counter_resets_give_no_rate_instead_of_a_negative_one() {
        let r = derive_rates(&c(50_000_000_000, 9_000), &c(1_000_000, 10), 10_000, 1);
        assert_eq!((r.cpu_pct, r.disk_read_bps), (None, None));
    }

    #[test]
    fn absurd_or_ill_timed_values_give_no_rate() {
        // 1000 s of CPU in 10 s on one vCPU is a broken counter, not 10000 %.
        assert_eq!(derive_rates(&c(0, 0), &c(1_000_000_000_000, 0), 10_000, 1).cpu_pct, None);
        assert_eq!(derive_rates(&c(0, 0), &c(1, 1), 0, 1), Rates::default());
        assert_eq!(derive_rates(&c(0, 0), &c(1, 1), -5, 1), Rates::default());
        assert_eq!(derive_rates(&c(0, 0), &c(1, 1), 10_000, 0).cpu_pct, None);
        // Slight jitter over 100 % is clamped.
        assert_eq!(derive_rates(&c(0, 0), &c(10_500_000_000, 0), 10_000, 1).cpu_pct, Some(100.0));
    }
}
