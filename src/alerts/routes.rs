//! The Alerts pages: firing alerts and history, one alert with its transitions and
//! acknowledgement, rules, silences; notification targets are `notify::routes`.

use super::notify;

pub fn routes() -> Vec<rocket::Route> {
    let mut routes = rocket::routes![];
    routes.extend(notify::routes());
    routes
}
