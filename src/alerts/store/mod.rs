//! The alerts' SQL. This file: rules (the page's and the configuration file's), the facts
//! evaluation reads, and the lifecycle's writes (`apply`). `pages`: what the Alerts pages list
//! and change (history, acknowledgements, silences).

pub mod pages;

use std::collections::HashMap;

use serde::Deserialize;
use sqlx::{FromRow, SqlitePool};

use super::eval::{Facts, FailedRequest, Hit, HostFacts, Open, Rule, Step, VmFacts};
use super::rules::{Condition, Matchers, RuleSpec, Scope, Severity};
use crate::alerts::fingerprint;

/// Where a rule came from: the Alerts page, or the configuration file (read-only in the page).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    Page,
    File,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Page => "page",
            Source::File => "file",
        }
    }
}

/// A stored rule with its bookkeeping.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StoredRule {
    pub id: i64,
    pub source: Source,
    pub spec: RuleSpec,
    pub created_by: String,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(FromRow)]
struct RuleRow {
    id: i64,
    name: String,
    source: String,
    enabled: bool,
    kind: String,
    threshold: Option<f64>,
    period_secs: Option<i64>,
    expected: Option<String>,
    scope: String,
    scope_value: String,
    for_secs: i64,
    severity: String,
    created_by: String,
    created_at: i64,
    updated_at: i64,
}

/// Every rule, by name. A row this version cannot read (written by a newer one) is skipped
/// with a log line rather than failing every page.
pub async fn rules(pool: &SqlitePool) -> sqlx::Result<Vec<StoredRule>> {
    let rows: Vec<RuleRow> = sqlx::query_as(
        "SELECT id, name, source, enabled, kind, threshold, period_secs, expected, scope,
                scope_value, for_secs, severity, created_by, created_at, updated_at
         FROM alert_rules ORDER BY name",
    )
    .fetch_all(pool)
    .await?;
    let listed: Vec<(i64, String, String)> =
        sqlx::query_as("SELECT rule_id, host_name, vm_uuid FROM alert_rule_vms ORDER BY rowid")
            .fetch_all(pool)
            .await?;
    let mut vms: HashMap<i64, Vec<(String, String)>> = HashMap::new();
    for (id, host, uuid) in listed {
        vms.entry(id).or_default().push((host, uuid));
    }
    Ok(rows
        .into_iter()
        .filter_map(|r| {
            let condition = Condition::from_columns(
                &r.kind,
                r.threshold,
                r.period_secs,
                r.expected.as_deref(),
            );
            let scope = match r.scope.as_str() {
                "all" => Some(Scope::All),
                "host" => Some(Scope::Host(r.scope_value.clone())),
                "pattern" => Some(Scope::Pattern(r.scope_value.clone())),
                "vms" => Some(Scope::Vms(vms.remove(&r.id).unwrap_or_default())),
                _ => None,
            };
            let (Some(condition), Some(scope), Some(severity)) =
                (condition, scope, Severity::parse(&r.severity))
            else {
                tracing::error!(rule = %r.name, "an alert rule in the database cannot be read; skipped");
                return None;
            };
            Some(StoredRule {
                id: r.id,
                source: if r.source == "file" { Source::File } else { Source::Page },
                spec: RuleSpec {
                    name: r.name,
                    enabled: r.enabled,
                    condition,
                    scope,
                    for_secs: u64::try_from(r.for_secs).unwrap_or(0),
                    severity,
                },
                created_by: r.created_by,
                created_at: r.created_at,
                updated_at: r.updated_at,
            })
        })
        .collect())
}

pub async fn rule(pool: &SqlitePool, id: i64) -> sqlx::Result<Option<StoredRule>> {
    Ok(rules(pool).await?.into_iter().find(|r| r.id == id))
}

/// Why a rule could not be saved, in words.
#[derive(Debug, thiserror::Error)]
pub enum SaveError {
    #[error("a rule named {0} exists already")]
    NameTaken(String),
    #[error("that rule comes from the configuration file; change it there")]
    FromFile,
    #[error("no such rule")]
    Missing,
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// Adds a rule; returns its id.
pub async fn insert_rule(
    pool: &SqlitePool,
    spec: &RuleSpec,
    source: Source,
    by: &str,
    now: i64,
) -> Result<i64, SaveError> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    let taken: Option<i64> = sqlx::query_scalar("SELECT id FROM alert_rules WHERE name = ?")
        .bind(&spec.name)
        .fetch_optional(&mut *tx)
        .await?;
    if taken.is_some() {
        return Err(SaveError::NameTaken(crate::domain::quoted(&spec.name)));
    }
    let id = write_new_rule(&mut tx, spec, source, by, now).await?;
    tx.commit().await?;
    Ok(id)
}

/// Inserts a rule and its listed VMs inside the caller's transaction; returns its id.
async fn write_new_rule(
    tx: &mut sqlx::SqliteConnection,
    spec: &RuleSpec,
    source: Source,
    by: &str,
    now: i64,
) -> sqlx::Result<i64> {
    let (threshold, period, expected) = spec.condition.columns();
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO alert_rules (name, source, enabled, kind, threshold, period_secs, expected,
                                  scope, scope_value, for_secs, severity, created_by,
                                  created_at, updated_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
    )
    .bind(&spec.name)
    .bind(source.as_str())
    .bind(spec.enabled)
    .bind(spec.condition.kind())
    .bind(threshold)
    .bind(period)
    .bind(expected)
    .bind(spec.scope.kind())
    .bind(spec.scope.value())
    .bind(spec.for_secs as i64)
    .bind(spec.severity.as_str())
    .bind(by)
    .bind(now)
    .bind(now)
    .fetch_one(&mut *tx)
    .await?;
    write_listed(tx, id, &spec.scope).await?;
    Ok(id)
}

/// Changes a page rule (file rules refuse). Its open alerts keep going under the new
/// definition: the next evaluation ends those whose condition no longer holds.
pub async fn update_rule(
    pool: &SqlitePool,
    id: i64,
    spec: &RuleSpec,
    now: i64,
) -> Result<(), SaveError> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    check_page_rule(&mut tx, id).await?;
    let taken: Option<i64> =
        sqlx::query_scalar("SELECT id FROM alert_rules WHERE name = ? AND id <> ?")
            .bind(&spec.name)
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
    if taken.is_some() {
        return Err(SaveError::NameTaken(crate::domain::quoted(&spec.name)));
    }
    write_rule(&mut tx, id, spec, now).await?;
    tx.commit().await?;
    Ok(())
}

/// Removes a page rule; its alerts stay in the history (their rule id is cleared, and the next
/// evaluation ends the open ones).
pub async fn delete_rule(pool: &SqlitePool, id: i64) -> Result<StoredRule, SaveError> {
    let rule = rule(pool, id).await?.ok_or(SaveError::Missing)?;
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    check_page_rule(&mut tx, id).await?;
    sqlx::query("DELETE FROM alert_rules WHERE id = ?").bind(id).execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(rule)
}

async fn check_page_rule(tx: &mut sqlx::SqliteConnection, id: i64) -> Result<(), SaveError> {
    let source: Option<String> = sqlx::query_scalar("SELECT source FROM alert_rules WHERE id = ?")
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
    match source.as_deref() {
        None => Err(SaveError::Missing),
        Some("file") => Err(SaveError::FromFile),
        Some(_) => Ok(()),
    }
}

async fn write_rule(
    tx: &mut sqlx::SqliteConnection,
    id: i64,
    spec: &RuleSpec,
    now: i64,
) -> sqlx::Result<()> {
    let (threshold, period, expected) = spec.condition.columns();
    sqlx::query(
        "UPDATE alert_rules SET name = ?, enabled = ?, kind = ?, threshold = ?, period_secs = ?,
                expected = ?, scope = ?, scope_value = ?, for_secs = ?, severity = ?,
                updated_at = ?
         WHERE id = ?",
    )
    .bind(&spec.name)
    .bind(spec.enabled)
    .bind(spec.condition.kind())
    .bind(threshold)
    .bind(period)
    .bind(expected)
    .bind(spec.scope.kind())
    .bind(spec.scope.value())
    .bind(spec.for_secs as i64)
    .bind(spec.severity.as_str())
    .bind(now)
    .bind(id)
    .execute(&mut *tx)
    .await?;
    write_listed(tx, id, &spec.scope).await
}

async fn write_listed(tx: &mut sqlx::SqliteConnection, id: i64, scope: &Scope) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM alert_rule_vms WHERE rule_id = ?").bind(id).execute(&mut *tx).await?;
    if let Scope::Vms(list) = scope {
        for (host, uuid) in list {
            sqlx::query(
                "INSERT INTO alert_rule_vms (rule_id, host_name, vm_uuid) VALUES (?, ?, ?)",
            )
            .bind(id)
            .bind(host)
            .bind(uuid)
            .execute(&mut *tx)
            .await?;
        }
    }
    Ok(())
}

/// What syncing the configuration file's rules changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Synced {
    pub added: Vec<String>,
    pub changed: Vec<String>,
    pub removed: Vec<String>,
    /// Page rules the file now defines (same name): they become file rules.
    pub taken_over: Vec<String>,
}

/// Makes the stored file rules exactly the configuration file's, in one transaction: new ones
/// added, changed ones updated (keeping their id, so their open alerts go on), the ones no
/// longer in the file removed. A page rule with a file rule's name becomes that file rule.
pub async fn sync_file_rules(
    pool: &SqlitePool,
    specs: &[RuleSpec],
    now: i64,
) -> sqlx::Result<Synced> {
    let stored = rules(pool).await?;
    let mut synced = Synced::default();
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    for spec in specs {
        match stored.iter().find(|r| r.spec.name.eq_ignore_ascii_case(&spec.name)) {
            Some(r) if r.source == Source::File && r.spec == *spec => {}
            Some(r) => {
                if r.source == Source::Page {
                    synced.taken_over.push(spec.name.clone());
                    sqlx::query("UPDATE alert_rules SET source = 'file' WHERE id = ?")
                        .bind(r.id)
                        .execute(&mut *tx)
                        .await?;
                } else {
                    synced.changed.push(spec.name.clone());
                }
                write_rule(&mut tx, r.id, spec, now).await?;
            }
            None => {
                write_new_rule(&mut tx, spec, Source::File, "configuration file", now).await?;
                synced.added.push(spec.name.clone());
            }
        }
    }
    for r in stored.iter().filter(|r| r.source == Source::File) {
        if !specs.iter().any(|s| s.name.eq_ignore_ascii_case(&r.spec.name)) {
            sqlx::query("DELETE FROM alert_rules WHERE id = ?")
                .bind(r.id)
                .execute(&mut *tx)
                .await?;
            synced.removed.push(r.spec.name.clone());
        }
    }
    tx.commit().await?;
    Ok(synced)
}

/// The rules as evaluation needs them.
pub fn eval_rules(stored: &[StoredRule]) -> Vec<Rule> {
    stored.iter().map(|r| Rule { id: r.id, spec: r.spec.clone() }).collect()
}

#[derive(Deserialize)]
struct VmJson {
    host: String,
    uuid: String,
    name: String,
    state: String,
    autostart: Option<bool>,
    cpu_pct: Option<f64>,
    memory_used_kib: Option<i64>,
    memory_assigned_kib: Option<i64>,
    disk_capacity_bytes: Option<i64>,
    snapshot_oldest: Option<i64>,
}

/// Reads what the rules need at `now`: every present VM with its latest sample, every host in
/// `configured` with its last poll, the disk capacities each growth period ago, and the
/// failed requests of the longest look-back. Only what some rule needs is read.
pub async fn facts(
    pool: &SqlitePool,
    rules: &[Rule],
    configured: &[&str],
    now: i64,
) -> sqlx::Result<Facts> {
    let enabled: Vec<&Rule> = rules.iter().filter(|r| r.spec.enabled).collect();
    let mut facts = Facts { now, ..Facts::default() };
    type HostRow = (String, Option<bool>, Option<String>, Option<i64>);
    let host_rows: Vec<HostRow> = sqlx::query_as(
        "SELECT h.name, lp.ok, lp.error, op.finished_at
         FROM hosts h
         LEFT JOIN polls lp ON lp.id = h.last_poll_id
         LEFT JOIN polls op ON op.id = h.last_ok_poll_id",
    )
    .fetch_all(pool)
    .await?;
    facts.hosts = host_rows
        .into_iter()
        .filter(|(name, ..)| configured.contains(&name.as_str()))
        .map(|(name, last_ok, last_error, ok_at)| HostFacts { name, last_ok, last_error, ok_at })
        .collect();
    if enabled.iter().all(|r| r.spec.condition.about_hosts()) {
        return Ok(facts);
    }
    // One JSON value rather than a row at a time (see metrics::store::vm_rows).
    let json: String = sqlx::query_scalar(
        "SELECT COALESCE(json_group_array(json_object(
                'host', h.name, 'uuid', v.uuid, 'name', v.name, 'state', v.state,
                'autostart', json(CASE c.autostart WHEN 1 THEN 'true' WHEN 0 THEN 'false' END),
                'cpu_pct', s.cpu_pct, 'memory_used_kib', s.memory_used_kib,
                'memory_assigned_kib', c.memory_current_kib,
                'disk_capacity_bytes', c.disk_capacity_bytes,
                'snapshot_oldest', v.snapshot_oldest)), '[]')
         FROM vms v
         JOIN hosts h ON h.id = v.host_id
         LEFT JOIN vm_configs c ON c.id = v.config_id
         LEFT JOIN polls p ON p.id = h.last_ok_poll_id
         LEFT JOIN samples s ON s.vm_id = v.id AND s.ts = p.started_at
         WHERE v.gone_at IS NULL",
    )
    .fetch_one(pool)
    .await?;
    let vms: Vec<VmJson> =
        serde_json::from_str(&json).map_err(|e| sqlx::Error::Decode(e.into()))?;
    facts.vms = vms
        .into_iter()
        .filter(|v| configured.contains(&v.host.as_str()))
        .map(|v| VmFacts {
            host: v.host,
            uuid: v.uuid,
            name: v.name,
            state: v.state,
            autostart: v.autostart,
            cpu_pct: v.cpu_pct,
            memory_used_kib: v.memory_used_kib,
            memory_assigned_kib: v.memory_assigned_kib,
            disk_capacity_bytes: v.disk_capacity_bytes,
            snapshot_oldest: v.snapshot_oldest,
        })
        .collect();
    let mut periods: Vec<u64> = enabled
        .iter()
        .filter_map(|r| match r.spec.condition {
            Condition::DiskGrowth { period_secs, .. } => Some(period_secs),
            _ => None,
        })
        .collect();
    periods.sort_unstable();
    periods.dedup();
    for period in periods {
        facts.disk_before.insert(period, disk_before(pool, now - period as i64 * 1000).await?);
    }
    let lookback = enabled
        .iter()
        .filter_map(|r| match r.spec.condition {
            Condition::RequestFailed { period_secs } => Some(period_secs),
            _ => None,
        })
        .max();
    if let Some(lookback) = lookback {
        facts.failed_requests = failed_requests(pool, now - lookback as i64 * 1000).await?;
    }
    Ok(facts)
}

/// Each present VM's disk capacity at `at` (the configuration version in force then, or the
/// VM's first one when it appeared later), for the VMs whose capacity is different now: the
/// others did not grow, and a poll's worth of unchanged rows would cost more than the rest of
/// the evaluation.
async fn disk_before(pool: &SqlitePool, at: i64) -> sqlx::Result<HashMap<(String, String), i64>> {
    let rows: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT name, uuid, before FROM (
             SELECT h.name, v.uuid, cur.disk_capacity_bytes AS now,
                    COALESCE(
                        (SELECT c.disk_capacity_bytes FROM vm_configs c
                         WHERE c.vm_id = v.id AND c.valid_from <= ?1
                         ORDER BY c.valid_from DESC LIMIT 1),
                        (SELECT c.disk_capacity_bytes FROM vm_configs c
                         WHERE c.vm_id = v.id ORDER BY c.valid_from LIMIT 1)) AS before
             FROM vms v
             JOIN hosts h ON h.id = v.host_id
             JOIN vm_configs cur ON cur.id = v.config_id
             WHERE v.gone_at IS NULL)
         WHERE before IS NOT NULL AND before <> now",
    )
    .bind(at)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(|(h, u, c)| ((h, u), c)).collect())
}

/// Power and snapshot requests that failed or were unconfirmed, settled at or after `since`.
async fn failed_requests(pool: &SqlitePool, since: i64) -> sqlx::Result<Vec<FailedRequest>> {
    type Row = (String, String, Option<String>, i64, Option<String>, String, Option<String>);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT host_name, vm_uuid, vm_name, settled_at, action, status, error
             FROM audit_log
             WHERE ts >= ?1 - 86400000 AND settled_at >= ?1
               AND kind IN ('power', 'snapshot') AND status IN ('failed', 'unconfirmed')
               AND host_name IS NOT NULL AND vm_uuid IS NOT NULL",
    )
    .bind(since)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(host, uuid, vm_name, at, action, outcome, error)| FailedRequest {
            host,
            uuid,
            vm_name,
            at,
            action: action.unwrap_or_else(|| "request".into()),
            outcome,
            error,
        })
        .collect())
}

/// Every open (pending or firing) alert, read through the partial index `alerts_one_open`.
pub async fn open_alerts(pool: &SqlitePool) -> sqlx::Result<Vec<Open>> {
    #[derive(Deserialize)]
    struct Row {
        id: i64,
        rule_id: Option<i64>,
        subject: String,
        host: String,
        state: String,
        pending_since: i64,
        summary: String,
    }
    // One JSON value rather than a row at a time (see `facts`).
    let json: String = sqlx::query_scalar(
        "SELECT COALESCE(json_group_array(json_object(
                'id', id, 'rule_id', rule_id, 'subject', subject, 'host', host_name,
                'state', state, 'pending_since', pending_since, 'summary', summary)), '[]')
         FROM alerts WHERE state IN ('pending', 'firing')",
    )
    .fetch_one(pool)
    .await?;
    let rows: Vec<Row> = serde_json::from_str(&json).map_err(|e| sqlx::Error::Decode(e.into()))?;
    Ok(rows
        .into_iter()
        .map(|r| Open {
            id: r.id,
            rule_id: r.rule_id,
            subject: r.subject,
            host: r.host,
            firing: r.state == "firing",
            pending_since: r.pending_since,
            summary: r.summary,
        })
        .collect())
}

/// What `apply` wrote, counted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    pub started: usize,
    pub fired: usize,
    pub resolved: usize,
    pub inactive: usize,
    pub reworded: usize,
}

impl Applied {
    pub fn transitions(&self) -> usize {
        self.started + self.fired + self.resolved + self.inactive
    }
}

/// Writes the steps of one evaluation in one transaction, each transition with its row in
/// `alert_transitions`.
pub async fn apply(
    pool: &SqlitePool,
    rules: &[Rule],
    steps: Vec<Step>,
    now: i64,
) -> sqlx::Result<Applied> {
    let mut applied = Applied::default();
    if steps.is_empty() {
        return Ok(applied);
    }
    let by_id: HashMap<i64, &Rule> = rules.iter().map(|r| (r.id, r)).collect();
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    // The rules as they are now, inside the write transaction: one may have been removed since
    // the evaluation read them.
    let present: std::collections::HashSet<i64> =
        sqlx::query_scalar::<_, i64>("SELECT id FROM alert_rules")
            .fetch_all(&mut *tx)
            .await?
            .into_iter()
            .collect();
    for step in steps {
        match step {
            Step::Start { hit, firing } => {
                // A rule removed on the page since this evaluation read the rules starts nothing
                // (its id would break the foreign key and fail the whole evaluation).
                let Some(rule) = by_id.get(&hit.rule_id).filter(|r| present.contains(&r.id)) else {
                    continue;
                };
                start(&mut tx, rule, &hit, firing, now).await?;
                applied.started += 1;
                if firing {
                    applied.fired += 1;
                }
            }
            Step::Fire { id } => {
                sqlx::query(
                    "UPDATE alerts SET state = 'firing', firing_since = ?, last_eval_at = ?
                     WHERE id = ? AND state = 'pending'",
                )
                .bind(now)
                .bind(now)
                .bind(id)
                .execute(&mut *tx)
                .await?;
                transition(&mut tx, id, now, "pending", "firing", "").await?;
                applied.fired += 1;
            }
            Step::End { id, fired, why } => {
                let to = if fired { "resolved" } else { "inactive" };
                sqlx::query(
                    "UPDATE alerts SET state = ?, ended_at = ?, last_eval_at = ?
                     WHERE id = ? AND state IN ('pending', 'firing')",
                )
                .bind(to)
                .bind(now)
                .bind(now)
                .bind(id)
                .execute(&mut *tx)
                .await?;
                let from = if fired { "firing" } else { "pending" };
                transition(&mut tx, id, now, from, to, &why).await?;
                if fired {
                    applied.resolved += 1;
                } else {
                    applied.inactive += 1;
                }
            }
            Step::Reword { id, summary, value } => {
                sqlx::query(
                    "UPDATE alerts SET summary = ?, value = ?, last_eval_at = ? WHERE id = ?",
                )
                .bind(summary)
                .bind(value)
                .bind(now)
                .bind(id)
                .execute(&mut *tx)
                .await?;
                applied.reworded += 1;
            }
        }
    }
    tx.commit().await?;
    Ok(applied)
}

async fn start(
    tx: &mut sqlx::SqliteConnection,
    rule: &Rule,
    hit: &Hit,
    firing: bool,
    now: i64,
) -> sqlx::Result<()> {
    let state = if firing { "firing" } else { "pending" };
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO alerts (rule_id, rule_name, severity, subject, fingerprint, host_name,
                             vm_uuid, vm_name, state, summary, value, pending_since,
                             firing_since, last_eval_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
    )
    .bind(rule.id)
    .bind(&rule.spec.name)
    .bind(rule.spec.severity.as_str())
    .bind(&hit.subject)
    .bind(fingerprint(&rule.spec.name, &hit.subject))
    .bind(&hit.host)
    .bind(&hit.vm_uuid)
    .bind(&hit.vm_name)
    .bind(state)
    .bind(&hit.summary)
    .bind(hit.value)
    .bind(now)
    .bind(firing.then_some(now))
    .bind(now)
    .fetch_one(&mut *tx)
    .await?;
    transition(tx, id, now, "inactive", state, "").await
}

async fn transition(
    tx: &mut sqlx::SqliteConnection,
    id: i64,
    at: i64,
    from: &str,
    to: &str,
    detail: &str,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO alert_transitions (alert_id, at, from_state, to_state, detail)
         VALUES (?, ?, ?, ?, ?)",
    )
    .bind(id)
    .bind(at)
    .bind(from)
    .bind(to)
    .bind(detail)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// The silences in force at `now` (started, not ended, not ended early).
pub async fn active_silences(pool: &SqlitePool, now: i64) -> sqlx::Result<Vec<Matchers>> {
    let rows: Vec<(Option<String>, Option<String>, Option<String>)> = sqlx::query_as(
        "SELECT rule_name, host_name, vm_pattern FROM alert_silences
         WHERE starts_at <= ?1 AND ends_at > ?1 AND ended_at IS NULL",
    )
    .bind(now)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(rule_name, host_name, vm_pattern)| Matchers { rule_name, host_name, vm_pattern })
        .collect())
}
