//! The audit log: who asked for what, when, from where, and what actually happened.
//! `GET /audit` shows it filtered and paginated; `GET /audit.csv` downloads the same view.
//! `store` holds the page's reads and retention; `chain` verifies the log's hash chain
//! (`vmdeck audit verify`). Entries are written through `events` and `control::store`.

pub mod chain;
mod routes;
pub mod store;

use crate::config::Settings;
use crate::db::Db;

pub use routes::routes;

/// Prunes the audit log hourly when a retention is configured, from the old end of its hash
/// chain (`store::prune`).
pub fn retention_stage() -> rocket::fairing::AdHoc {
    rocket::fairing::AdHoc::on_liftoff("Audit retention", |rocket| {
        Box::pin(async move {
            let (Some(db), Some(settings)) = (rocket.state::<Db>(), rocket.state::<Settings>())
            else {
                return;
            };
            let Some(days) = settings.audit_retention_days else { return };
            let pool = db.0.clone();
            crate::background::every(
                rocket,
                "audit retention",
                std::time::Duration::from_secs(3600),
                move || {
                    let pool = pool.clone();
                    async move {
                        match store::prune(&pool, days).await {
                            Ok(0) => {}
                            Ok(n) => tracing::info!(removed = n, days, "pruned old audit entries"),
                            Err(e) => tracing::error!("audit pruning failed: {e}"),
                        }
                    }
                },
            );
        })
    })
}
