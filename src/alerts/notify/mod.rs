//! Notifications: where alerts are sent (targets: Alertmanager, webhook, e-mail), what is due
//! after each evaluation (grouping, repeat interval, resolved notifications), and the sender
//! task that sends the outbox with retries. Nothing here runs inside a poll.
//!
//! `target`: the targets' vocabulary and its one parser (page and `[[alert_targets]]`);
//! `store`: the SQL; `plan`: what is due and the payloads; `send`: one attempt over HTTP or
//! SMTP; `routes`: the targets page.

pub mod plan;
mod routes;
pub mod send;
pub mod store;
pub mod target;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use rocket::{Orbit, Rocket};
use sqlx::SqlitePool;

use crate::alerts::rules::FieldError;
use crate::config::Settings;
use crate::db::now_ms;
use target::TargetFields;

/// Most attempts at one delivery, and its longest life, before it is given up.
pub const MAX_ATTEMPTS: i64 = 10;
pub const GIVE_UP_AFTER_MS: i64 = 24 * 3_600_000;
/// The longest wait between two attempts.
pub const MAX_BACKOFF_MS: i64 = 3_600_000;

/// The notifier, shared by the engine (which calls [`Notifier::after_evaluation`]) and the
/// sender task.
pub struct Notifier {
    pool: SqlitePool,
    resend_ms: i64,
    group_interval_ms: i64,
    repeat_interval_ms: i64,
    retry_ms: i64,
    /// Where links point (`public_url`, else Rocket's address once it listens).
    base: RwLock<String>,
    has_public_url: bool,
    /// How far the evaluations' clock is ahead of the real one (tests drive it ahead): the
    /// sender's clock keeps that lead, so what planning queued "now" is due at once.
    lead_ms: AtomicI64,
    /// Wakes the sender when something was queued.
    wake: tokio::sync::Notify,
    /// Targets with an attempt under way: one at a time per target, never blocking others.
    busy: Mutex<HashSet<i64>>,
    client: reqwest::Client,
}

/// Reads the configuration file's `[[alert_targets]]`; errors name `alert_targets[i].field`.
pub fn file_targets(settings: &Settings) -> anyhow::Result<Vec<target::TargetSpec>> {
    let mut specs: Vec<target::TargetSpec> = Vec::new();
    for (i, table) in settings.alerts.targets.iter().enumerate() {
        let fields: TargetFields =
            table.deserialize().map_err(|e| anyhow::anyhow!("alert_targets[{i}]: {e}"))?;
        let spec = fields.parse().map_err(|FieldError { field, message }| {
            anyhow::anyhow!("alert_targets[{i}].{field}: {message}")
        })?;
        if specs.iter().any(|s| s.name.eq_ignore_ascii_case(&spec.name)) {
            anyhow::bail!("alert_targets[{i}].name: another target is named {}", spec.name);
        }
        specs.push(spec);
    }
    Ok(specs)
}

impl Notifier {
    /// Validates and stores the configuration file's targets.
    pub async fn start(pool: &SqlitePool, settings: &Settings) -> anyhow::Result<Notifier> {
        let specs = file_targets(settings)?;
        let (added, changed, removed) = store::sync_file_targets(pool, &specs, now_ms()).await?;
        if !(added.is_empty() && changed.is_empty() && removed.is_empty()) {
            tracing::info!(
                added = added.len(),
                changed = changed.len(),
                removed = removed.len(),
                "notification targets from the configuration file"
            );
        }
        let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        let a = &settings.alerts;
        let base = settings
            .public_url
            .as_ref()
            .map(|u| u.as_str().trim_end_matches('/').to_string())
            .unwrap_or_else(|| "http://127.0.0.1:8000".into());
        Ok(Notifier {
            pool: pool.clone(),
            resend_ms: ms(a.resend),
            group_interval_ms: ms(a.group_interval),
            repeat_interval_ms: ms(a.repeat_interval),
            retry_ms: ms(a.retry).max(1),
            base: RwLock::new(base),
            has_public_url: settings.public_url.is_some(),
            lead_ms: AtomicI64::new(0),
            wake: tokio::sync::Notify::new(),
            busy: Mutex::new(HashSet::new()),
            client: send::http_client(),
        })
    }

    fn base(&self) -> String {
        self.base.read().map(|b| b.clone()).unwrap_or_default()
    }

    /// The sender's clock: the real one plus the evaluations' lead.
    fn clock(&self) -> i64 {
        now_ms() + self.lead_ms.load(Ordering::Relaxed)
    }

    /// Queues the notifications due at `now` after an evaluation. Reads and writes the
    /// database only; a failure is logged (the next evaluation plans again).
    /// `rules` are the ones the evaluation read (their conditions describe the alerts).
    pub async fn after_evaluation(&self, now: i64, rules: &[crate::alerts::store::StoredRule]) {
        self.lead_ms.fetch_max(now - now_ms(), Ordering::Relaxed);
        match self.plan(now, rules).await {
            Ok(0) => {}
            Ok(_) => self.wake.notify_one(),
            Err(e) => tracing::error!("planning notifications failed: {e}"),
        }
    }

    async fn plan(
        &self,
        now: i64,
        rules: &[crate::alerts::store::StoredRule],
    ) -> sqlx::Result<usize> {
        let targets: Vec<store::Target> =
            store::targets(&self.pool).await?.into_iter().filter(|t| t.enabled).collect();
        if targets.is_empty() {
            return Ok(0);
        }
        let firing = plan::firing_alerts(&self.pool).await?;
        let silences = crate::alerts::store::active_silences(&self.pool, now).await?;
        let descriptions: HashMap<i64, String> =
            rules.iter().map(|r| (r.id, r.spec.condition.describe())).collect();
        let base = self.base();
        let ctx = plan::Context {
            now,
            base: &base,
            resend_ms: self.resend_ms,
            group_interval_ms: self.group_interval_ms,
            repeat_interval_ms: self.repeat_interval_ms,
            descriptions: &descriptions,
        };
        let mut queued = 0;
        for t in &targets {
            match plan::plan_target(&self.pool, &ctx, t, &firing, &silences).await {
                Ok(list) => {
                    for q in list {
                        store::queue(&self.pool, &q, now).await?;
                        queued += 1;
                    }
                }
                Err(e) => tracing::error!(target = %t.name, "planning notifications failed: {e}"),
            }
        }
        Ok(queued)
    }

    /// Starts the sender task (until shutdown).
    pub fn run_sender(notifier: Arc<Notifier>, rocket: &Rocket<Orbit>) {
        if !notifier.has_public_url {
            let c = rocket.config();
            let addr = std::net::SocketAddr::new(c.address, c.port);
            if let Ok(mut b) = notifier.base.write() {
                *b = format!("http://{addr}");
            }
        }
        tokio::spawn(sender(notifier, rocket.shutdown()));
    }

    /// Sends what is due now, each target in its own task; returns when the next is due.
    async fn send_due(self: &Arc<Self>) -> sqlx::Result<Option<i64>> {
        let now = self.clock();
        let due = store::due(&self.pool, now, 500).await?;
        let mut by_target: HashMap<i64, Vec<store::Due>> = HashMap::new();
        for d in due {
            by_target.entry(d.target_id).or_default().push(d);
        }
        for (target_id, list) in by_target {
            let claimed = self.busy.lock().map(|mut b| b.insert(target_id)).unwrap_or(false);
            if !claimed {
                continue;
            }
            let me = self.clone();
            tokio::spawn(async move {
                me.send_target(target_id, list).await;
                if let Ok(mut b) = me.busy.lock() {
                    b.remove(&target_id);
                }
                me.wake.notify_one();
            });
        }
        store::next_due(&self.pool).await
    }

    async fn send_target(&self, target_id: i64, list: Vec<store::Due>) {
        let target = match store::target(&self.pool, target_id).await {
            Ok(Some(t)) => t,
            Ok(None) => return,
            Err(e) => {
                tracing::error!("reading notification target {target_id}: {e}");
                return;
            }
        };
        for d in list {
            let result = send::send(&self.client, &target, &d.payload).await;
            let now = self.clock();
            let written = match result {
                Ok(()) => {
                    tracing::info!(target = %target.name, delivery = d.id, "notification sent");
                    store::sent(&self.pool, &d, now).await
                }
                Err(error) => {
                    let attempts = d.attempts + 1;
                    let give_up =
                        attempts >= MAX_ATTEMPTS || now - d.created_at >= GIVE_UP_AFTER_MS;
                    let next = (!give_up).then(|| now + backoff(self.retry_ms, attempts));
                    tracing::warn!(
                        target = %target.name,
                        delivery = d.id,
                        attempts,
                        given_up = give_up,
                        "notification failed: {error}"
                    );
                    store::failed(&self.pool, &d, &error, next, now).await
                }
            };
            if let Err(e) = written {
                tracing::error!(target = %target.name, "recording a notification's outcome: {e}");
            }
        }
    }
}

/// The wait before attempt `attempts + 1`: `retry × 2^(attempts-1)`, at most an hour.
pub fn backoff(retry_ms: i64, attempts: i64) -> i64 {
    let doublings = u32::try_from((attempts - 1).clamp(0, 30)).unwrap_or(30);
    retry_ms.saturating_mul(1_i64 << doublings).min(MAX_BACKOFF_MS)
}

async fn sender(notifier: Arc<Notifier>, shutdown: rocket::Shutdown) {
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let wait = match notifier.send_due().await {
            Ok(Some(next)) => {
                Duration::from_millis(u64::try_from(next - notifier.clock()).unwrap_or(0))
            }
            Ok(None) => Duration::from_secs(30),
            Err(e) => {
                tracing::error!("reading the notification outbox: {e}");
                Duration::from_secs(5)
            }
        };
        // At least a moment (a target busy with an attempt leaves its due rows due), at most
        // a few seconds (retries of targets that were busy).
        let wait = wait.clamp(Duration::from_millis(100), Duration::from_secs(5));
        tokio::select! {
            _ = notifier.wake.notified() => {}
            _ = tokio::time::sleep(wait) => {}
            _ = &mut shutdown => return,
        }
    }
}

/// The notification targets' pages (admins).
pub fn routes() -> Vec<rocket::Route> {
    routes::routes()
}

#[cfg(test)]
mod tests {
    #[test]
    fn backoff_doubles_up_to_an_hour() {
        assert_eq!(super::backoff(10_000, 1), 10_000);
        assert_eq!(super::backoff(10_000, 2), 20_000);
        assert_eq!(super::backoff(10_000, 4), 80_000);
        assert_eq!(super::backoff(10_000, 30), 3_600_000);
    }
}
