//! The poller: one supervised task per host, started at liftoff and stopped on shutdown. Each
//! tick takes an inventory through the host's backend and records it (or the failure).
//!
//! Ticks that come due while a poll is still running are skipped, not bunched; a slow or hung
//! host only delays itself.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rocket::fairing::AdHoc;
use serde::Serialize;
use sqlx::SqlitePool;
use tokio::time::MissedTickBehavior;

use crate::backend::Backend;
use crate::config::HostConfig;
use crate::db::{now_ms, Db};
use crate::inventory::store::{self, HostCache, Recorded};

/// A configured host with its backend and poll state, shared by the poller and the web layer.
pub struct HostEntry {
    pub config: HostConfig,
    pub id: i64,
    pub backend: Arc<dyn Backend>,
    cache: tokio::sync::Mutex<HostCache>,
    runtime: Mutex<Runtime>,
}

/// In-memory poll state (the database has the history; this has what is happening now).
#[derive(Debug, Default, Clone, Serialize)]
pub struct Runtime {
    pub polling: bool,
    pub polls: u64,
    pub consecutive_failures: u32,
    pub last_duration_ms: Option<u64>,
}

/// Every configured host, as Rocket state.
pub struct Hosts(pub Vec<Arc<HostEntry>>);

impl Hosts {
    pub fn get(&self, name: &str) -> Option<&Arc<HostEntry>> {
        self.0.iter().find(|h| h.config.name.as_str() == name)
    }
}

impl HostEntry {
    pub fn new(config: HostConfig, id: i64, backend: Arc<dyn Backend>) -> Self {
        HostEntry {
            config,
            id,
            backend,
            cache: tokio::sync::Mutex::default(),
            runtime: Mutex::default(),
        }
    }

    /// Stores one VM's freshly observed state (see [`store::record_state`]).
    pub async fn record_state(
        &self,
        pool: &SqlitePool,
        uuid: &str,
        state: &crate::backend::VmState,
    ) {
        let mut cache = self.cache.lock().await;
        if let Err(e) = store::record_state(pool, &mut cache, self.id, uuid, state, now_ms()).await
        {
            tracing::error!(vm = uuid, "storing an observed state failed: {e}");
            *cache = HostCache::default();
        }
    }

    pub fn runtime(&self) -> Runtime {
        self.runtime.lock().map(|r| r.clone()).unwrap_or_default()
    }

    fn update_runtime(&self, f: impl FnOnce(&mut Runtime)) {
        if let Ok(mut r) = self.runtime.lock() {
            f(&mut r);
        }
    }
}

/// What one poll did.
#[derive(Debug)]
pub enum PollOutcome {
    Recorded(Recorded),
    /// The backend failed; the failure was recorded.
    Failed(String),
}

/// Polls one host once and records the result. Never panics; database errors are logged and
/// returned as a failure.
#[tracing::instrument(skip_all, fields(host = %host.config.name))]
pub async fn poll_once(pool: &SqlitePool, host: &HostEntry) -> PollOutcome {
    host.update_runtime(|r| r.polling = true);
    let started_at = now_ms();
    let clock = Instant::now();
    let result = host.backend.inventory().await;
    let finished_at = now_ms();
    let outcome = match result {
        Ok(reports) => {
            let mut cache = host.cache.lock().await;
            match store::record_success(
                pool,
                &mut cache,
                host.id,
                started_at,
                finished_at,
                &reports,
            )
            .await
            {
                Ok(rec) => {
                    tracing::debug!(
                        vms = rec.vms,
                        new = rec.new_vms,
                        gone = rec.gone_vms,
                        "poll recorded"
                    );
                    PollOutcome::Recorded(rec)
                }
                Err(e) => {
                    tracing::error!("storing the poll failed: {e}");
                    PollOutcome::Failed(format!("storing the poll failed: {e}"))
                }
            }
        }
        Err(e) => {
            let message = e.to_string();
            tracing::warn!("poll failed: {message}");
            if let Err(db) =
                store::record_failure(pool, host.id, started_at, finished_at, &message).await
            {
                tracing::error!("recording the failed poll failed too: {db}");
            }
            PollOutcome::Failed(message)
        }
    };
    let elapsed = clock.elapsed().as_millis() as u64;
    host.update_runtime(|r| {
        r.polling = false;
        r.polls += 1;
        r.last_duration_ms = Some(elapsed);
        match outcome {
            PollOutcome::Recorded(_) => r.consecutive_failures = 0,
            PollOutcome::Failed(_) => r.consecutive_failures += 1,
        }
    });
    outcome
}

/// Starts the poller at liftoff; it stops when Rocket shuts down.
pub fn stage() -> AdHoc {
    AdHoc::on_liftoff("Poller", |rocket| {
        Box::pin(async move {
            let (Some(db), Some(hosts), Some(settings)) = (
                rocket.state::<Db>(),
                rocket.state::<Arc<Hosts>>(),
                rocket.state::<crate::config::Settings>(),
            ) else {
                tracing::error!("poller not started: application state missing");
                return;
            };
            let interval = settings.poll_interval;
            for host in &hosts.0 {
                let shutdown = rocket.shutdown();
                tokio::spawn(supervise(db.0.clone(), host.clone(), interval, shutdown));
            }
            tracing::info!(
                hosts = hosts.0.len(),
                interval_secs = interval.as_secs(),
                "poller started"
            );
        })
    })
}

/// Runs a host's poll loop, restarting it after a panic (which would be a bug) so one host's
/// failure never stops its polling for good.
async fn supervise(
    pool: SqlitePool,
    host: Arc<HostEntry>,
    interval: Duration,
    shutdown: rocket::Shutdown,
) {
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let task = tokio::spawn(poll_loop(pool.clone(), host.clone(), interval));
        let abort = task.abort_handle();
        tokio::select! {
            res = task => match res {
                Ok(()) => return,
                Err(e) if e.is_panic() => {
                    tracing::error!(host = %host.config.name, "poll loop panicked; restarting in 1 s");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Err(_) => return,
            },
            _ = &mut shutdown => {
                abort.abort();
                tracing::info!(host = %host.config.name, "poller stopped");
                return;
            }
        }
    }
}

async fn poll_loop(pool: SqlitePool, host: Arc<HostEntry>, interval: Duration) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
    loop {
        ticker.tick().await;
        poll_once(&pool, &host).await;
    }
}
