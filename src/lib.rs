//! vmdeck: a server-rendered web console for libvirt (and later VirtualBox) virtual machines.
//!
//! [`build`] assembles the whole application from a figment; `main.rs` only installs telemetry
//! and launches it, and tests build the same application with their own figment.

pub mod audit;
pub mod auth;
pub mod backend;
pub mod cli;
pub mod config;
pub mod control;
pub mod db;
pub mod demo;
pub mod error;
pub mod history;
pub mod inventory;
pub mod poller;
pub mod reports;
pub mod security;
pub mod telemetry;
pub mod timing;
pub mod view;

use std::sync::Arc;

use rocket::fairing::AdHoc;
use rocket::figment::Figment;
use rocket::fs::FileServer;
use rocket::{Build, Rocket};
use rocket_dyn_templates::Template;

use config::{ConfigError, Settings};
use poller::{HostEntry, Hosts};

/// Builds the application: validated settings, database, hosts and their backends, poller,
/// templates, routes and static files.
pub fn build(figment: Figment) -> Result<Rocket<Build>, ConfigError> {
    let mut settings = Settings::from_figment(&figment)?;
    if settings.demo {
        settings.hosts.push(demo::host(&settings.data_dir())?);
    }
    // Templates and static files are found beside the crate unless configured otherwise, so the
    // binary works from any working directory.
    let figment = figment
        .join(("template_dir", concat!(env!("CARGO_MANIFEST_DIR"), "/templates")))
        .join(("static_dir", concat!(env!("CARGO_MANIFEST_DIR"), "/static")))
        // Rocket would take the client address from any client's X-Real-IP header; vmdeck reads
        // forwarded addresses only from `trusted_proxies` (see auth::client_addr).
        .merge(("ip_header", false));
    let static_dir: String = figment
        .extract_inner("static_dir")
        .map_err(|e| ConfigError { key: "static_dir".into(), message: e.to_string() })?;

    Ok(rocket::custom(figment)
        .manage(settings)
        .manage(auth::state())
        .attach(security::shield())
        .attach(security::SecurityHeaders)
        .attach(telemetry::request_span())
        .attach(timing::ServerTiming)
        .attach(db::stage())
        .attach(hosts_stage())
        .attach(control::stage())
        .attach(poller::stage())
        .attach(audit::retention_stage())
        .attach(history::rollup::stage())
        .attach(first_run_stage())
        .attach(Template::custom(|engines| view::register_filters(&mut engines.tera)))
        .mount("/", inventory::routes())
        .mount("/", auth::routes())
        .mount("/", auth::admin::routes())
        .mount("/", control::routes())
        .mount("/", audit::routes())
        .mount("/", history::routes())
        .mount("/", reports::routes())
        .mount("/static", FileServer::from(static_dir))
        .register("/", error::catchers()))
}

/// Says how to create the first admin (or creates the demo one) once the server is up.
fn first_run_stage() -> AdHoc {
    AdHoc::on_liftoff("First run", |rocket| {
        Box::pin(async move {
            if let (Some(db), Some(settings)) =
                (rocket.state::<db::Db>(), rocket.state::<Settings>())
            {
                auth::first_run(&db.0, settings.demo).await;
                // The first login then costs no extra hash.
                tokio::task::spawn_blocking(auth::password::warm_up);
            }
        })
    })
}

/// Registers the configured hosts in the database and creates one backend per host.
fn hosts_stage() -> AdHoc {
    AdHoc::try_on_ignite("Hosts", |rocket| async move {
        let (Some(settings), Some(db)) = (rocket.state::<Settings>(), rocket.state::<db::Db>())
        else {
            return Err(rocket);
        };
        let ids = match inventory::store::upsert_hosts(&db.0, &settings.hosts, settings.demo).await
        {
            Ok(ids) => ids,
            Err(e) => {
                tracing::error!("cannot register hosts in the database: {e}");
                return Err(rocket);
            }
        };
        let entries = settings
            .hosts
            .iter()
            .zip(ids)
            .map(|(h, id)| {
                Arc::new(HostEntry::new(h.clone(), id, backend::connect(h, settings.call_timeout)))
            })
            .collect();
        Ok(rocket.manage(Arc::new(Hosts(entries))))
    })
}
