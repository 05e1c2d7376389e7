//! The inventory: the VM list (`/vms`) with each host's poll health, and `/healthz`.
//! `list` builds the list page from a typed query (and `/vms/live`, its changing parts),
//! `health` the host banners and the JSON endpoint, `store` holds their SQL. `snapshot` keeps
//! the list's rows in memory between polls and `rows` renders them.

mod health;
mod list;
mod rows;
mod snapshot;
mod store;

use rocket::response::Redirect;
use rocket::Route;

pub use health::{host_statuses, HostStatus};
pub use snapshot::Snapshots;

pub fn routes() -> Vec<Route> {
    rocket::routes![index, list::vm_list, list::vm_list_live, health::healthz]
}

#[rocket::get("/")]
fn index() -> Redirect {
    Redirect::to(rocket::uri!("/vms"))
}
