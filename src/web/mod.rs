//! What every page uses: the page chrome (who is logged in, the flash message, the demo
//! marker), notices, the pager, CSV downloads, the power buttons, the console link, charts, formatting, and the
//! error type with its error pages. Features build their pages from these; nothing here knows
//! about a particular feature.

pub mod assets;
pub mod chart;
pub mod console;
pub mod csv;
pub mod error;
pub mod format;
pub mod live;
pub mod pager;
pub mod power;

use rocket::request::FlashMessage;
use serde::Serialize;

use crate::config::Settings;
use crate::domain::{CurrentUser, Role};

pub use error::AppError;

/// The chrome every logged-in page shares: who is logged in, the flash message, demo marker.
#[derive(Serialize)]
pub struct Chrome {
    pub user: CurrentUser,
    pub is_operator: bool,
    pub is_admin: bool,
    pub flash: Option<FlashView>,
    pub demo: bool,
}

#[derive(Serialize)]
pub struct FlashView {
    pub kind: String,
    pub message: String,
}

impl Chrome {
    pub fn new(user: &CurrentUser, flash: Option<FlashMessage<'_>>, settings: &Settings) -> Chrome {
        Chrome {
            is_operator: user.can(Role::Operator),
            is_admin: user.can(Role::Admin),
            user: user.clone(),
            flash: flash.map(|f| FlashView {
                kind: f.kind().to_string(),
                message: f.message().to_string(),
            }),
            demo: settings.demo,
        }
    }
}

/// Whether a checkbox's submitted value means checked (HTML sends `on`; hand-made forms and
/// tests may send `true`, `1` or `yes`).
pub fn checked(v: &str) -> bool {
    matches!(v, "on" | "true" | "1" | "yes")
}

/// Whether `target` can be a redirect's `Location` as it is. Rocket answers a redirect to text
/// that is not a URI (a space, a non-ASCII or control character) with a 500, so a target taken
/// from a request is checked with this first.
pub fn redirectable(target: &str) -> bool {
    rocket::http::uri::Reference::parse(target).is_ok()
}

/// What a page says about its query: parameters it could not use and what it did instead.
/// Shown above the page's content (`macros::notices`); never an error page.
pub type Notices = Vec<String>;

/// A choice in a `<select>`.
#[derive(Serialize)]
pub struct SelectOption {
    pub value: String,
    pub label: String,
    pub selected: bool,
}

impl SelectOption {
    pub fn new(value: impl Into<String>, label: impl Into<String>, selected: bool) -> Self {
        SelectOption { value: value.into(), label: label.into(), selected }
    }
}

/// `path?query`, or `path` alone when the query is empty.
pub fn with_query(path: &str, query: &str) -> String {
    if query.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{query}")
    }
}

/// Cuts a query parameter to `max` characters (trimmed), saying so when it was longer.
pub fn bounded_text(value: &str, max: usize, what: &str, notices: &mut Notices) -> String {
    let v = value.trim();
    if v.chars().count() > max {
        notices.push(format!("The {what} was cut to {max} characters."));
        v.chars().take(max).collect()
    } else {
        v.to_string()
    }
}

/// An IP address as every page shows it: the address, and where it came from on hover.
#[derive(Serialize)]
pub struct IpAddressView {
    pub text: String,
    /// `192.0.2.10/24 on 52:54:00:aa:bb:cc (from the guest agent)`.
    pub title: String,
}

impl From<&crate::backend::IpAddress> for IpAddressView {
    fn from(ip: &crate::backend::IpAddress) -> Self {
        IpAddressView {
            text: ip.addr.to_string(),
            title: format!(
                "{}/{} on {} (from the {})",
                ip.addr,
                ip.prefix,
                ip.mac,
                ip.source.label()
            ),
        }
    }
}

/// The application's shared state as one request guard: the database pool, the validated
/// settings and the host registry. Handlers take this instead of three `&State<…>` arguments.
pub struct App<'r> {
    pub pool: &'r sqlx::SqlitePool,
    pub settings: &'r Settings,
    pub hosts: &'r crate::hosts::Hosts,
}

#[rocket::async_trait]
impl<'r> rocket::request::FromRequest<'r> for App<'r> {
    type Error = &'static str;

    async fn from_request(
        req: &'r rocket::Request<'_>,
    ) -> rocket::request::Outcome<Self, Self::Error> {
        let rocket = req.rocket();
        match (
            rocket.state::<crate::db::Db>(),
            rocket.state::<Settings>(),
            rocket.state::<std::sync::Arc<crate::hosts::Hosts>>(),
        ) {
            (Some(db), Some(settings), Some(hosts)) => {
                rocket::request::Outcome::Success(App { pool: &db.0, settings, hosts })
            }
            _ => rocket::request::Outcome::Error((
                rocket::http::Status::InternalServerError,
                "application state missing",
            )),
        }
    }
}
