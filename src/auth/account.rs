//! Your account (every role): change your own password, which asks for the current one, so a
//! session left open on a shared screen cannot be turned into the account itself. Wrong
//! current passwords count against the login throttle like failed logins.

use rocket::form::FromForm;
use rocket::request::FlashMessage;
use rocket::response::{Flash, Redirect};
use rocket::{Route, State};
use rocket_dyn_templates::Template;
use serde::Serialize;

use super::users::{self, UserError};
use super::{password, ClientAddr, Csrf, CsrfForm, LoginThrottle, Viewer};
use crate::config::Settings;
use crate::db::Db;
use crate::domain::{AuditKind, AuditOutcome};
use crate::events;
use crate::web::Chrome;

pub fn routes() -> Vec<Route> {
    rocket::routes![account_page, change_own_password]
}

#[derive(Serialize)]
struct AccountPage {
    title: &'static str,
    chrome: Chrome,
    min_len: usize,
}

#[rocket::get("/account")]
fn account_page(
    me: Viewer<'_>,
    settings: &State<Settings>,
    flash: Option<FlashMessage<'_>>,
) -> Template {
    Template::render(
        "account",
        AccountPage {
            title: "Your account",
            chrome: Chrome::new(me.0, flash, settings),
            min_len: password::MIN_PASSWORD_LEN,
        },
    )
}

#[derive(FromForm)]
struct OwnPasswordForm {
    #[field(default = String::new())]
    csrf_token: String,
    #[field(default = String::new())]
    current: String,
    #[field(default = String::new())]
    password: String,
    #[field(default = String::new())]
    password_again: String,
}

impl CsrfForm for OwnPasswordForm {
    fn csrf_token(&self) -> &str {
        &self.csrf_token
    }
}

#[rocket::post("/account/password", data = "<form>")]
async fn change_own_password(
    me: Viewer<'_>,
    form: Csrf<OwnPasswordForm>,
    db: &State<Db>,
    settings: &State<Settings>,
    throttle: &State<LoginThrottle>,
    addr: ClientAddr,
) -> Flash<Redirect> {
    let f = form.0;
    let name = me.0.name.as_str();
    let result = async {
        if let Some(wait) = throttle.0.check(name, addr.0) {
            return Err(UserError::Invalid(format!(
                "too many wrong passwords: try again in {} s",
                wait.as_secs().max(1)
            )));
        }
        let stored = users::credentials(&db.0, name, settings.demo).await?.map(|c| c.2);
        if f.current.is_empty() || !password::verify(f.current, stored).await {
            throttle.0.failure(name, addr.0);
            return Err(UserError::Invalid("the current password is wrong".into()));
        }
        throttle.0.success(name, addr.0);
        if f.password != f.password_again {
            return Err(UserError::Invalid("the two new passwords differ".into()));
        }
        users::set_password(&db.0, name, f.password).await
    }
    .await;
    let (outcome, detail) = match &result {
        Ok(()) => (AuditOutcome::Ok, name.to_string()),
        Err(e) => (AuditOutcome::Refused, format!("{name}: {e}")),
    };
    let actor = me.0.actor();
    events::record_logged(&db.0, AuditKind::PasswordChanged, &actor, outcome, None, Some(&detail))
        .await;
    match result {
        // Every session of the account ended, this one included.
        Ok(()) => Flash::success(Redirect::to("/login"), "Password changed: log in again."),
        Err(e) => Flash::error(Redirect::to("/account"), format!("Not changed: {e}.")),
    }
}
