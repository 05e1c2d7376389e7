//! Sessions: one row per login, keyed by the SHA-256 of the session id the cookie carries.
//! One function per statement. (Accounts are in `users`.)

use sqlx::SqlitePool;

use crate::domain::Role;

/// A session with its user, as the guards need it.
#[derive(Debug, sqlx::FromRow)]
pub struct SessionRow {
    pub user_id: i64,
    pub name: String,
    pub role: Role,
    pub csrf_token: String,
    pub created_at: i64,
    pub last_seen: i64,
}

/// A live session by its id's hash. Demo accounts' sessions count only in demo mode.
pub async fn session(
    pool: &SqlitePool,
    id_hash: &str,
    demo: bool,
) -> sqlx::Result<Option<SessionRow>> {
    sqlx::query_as(
        "SELECT s.user_id, u.name, u.role, s.csrf_token, s.created_at, s.last_seen
         FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.id_hash = ? AND (u.demo = 0 OR ?)",
    )
    .bind(id_hash)
    .bind(demo)
    .fetch_optional(pool)
    .await
}

/// A new session for a user who just logged in.
pub async fn create_session(
    pool: &SqlitePool,
    id_hash: &str,
    user_id: i64,
    csrf_token: &str,
    now: i64,
    client_addr: Option<&str>,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO sessions (id_hash, user_id, csrf_token, created_at, last_seen, client_addr) VALUES (?, ?, ?, ?, ?, ?)",
    )
    .bind(id_hash)
    .bind(user_id)
    .bind(csrf_token)
    .bind(now)
    .bind(now)
    .bind(client_addr)
    .execute(pool)
    .await?;
    Ok(())
}

pub async fn touch_session(pool: &SqlitePool, id_hash: &str, now: i64) -> sqlx::Result<()> {
    sqlx::query("UPDATE sessions SET last_seen = ? WHERE id_hash = ?")
        .bind(now)
        .bind(id_hash)
        .execute(pool)
        .await?;
    Ok(())
}

pub async fn delete_session(pool: &SqlitePool, id_hash: &str) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM sessions WHERE id_hash = ?").bind(id_hash).execute(pool).await?;
    Ok(())
}
