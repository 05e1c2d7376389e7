//! Background jobs that run on a timer from liftoff until shutdown (rollup maintenance, audit
//! retention). The poller has its own supervised loop per host (`poller`).

use std::future::Future;
use std::time::Duration;

use rocket::{Orbit, Rocket};
use tokio::time::MissedTickBehavior;

/// Runs `job` now and then every `period` until Rocket shuts down. A run that overruns the
/// period delays the next one instead of bunching runs up.
pub fn every<F, Fut>(rocket: &Rocket<Orbit>, name: &'static str, period: Duration, mut job: F)
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let mut shutdown = rocket.shutdown();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                _ = tick.tick() => job().await,
                _ = &mut shutdown => {
                    tracing::debug!(job = name, "stopped");
                    return;
                }
            }
        }
    });
}
