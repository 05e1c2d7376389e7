//! The built-in demo: its host (libvirt's test driver loaded with the lab shipped in
//! `demo/lab.xml`), and the month of history its database starts with (`history`), written at
//! ignite, before the poller's first poll, and marked as demo data on every page.
//!
//! `snapshots` gives a few demo VMs a snapshot tree at every start.
//!
//! Nothing imports this module but `lib.rs`; it writes through `hosts::store`,
//! `history::rollup` and `control::store`, as the poller and the power forms do.

pub mod history;
pub mod snapshots;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use rocket::fairing::AdHoc;
use rocket_dyn_templates::tera::{self, Tera};

use crate::backend::{libvirt::LibvirtSettings, DriverConfig};
use crate::config::{ConfigError, HostConfig, HostName, HostUri, DEMO_HOST};

/// The demo lab's node definition, embedded so the binary runs from anywhere.
pub const LAB_XML: &str = include_str!("../../demo/lab.xml");

/// Writes the lab definition into `data_dir` (libvirt's test driver reads a file by absolute
/// path) and returns the demo host.
pub fn host(data_dir: &Path) -> Result<HostConfig, ConfigError> {
    let err = |message: String| ConfigError { key: "database_url".into(), message };
    // Owner-only, like the database that will live beside it (see `db`).
    std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
        .create(data_dir)
        .map_err(|e| err(format!("cannot create data directory {}: {e}", data_dir.display())))?;
    let path = data_dir.join("demo-lab.xml");
    std::fs::write(&path, LAB_XML)
        .map_err(|e| err(format!("cannot write {}: {e}", path.display())))?;
    let abs = std::fs::canonicalize(&path).map_err(|e| err(format!("{}: {e}", path.display())))?;
    let uri = HostUri::parse(&format!("test://{}", abs.display()))
        .map_err(|m| err(format!("demo lab path {}: {m}", abs.display())))?;
    Ok(HostConfig::new(
        HostName::parse(DEMO_HOST).expect("the demo host name is valid"),
        DriverConfig::Libvirt(LibvirtSettings::new(uri)),
    ))
}

/// Where the demo's generated history ends (ms), once the seeding stage knows: pages say that
/// what came before is demo data. Shared by the stage and the templates of one application.
#[derive(Clone, Default)]
pub struct GeneratedUntil(Arc<OnceLock<i64>>);

/// Seeds the demo database with its month of history (see [`history::seed`]) when vmdeck
/// runs its demo; nothing otherwise. At ignite, after the hosts are registered and before the
/// poller's first poll at liftoff; a failure is logged and the demo starts without history.
pub fn stage(generated: GeneratedUntil) -> AdHoc {
    AdHoc::on_ignite("Demo history", move |rocket| async move {
        let (Some(settings), Some(db), Some(hosts)) = (
            rocket.state::<crate::config::Settings>(),
            rocket.state::<crate::db::Db>(),
            rocket.state::<Arc<crate::hosts::Hosts>>(),
        ) else {
            return rocket;
        };
        let Some(host) = hosts.get(DEMO_HOST).filter(|_| settings.demo) else { return rocket };
        let clock = Instant::now();
        let interval = settings.poll_interval.as_millis() as i64;
        match history::seed(&db.0, host, interval, crate::db::now_ms()).await {
            Ok(history::Seeded::Now(g, polls)) => {
                tracing::info!(
                    polls,
                    ms = clock.elapsed().as_millis() as u64,
                    "demo: generated {} days of history",
                    history::DAYS
                );
                let _ = generated.0.set(g.until);
                seed_alert_rules(&db.0, crate::db::now_ms()).await;
            }
            Ok(history::Seeded::Before(g)) => {
                let _ = generated.0.set(g.until);
            }
            Ok(history::Seeded::Skipped) => {
                tracing::info!("demo: the database has history already; none generated")
            }
            Err(e) => tracing::error!("demo: generating history failed: {e}"),
        }
        snapshots::seed(&db.0, host, crate::db::now_ms()).await;
        rocket
    })
}

/// A few alert rules for a fresh demo database, so its Alerts page has something to show: the
/// lab's crashed mail relay should run, and the usual host and CPU rules. Added once, with the
/// history; an admin may change or remove them like any page rule.
async fn seed_alert_rules(pool: &sqlx::SqlitePool, now: i64) {
    use crate::alerts::rules::RuleFields;
    use crate::alerts::store::{insert_rule, Source};
    let rule = |name: &str, condition: &str| RuleFields {
        name: name.into(),
        condition: condition.into(),
        ..RuleFields::default()
    };
    let rules = [
        RuleFields {
            expected: "running".into(),
            scope: "pattern".into(),
            scope_value: "mail-*".into(),
            severity: "critical".into(),
            ..rule("mail must run", "vm_state")
        },
        RuleFields {
            severity: "critical".into(),
            for_: "1m".into(),
            ..rule("host unreachable", "host_unreachable")
        },
        RuleFields {
            threshold: "90".into(),
            for_: "5m".into(),
            ..rule("CPU above 90 %", "cpu_above")
        },
        RuleFields {
            threshold: "30".into(),
            severity: "info".into(),
            ..rule("snapshots older than 30 days", "snapshot_age")
        },
    ];
    for fields in rules {
        let added = match fields.parse() {
            Ok(spec) => insert_rule(pool, &spec, Source::Page, "demo", now)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = added {
            tracing::error!(rule = %fields.name, "demo: adding an alert rule failed: {e}");
        }
    }
}

/// Gives templates `demo_history_until()`: when the demo's generated history ends, as the
/// pages show times, or nothing outside the demo and before it is known.
pub fn register_template_functions(tera: &mut Tera, generated: GeneratedUntil) {
    tera.register_function(
        "demo_history_until",
        move |_: &HashMap<String, tera::Value>| -> tera::Result<tera::Value> {
            Ok(match generated.0.get() {
                Some(until) => tera::Value::String(crate::web::format::absolute(*until)),
                None => tera::Value::Null,
            })
        },
    );
}
