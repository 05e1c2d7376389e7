//! The notifications' SQL: targets (the page's and the configuration file's), the groups'
//! sent state, and the outbox of deliveries.

use sqlx::{FromRow, SqlitePool};

use super::target::{Kind, Secret, TargetSpec};
use crate::alerts::rules::Severity;
use crate::alerts::store::Source;
use crate::domain::quoted;

/// A stored target with how sending to it went.
#[derive(Debug, Clone)]
pub struct Target {
    pub id: i64,
    pub name: String,
    pub source: Source,
    pub enabled: bool,
    pub min_severity: Severity,
    pub kind: Kind,
    pub secret: Option<Secret>,
    pub created_by: String,
    pub updated_at: i64,
    pub last_ok_at: Option<i64>,
    pub last_error_at: Option<i64>,
    pub last_error: Option<String>,
    pub failures: i64,
}

#[derive(FromRow)]
struct TargetRow {
    id: i64,
    name: String,
    source: String,
    kind: String,
    enabled: bool,
    settings: String,
    secret: Option<String>,
    min_severity: String,
    created_by: String,
    updated_at: i64,
    last_ok_at: Option<i64>,
    last_error_at: Option<i64>,
    last_error: Option<String>,
    failures: i64,
}

const TARGET_COLUMNS: &str = "id, name, source, kind, enabled, settings, secret, min_severity,
    created_by, updated_at, last_ok_at, last_error_at, last_error, failures";

fn target_of(r: TargetRow) -> Option<Target> {
    let (Some(kind), Some(min_severity)) =
        (Kind::from_columns(&r.kind, &r.settings), Severity::parse(&r.min_severity))
    else {
        tracing::error!(target = %r.name, "a notification target in the database cannot be read; skipped");
        return None;
    };
    Some(Target {
        id: r.id,
        name: r.name,
        source: if r.source == "file" { Source::File } else { Source::Page },
        enabled: r.enabled,
        min_severity,
        kind,
        secret: r.secret.filter(|s| !s.is_empty()).map(Secret::new),
        created_by: r.created_by,
        updated_at: r.updated_at,
        last_ok_at: r.last_ok_at,
        last_error_at: r.last_error_at,
        last_error: r.last_error,
        failures: r.failures,
    })
}

/// Every target, by name.
pub async fn targets(pool: &SqlitePool) -> sqlx::Result<Vec<Target>> {
    let rows: Vec<TargetRow> =
        sqlx::query_as(&format!("SELECT {TARGET_COLUMNS} FROM alert_targets ORDER BY name"))
            .fetch_all(pool)
            .await?;
    Ok(rows.into_iter().filter_map(target_of).collect())
}

pub async fn target(pool: &SqlitePool, id: i64) -> sqlx::Result<Option<Target>> {
    let row: Option<TargetRow> =
        sqlx::query_as(&format!("SELECT {TARGET_COLUMNS} FROM alert_targets WHERE id = ?"))
            .bind(id)
            .fetch_optional(pool)
            .await?;
    Ok(row.and_then(target_of))
}

/// Why a target could not be saved, in words.
#[derive(Debug, thiserror::Error)]
pub enum SaveError {
    #[error("a target named {0} exists already")]
    NameTaken(String),
    #[error("that target comes from the configuration file; change it there")]
    FromFile,
    #[error("no such target")]
    Missing,
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

async fn name_taken(
    tx: &mut sqlx::SqliteConnection,
    name: &str,
    except: Option<i64>,
) -> Result<(), SaveError> {
    let taken: Option<i64> =
        sqlx::query_scalar("SELECT id FROM alert_targets WHERE name = ? AND id <> ?")
            .bind(name)
            .bind(except.unwrap_or(-1))
            .fetch_optional(&mut *tx)
            .await?;
    match taken {
        Some(_) => Err(SaveError::NameTaken(quoted(name))),
        None => Ok(()),
    }
}

/// Adds a target; returns its id.
pub async fn insert_target(
    pool: &SqlitePool,
    spec: &TargetSpec,
    source: Source,
    by: &str,
    now: i64,
) -> Result<i64, SaveError> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    name_taken(&mut tx, &spec.name, None).await?;
    let id = sqlx::query_scalar(
        "INSERT INTO alert_targets (name, source, kind, enabled, settings, secret, min_severity,
                                    created_by, created_at, updated_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
    )
    .bind(&spec.name)
    .bind(source.as_str())
    .bind(spec.kind.name())
    .bind(spec.enabled)
    .bind(spec.kind.settings_json())
    .bind(spec.secret.as_ref().map(Secret::expose))
    .bind(spec.min_severity.as_str())
    .bind(by)
    .bind(now)
    .bind(now)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(id)
}

async fn check_page_target(tx: &mut sqlx::SqliteConnection, id: i64) -> Result<(), SaveError> {
    let source: Option<String> =
        sqlx::query_scalar("SELECT source FROM alert_targets WHERE id = ?")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
    match source.as_deref() {
        None => Err(SaveError::Missing),
        Some("file") => Err(SaveError::FromFile),
        Some(_) => Ok(()),
    }
}

/// Changes a page target. Without a secret in `spec` the stored one stays, unless
/// `clear_secret`. A changed kind forgets the groups' state (what was sent elsewhere).
pub async fn update_target(
    pool: &SqlitePool,
    id: i64,
    spec: &TargetSpec,
    clear_secret: bool,
    now: i64,
) -> Result<(), SaveError> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    check_page_target(&mut tx, id).await?;
    name_taken(&mut tx, &spec.name, Some(id)).await?;
    write_target(&mut tx, id, spec, clear_secret, now).await?;
    tx.commit().await?;
    Ok(())
}

async fn write_target(
    tx: &mut sqlx::SqliteConnection,
    id: i64,
    spec: &TargetSpec,
    clear_secret: bool,
    now: i64,
) -> sqlx::Result<()> {
    let old_kind: Option<String> =
        sqlx::query_scalar("SELECT kind FROM alert_targets WHERE id = ?")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
    if old_kind.as_deref() != Some(spec.kind.name()) {
        sqlx::query("DELETE FROM alert_groups WHERE target_id = ?")
            .bind(id)
            .execute(&mut *tx)
            .await?;
    }
    sqlx::query(
        "UPDATE alert_targets SET name = ?, kind = ?, enabled = ?, settings = ?,
                min_severity = ?, updated_at = ?
         WHERE id = ?",
    )
    .bind(&spec.name)
    .bind(spec.kind.name())
    .bind(spec.enabled)
    .bind(spec.kind.settings_json())
    .bind(spec.min_severity.as_str())
    .bind(now)
    .bind(id)
    .execute(&mut *tx)
    .await?;
    // The secret apart, so its binding stays simple.
    if let Some(secret) = &spec.secret {
        sqlx::query("UPDATE alert_targets SET secret = ? WHERE id = ?")
            .bind(secret.expose())
            .bind(id)
            .execute(&mut *tx)
            .await?;
    } else if clear_secret {
        sqlx::query("UPDATE alert_targets SET secret = NULL WHERE id = ?")
            .bind(id)
            .execute(&mut *tx)
            .await?;
    }
    Ok(())
}

/// Turns a page target on or off.
pub async fn set_enabled(
    pool: &SqlitePool,
    id: i64,
    enabled: bool,
    now: i64,
) -> Result<(), SaveError> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    check_page_target(&mut tx, id).await?;
    sqlx::query("UPDATE alert_targets SET enabled = ?, updated_at = ? WHERE id = ?")
        .bind(enabled)
        .bind(now)
        .bind(id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

/// Removes a page target with its groups and deliveries.
pub async fn delete_target(pool: &SqlitePool, id: i64) -> Result<(), SaveError> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    check_page_target(&mut tx, id).await?;
    sqlx::query("DELETE FROM alert_targets WHERE id = ?").bind(id).execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(())
}

/// Makes the stored file targets exactly the configuration file's (page targets of the same
/// name become file targets); returns the names added, changed and removed.
pub async fn sync_file_targets(
    pool: &SqlitePool,
    specs: &[TargetSpec],
    now: i64,
) -> sqlx::Result<(Vec<String>, Vec<String>, Vec<String>)> {
    let stored = targets(pool).await?;
    let (mut added, mut changed, mut removed) = (Vec::new(), Vec::new(), Vec::new());
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    for spec in specs {
        match stored.iter().find(|t| t.name.eq_ignore_ascii_case(&spec.name)) {
            Some(t)
                if t.source == Source::File
                    && t.kind == spec.kind
                    && t.enabled == spec.enabled
                    && t.min_severity == spec.min_severity
                    && t.secret == spec.secret
                    && t.name == spec.name => {}
            Some(t) => {
                sqlx::query("UPDATE alert_targets SET source = 'file' WHERE id = ?")
                    .bind(t.id)
                    .execute(&mut *tx)
                    .await?;
                write_target(&mut tx, t.id, spec, true, now).await?;
                changed.push(spec.name.clone());
            }
            None => {
                sqlx::query(
                    "INSERT INTO alert_targets (name, source, kind, enabled, settings, secret,
                         min_severity, created_by, created_at, updated_at)
                     VALUES (?, 'file', ?, ?, ?, ?, ?, 'configuration file', ?, ?)",
                )
                .bind(&spec.name)
                .bind(spec.kind.name())
                .bind(spec.enabled)
                .bind(spec.kind.settings_json())
                .bind(spec.secret.as_ref().map(Secret::expose))
                .bind(spec.min_severity.as_str())
                .bind(now)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                added.push(spec.name.clone());
            }
        }
    }
    for t in stored.iter().filter(|t| t.source == Source::File) {
        if !specs.iter().any(|s| s.name.eq_ignore_ascii_case(&t.name)) {
            sqlx::query("DELETE FROM alert_targets WHERE id = ?")
                .bind(t.id)
                .execute(&mut *tx)
                .await?;
            removed.push(t.name.clone());
        }
    }
    tx.commit().await?;
    Ok((added, changed, removed))
}

/// One group's sent state.
#[derive(Debug, Clone, Default)]
pub struct Group {
    pub firing: Vec<String>,
    pub last_sent_at: Option<i64>,
}

pub async fn groups(
    pool: &SqlitePool,
    target_id: i64,
) -> sqlx::Result<std::collections::HashMap<String, Group>> {
    let rows: Vec<(String, String, Option<i64>)> = sqlx::query_as(
        "SELECT group_key, firing, last_sent_at FROM alert_groups WHERE target_id = ?",
    )
    .bind(target_id)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(key, firing, last_sent_at)| {
            let firing = serde_json::from_str(&firing).unwrap_or_default();
            (key, Group { firing, last_sent_at })
        })
        .collect())
}

/// A notification to queue.
#[derive(Debug, Clone)]
pub struct Queued {
    pub target_id: i64,
    pub group_key: String,
    pub firing: bool,
    pub alert_count: usize,
    pub payload: String,
    /// The group's firing set after this notification.
    pub group_firing: Vec<String>,
}

/// Queues one notification (superseding a still-queued one of its group) and records its
/// group's state, in one transaction.
pub async fn queue(pool: &SqlitePool, q: &Queued, now: i64) -> sqlx::Result<()> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    sqlx::query(
        "UPDATE alert_deliveries SET state = 'superseded'
         WHERE target_id = ? AND group_key = ? AND state = 'queued'",
    )
    .bind(q.target_id)
    .bind(&q.group_key)
    .execute(&mut *tx)
    .await?;
    // A target removed on the page since planning read it gets nothing (and breaks nothing).
    sqlx::query(
        "INSERT INTO alert_deliveries (target_id, group_key, created_at, status, alert_count,
                                       payload, next_attempt_at)
         SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7 WHERE EXISTS (SELECT 1 FROM alert_targets WHERE id = ?1)",
    )
    .bind(q.target_id)
    .bind(&q.group_key)
    .bind(now)
    .bind(if q.firing { "firing" } else { "resolved" })
    .bind(q.alert_count as i64)
    .bind(&q.payload)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    write_group(&mut tx, q.target_id, &q.group_key, &q.group_firing, Some(now)).await?;
    tx.commit().await
}

/// Records a group's firing set without sending (e.g. alerts carried over while silenced);
/// nothing for a target removed meanwhile.
pub async fn write_group(
    tx: &mut sqlx::SqliteConnection,
    target_id: i64,
    key: &str,
    firing: &[String],
    sent_at: Option<i64>,
) -> sqlx::Result<()> {
    let json = serde_json::to_string(firing).unwrap_or_else(|_| "[]".into());
    sqlx::query(
        "INSERT INTO alert_groups (target_id, group_key, firing, last_sent_at)
         SELECT ?1, ?2, ?3, ?4 WHERE EXISTS (SELECT 1 FROM alert_targets WHERE id = ?1)
         ON CONFLICT (target_id, group_key) DO UPDATE
         SET firing = excluded.firing, last_sent_at = COALESCE(excluded.last_sent_at, last_sent_at)",
    )
    .bind(target_id)
    .bind(key)
    .bind(json)
    .bind(sent_at)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// The payloads of a group's still-queued deliveries (about to be superseded).
pub async fn queued_payloads(
    pool: &SqlitePool,
    target_id: i64,
    key: &str,
) -> sqlx::Result<Vec<(i64, String)>> {
    sqlx::query_as(
        "SELECT created_at, payload FROM alert_deliveries
         WHERE target_id = ? AND group_key = ? AND state = 'queued'",
    )
    .bind(target_id)
    .bind(key)
    .fetch_all(pool)
    .await
}

/// A delivery due to be sent.
#[derive(Debug, Clone, FromRow)]
pub struct Due {
    pub id: i64,
    pub target_id: i64,
    pub created_at: i64,
    pub payload: String,
    pub attempts: i64,
}

/// The queued deliveries due at `now`, oldest first (at most `limit`).
pub async fn due(pool: &SqlitePool, now: i64, limit: i64) -> sqlx::Result<Vec<Due>> {
    sqlx::query_as(
        "SELECT d.id, d.target_id, d.created_at, d.payload, d.attempts
         FROM alert_deliveries d JOIN alert_targets t ON t.id = d.target_id
         WHERE d.state = 'queued' AND d.next_attempt_at <= ? AND t.enabled
         ORDER BY d.next_attempt_at, d.id LIMIT ?",
    )
    .bind(now)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// When the next queued delivery of an enabled target falls due (a disabled target's wait).
pub async fn next_due(pool: &SqlitePool) -> sqlx::Result<Option<i64>> {
    sqlx::query_scalar(
        "SELECT MIN(d.next_attempt_at)
         FROM alert_deliveries d JOIN alert_targets t ON t.id = d.target_id
         WHERE d.state = 'queued' AND t.enabled",
    )
    .fetch_one(pool)
    .await
}

/// A delivery went out.
pub async fn sent(pool: &SqlitePool, d: &Due, now: i64) -> sqlx::Result<()> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    sqlx::query(
        "UPDATE alert_deliveries SET state = 'sent', sent_at = ?, attempts = attempts + 1
         WHERE id = ? AND state = 'queued'",
    )
    .bind(now)
    .bind(d.id)
    .execute(&mut *tx)
    .await?;
    sqlx::query("UPDATE alert_targets SET last_ok_at = ?, failures = 0 WHERE id = ?")
        .bind(now)
        .bind(d.target_id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await
}

/// A delivery failed: retried at `next` or, with None, given up.
pub async fn failed(
    pool: &SqlitePool,
    d: &Due,
    error: &str,
    next: Option<i64>,
    now: i64,
) -> sqlx::Result<()> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    sqlx::query(
        "UPDATE alert_deliveries
         SET attempts = attempts + 1, last_error = ?, next_attempt_at = COALESCE(?, next_attempt_at),
             state = CASE WHEN ? IS NULL THEN 'given_up' ELSE state END
         WHERE id = ? AND state = 'queued'",
    )
    .bind(error)
    .bind(next)
    .bind(next)
    .bind(d.id)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "UPDATE alert_targets SET last_error_at = ?, last_error = ?, failures = failures + 1
         WHERE id = ?",
    )
    .bind(now)
    .bind(error)
    .bind(d.target_id)
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

/// One delivery as the targets page lists it.
#[derive(Debug, Clone, FromRow)]
pub struct DeliveryRow {
    pub id: i64,
    pub target_id: i64,
    pub group_key: String,
    pub created_at: i64,
    pub status: String,
    pub alert_count: i64,
    pub state: String,
    pub attempts: i64,
    pub next_attempt_at: i64,
    pub sent_at: Option<i64>,
    pub last_error: Option<String>,
}

/// The latest deliveries of every target (at most `limit` each).
pub async fn recent_deliveries(pool: &SqlitePool, limit: i64) -> sqlx::Result<Vec<DeliveryRow>> {
    sqlx::query_as(
        "SELECT id, target_id, group_key, created_at, status, alert_count, state, attempts,
                next_attempt_at, sent_at, last_error
         FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY target_id ORDER BY id DESC) AS n
               FROM alert_deliveries)
         WHERE n <= ? ORDER BY target_id, id DESC",
    )
    .bind(limit)
    .fetch_all(pool)
    .await
}
