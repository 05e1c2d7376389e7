//! The SQLite pool: opened with WAL, a busy timeout and foreign keys on every connection,
//! migrated at startup, and managed as Rocket state by the [`stage`] fairing.
//!
//! vmdeck holds an sqlx pool itself instead of using rocket_db_pools, which pins sqlx 0.7; this
//! keeps the current sqlx and its `BEGIN IMMEDIATE` write transactions.

use std::str::FromStr;
use std::time::Duration;

use rocket::fairing::AdHoc;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::SqlitePool;

use crate::config::{sqlite_path, Settings};

/// The database pool, as Rocket state.
#[derive(Clone)]
pub struct Db(pub SqlitePool);

/// Opens (creating if missing) and migrates the database at `url`.
pub async fn connect(url: &str) -> anyhow::Result<SqlitePool> {
    if let Some(parent) = sqlite_path(url).as_deref().and_then(std::path::Path::parent) {
        if !parent.as_os_str().is_empty() {
            std::fs::create_dir_all(parent)
                .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", parent.display()))?;
        }
    }
    let options = SqliteConnectOptions::from_str(url)?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(5))
        .foreign_keys(true);
    let pool = SqlitePoolOptions::new()
        .max_connections(8)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options)
        .await?;
    sqlx::migrate!("./migrations").run(&pool).await?;
    Ok(pool)
}

/// Connects at ignite; a database that cannot be opened stops startup with one message.
pub fn stage() -> AdHoc {
    AdHoc::try_on_ignite("SQLite database", |rocket| async move {
        let Some(settings) = rocket.state::<Settings>() else {
            tracing::error!("settings missing at ignite");
            return Err(rocket);
        };
        let url = settings.database_url.clone();
        match connect(&url).await {
            Ok(pool) => Ok(rocket.manage(Db(pool))),
            Err(e) => {
                tracing::error!("configuration error: database_url: cannot open {url}: {e:#}");
                Err(rocket)
            }
        }
    })
}

/// Milliseconds since the Unix epoch, the unit of every time column.
pub fn now_ms() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp_nanos() as i64 / 1_000_000
}
