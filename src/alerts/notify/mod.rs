//! Notifications: where alerts are sent (targets: Alertmanager, webhook, e-mail), what is due
//! after each evaluation (grouping, repeat interval, resolved notifications), and the sender
//! task that sends the outbox with retries. Nothing here runs inside a poll.

use std::sync::Arc;

use rocket::{Orbit, Rocket};
use sqlx::SqlitePool;

use crate::config::Settings;

/// The notifier, shared by the engine (which calls [`Notifier::after_evaluation`]) and the
/// sender task.
pub struct Notifier {
    #[allow(dead_code)]
    pool: SqlitePool,
}

impl Notifier {
    /// Validates and stores the configuration file's targets.
    pub async fn start(pool: &SqlitePool, _settings: &Settings) -> anyhow::Result<Notifier> {
        Ok(Notifier { pool: pool.clone() })
    }

    /// Queues the notifications due at `now` after an evaluation.
    pub async fn after_evaluation(&self, _now: i64) {}

    /// Starts the sender task (until shutdown).
    pub fn run_sender(_notifier: Arc<Notifier>, _rocket: &Rocket<Orbit>) {}
}

/// The notification targets' pages (admins).
pub fn routes() -> Vec<rocket::Route> {
    rocket::routes![]
}
