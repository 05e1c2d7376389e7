//! Every SQL statement of schedules, one function each: the schedules and their VMs, runs and
//! their per-VM results, the VMs a scope covers, a schedule's own snapshots, and the status of
//! a request's audit entry.

use sqlx::{FromRow, SqlitePool};

use super::model::{Frequency, Retention};

/// A schedule as stored.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub id: i64,
    pub name: String,
    pub enabled: bool,
    pub scope: Scope,
    pub frequency: Frequency,
    pub retention: Retention,
    pub with_memory: bool,
    pub created_by: String,
    pub created_at: i64,
    pub last_slot: Option<i64>,
}

/// Which VMs a schedule covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// These VMs, as (host name, uuid).
    Vms(Vec<(String, String)>),
    /// VM names matching this glob, on every host.
    Pattern(String),
    /// Every VM of this host.
    Host(String),
}

impl Scope {
    fn kind(&self) -> &'static str {
        match self {
            Scope::Vms(_) => "vms",
            Scope::Pattern(_) => "pattern",
            Scope::Host(_) => "host",
        }
    }

    fn value(&self) -> &str {
        match self {
            Scope::Vms(_) => "",
            Scope::Pattern(p) | Scope::Host(p) => p,
        }
    }
}

#[derive(FromRow)]
struct ScheduleRow {
    id: i64,
    name: String,
    enabled: bool,
    scope: String,
    scope_value: String,
    frequency: String,
    weekday: i64,
    at_hour: i64,
    at_minute: i64,
    keep_last: Option<i64>,
    keep_daily: Option<i64>,
    with_memory: bool,
    created_by: String,
    created_at: i64,
    last_slot: Option<i64>,
}

const SCHEDULE_COLUMNS: &str = "id, name, enabled, scope, scope_value, frequency, weekday, at_hour,
    at_minute, keep_last, keep_daily, with_memory, created_by, created_at, last_slot";

impl ScheduleRow {
    fn into_schedule(self, vms: Vec<(String, String)>) -> Schedule {
        let (h, m) = (self.at_hour.clamp(0, 23) as u8, self.at_minute.clamp(0, 59) as u8);
        let frequency = match self.frequency.as_str() {
            "hourly" => Frequency::Hourly { minute: m },
            "weekly" => {
                Frequency::Weekly { weekday: self.weekday.clamp(0, 6) as u8, hour: h, minute: m }
            }
            _ => Frequency::Daily { hour: h, minute: m },
        };
        let scope = match self.scope.as_str() {
            "pattern" => Scope::Pattern(self.scope_value),
            "host" => Scope::Host(self.scope_value),
            _ => Scope::Vms(vms),
        };
        let count = |v: Option<i64>| v.and_then(|n| u32::try_from(n).ok()).filter(|n| *n > 0);
        Schedule {
            id: self.id,
            name: self.name,
            enabled: self.enabled,
            scope,
            frequency,
            retention: Retention {
                keep_last: count(self.keep_last),
                keep_daily: count(self.keep_daily),
            },
            with_memory: self.with_memory,
            created_by: self.created_by,
            created_at: self.created_at,
            last_slot: self.last_slot,
        }
    }
}

async fn scope_vms(pool: &SqlitePool, id: i64) -> sqlx::Result<Vec<(String, String)>> {
    sqlx::query_as(
        "SELECT host_name, vm_uuid FROM schedule_vms WHERE schedule_id = ? ORDER BY host_name, vm_uuid",
    )
    .bind(id)
    .fetch_all(pool)
    .await
}

/// Every schedule, by name.
pub async fn list(pool: &SqlitePool) -> sqlx::Result<Vec<Schedule>> {
    let rows: Vec<ScheduleRow> = sqlx::query_as(&format!(
        "SELECT {SCHEDULE_COLUMNS} FROM snapshot_schedules ORDER BY name COLLATE NOCASE"
    ))
    .fetch_all(pool)
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let vms = scope_vms(pool, r.id).await?;
        out.push(r.into_schedule(vms));
    }
    Ok(out)
}

pub async fn get(pool: &SqlitePool, id: i64) -> sqlx::Result<Option<Schedule>> {
    let row: Option<ScheduleRow> =
        sqlx::query_as(&format!("SELECT {SCHEDULE_COLUMNS} FROM snapshot_schedules WHERE id = ?"))
            .bind(id)
            .fetch_optional(pool)
            .await?;
    match row {
        None => Ok(None),
        Some(r) => {
            let vms = scope_vms(pool, r.id).await?;
            Ok(Some(r.into_schedule(vms)))
        }
    }
}

/// What a form gives for a schedule (everything but its bookkeeping).
#[derive(Debug, Clone)]
pub struct ScheduleSpec {
    pub name: String,
    pub enabled: bool,
    pub scope: Scope,
    pub frequency: Frequency,
    pub retention: Retention,
    pub with_memory: bool,
}

/// Why a schedule was not saved.
#[derive(Debug, thiserror::Error)]
pub enum SaveError {
    #[error("a schedule named {} exists already", crate::domain::quoted(.0))]
    Duplicate(String),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

fn frequency_columns(f: Frequency) -> (&'static str, i64, i64, i64) {
    match f {
        Frequency::Hourly { minute } => ("hourly", 0, 0, minute as i64),
        Frequency::Daily { hour, minute } => ("daily", 0, hour as i64, minute as i64),
        Frequency::Weekly { weekday, hour, minute } => {
            ("weekly", weekday as i64, hour as i64, minute as i64)
        }
    }
}

fn map_unique(e: sqlx::Error, name: &str) -> SaveError {
    match &e {
        sqlx::Error::Database(d) if d.is_unique_violation() => SaveError::Duplicate(name.into()),
        _ => SaveError::Db(e),
    }
}

/// Creates a schedule (and its VM list) in one transaction; returns its id.
pub async fn insert(
    pool: &SqlitePool,
    spec: &ScheduleSpec,
    created_by: &str,
    now: i64,
) -> Result<i64, SaveError> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    let (freq, weekday, hour, minute) = frequency_columns(spec.frequency);
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO snapshot_schedules (name, enabled, scope, scope_value, frequency, weekday,
            at_hour, at_minute, keep_last, keep_daily, with_memory, created_by, created_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
    )
    .bind(&spec.name)
    .bind(spec.enabled)
    .bind(spec.scope.kind())
    .bind(spec.scope.value())
    .bind(freq)
    .bind(weekday)
    .bind(hour)
    .bind(minute)
    .bind(spec.retention.keep_last.map(i64::from))
    .bind(spec.retention.keep_daily.map(i64::from))
    .bind(spec.with_memory)
    .bind(created_by)
    .bind(now)
    .fetch_one(&mut *tx)
    .await
    .map_err(|e| map_unique(e, &spec.name))?;
    write_vms(&mut tx, id, &spec.scope).await?;
    tx.commit().await?;
    Ok(id)
}

/// Changes a schedule; its runs, last slot and snapshots stay. Returns false when it is gone.
pub async fn update(pool: &SqlitePool, id: i64, spec: &ScheduleSpec) -> Result<bool, SaveError> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    let (freq, weekday, hour, minute) = frequency_columns(spec.frequency);
    let changed = sqlx::query(
        "UPDATE snapshot_schedules SET name = ?, enabled = ?, scope = ?, scope_value = ?,
            frequency = ?, weekday = ?, at_hour = ?, at_minute = ?, keep_last = ?,
            keep_daily = ?, with_memory = ?
         WHERE id = ?",
    )
    .bind(&spec.name)
    .bind(spec.enabled)
    .bind(spec.scope.kind())
    .bind(spec.scope.value())
    .bind(freq)
    .bind(weekday)
    .bind(hour)
    .bind(minute)
    .bind(spec.retention.keep_last.map(i64::from))
    .bind(spec.retention.keep_daily.map(i64::from))
    .bind(spec.with_memory)
    .bind(id)
    .execute(&mut *tx)
    .await
    .map_err(|e| map_unique(e, &spec.name))?
    .rows_affected();
    if changed == 0 {
        return Ok(false);
    }
    sqlx::query("DELETE FROM schedule_vms WHERE schedule_id = ?")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    write_vms(&mut tx, id, &spec.scope).await?;
    tx.commit().await?;
    Ok(true)
}

async fn write_vms(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    id: i64,
    scope: &Scope,
) -> sqlx::Result<()> {
    if let Scope::Vms(vms) = scope {
        for (host, uuid) in vms {
            sqlx::query(
                "INSERT OR IGNORE INTO schedule_vms (schedule_id, host_name, vm_uuid) VALUES (?, ?, ?)",
            )
            .bind(id)
            .bind(host)
            .bind(uuid)
            .execute(&mut **tx)
            .await?;
        }
    }
    Ok(())
}

/// Deletes a schedule with its runs (the snapshots it took stay, and their audit entries).
pub async fn delete(pool: &SqlitePool, id: i64) -> sqlx::Result<bool> {
    let n = sqlx::query("DELETE FROM snapshot_schedules WHERE id = ?")
        .bind(id)
        .execute(pool)
        .await?
        .rows_affected();
    Ok(n > 0)
}

/// Claims `slot` for a run: moves the schedule's last slot to it unless it is there already
/// (or beyond), and creates the run, in one transaction. None: another tick claimed it.
pub async fn claim_slot(
    pool: &SqlitePool,
    id: i64,
    slot: i64,
    now: i64,
) -> sqlx::Result<Option<i64>> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    let moved = sqlx::query(
        "UPDATE snapshot_schedules SET last_slot = ?
         WHERE id = ? AND enabled AND (last_slot IS NULL OR last_slot < ?)",
    )
    .bind(slot)
    .bind(id)
    .bind(slot)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if moved == 0 {
        return Ok(None);
    }
    let run: i64 = sqlx::query_scalar(
        "INSERT INTO schedule_runs (schedule_id, slot, started_at) VALUES (?, ?, ?) RETURNING id",
    )
    .bind(id)
    .bind(slot)
    .bind(now)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Some(run))
}

/// Sets a schedule's last slot directly (tests use it to stand for a server that was down).
pub async fn set_last_slot(pool: &SqlitePool, id: i64, slot: Option<i64>) -> sqlx::Result<()> {
    sqlx::query("UPDATE snapshot_schedules SET last_slot = ? WHERE id = ?")
        .bind(slot)
        .bind(id)
        .execute(pool)
        .await?;
    Ok(())
}

/// One VM's result in a run.
#[derive(Debug, Clone, FromRow)]
pub struct RunVm {
    pub host_name: String,
    pub vm_uuid: String,
    pub vm_name: String,
    pub outcome: String,
    pub error: Option<String>,
    pub audit_id: Option<i64>,
    pub pruned: i64,
    pub prune_error: Option<String>,
}

pub async fn record_run_vm(pool: &SqlitePool, run: i64, r: &RunVm) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT OR REPLACE INTO schedule_run_vms
            (run_id, host_name, vm_uuid, vm_name, outcome, error, audit_id, pruned, prune_error)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(run)
    .bind(&r.host_name)
    .bind(&r.vm_uuid)
    .bind(&r.vm_name)
    .bind(&r.outcome)
    .bind(&r.error)
    .bind(r.audit_id)
    .bind(r.pruned)
    .bind(&r.prune_error)
    .execute(pool)
    .await?;
    Ok(())
}

/// Ends a run with its counts, summed from its VMs.
pub async fn finish_run(pool: &SqlitePool, run: i64, now: i64) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE schedule_runs SET finished_at = ?,
            taken = (SELECT COUNT(*) FROM schedule_run_vms WHERE run_id = ?1 AND outcome = 'taken'),
            failed = (SELECT COUNT(*) FROM schedule_run_vms WHERE run_id = ?1 AND outcome = 'failed'),
            pruned = (SELECT COALESCE(SUM(pruned), 0) FROM schedule_run_vms WHERE run_id = ?1)
         WHERE id = ?1",
    )
    .bind(run)
    .bind(now)
    .execute(pool)
    .await?;
    Ok(())
}

/// Settles every run a previous process left unfinished (it stopped or crashed during the run):
/// ends it at `now` as interrupted, with the counts of the VMs it recorded. Returns the runs
/// settled as (run id, schedule name).
pub async fn settle_interrupted(pool: &SqlitePool, now: i64) -> sqlx::Result<Vec<(i64, String)>> {
    sqlx::query_as(
        "UPDATE schedule_runs SET finished_at = ?, interrupted = 1,
            taken = (SELECT COUNT(*) FROM schedule_run_vms v
                      WHERE v.run_id = schedule_runs.id AND v.outcome = 'taken'),
            failed = (SELECT COUNT(*) FROM schedule_run_vms v
                       WHERE v.run_id = schedule_runs.id AND v.outcome = 'failed'),
            pruned = (SELECT COALESCE(SUM(v.pruned), 0) FROM schedule_run_vms v
                       WHERE v.run_id = schedule_runs.id)
         WHERE finished_at IS NULL
         RETURNING id,
            COALESCE((SELECT name FROM snapshot_schedules s WHERE s.id = schedule_id), '')",
    )
    .bind(now)
    .fetch_all(pool)
    .await
}

/// The scheduled take of `snapshot_name` requested for a VM under a schedule, if any: its
/// audit entry's id and status (an interrupted run's VM may have had one in flight).
pub async fn take_request(
    pool: &SqlitePool,
    schedule: i64,
    host: &str,
    uuid: &str,
    snapshot_name: &str,
) -> sqlx::Result<Option<(i64, String)>> {
    sqlx::query_as(
        "SELECT a.id, a.status FROM snapshot_requests r JOIN audit_log a ON a.id = r.audit_id
          WHERE r.schedule_id = ? AND a.host_name = ? AND a.vm_uuid = ?
            AND a.action = 'snapshot_take' AND r.snapshot_name = ?
          ORDER BY a.id DESC LIMIT 1",
    )
    .bind(schedule)
    .bind(host)
    .bind(uuid)
    .bind(snapshot_name)
    .fetch_optional(pool)
    .await
}

/// A run as its pages show it.
#[derive(Debug, Clone, FromRow)]
pub struct Run {
    pub id: i64,
    pub schedule_id: i64,
    pub slot: i64,
    pub started_at: i64,
    pub finished_at: Option<i64>,
    pub taken: i64,
    pub failed: i64,
    pub pruned: i64,
    /// vmdeck stopped during the run; settled at the next start (migration 0011).
    pub interrupted: bool,
}

/// A schedule's newest runs, newest first.
pub async fn recent_runs(pool: &SqlitePool, schedule: i64, limit: i64) -> sqlx::Result<Vec<Run>> {
    sqlx::query_as(
        "SELECT id, schedule_id, slot, started_at, finished_at, taken, failed, pruned,
                interrupted
           FROM schedule_runs WHERE schedule_id = ? ORDER BY slot DESC LIMIT ?",
    )
    .bind(schedule)
    .bind(limit)
    .fetch_all(pool)
    .await
}

pub async fn run(pool: &SqlitePool, id: i64) -> sqlx::Result<Option<Run>> {
    sqlx::query_as(
        "SELECT id, schedule_id, slot, started_at, finished_at, taken, failed, pruned,
                interrupted
           FROM schedule_runs WHERE id = ?",
    )
    .bind(id)
    .fetch_optional(pool)
    .await
}

pub async fn run_vms(pool: &SqlitePool, run: i64) -> sqlx::Result<Vec<RunVm>> {
    sqlx::query_as(
        "SELECT host_name, vm_uuid, vm_name, outcome, error, audit_id, pruned, prune_error
           FROM schedule_run_vms WHERE run_id = ? ORDER BY vm_name COLLATE NOCASE, host_name",
    )
    .bind(run)
    .fetch_all(pool)
    .await
}

/// A VM a scope covers, present now.
#[derive(Debug, Clone, FromRow)]
pub struct ScopeVm {
    pub host_name: String,
    pub uuid: String,
    pub name: String,
}

/// The present VMs on configured hosts (`hosts`), for scopes and the form's VM list.
pub async fn present_vms(pool: &SqlitePool, hosts: &[&str]) -> sqlx::Result<Vec<ScopeVm>> {
    let all: Vec<ScopeVm> = sqlx::query_as(
        "SELECT h.name AS host_name, v.uuid, v.name FROM vms v JOIN hosts h ON h.id = v.host_id
          WHERE v.gone_at IS NULL ORDER BY v.name COLLATE NOCASE, h.name",
    )
    .fetch_all(pool)
    .await?;
    Ok(all.into_iter().filter(|v| hosts.contains(&v.host_name.as_str())).collect())
}

/// The last name vmdeck knew for a VM, present or gone.
pub async fn known_vm_name(
    pool: &SqlitePool,
    host: &str,
    uuid: &str,
) -> sqlx::Result<Option<String>> {
    sqlx::query_scalar(
        "SELECT v.name FROM vms v JOIN hosts h ON h.id = v.host_id WHERE h.name = ? AND v.uuid = ?",
    )
    .bind(host)
    .bind(uuid)
    .fetch_optional(pool)
    .await
}

/// A snapshot this schedule took and that still exists.
#[derive(Debug, Clone, FromRow)]
pub struct OwnSnapshot {
    pub snap_id: String,
    pub name: String,
    pub created_at: Option<i64>,
    pub first_seen: i64,
}

/// The snapshots of a VM that this schedule took and that still exist: linked through the
/// request that took them (`taken_by_audit_id` → `snapshot_requests.schedule_id`) AND named
/// as the schedule names them. A snapshot taken by hand or by another schedule never matches.
pub async fn own_snapshots(
    pool: &SqlitePool,
    schedule: i64,
    host: &str,
    uuid: &str,
    name_prefix: &str,
) -> sqlx::Result<Vec<OwnSnapshot>> {
    sqlx::query_as(
        "SELECT s.snap_id, s.name, s.created_at, s.first_seen
           FROM vm_snapshots s
           JOIN vms v ON v.id = s.vm_id
           JOIN hosts h ON h.id = v.host_id
           JOIN snapshot_requests r ON r.audit_id = s.taken_by_audit_id
          WHERE h.name = ? AND v.uuid = ? AND s.gone_at IS NULL
            AND r.schedule_id = ? AND substr(s.name, 1, length(?)) = ?",
    )
    .bind(host)
    .bind(uuid)
    .bind(schedule)
    .bind(name_prefix)
    .bind(name_prefix)
    .fetch_all(pool)
    .await
}

/// An audit entry's status and error, by id.
pub async fn audit_status(
    pool: &SqlitePool,
    id: i64,
) -> sqlx::Result<Option<(String, Option<String>)>> {
    sqlx::query_as("SELECT status, error FROM audit_log WHERE id = ?")
        .bind(id)
        .fetch_optional(pool)
        .await
}

/// Each VM's consecutive failures in a schedule's newest runs (up to `window` runs), with the
/// newest error: (vm name, host, runs in a row, error). Only VMs failed in the newest run.
pub async fn failure_streaks(
    pool: &SqlitePool,
    schedule: i64,
    window: i64,
) -> sqlx::Result<Vec<super::model::Streak>> {
    let rows: Vec<super::model::RunResultRow> = sqlx::query_as(
        "SELECT r.id, v.host_name, v.vm_uuid, v.vm_name, v.outcome, v.error
           FROM (SELECT id, slot FROM schedule_runs WHERE schedule_id = ? AND finished_at IS NOT NULL
                  ORDER BY slot DESC LIMIT ?) r
           JOIN schedule_run_vms v ON v.run_id = r.id
          ORDER BY r.slot DESC",
    )
    .bind(schedule)
    .bind(window)
    .fetch_all(pool)
    .await?;
    Ok(super::model::streaks(&rows))
}
