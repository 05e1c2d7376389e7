//! Alerts: rules over what the poller stored, evaluated after every poll, with the lifecycle
//! operators know from Prometheus and Alertmanager (inactive → pending → firing → resolved),
//! acknowledgements, silences, and notifications (`notify`: Alertmanager, webhook, e-mail).
//!
//! `rules`: the rule vocabulary and its one parser (page and configuration file); `eval`: pure
//! evaluation (which subjects hold, how open alerts move); `store`: the SQL; `routes`: the
//! pages. [`AlertEngine::evaluate`] is the whole evaluation, driven after each poll (and every
//! [`TICK`]) by `stage`, and by tests with a "now" of their choosing: the engine's clock never
//! goes back, so a test's clock ahead of the real one is not undone by the next real poll.

pub mod eval;
pub mod notify;
pub mod routes;
pub mod rules;
pub mod store;

use std::sync::Arc;
use std::time::{Duration, Instant};

use rocket::fairing::AdHoc;
use sha2::{Digest, Sha256};
use sqlx::SqlitePool;

use crate::config::Settings;
use crate::db::{now_ms, Db};
use crate::hosts::{Hosts, PollSignal};
use store::Applied;

pub use routes::routes;

/// Evaluation also runs this often without polls: `for` durations, look-back windows and
/// snapshot ages move with the clock alone.
pub const TICK: Duration = Duration::from_secs(30);

/// A stable identity for one rule's alert about one subject (16 hex digits of SHA-256):
/// Alertmanager's and the webhook's `fingerprint`, the same across restarts.
pub fn fingerprint(rule_name: &str, subject: &str) -> String {
    let mut h = Sha256::new();
    h.update(rule_name.to_lowercase().as_bytes());
    h.update([0]);
    h.update(subject.as_bytes());
    h.finalize()[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// The evaluator, as Rocket state (`Arc<AlertEngine>`).
pub struct AlertEngine {
    pool: SqlitePool,
    hosts: Arc<Hosts>,
    notifier: Arc<notify::Notifier>,
    /// The latest "now" evaluated; one evaluation at a time.
    clock: tokio::sync::Mutex<i64>,
}

/// What one evaluation read, found and wrote, and what each part took.
#[derive(Debug, Clone, Default)]
pub struct Evaluation {
    pub now: i64,
    pub rules: usize,
    pub vms: usize,
    pub hits: usize,
    pub applied: Applied,
    pub read: Duration,
    pub judged: Duration,
    pub written: Duration,
    pub notified: Duration,
}

impl AlertEngine {
    pub fn new(pool: SqlitePool, hosts: Arc<Hosts>, notifier: Arc<notify::Notifier>) -> Self {
        AlertEngine { pool, hosts, notifier, clock: tokio::sync::Mutex::new(i64::MIN) }
    }

    pub fn notifier(&self) -> &Arc<notify::Notifier> {
        &self.notifier
    }

    /// Evaluates every rule at `now` (ms; an earlier time than the last evaluation's counts as
    /// that one), writes the transitions, and hands the result to the notifier, which queues
    /// what is due (its sender task sends; nothing here waits for a target).
    pub async fn evaluate(&self, now: i64) -> anyhow::Result<Evaluation> {
        let mut clock = self.clock.lock().await;
        let now = now.max(*clock);
        *clock = now;
        let started = Instant::now();
        let stored = store::rules(&self.pool).await?;
        let rules = store::eval_rules(&stored);
        let configured = self.hosts.names();
        let facts = store::facts(&self.pool, &rules, &configured, now).await?;
        let open = store::open_alerts(&self.pool).await?;
        let read = started.elapsed();
        let started = Instant::now();
        let hits = eval::hits(&rules, &facts);
        let n_hits = hits.len();
        let stale = eval::stale_hosts(&facts);
        let steps = eval::advance(&rules, &open, hits, &stale, now);
        let judged = started.elapsed();
        let started = Instant::now();
        let applied = store::apply(&self.pool, &rules, steps, now).await?;
        let written = started.elapsed();
        let started = Instant::now();
        self.notifier.after_evaluation(now, &stored).await;
        let notified = started.elapsed();
        if applied.transitions() > 0 {
            tracing::info!(
                started = applied.started,
                fired = applied.fired,
                resolved = applied.resolved,
                inactive = applied.inactive,
                "alerts moved"
            );
        }
        Ok(Evaluation {
            now,
            rules: rules.len(),
            vms: facts.vms.len(),
            hits: n_hits,
            applied,
            read,
            judged,
            written,
            notified,
        })
    }
}

/// Writes the configuration file's rules into the database and manages the engine and the
/// notifier at ignite; at liftoff, evaluates after every poll and every [`TICK`], and starts
/// the notifier's sender.
pub fn stage() -> AdHoc {
    AdHoc::on_ignite("Alerts", |rocket| async move {
        rocket
            .attach(AdHoc::try_on_ignite("Alert rules", |rocket| async move {
                let (Some(db), Some(settings), Some(hosts)) =
                    (rocket.state::<Db>(), rocket.state::<Settings>(), rocket.state::<Arc<Hosts>>())
                else {
                    return Err(rocket);
                };
                match store::sync_file_rules(&db.0, &settings.alerts.rules, now_ms()).await {
                    Ok(s) => {
                        for name in &s.taken_over {
                            tracing::warn!(rule = %name, "an alert rule made on the page is now defined by the configuration file, which wins");
                        }
                        if s != store::Synced::default() {
                            tracing::info!(added = s.added.len(), changed = s.changed.len(), removed = s.removed.len(), "alert rules from the configuration file");
                        }
                    }
                    Err(e) => {
                        tracing::error!("cannot write the configuration file's alert rules: {e}");
                        return Err(rocket);
                    }
                }
                let notifier = match notify::Notifier::start(&db.0, settings).await {
                    Ok(n) => Arc::new(n),
                    Err(e) => {
                        tracing::error!("alert targets: {e}");
                        return Err(rocket);
                    }
                };
                let engine = AlertEngine::new(db.0.clone(), hosts.clone(), notifier);
                Ok(rocket.manage(Arc::new(engine)))
            }))
            .attach(AdHoc::on_liftoff("Alert evaluation", |rocket| {
                Box::pin(async move {
                    let (Some(engine), Some(signal)) =
                        (rocket.state::<Arc<AlertEngine>>(), rocket.state::<Arc<PollSignal>>())
                    else {
                        tracing::error!("alert evaluation not started: application state missing");
                        return;
                    };
                    notify::Notifier::run_sender(engine.notifier().clone(), rocket);
                    tokio::spawn(evaluate_after_polls(
                        engine.clone(),
                        signal.subscribe(),
                        rocket.shutdown(),
                    ));
                })
            }))
    })
}

async fn evaluate_after_polls(
    engine: Arc<AlertEngine>,
    mut polls: tokio::sync::watch::Receiver<u64>,
    shutdown: rocket::Shutdown,
) {
    let mut shutdown = std::pin::pin!(shutdown);
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            changed = polls.changed() => if changed.is_err() { return },
            _ = tick.tick() => {}
            _ = &mut shutdown => return,
        }
        // A panic here would be a bug; it must not end evaluation for good.
        let engine2 = engine.clone();
        match tokio::spawn(async move { engine2.evaluate(now_ms()).await }).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::error!("alert evaluation failed: {e}"),
            Err(e) => tracing::error!("alert evaluation panicked: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn fingerprints_are_stable_and_distinct() {
        let a = super::fingerprint("VM down", "vm:lab/6695eb01-f6a4-8304-79aa-97f2502e193f");
        assert_eq!(a.len(), 16);
        assert_eq!(a, super::fingerprint("vm down", "vm:lab/6695eb01-f6a4-8304-79aa-97f2502e193f"));
        assert_ne!(a, super::fingerprint("VM down", "host:lab"));
    }
}
