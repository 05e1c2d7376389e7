//! Logging in and out: the login form (also shown, with status 401, in place of any page that
//! needs a session), the login and logout posts.

use rocket::form::{Form, FromForm};
use rocket::http::{Cookie, CookieJar, SameSite, Status};
use rocket::request::Request;
use rocket::response::{Flash, Redirect};
use rocket::{Catcher, Route, State};
use rocket_dyn_templates::Template;
use serde::Serialize;

use super::{
    hash_token, new_token, password, store, users, ClientAddr, Csrf, LoginThrottle, SameOrigin,
    TokenForm, Viewer,
};
use crate::config::Settings;
use crate::db::{now_ms, Db};
use crate::domain::{Actor, AuditKind, AuditOutcome, CurrentUser};
use crate::events;
use crate::web::redirectable;

pub fn routes() -> Vec<Route> {
    rocket::routes![login_page, login, logout]
}

pub fn catchers() -> Vec<Catcher> {
    rocket::catchers![unauthorized]
}

/// The longest typed user name stored in the audit log or echoed into the form, in characters.
const MAX_SHOWN_NAME: usize = 64;

/// The login form's data, wherever it is shown.
#[derive(Serialize)]
struct LoginPage {
    title: &'static str,
    error: Option<String>,
    /// What just happened, e.g. "You are logged out." after logging out.
    notice: Option<String>,
    username: String,
    next: String,
    no_users: bool,
    demo: bool,
}

impl LoginPage {
    fn new(next: Option<&str>, demo: bool) -> LoginPage {
        LoginPage {
            title: "Log in",
            error: None,
            notice: None,
            username: String::new(),
            next: safe_next(next),
            no_users: false,
            demo,
        }
    }

    fn render(self) -> Template {
        Template::render("auth/login", self)
    }
}

/// Only local paths are followed after login, so `next` cannot send a user elsewhere; and only
/// ones that are a URI as given (`/vms x` or `/vms\u{202e}` would make the redirect a 500).
pub fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n)
            if n.starts_with('/')
                && !n.starts_with("//")
                && !n.contains('\\')
                && !n.starts_with("/login")
                && redirectable(n) =>
        {
            n.to_string()
        }
        _ => "/vms".to_string(),
    }
}

/// Not logged in (or the session ended): the login form, right here, coming back to this page.
#[rocket::catch(401)]
fn unauthorized(req: &Request<'_>) -> Template {
    let next = req.uri().to_string();
    let next = if req.method() == rocket::http::Method::Get { next } else { "/vms".into() };
    let mut page = LoginPage::new(Some(&next), false);
    page.error = Some("Log in to continue (your session may have ended).".into());
    page.render()
}

#[rocket::get("/login?<next>")]
async fn login_page(
    next: Option<&str>,
    db: &State<Db>,
    settings: &State<Settings>,
    user: Option<&CurrentUser>,
    flash: Option<rocket::request::FlashMessage<'_>>,
) -> Result<Template, Redirect> {
    if user.is_some() {
        return Err(Redirect::to(safe_next(next)));
    }
    let mut page = LoginPage::new(next, settings.demo);
    // Shown here, where it happened (left unread, it greeted the next login instead).
    page.notice = flash.map(|f| f.message().to_string());
    page.no_users = users::count(&db.0).await.map(|n| n == 0).unwrap_or(false);
    Ok(page.render())
}

#[derive(FromForm)]
struct LoginForm<'r> {
    #[field(default = "")]
    username: &'r str,
    #[field(default = "")]
    password: &'r str,
    next: Option<&'r str>,
}

#[rocket::post("/login", data = "<form>")]
async fn login(
    req_origin: SameOrigin,
    form: Form<LoginForm<'_>>,
    db: &State<Db>,
    settings: &State<Settings>,
    throttle: &State<LoginThrottle>,
    cookies: &CookieJar<'_>,
    addr: ClientAddr,
) -> Result<Redirect, (Status, Template)> {
    let next = safe_next(form.next);
    let name = form.username.trim();
    // Whatever was typed, only a bounded prefix is ever stored or echoed (user names have at
    // most 64 characters, so nothing real is lost).
    let shown: String = match name.char_indices().nth(MAX_SHOWN_NAME) {
        Some((cut, _)) => format!("{}…", &name[..cut]),
        None => name.to_string(),
    };
    let page = |status: Status, error: String| {
        let mut page = LoginPage::new(Some(&next), settings.demo);
        page.error = Some(error);
        page.username = shown.clone();
        (status, page.render())
    };
    let actor = Actor { user: Some(shown.clone()), addr: addr.0.map(|a| a.to_string()) };
    // Refused attempts cost nothing to send: at most one audit entry per client per minute.
    let refused = |kind: AuditKind, detail: &'static str| {
        let unrecorded = throttle.1.admit(addr.0);
        let actor = &actor;
        async move {
            let Some(n) = unrecorded else { return };
            let detail = match n {
                0 => detail.to_string(),
                n => format!("{detail}; {n} more refused attempt(s) from this client before this one were not recorded"),
            };
            events::record_logged(&db.0, kind, actor, AuditOutcome::Refused, None, Some(&detail))
                .await;
        }
    };
    if !req_origin.0 {
        refused(AuditKind::CsrfRefused, "POST /login from another origin").await;
        return Err(page(Status::Forbidden, "This login form did not come from vmdeck.".into()));
    }
    if name.is_empty() || form.password.is_empty() || name.len() > 256 {
        return Err(page(Status::BadRequest, "Enter your user name and password.".into()));
    }
    if let Some(wait) = throttle.0.check(name, addr.0) {
        refused(AuditKind::LoginFailed, "throttled").await;
        return Err(page(
            Status::TooManyRequests,
            format!("Too many failed attempts. Try again in {} s.", wait.as_secs().max(1)),
        ));
    }
    let unavailable = || {
        page(
            Status::InternalServerError,
            "Login is unavailable right now; the details are in the server log.".into(),
        )
    };
    let creds = users::credentials(&db.0, name, settings.demo).await.map_err(|e| {
        tracing::error!("login lookup failed: {e}");
        unavailable()
    })?;
    let stored = creds.as_ref().map(|c| c.2.clone());
    // Verified even for unknown names (against a dummy hash): same time, same answer.
    let ok = password::verify(form.password.to_string(), stored).await;
    let Some((user_id, canonical, _, _)) = creds.filter(|_| ok) else {
        throttle.0.failure(name, addr.0);
        // Each of these cost a password hash, and throttling caps them: every one is recorded.
        events::record_logged(
            &db.0,
            AuditKind::LoginFailed,
            &actor,
            AuditOutcome::Refused,
            None,
            None,
        )
        .await;
        return Err(page(Status::Unauthorized, "Wrong user name or password.".into()));
    };
    throttle.0.success(name, addr.0);

    // A new session id at every login: an id planted before login is never promoted.
    let token = new_token();
    let created = store::create_session(
        &db.0,
        &hash_token(&token),
        user_id,
        &new_token(),
        now_ms(),
        actor.addr.as_deref(),
    )
    .await;
    if let Err(e) = created {
        tracing::error!("creating a session failed: {e}");
        return Err(unavailable());
    }
    // Expires with the session's lifetime (Rocket's default for private cookies is a week);
    // over HTTPS `Secure` under the `__Host-` prefix (no Domain, Path=/).
    let lifetime = rocket::time::Duration::seconds(settings.session_lifetime.as_secs() as i64);
    cookies.add_private(
        Cookie::build((settings.session_cookie(), token))
            .http_only(true)
            .same_site(SameSite::Strict)
            .secure(settings.https())
            .path("/")
            .max_age(lifetime)
            .expires(rocket::time::OffsetDateTime::now_utc() + lifetime),
    );
    let actor = Actor { user: Some(canonical), addr: actor.addr };
    events::record_logged(&db.0, AuditKind::Login, &actor, AuditOutcome::Ok, None, None).await;
    Ok(Redirect::to(next))
}

#[rocket::post("/logout", data = "<_form>")]
async fn logout(
    user: Viewer<'_>,
    _form: Csrf<TokenForm>,
    db: &State<Db>,
    cookies: &CookieJar<'_>,
    settings: &State<Settings>,
) -> Flash<Redirect> {
    if let Some(token) = cookies.get_private(settings.session_cookie()) {
        let _ = store::delete_session(&db.0, &hash_token(token.value())).await;
    }
    cookies.remove_private(settings.session_cookie());
    events::record_logged(&db.0, AuditKind::Logout, &user.0.actor(), AuditOutcome::Ok, None, None)
        .await;
    Flash::success(Redirect::to("/login"), "You are logged out.")
}
