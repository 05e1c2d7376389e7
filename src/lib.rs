//! vmdeck: a server-rendered web console for libvirt and VirtualBox virtual machines.
//!
//! [`build`] assembles the whole application from a figment; `main.rs` only installs telemetry
//! and launches it, and tests build the same application with their own figment.

//!
//! Layers, lowest first (see ARCHITECTURE.md): `domain` (shared vocabulary), plumbing
//! (`config`, `db`, `telemetry`, `security`, `timing`, `background`, `events`), `backend` (one folder
//! per hypervisor driver), `hosts` (the registry and what it records) and `poller`, `web`
//! (what every page uses), then the features: `inventory`, `history`, `reports`, `control`,
//! `schedules`, `audit`, `auth`, `console`, `metrics`, `alerts`.

pub mod alerts;
pub mod audit;
pub mod auth;
pub mod backend;
pub mod background;
pub mod cli;
pub mod config;
pub mod console;
pub mod control;
pub mod db;
pub mod demo;
pub mod domain;
pub mod events;
pub mod history;
pub mod hosts;
pub mod inventory;
pub mod metrics;
pub mod poller;
pub mod reports;
pub mod schedules;
pub mod security;
pub mod telemetry;
pub mod timing;
pub mod web;

use rocket::fairing::AdHoc;
use rocket::figment::Figment;
use rocket::fs::FileServer;
use rocket::{Build, Rocket};
use rocket_dyn_templates::Template;

use config::{ConfigError, Settings};

/// Builds the application: validated settings, database, hosts and their backends, poller,
/// templates, routes and static files.
pub fn build(figment: Figment) -> Result<Rocket<Build>, ConfigError> {
    let mut settings = Settings::from_figment(&figment)?;
    if settings.demo {
        settings.hosts.push(demo::host(&settings.data_dir())?);
    }
    // Templates and static files are built in (see web::assets) unless configured otherwise.
    let configured = |key: &str| -> Result<Option<String>, ConfigError> {
        match figment.find_value(key) {
            Err(_) => Ok(None),
            Ok(_) => figment
                .extract_inner::<String>(key)
                .map(Some)
                .map_err(|e| ConfigError { key: key.into(), message: e.to_string() }),
        }
    };
    let static_dir = configured("static_dir")?;
    let template_dir = match configured("template_dir")? {
        Some(dir) => dir,
        None => {
            let data_dir = settings.data_dir();
            let unpacked = web::assets::unpack_templates(&data_dir).map_err(|e| ConfigError {
                key: "template_dir".into(),
                message: format!(
                    "cannot unpack the built-in templates into {}: {e}",
                    data_dir.display()
                ),
            })?;
            unpacked.display().to_string()
        }
    };
    let figment = figment
        .merge(("template_dir", template_dir))
        // Rocket would take the client address from any client's X-Real-IP header; vmdeck reads
        // forwarded addresses only from `trusted_proxies` (see auth::client_addr).
        .merge(("ip_header", false));
    let rocket = match static_dir {
        Some(dir) => rocket::custom(figment).mount("/static", FileServer::from(dir)),
        None => rocket::custom(figment).mount("/", rocket::routes![web::assets::asset]),
    };

    // The end of the demo's generated history, known at ignite, shown by every page.
    let generated = demo::GeneratedUntil::default();
    let templates = {
        let generated = generated.clone();
        Template::custom(move |engines| {
            demo::register_template_functions(&mut engines.tera, generated.clone());
            engines.tera.register_filter("utc_time", web::format::utc_time_filter);
        })
    };

    Ok(rocket
        .manage(settings)
        .manage(auth::state())
        .manage(inventory::Snapshots::default())
        .attach(security::shield())
        .attach(security::SecurityHeaders)
        .attach(telemetry::request_span())
        .attach(timing::ServerTiming)
        .attach(db::stage())
        .attach(hosts::stage())
        .attach(demo::stage(generated))
        .attach(control::stage())
        .attach(console::stage())
        .attach(metrics::stage())
        .attach(schedules::stage())
        .attach(alerts::stage())
        .attach(poller::stage())
        .attach(audit::retention_stage())
        .attach(history::rollup::stage())
        .attach(first_run_stage())
        .attach(templates)
        .mount("/", inventory::routes())
        .mount("/", auth::routes())
        .mount("/", auth::admin::routes())
        .mount("/", auth::account::routes())
        .mount("/", control::routes())
        .mount("/", console::routes())
        .mount("/", metrics::routes())
        .mount("/", alerts::routes())
        .mount("/", audit::routes())
        .mount("/", history::routes())
        .mount("/", reports::routes())
        .mount("/", schedules::routes())
        .register("/", web::error::catchers())
        .register("/", auth::catchers()))
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
