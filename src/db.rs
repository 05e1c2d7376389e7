//! The SQLite pool: opened with WAL, a busy timeout and foreign keys on every connection (and
//! the size cap `database_max_size_mb`, when set), migrated at startup (then the audit entries
//! settled before the hash chain existed are chained), and managed as Rocket state by the
//! [`stage`] fairing, with [`Storage`]: whether the database currently refuses writes (full,
//! read-only, failing), which the poller, power control and the health pages share.
//!
//! vmdeck holds an sqlx pool itself instead of using rocket_db_pools, which pins sqlx 0.7; this
//! keeps the current sqlx and its `BEGIN IMMEDIATE` write transactions.

use std::str::FromStr;
use std::sync::Mutex;
use std::time::Duration;

use rocket::fairing::AdHoc;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::SqlitePool;

use crate::config::{sqlite_path, DatabaseSize, Settings};

/// The database pool, as Rocket state.
#[derive(Clone)]
pub struct Db(pub SqlitePool);

/// Opens (creating if missing) and migrates the database at `url`, and chains audit entries
/// written before the hash chain existed (`events::chain::backfill`, safe beside another
/// process doing the same).
pub async fn connect(url: &str) -> anyhow::Result<SqlitePool> {
    connect_limited(url, None).await
}

/// [`connect`], with the database capped at `limit`: SQLite's `max_page_count` on every
/// connection (it is per connection and forgotten on close). A write that would grow the file
/// past it fails as on a full disk (`SQLITE_FULL`), and succeeds again once deletions
/// (retention pruning) have freed pages inside the file.
pub async fn connect_limited(url: &str, limit: Option<DatabaseSize>) -> anyhow::Result<SqlitePool> {
    if let Some(path) = sqlite_path(url) {
        create_private(&path)?;
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
        .after_connect(move |conn, _| {
            Box::pin(async move {
                if let Some(limit) = limit {
                    // The page size is the file's own (4096 unless it was created otherwise).
                    let page_size: i64 =
                        sqlx::query_scalar("PRAGMA page_size").fetch_one(&mut *conn).await?;
                    let pages = (limit.bytes() / (page_size.max(512) as u64)).max(1);
                    sqlx::query_scalar::<_, i64>(&format!("PRAGMA max_page_count = {pages}"))
                        .fetch_one(&mut *conn)
                        .await?;
                }
                Ok(())
            })
        })
        .connect_with(options)
        .await?;
    let migrator = sqlx::migrate!("./migrations");
    if let Err(e) = migrator.run(&pool).await {
        return Err(match e {
            // A database migrated by a later vmdeck: running on it could damage it.
            sqlx::migrate::MigrateError::VersionMissing(v) => anyhow::anyhow!(
                "the database was written by a newer vmdeck (it has schema migration {v}; this \
                 vmdeck knows up to {}): run that newer version, or restore a backup taken \
                 before the upgrade",
                migrator.iter().map(|m| m.version).max().unwrap_or(0)
            ),
            e => e.into(),
        });
    }
    let chained = crate::events::chain::backfill(&pool).await?;
    if chained > 0 {
        tracing::info!(
            entries = chained,
            "chained the audit entries written before the hash chain"
        );
    }
    Ok(pool)
}

/// Creates the database file and its missing directories readable by their owner only (0600,
/// 0700): the file holds password hashes and the audit log. SQLite gives its `-wal` and `-shm`
/// files the database file's mode (and, run as root, its owner). An existing file or directory
/// is left as it is.
fn create_private(path: &std::path::Path) -> anyhow::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", parent.display()))?;
    }
    // An empty file is a new SQLite database; creating it here sets its mode.
    match std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path) {
        Ok(file) => give_to_directory_owner(&file, path),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(anyhow::anyhow!("cannot create {}: {e}", path.display())),
    }
}

/// A database file that root just created (an admin's `vmdeck user add` on a server, before
/// the service ever ran) in a directory that belongs to another user (the service's
/// `/var/lib/vmdeck`) is given to that user, as SQLite does for its `-wal` and `-shm` files:
/// left to root, it would lock the service out of its own database.
fn give_to_directory_owner(file: &std::fs::File, path: &std::path::Path) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(".".as_ref());
    let (created, dir) = (file.metadata()?, std::fs::metadata(dir)?);
    if created.uid() == 0 && dir.uid() != 0 {
        std::os::unix::fs::fchown(file, Some(dir.uid()), Some(dir.gid())).map_err(|e| {
            anyhow::anyhow!("cannot give {} to its directory's owner: {e}", path.display())
        })?;
    }
    Ok(())
}

/// Connects at ignite; a database that cannot be opened stops startup with one message.
pub fn stage() -> AdHoc {
    AdHoc::try_on_ignite("SQLite database", |rocket| async move {
        let Some(settings) = rocket.state::<Settings>() else {
            tracing::error!("settings missing at ignite");
            return Err(rocket);
        };
        let url = settings.database_url.clone();
        match connect_limited(&url, settings.database_max_size).await {
            Ok(pool) => Ok(rocket.manage(Db(pool)).manage(std::sync::Arc::new(Storage::default()))),
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

/// Why the database refuses writes, in the words pages and `/healthz` use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageFault {
    /// `SQLITE_FULL`: the disk is full, or the file reached `database_max_size_mb`.
    Full,
    /// `SQLITE_READONLY`: the file, its directory or the filesystem became read-only.
    ReadOnly,
    /// `SQLITE_IOERR`: the operating system failed a read or write.
    Io,
}

impl StorageFault {
    /// The fault behind a database error, if it is one of storage (not of a query or a
    /// constraint): SQLite's primary result code, the low byte of the extended one sqlx gives.
    pub fn of(e: &sqlx::Error) -> Option<StorageFault> {
        let sqlx::Error::Database(db) = e else { return None };
        let code: i64 = db.code()?.parse().ok()?;
        match code & 0xff {
            13 => Some(StorageFault::Full),
            8 => Some(StorageFault::ReadOnly),
            10 => Some(StorageFault::Io),
            _ => None,
        }
    }

    /// `full`, `read-only` or `io-error`, as `/healthz` says it.
    pub fn as_str(self) -> &'static str {
        match self {
            StorageFault::Full => "full",
            StorageFault::ReadOnly => "read-only",
            StorageFault::Io => "io-error",
        }
    }

    /// `database full`, `database read-only`, `database I/O error`.
    pub fn label(self) -> &'static str {
        match self {
            StorageFault::Full => "database full",
            StorageFault::ReadOnly => "database read-only",
            StorageFault::Io => "database I/O error",
        }
    }

    /// What a user should do about it.
    pub fn remedy(self) -> &'static str {
        match self {
            StorageFault::Full => {
                "free space on the disk holding the database (or raise database_max_size_mb); \
                 vmdeck resumes by itself"
            }
            StorageFault::ReadOnly => {
                "make the database file and its directory writable again; vmdeck resumes by itself"
            }
            StorageFault::Io => "check the disk holding the database; vmdeck retries by itself",
        }
    }
}

/// Whether the database currently refuses writes, as Rocket state (`Arc<Storage>`): set by a
/// write that failed for a [`StorageFault`], cleared by the next one that succeeds. The poller
/// writes every interval, so the state is never older than one poll. Power control refuses
/// requests while it is set: a request it could not record must not be sent.
#[derive(Debug, Default)]
pub struct Storage {
    fault: Mutex<Option<StorageFault>>,
}

impl Storage {
    /// Notes a failed write; returns its fault when it is one of storage.
    pub fn failed(&self, e: &sqlx::Error) -> Option<StorageFault> {
        let fault = StorageFault::of(e)?;
        if let Ok(mut f) = self.fault.lock() {
            *f = Some(fault);
        }
        Some(fault)
    }

    /// Notes a successful write: the database takes writes again.
    pub fn stored(&self) {
        if let Ok(mut f) = self.fault.lock() {
            *f = None;
        }
    }

    /// The current fault, if writes are failing.
    pub fn fault(&self) -> Option<StorageFault> {
        self.fault.lock().ok().and_then(|f| *f)
    }
}
