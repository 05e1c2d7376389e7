//! The web layer's error type and the HTML error pages. What the user reads is kept apart from
//! the cause, which is only logged.

use rocket::http::Status;
use rocket::response::{self, Responder};
use rocket::{Catcher, Request};
use rocket_dyn_templates::{context, Template};

use crate::config::Settings;
use crate::db::StorageFault;
use crate::domain::CurrentUser;
use crate::web::Chrome;

/// An error a route returns.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// 404: the thing asked for does not exist; the message says which.
    #[error("{0}")]
    NotFound(String),
    /// 400: the request itself is wrong; the message says how.
    #[error("{0}")]
    BadRequest(String),
    /// 503: the database refuses writes (full, read-only...), so nothing was done; the message
    /// says why and that vmdeck resumes by itself.
    #[error("{0}")]
    Unavailable(String),
    /// 500: a fault of vmdeck's; the cause is logged, the user sees a generic message.
    #[error("internal error")]
    Internal(#[from] anyhow::Error),
}

impl From<sqlx::Error> for AppError {
    /// A storage fault (full, read-only) is said plainly as a 503; anything else is a 500.
    fn from(e: sqlx::Error) -> Self {
        match StorageFault::of(&e) {
            Some(fault) => {
                tracing::error!("{}: a request's write failed: {e}", fault.label());
                AppError::Unavailable(format!(
                    "{} Your request could not be completed.",
                    unavailable(fault)
                ))
            }
            None => AppError::Internal(anyhow::Error::new(e).context("database")),
        }
    }
}

/// The 503 page's message for a database that refuses writes.
pub fn unavailable(fault: StorageFault) -> String {
    let mut label = fault.label().to_string();
    label[..1].make_ascii_uppercase();
    format!("{label}: vmdeck cannot record anything right now. To fix: {}.", fault.remedy())
}

impl<'r> Responder<'r, 'static> for AppError {
    fn respond_to(self, req: &'r Request<'_>) -> response::Result<'static> {
        let (status, message) = match &self {
            AppError::NotFound(m) => (Status::NotFound, m.clone()),
            AppError::BadRequest(m) => (Status::BadRequest, m.clone()),
            AppError::Unavailable(m) => (Status::ServiceUnavailable, m.clone()),
            AppError::Internal(cause) => {
                tracing::error!(path = %req.uri().path(), "internal error: {cause:#}");
                (
                    Status::InternalServerError,
                    "Something went wrong on the server. The details are in its log.".into(),
                )
            }
        };
        // A route's error comes after its guards: the user, if any, is already in the cache.
        let user = req.local_cache(|| None::<CurrentUser>).as_ref();
        error_page(status, &message, user, req).respond_to(req).map(|mut r| {
            r.set_status(status);
            r
        })
    }
}

/// The error page, with the status in its title; with the navigation and Log out of the base
/// layout when the request is `user`'s.
pub fn error_page(
    status: Status,
    message: &str,
    user: Option<&CurrentUser>,
    req: &Request<'_>,
) -> Template {
    let chrome = match (user, req.rocket().state::<Settings>()) {
        (Some(user), Some(settings)) => Some(Chrome::new(user, None, settings)),
        _ => None,
    };
    Template::render(
        "error/error",
        context! {
            title: format!("{} {}", status.code, status.reason_lossy()),
            code: status.code,
            message,
            chrome,
        },
    )
}

/// The logged-in user of a request that reached a catcher, if any. A catcher runs also where
/// no route (and so no guard) ran, e.g. for a 404: the session is then looked up here.
async fn user_of<'r>(req: &'r Request<'_>) -> Option<&'r CurrentUser> {
    req.guard::<&CurrentUser>().await.succeeded()
}

#[rocket::catch(default)]
async fn default_catcher(status: Status, req: &Request<'_>) -> (Status, Template) {
    let message = match status.code {
        404 => format!("There is no page at {}.", req.uri().path()),
        422 | 400 => "The request could not be understood.".to_string(),
        500 => "Something went wrong on the server. The details are in its log.".to_string(),
        _ => status.reason_lossy().to_string(),
    };
    (status, error_page(status, &message, user_of(req).await, req))
}

#[rocket::catch(403)]
async fn forbidden(req: &Request<'_>) -> Template {
    let message = match req.uri().path().as_str() {
        p if p.starts_with("/users") => "Only admins can manage users. The attempt was recorded in the audit log.",
        p if p.ends_with("/power") || p.contains("/power/") => {
            "Your role cannot start or stop VMs, or the form was stale (reload the page and try again). The attempt was recorded in the audit log."
        }
        _ => "This request was refused: your role does not allow it, or the form was stale (reload the page and try again).",
    };
    error_page(Status::Forbidden, message, user_of(req).await, req)
}

#[rocket::catch(413)]
async fn too_large(req: &Request<'_>) -> Template {
    let message = "The form was too large; nothing was done.";
    error_page(Status::PayloadTooLarge, message, user_of(req).await, req)
}

/// The error pages every route shares (the login form for 401 is auth's own catcher).
pub fn catchers() -> Vec<Catcher> {
    rocket::catchers![default_catcher, forbidden, too_large]
}
