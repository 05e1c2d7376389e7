//! Accounts: one function per statement, shared by the Users page and the `vmdeck user` CLI.

use serde::Serialize;
use sqlx::SqlitePool;

use super::password;
use crate::db::now_ms;
use crate::domain::Role;

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct User {
    pub id: i64,
    pub name: String,
    pub role: Role,
    pub demo: bool,
    pub created_at: i64,
}

/// Why an account change was refused, in words for the user.
#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("{0}")]
    Invalid(String),
    #[error("there is no user named {}", crate::domain::quoted(.0))]
    NotFound(String),
    #[error("a user named {} already exists", crate::domain::quoted(.0))]
    Exists(String),
    #[error("the last admin cannot be removed or demoted")]
    LastAdmin,
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
}

/// A user name: 1-64 characters of letters, digits, `.`, `_`, `-`, `@`.
pub fn check_name(name: &str) -> Result<(), UserError> {
    // Scheduled snapshot requests are audited as this user: no account may pass for it.
    if name.eq_ignore_ascii_case(crate::domain::SYSTEM_USER) {
        return Err(UserError::Invalid(format!(
            "{} is reserved: vmdeck's schedules act under that name in the audit log",
            crate::domain::quoted(name)
        )));
    }
    let ok = (1..=64).contains(&name.chars().count())
        && name.chars().all(|c| c.is_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'));
    if ok {
        Ok(())
    } else {
        Err(UserError::Invalid(format!(
            "{} is not a valid user name (1-64 letters, digits, '.', '_', '-' or '@')",
            crate::domain::quoted(name)
        )))
    }
}

pub async fn count(pool: &SqlitePool) -> sqlx::Result<i64> {
    sqlx::query_scalar("SELECT COUNT(*) FROM users").fetch_one(pool).await
}

pub async fn list(pool: &SqlitePool) -> sqlx::Result<Vec<User>> {
    sqlx::query_as(
        "SELECT id, name, role, demo, created_at FROM users ORDER BY name COLLATE NOCASE",
    )
    .fetch_all(pool)
    .await
}

/// The stored hash and role of a user, for login. Demo accounts exist only for the demo:
/// outside it they are as unknown as any other name.
pub async fn credentials(
    pool: &SqlitePool,
    name: &str,
    demo: bool,
) -> sqlx::Result<Option<(i64, String, String, Role)>> {
    sqlx::query_as(
        "SELECT id, name, password_hash, role FROM users WHERE name = ? AND (demo = 0 OR ?)",
    )
    .bind(name)
    .bind(demo)
    .fetch_optional(pool)
    .await
}

pub async fn add(
    pool: &SqlitePool,
    name: &str,
    role: Role,
    password_text: String,
    demo: bool,
) -> Result<i64, UserError> {
    check_name(name)?;
    password::check_strength(&password_text, name).map_err(UserError::Invalid)?;
    let hash = password::hash(password_text).await.map_err(UserError::Invalid)?;
    let now = now_ms();
    let res = sqlx::query_scalar(
        "INSERT INTO users (name, password_hash, role, demo, created_at, password_changed_at)
         VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
    )
    .bind(name)
    .bind(hash)
    .bind(role)
    .bind(demo)
    .bind(now)
    .bind(now)
    .fetch_one(pool)
    .await;
    match res {
        Ok(id) => Ok(id),
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
            Err(UserError::Exists(name.to_string()))
        }
        Err(e) => Err(e.into()),
    }
}

/// Sets a new password and ends every session of the user.
pub async fn set_password(
    pool: &SqlitePool,
    name: &str,
    password_text: String,
) -> Result<(), UserError> {
    password::check_strength(&password_text, name).map_err(UserError::Invalid)?;
    let hash = password::hash(password_text).await.map_err(UserError::Invalid)?;
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    let id: Option<i64> = sqlx::query_scalar(
        "UPDATE users SET password_hash = ?, password_changed_at = ?, demo = 0 WHERE name = ? RETURNING id",
    )
    .bind(hash)
    .bind(now_ms())
    .bind(name)
    .fetch_optional(&mut *tx)
    .await?;
    let id = id.ok_or_else(|| UserError::NotFound(name.to_string()))?;
    sqlx::query("DELETE FROM sessions WHERE user_id = ?").bind(id).execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(())
}

/// Gives the demo's generated admin a new password, if it still is the demo account (its
/// password was never changed). Returns false when there is no such account.
pub async fn reset_demo_password(
    pool: &SqlitePool,
    name: &str,
    password_text: String,
) -> Result<bool, UserError> {
    let hash = password::hash(password_text).await.map_err(UserError::Invalid)?;
    let done = sqlx::query(
        "UPDATE users SET password_hash = ?, password_changed_at = ? WHERE name = ? AND demo = 1",
    )
    .bind(hash)
    .bind(now_ms())
    .bind(name)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Changes a role; takes effect on the user's next request (roles are read per request).
pub async fn set_role(pool: &SqlitePool, name: &str, role: Role) -> Result<(), UserError> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    let current: Option<Role> = sqlx::query_scalar("SELECT role FROM users WHERE name = ?")
        .bind(name)
        .fetch_optional(&mut *tx)
        .await?;
    let current = current.ok_or_else(|| UserError::NotFound(name.to_string()))?;
    if current == Role::Admin && role != Role::Admin && admins(&mut tx).await? <= 1 {
        return Err(UserError::LastAdmin);
    }
    sqlx::query("UPDATE users SET role = ? WHERE name = ?")
        .bind(role)
        .bind(name)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

/// Removes a user; its sessions go with it (ON DELETE CASCADE).
pub async fn remove(pool: &SqlitePool, name: &str) -> Result<(), UserError> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    let role: Option<Role> = sqlx::query_scalar("SELECT role FROM users WHERE name = ?")
        .bind(name)
        .fetch_optional(&mut *tx)
        .await?;
    let role = role.ok_or_else(|| UserError::NotFound(name.to_string()))?;
    if role == Role::Admin && admins(&mut tx).await? <= 1 {
        return Err(UserError::LastAdmin);
    }
    sqlx::query("DELETE FROM users WHERE name = ?").bind(name).execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(())
}

async fn admins(tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>) -> sqlx::Result<i64> {
    sqlx::query_scalar("SELECT COUNT(*) FROM users WHERE role = 'admin'").fetch_one(&mut **tx).await
}
