//! The inventory: the VM list (`/vms`), the health endpoint (`/healthz`) and the queries behind
//! them. `store` holds the write side the poller uses.

mod list;
pub mod store;

use rocket::response::Redirect;
use rocket::Route;

pub fn routes() -> Vec<Route> {
    rocket::routes![index, list::vm_list, list::healthz]
}

#[rocket::get("/")]
fn index() -> Redirect {
    Redirect::to(rocket::uri!("/vms"))
}
