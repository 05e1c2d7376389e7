//! The poller: one supervised task per host, started at liftoff and stopped on shutdown. Each
//! tick polls the host through the registry ([`HostEntry::poll`]), which records the inventory
//! (or the failure).
//!
//! Ticks that come due while a poll is still running are skipped, not bunched; a slow or hung
//! host only delays itself.

use std::sync::Arc;
use std::time::Duration;

use rocket::fairing::AdHoc;
use sqlx::SqlitePool;
use tokio::time::MissedTickBehavior;

use crate::config::Settings;
use crate::db::Db;
use crate::hosts::{HostEntry, Hosts};

/// Starts the poller at liftoff; it stops when Rocket shuts down.
pub fn stage() -> AdHoc {
    AdHoc::on_liftoff("Poller", |rocket| {
        Box::pin(async move {
            let (Some(db), Some(hosts), Some(settings)) =
                (rocket.state::<Db>(), rocket.state::<Arc<Hosts>>(), rocket.state::<Settings>())
            else {
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
        host.poll(&pool).await;
    }
}
