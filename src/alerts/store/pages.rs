//! The Alerts pages' SQL: lists, history, acknowledgements, silences.

use serde::Serialize;
use sqlx::{QueryBuilder, Sqlite, SqlitePool};

use crate::alerts::rules::Matchers;
use crate::web::format as view;

/// Most rows "firing now" shows (a host down with thousands of VMs still reads as one page).
pub const FIRING_LIMIT: i64 = 1_000;
/// Most silences of each kind the silences page lists.
pub const SILENCES_LIMIT: i64 = 200;

/// One alert as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AlertRow {
    pub id: i64,
    pub rule_id: Option<i64>,
    pub rule_name: String,
    pub severity: String,
    pub subject: String,
    pub fingerprint: String,
    pub host_name: String,
    pub vm_uuid: Option<String>,
    pub vm_name: Option<String>,
    pub state: String,
    pub summary: String,
    pub value: Option<f64>,
    pub pending_since: i64,
    pub firing_since: Option<i64>,
    pub ended_at: Option<i64>,
    pub last_eval_at: i64,
    pub ack_by: Option<String>,
    pub ack_at: Option<i64>,
    pub ack_comment: Option<String>,
}

const ALERT_COLUMNS: &str = "id, rule_id, rule_name, severity, subject, fingerprint, host_name,
    vm_uuid, vm_name, state, summary, value, pending_since, firing_since, ended_at,
    last_eval_at, ack_by, ack_at, ack_comment";

/// What the history and its CSV filter on, validated.
#[derive(Debug, Default, Clone)]
pub struct Filter {
    /// A state, or "open" (pending or firing).
    pub state: Option<String>,
    pub severity: Option<String>,
    /// A rule's name (any case).
    pub rule: String,
    pub host: String,
    /// A VM's uuid, or part of its name.
    pub vm: String,
    /// Alerts open at some time in this period.
    pub from: Option<i64>,
    pub to: Option<i64>,
}

fn push_where(qb: &mut QueryBuilder<'_, Sqlite>, f: &Filter) {
    qb.push(" WHERE 1 = 1");
    match f.state.as_deref() {
        Some("open") => {
            qb.push(" AND state IN ('pending', 'firing')");
        }
        Some(s) => {
            qb.push(" AND state = ").push_bind(s.to_string());
        }
        None => {}
    }
    if let Some(s) = &f.severity {
        qb.push(" AND severity = ").push_bind(s.clone());
    }
    if !f.rule.is_empty() {
        qb.push(" AND rule_name = ").push_bind(f.rule.clone()).push(" COLLATE NOCASE");
    }
    if !f.host.is_empty() {
        qb.push(" AND host_name = ").push_bind(f.host.clone());
    }
    if !f.vm.is_empty() {
        let like =
            format!("%{}%", f.vm.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_"));
        qb.push(" AND (vm_uuid = ").push_bind(f.vm.to_ascii_lowercase());
        qb.push(" OR vm_name LIKE ").push_bind(like).push(" ESCAPE '\\')");
    }
    if let Some(t) = f.from {
        qb.push(" AND (ended_at IS NULL OR ended_at >= ").push_bind(t).push(")");
    }
    if let Some(t) = f.to {
        qb.push(" AND pending_since <= ").push_bind(t);
    }
}

/// How many alerts match `f`.
pub async fn count(pool: &SqlitePool, f: &Filter) -> sqlx::Result<i64> {
    let mut qb = QueryBuilder::new("SELECT COUNT(*) FROM alerts");
    push_where(&mut qb, f);
    qb.build_query_scalar().fetch_one(pool).await
}

/// The alerts matching `f`, newest first.
pub async fn history(
    pool: &SqlitePool,
    f: &Filter,
    limit: i64,
    offset: i64,
) -> sqlx::Result<Vec<AlertRow>> {
    let mut qb = QueryBuilder::new(format!("SELECT {ALERT_COLUMNS} FROM alerts"));
    push_where(&mut qb, f);
    qb.push(" ORDER BY pending_since DESC, id DESC LIMIT ")
        .push_bind(limit)
        .push(" OFFSET ")
        .push_bind(offset);
    qb.build_query_as().fetch_all(pool).await
}

/// The open (pending and firing) alerts, newest first, at most [`FIRING_LIMIT`].
pub async fn open(pool: &SqlitePool) -> sqlx::Result<Vec<AlertRow>> {
    sqlx::query_as(&format!(
        "SELECT {ALERT_COLUMNS} FROM alerts WHERE state IN ('pending', 'firing')
         ORDER BY pending_since DESC, id DESC LIMIT ?"
    ))
    .bind(FIRING_LIMIT)
    .fetch_all(pool)
    .await
}

/// How many alerts fire now.
pub async fn firing_count(pool: &SqlitePool) -> sqlx::Result<i64> {
    sqlx::query_scalar("SELECT COUNT(*) FROM alerts WHERE state = 'firing'").fetch_one(pool).await
}

pub async fn alert(pool: &SqlitePool, id: i64) -> sqlx::Result<Option<AlertRow>> {
    sqlx::query_as(&format!("SELECT {ALERT_COLUMNS} FROM alerts WHERE id = ?"))
        .bind(id)
        .fetch_optional(pool)
        .await
}

/// One row of `alert_transitions`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TransitionRow {
    pub at: i64,
    pub from_state: String,
    pub to_state: String,
    pub detail: String,
}

/// An alert's transitions, in order.
pub async fn transitions(pool: &SqlitePool, alert_id: i64) -> sqlx::Result<Vec<TransitionRow>> {
    sqlx::query_as(
        "SELECT at, from_state, to_state, detail FROM alert_transitions
         WHERE alert_id = ? ORDER BY at, id",
    )
    .bind(alert_id)
    .fetch_all(pool)
    .await
}

/// Acknowledges a firing alert not yet acknowledged, with its transition row, in one
/// transaction. False when the alert is not (or no longer) firing or is acknowledged already.
pub async fn acknowledge(
    pool: &SqlitePool,
    id: i64,
    by: &str,
    comment: &str,
    now: i64,
) -> sqlx::Result<bool> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    let done = sqlx::query(
        "UPDATE alerts SET ack_by = ?, ack_at = ?, ack_comment = ?
         WHERE id = ? AND state = 'firing' AND ack_by IS NULL",
    )
    .bind(by)
    .bind(now)
    .bind(comment)
    .bind(id)
    .execute(&mut *tx)
    .await?;
    if done.rows_affected() != 1 {
        return Ok(false);
    }
    sqlx::query(
        "INSERT INTO alert_transitions (alert_id, at, from_state, to_state, detail)
         VALUES (?, ?, 'firing', 'firing', ?)",
    )
    .bind(id)
    .bind(now)
    .bind(format!("acknowledged by {by}: {comment}"))
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(true)
}

/// A notification target that is failing now (failures since its last success).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct FailingTarget {
    pub name: String,
    pub failures: i64,
    pub last_error: Option<String>,
    pub last_error_at: Option<i64>,
    pub last_ok_at: Option<i64>,
}

pub async fn failing_targets(pool: &SqlitePool) -> sqlx::Result<Vec<FailingTarget>> {
    sqlx::query_as(
        "SELECT name, failures, last_error, last_error_at, last_ok_at FROM alert_targets
         WHERE failures > 0 ORDER BY name LIMIT 50",
    )
    .fetch_all(pool)
    .await
}

/// One silence as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SilenceRow {
    pub id: i64,
    pub rule_name: Option<String>,
    pub host_name: Option<String>,
    pub vm_pattern: Option<String>,
    pub comment: String,
    pub starts_at: i64,
    pub ends_at: i64,
    pub created_by: String,
    pub created_at: i64,
    pub ended_at: Option<i64>,
    pub ended_by: Option<String>,
}

impl SilenceRow {
    pub fn matchers(&self) -> Matchers {
        Matchers {
            rule_name: self.rule_name.clone(),
            host_name: self.host_name.clone(),
            vm_pattern: self.vm_pattern.clone(),
        }
    }

    /// Whether it is in force at `now`.
    pub fn active(&self, now: i64) -> bool {
        self.ended_at.is_none() && self.starts_at <= now && self.ends_at > now
    }
}

const SILENCE_COLUMNS: &str = "id, rule_name, host_name, vm_pattern, comment, starts_at, ends_at,
    created_by, created_at, ended_at, ended_by";

/// The silences in force or to come at `now` (all of them), and the latest
/// [`SILENCES_LIMIT`] that ended.
pub async fn silences(
    pool: &SqlitePool,
    now: i64,
) -> sqlx::Result<(Vec<SilenceRow>, Vec<SilenceRow>)> {
    let current: Vec<SilenceRow> = sqlx::query_as(&format!(
        "SELECT {SILENCE_COLUMNS} FROM alert_silences
         WHERE ended_at IS NULL AND ends_at > ? ORDER BY starts_at DESC, id DESC"
    ))
    .bind(now)
    .fetch_all(pool)
    .await?;
    let ended: Vec<SilenceRow> = sqlx::query_as(&format!(
        "SELECT {SILENCE_COLUMNS} FROM alert_silences
         WHERE ended_at IS NOT NULL OR ends_at <= ?
         ORDER BY COALESCE(ended_at, ends_at) DESC, id DESC LIMIT ?"
    ))
    .bind(now)
    .bind(SILENCES_LIMIT)
    .fetch_all(pool)
    .await?;
    Ok((current, ended))
}

/// The silences in force at `now`, with their ids (what `store::active_silences` reads).
pub async fn active_silences(pool: &SqlitePool, now: i64) -> sqlx::Result<Vec<SilenceRow>> {
    sqlx::query_as(&format!(
        "SELECT {SILENCE_COLUMNS} FROM alert_silences
         WHERE starts_at <= ?1 AND ends_at > ?1 AND ended_at IS NULL ORDER BY id"
    ))
    .bind(now)
    .fetch_all(pool)
    .await
}

pub async fn silence(pool: &SqlitePool, id: i64) -> sqlx::Result<Option<SilenceRow>> {
    sqlx::query_as(&format!("SELECT {SILENCE_COLUMNS} FROM alert_silences WHERE id = ?"))
        .bind(id)
        .fetch_optional(pool)
        .await
}

/// Adds a silence from `now` until `ends_at`; returns its id.
pub async fn insert_silence(
    pool: &SqlitePool,
    m: &Matchers,
    comment: &str,
    ends_at: i64,
    by: &str,
    now: i64,
) -> sqlx::Result<i64> {
    sqlx::query_scalar(
        "INSERT INTO alert_silences (rule_name, host_name, vm_pattern, comment, starts_at,
                                     ends_at, created_by, created_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
    )
    .bind(&m.rule_name)
    .bind(&m.host_name)
    .bind(&m.vm_pattern)
    .bind(comment)
    .bind(now)
    .bind(ends_at)
    .bind(by)
    .bind(now)
    .fetch_one(pool)
    .await
}

/// Ends a silence early; false when it had ended already (or expired).
pub async fn end_silence(pool: &SqlitePool, id: i64, by: &str, now: i64) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "UPDATE alert_silences SET ended_at = ?, ended_by = ?
         WHERE id = ? AND ended_at IS NULL AND ends_at > ?",
    )
    .bind(now)
    .bind(by)
    .bind(id)
    .bind(now)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// A VM present on a host, for the rule form's picker.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PresentVm {
    pub host_name: String,
    pub uuid: String,
    pub name: String,
}

/// Most VMs the rule form's picker lists.
pub const PICKER_LIMIT: i64 = 2_000;

pub async fn present_vms(pool: &SqlitePool) -> sqlx::Result<Vec<PresentVm>> {
    sqlx::query_as(
        "SELECT h.name AS host_name, v.uuid, v.name FROM vms v JOIN hosts h ON h.id = v.host_id
         WHERE v.gone_at IS NULL ORDER BY v.name, h.name LIMIT ?",
    )
    .bind(PICKER_LIMIT)
    .fetch_all(pool)
    .await
}

/// One alert as the VM page lists it.
#[derive(Debug, Clone, Serialize)]
pub struct VmAlertView {
    pub id: i64,
    pub rule_name: String,
    pub severity: String,
    pub state: String,
    pub summary: String,
    pub since: String,
    pub ended: Option<String>,
}

/// The VM page's "Alerts" section: the VM's open alerts and its last few ended ones.
#[derive(Debug, Clone, Default, Serialize)]
pub struct VmSection {
    pub open: Vec<VmAlertView>,
    pub ended: Vec<VmAlertView>,
    /// The Alerts page filtered on this VM.
    pub href: String,
}

/// How many ended alerts the VM page shows.
pub const VM_ENDED: i64 = 5;

pub async fn vm_section(pool: &SqlitePool, host: &str, uuid: &str) -> sqlx::Result<VmSection> {
    let read = |open: bool| {
        let sql = format!(
            "SELECT {ALERT_COLUMNS} FROM alerts WHERE host_name = ? AND vm_uuid = ? AND state {}
             ORDER BY pending_since DESC, id DESC LIMIT ?",
            if open { "IN ('pending', 'firing')" } else { "IN ('resolved', 'inactive')" }
        );
        async move {
            sqlx::query_as::<_, AlertRow>(&sql)
                .bind(host)
                .bind(uuid)
                .bind(if open { FIRING_LIMIT } else { VM_ENDED })
                .fetch_all(pool)
                .await
        }
    };
    let as_view = |a: AlertRow| VmAlertView {
        id: a.id,
        rule_name: a.rule_name,
        severity: a.severity,
        state: a.state,
        summary: a.summary,
        since: view::absolute(a.firing_since.unwrap_or(a.pending_since)),
        ended: a.ended_at.map(view::absolute),
    };
    let query = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("host", host)
        .append_pair("vm", uuid)
        .finish();
    Ok(VmSection {
        open: read(true).await?.into_iter().map(as_view).collect(),
        ended: read(false).await?.into_iter().map(as_view).collect(),
        href: format!("/alerts?{query}"),
    })
}
