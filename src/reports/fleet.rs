//! The fleet as of a moment: which VMs existed, their state, resources and IP addresses then.

use std::collections::BTreeMap;

use rocket_dyn_templates::Template;
use serde::Serialize;
use sqlx::SqlitePool;

use super::{at_param, input_time, moment_file_name, opt, page_of, store};
use crate::auth::Viewer;
use crate::domain::PowerState;
use crate::history::rollup::RESOLUTIONS;
use crate::web::csv::Csv;
use crate::web::format as view;
use crate::web::pager::Pager;
use crate::web::{App, AppError, Chrome, Notices};

#[derive(Serialize, Clone)]
struct FleetRow {
    host: String,
    name: String,
    uuid: String,
    state: &'static str,
    vcpus: Option<u32>,
    memory_mib: Option<u64>,
    disk_gib: Option<f64>,
    ips: String,
}

async fn fleet_rows(pool: &SqlitePool, at: i64) -> sqlx::Result<Vec<FleetRow>> {
    let mut rows = store::vms_at(pool, at).await?;
    rows.sort_by(|a, b| (&a.1, &a.2).cmp(&(&b.1, &b.2)));
    // The state each VM was seen in by its host's last successful poll at or before `at`.
    let mut states: BTreeMap<i64, PowerState> =
        store::states_at(pool, at).await?.into_iter().collect();
    // Raw samples of that moment may have been pruned: the rollup bucket holding it then says
    // which state the VM spent most of that bucket in.
    if rows.iter().any(|r| !states.contains_key(&r.0)) {
        for res in RESOLUTIONS {
            let bucket = at.div_euclid(1000) - at.div_euclid(1000).rem_euclid(res);
            for (vm, n, up, paused, off) in store::bucket_states(pool, res, bucket).await? {
                states.entry(vm).or_insert_with(|| PowerState::dominant(n, up, paused, off));
            }
        }
    }
    let mut addresses: BTreeMap<i64, Vec<String>> = BTreeMap::new();
    for (vm, addr) in store::addresses_at(pool, at).await? {
        addresses.entry(vm).or_default().push(addr);
    }
    let mut out = Vec::with_capacity(rows.len());
    for (id, host, name, uuid, vcpus, memory_kib, disk_bytes) in rows {
        let mut ips = addresses.remove(&id).unwrap_or_default();
        ips.sort_by_key(|a| a.contains(':'));
        out.push(FleetRow {
            host,
            name,
            uuid,
            state: states.get(&id).copied().unwrap_or(PowerState::Unknown).label(),
            vcpus,
            memory_mib: memory_kib.map(|m| m / 1024),
            disk_gib: disk_bytes.map(|d| d as f64 / f64::from(1u32 << 30)),
            ips: ips.join(" "),
        });
    }
    Ok(out)
}

#[derive(Serialize)]
struct FleetPage {
    title: &'static str,
    chrome: Chrome,
    at: String,
    at_label: String,
    /// One page of the rows; the pager tells how many VMs there are.
    rows: Vec<FleetRow>,
    pager: Pager,
    notices: Notices,
    csv_href: String,
}

#[rocket::get("/reports/fleet?<at>&<page>")]
pub async fn fleet(
    user: Viewer<'_>,
    at: Option<&str>,
    page: Option<&str>,
    app: App<'_>,
) -> Result<Template, AppError> {
    let mut notices = Notices::new();
    let t = at_param(at, &mut notices);
    let rows = fleet_rows(app.pool, t).await?;
    let href = |p| format!("/reports/fleet?at={}&page={p}", input_time(t));
    let (rows, pager) = page_of(rows, page, href, &mut notices);
    Ok(Template::render(
        "reports/fleet",
        FleetPage {
            title: "Fleet as of a moment",
            chrome: Chrome::new(user.0, None, app.settings),
            at: input_time(t),
            at_label: view::absolute(t),
            rows,
            pager,
            notices,
            csv_href: format!("/reports/fleet.csv?at={}", input_time(t)),
        },
    ))
}

#[rocket::get("/reports/fleet.csv?<at>")]
pub async fn fleet_csv(_user: Viewer<'_>, at: Option<&str>, app: App<'_>) -> Result<Csv, AppError> {
    let t = at_param(at, &mut Notices::new());
    let rows = fleet_rows(app.pool, t).await?;
    Ok(Csv::build(
        &moment_file_name("fleet", t),
        &[
            "as_of_utc",
            "host",
            "vm_name",
            "vm_uuid",
            "state",
            "vcpus",
            "memory_mib",
            "disk_gib",
            "ip_addresses",
        ],
        rows.into_iter().map(move |r| {
            vec![
                view::absolute(t),
                r.host,
                r.name,
                r.uuid,
                r.state.to_string(),
                opt(r.vcpus),
                opt(r.memory_mib),
                r.disk_gib.map(|d| format!("{d:.1}")).unwrap_or_default(),
                r.ips,
            ]
        }),
    ))
}
