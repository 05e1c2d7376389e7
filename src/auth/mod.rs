//! Who is asking: accounts, roles, server-side sessions, login and logout, CSRF protection and
//! the client address. Authorization is decided here, by request guards: a route that takes
//! [`Operator`] cannot run for a viewer, whatever the page shows.

pub mod admin;
pub mod password;
pub mod throttle;
pub mod users;

use std::net::IpAddr;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::RngCore;
use rocket::data::{self, Data, FromData};
use rocket::form::{Form, FromForm};
use rocket::http::{Cookie, CookieJar, SameSite, Status};
use rocket::request::{self, FlashMessage, FromRequest, Request};
use rocket::response::{Flash, Redirect};
use rocket::{Route, State};
use rocket_dyn_templates::Template;
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::SqlitePool;
use subtle::ConstantTimeEq;

use crate::audit::store::{self as audit, kind, status, Actor};
use crate::config::Settings;
use crate::db::{now_ms, Db};
use throttle::Throttle;

/// The session cookie's name.
pub const COOKIE: &str = "vmdeck_session";

/// What a user may do. Ordered by privilege: each role can do everything the previous one can.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Viewer,
    Operator,
    Admin,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Viewer, Role::Operator, Role::Admin];

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

/// The logged-in user of a request.
#[derive(Debug, Clone, Serialize)]
pub struct CurrentUser {
    pub id: i64,
    pub name: String,
    pub role: Role,
    /// This session's CSRF token, for forms.
    pub csrf: String,
    #[serde(skip)]
    pub addr: Option<IpAddr>,
}

impl CurrentUser {
    pub fn actor(&self) -> Actor {
        Actor { user: Some(self.name.clone()), addr: self.addr.map(|a| a.to_string()) }
    }

    pub fn can(&self, role: Role) -> bool {
        self.role >= role
    }
}

/// A new random token: 256 bits, URL-safe base64.
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// How a session id is stored: its SHA-256, hex.
fn hash_token(token: &str) -> String {
    Sha256::digest(token.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

// ---------------------------------------------------------------------------------------------
// Client address

/// The client's address: the socket's peer, unless that peer is a configured trusted proxy,
/// in which case the address it forwards. Rocket's own `ip_header` is switched off (it would
/// believe any client's `X-Real-IP`).
pub fn client_addr(req: &Request<'_>) -> Option<IpAddr> {
    let peer = req.remote()?.ip();
    let trusted =
        req.rocket().state::<Settings>().map(|s| s.trusted_proxies.as_slice()).unwrap_or(&[]);
    if !trusted.contains(&peer) {
        return Some(peer);
    }
    // The rightmost address that is not one of our proxies is the client.
    let forwarded =
        req.headers().get("X-Forwarded-For").flat_map(|v| v.split(',')).collect::<Vec<_>>();
    forwarded
        .iter()
        .rev()
        .filter_map(|s| s.trim().parse::<IpAddr>().ok())
        .find(|ip| !trusted.contains(ip))
        .or_else(|| req.headers().get_one("X-Real-IP").and_then(|v| v.trim().parse().ok()))
        .or(Some(peer))
}

// ---------------------------------------------------------------------------------------------
// Sessions and guards

async fn lookup_session(req: &Request<'_>) -> Option<CurrentUser> {
    let token = req.cookies().get_private(COOKIE)?.value().to_string();
    let pool = &req.rocket().state::<Db>()?.0;
    let settings = req.rocket().state::<Settings>()?;
    let id_hash = hash_token(&token);
    let row: (i64, String, String, String, i64, i64) = sqlx::query_as(
        "SELECT s.user_id, u.name, u.role, s.csrf_token, s.created_at, s.last_seen
         FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.id_hash = ?",
    )
    .bind(&id_hash)
    .fetch_optional(pool)
    .await
    .map_err(|e| tracing::error!("session lookup failed: {e}"))
    .ok()??;
    let (user_id, name, role, csrf, created_at, last_seen) = row;
    let now = now_ms();
    let idle_ok = now - last_seen <= settings.session_idle.as_millis() as i64;
    let life_ok = now - created_at <= settings.session_lifetime.as_millis() as i64;
    if !idle_ok || !life_ok {
        let _ = sqlx::query("DELETE FROM sessions WHERE id_hash = ?")
            .bind(&id_hash)
            .execute(pool)
            .await;
        req.cookies().remove_private(COOKIE);
        return None;
    }
    // Touch at most every 15 s: one write per request would serialise page loads on SQLite.
    if now - last_seen > 15_000 {
        let _ = sqlx::query("UPDATE sessions SET last_seen = ? WHERE id_hash = ?")
            .bind(now)
            .bind(&id_hash)
            .execute(pool)
            .await;
    }
    Some(CurrentUser { id: user_id, name, role: Role::parse(&role)?, csrf, addr: client_addr(req) })
}

#[rocket::async_trait]
impl<'r> FromRequest<'r> for &'r CurrentUser {
    type Error = ();

    async fn from_request(req: &'r Request<'_>) -> request::Outcome<Self, ()> {
        let cached: &Option<CurrentUser> = req.local_cache_async(lookup_session(req)).await;
        match cached {
            Some(user) => request::Outcome::Success(user),
            None => request::Outcome::Error((Status::Unauthorized, ())),
        }
    }
}

/// Refuses a logged-in user whose role is too low, and records the refusal.
async fn require<'r>(req: &'r Request<'_>, role: Role) -> request::Outcome<&'r CurrentUser, ()> {
    let user = match req.guard::<&CurrentUser>().await {
        request::Outcome::Success(u) => u,
        request::Outcome::Error(e) => return request::Outcome::Error(e),
        request::Outcome::Forward(s) => return request::Outcome::Forward(s),
    };
    if user.can(role) {
        return request::Outcome::Success(user);
    }
    if let Some(db) = req.rocket().state::<Db>() {
        let detail =
            format!("{} {} needs the {} role", req.method(), req.uri().path(), role.as_str());
        audit::event_logged(
            &db.0,
            kind::ACCESS_DENIED,
            &user.actor(),
            status::REFUSED,
            None,
            Some(&detail),
        )
        .await;
    }
    request::Outcome::Error((Status::Forbidden, ()))
}

macro_rules! role_guard {
    ($(#[$doc:meta])* $name:ident, $role:expr) => {
        $(#[$doc])*
        pub struct $name<'r>(pub &'r CurrentUser);

        #[rocket::async_trait]
        impl<'r> FromRequest<'r> for $name<'r> {
            type Error = ();

            async fn from_request(req: &'r Request<'_>) -> request::Outcome<Self, ()> {
                require(req, $role).await.map($name)
            }
        }
    };
}

role_guard!(
    /// Any logged-in user: reads everything.
    Viewer,
    Role::Viewer
);
role_guard!(
    /// Operators and admins: power actions.
    Operator,
    Role::Operator
);
role_guard!(
    /// Admins: user management.
    Admin,
    Role::Admin
);

// ---------------------------------------------------------------------------------------------
// CSRF

/// A form that carries the session's CSRF token.
pub trait CsrfForm {
    fn csrf_token(&self) -> &str;
}

/// A form checked against the session's CSRF token and the request's Origin: a data guard, so
/// a route that takes `Csrf<T>` never sees a forged request.
pub struct Csrf<T>(pub T);

/// Whether the Origin (or, without one, the Referer) names this server. Browsers send Origin on
/// every POST; a request with neither header (curl) relies on the token alone.
pub fn same_origin(req: &Request<'_>) -> bool {
    let Some(host) = req.headers().get_one("Host") else { return true };
    let header = req.headers().get_one("Origin").or_else(|| req.headers().get_one("Referer"));
    match header {
        None => true,
        Some(value) => url::Url::parse(value)
            .ok()
            .and_then(|u| {
                let h = u.host_str()?.to_string();
                Some(match u.port() {
                    Some(p) => format!("{h}:{p}"),
                    None => h,
                })
            })
            .is_some_and(|authority| authority.eq_ignore_ascii_case(host)),
    }
}

#[rocket::async_trait]
impl<'r, T> FromData<'r> for Csrf<T>
where
    T: FromForm<'r> + CsrfForm + Send + 'r,
{
    type Error = String;

    async fn from_data(req: &'r Request<'_>, data: Data<'r>) -> data::Outcome<'r, Self> {
        let user = match req.guard::<&CurrentUser>().await {
            request::Outcome::Success(u) => u,
            _ => return data::Outcome::Error((Status::Unauthorized, "not logged in".into())),
        };
        let form = match Form::<T>::from_data(req, data).await {
            data::Outcome::Success(f) => f.into_inner(),
            data::Outcome::Error((status, errors)) => {
                return data::Outcome::Error((
                    status,
                    format!("The form could not be read: {errors}"),
                ))
            }
            data::Outcome::Forward(f) => return data::Outcome::Forward(f),
        };
        let origin_ok = same_origin(req);
        let token_ok = bool::from(form.csrf_token().as_bytes().ct_eq(user.csrf.as_bytes()));
        if origin_ok && token_ok {
            return data::Outcome::Success(Csrf(form));
        }
        let why =
            if origin_ok { "missing or wrong CSRF token" } else { "request from another origin" };
        if let Some(db) = req.rocket().state::<Db>() {
            let detail = format!("{} {}: {why}", req.method(), req.uri().path());
            audit::event_logged(
                &db.0,
                kind::CSRF_REFUSED,
                &user.actor(),
                status::REFUSED,
                None,
                Some(&detail),
            )
            .await;
        }
        data::Outcome::Error((Status::Forbidden, why.into()))
    }
}

// ---------------------------------------------------------------------------------------------
// Login and logout

/// Login throttling state, as Rocket state.
pub struct LoginThrottle(pub Throttle);

#[derive(Serialize)]
struct LoginPage<'a> {
    title: &'static str,
    error: Option<String>,
    username: &'a str,
    next: &'a str,
    no_users: bool,
    demo: bool,
}

/// Only local paths are followed after login, so `next` cannot send a user elsewhere.
pub fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n)
            if n.starts_with('/')
                && !n.starts_with("//")
                && !n.contains('\\')
                && !n.starts_with("/login") =>
        {
            n.to_string()
        }
        _ => "/vms".to_string(),
    }
}

#[rocket::get("/login?<next>")]
async fn login_page(
    next: Option<&str>,
    db: &State<Db>,
    settings: &State<Settings>,
    user: Option<&CurrentUser>,
) -> Result<Template, Redirect> {
    if user.is_some() {
        return Err(Redirect::to(safe_next(next)));
    }
    let no_users = users::count(&db.0).await.map(|n| n == 0).unwrap_or(false);
    Ok(Template::render(
        "auth/login",
        LoginPage {
            title: "Log in",
            error: None,
            username: "",
            next: &safe_next(next),
            no_users,
            demo: settings.demo,
        },
    ))
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
    let page = |status: Status, error: String| {
        (
            status,
            Template::render(
                "auth/login",
                LoginPage {
                    title: "Log in",
                    error: Some(error),
                    username: name,
                    next: &next,
                    no_users: false,
                    demo: settings.demo,
                },
            ),
        )
    };
    let actor = Actor { user: Some(name.to_string()), addr: addr.0.map(|a| a.to_string()) };
    if !req_origin.0 {
        audit::event_logged(
            &db.0,
            kind::CSRF_REFUSED,
            &actor,
            status::REFUSED,
            None,
            Some("POST /login from another origin"),
        )
        .await;
        return Err(page(Status::Forbidden, "This login form did not come from vmdeck.".into()));
    }
    if name.is_empty() || form.password.is_empty() || name.len() > 256 {
        return Err(page(Status::BadRequest, "Enter your user name and password.".into()));
    }
    if let Some(wait) = throttle.0.check(name, addr.0) {
        audit::event_logged(
            &db.0,
            kind::LOGIN_FAILED,
            &actor,
            status::REFUSED,
            None,
            Some("throttled"),
        )
        .await;
        return Err(page(
            Status::TooManyRequests,
            format!("Too many failed attempts. Try again in {} s.", wait.as_secs().max(1)),
        ));
    }
    let creds = users::credentials(&db.0, name).await.map_err(|e| {
        tracing::error!("login lookup failed: {e}");
        page(
            Status::InternalServerError,
            "Login is unavailable right now; the details are in the server log.".into(),
        )
    })?;
    let stored = creds.as_ref().map(|c| c.2.clone());
    // Verified even for unknown names (against a dummy hash): same time, same answer.
    let ok = password::verify(form.password.to_string(), stored).await;
    let Some((user_id, canonical, _, _)) = creds.filter(|_| ok) else {
        throttle.0.failure(name, addr.0);
        audit::event_logged(&db.0, kind::LOGIN_FAILED, &actor, status::REFUSED, None, None).await;
        return Err(page(Status::Unauthorized, "Wrong user name or password.".into()));
    };
    throttle.0.success(name);

    // A new session id at every login: an id planted before login is never promoted.
    let token = new_token();
    let now = now_ms();
    let created = sqlx::query(
        "INSERT INTO sessions (id_hash, user_id, csrf_token, created_at, last_seen, client_addr) VALUES (?, ?, ?, ?, ?, ?)",
    )
    .bind(hash_token(&token))
    .bind(user_id)
    .bind(new_token())
    .bind(now)
    .bind(now)
    .bind(&actor.addr)
    .execute(&db.0)
    .await;
    if let Err(e) = created {
        tracing::error!("creating a session failed: {e}");
        return Err(page(
            Status::InternalServerError,
            "Login is unavailable right now; the details are in the server log.".into(),
        ));
    }
    cookies.add_private(
        Cookie::build((COOKIE, token))
            .http_only(true)
            .same_site(SameSite::Strict)
            .secure(settings.tls)
            .path("/"),
    );
    let actor = Actor { user: Some(canonical), addr: actor.addr };
    audit::event_logged(&db.0, kind::LOGIN, &actor, status::OK, None, None).await;
    Ok(Redirect::to(next))
}

#[derive(FromForm)]
struct LogoutForm {
    #[field(default = String::new())]
    csrf_token: String,
}

impl CsrfForm for LogoutForm {
    fn csrf_token(&self) -> &str {
        &self.csrf_token
    }
}

#[rocket::post("/logout", data = "<_form>")]
async fn logout(
    user: Viewer<'_>,
    _form: Csrf<LogoutForm>,
    db: &State<Db>,
    cookies: &CookieJar<'_>,
) -> Flash<Redirect> {
    if let Some(token) = cookies.get_private(COOKIE) {
        let _ = sqlx::query("DELETE FROM sessions WHERE id_hash = ?")
            .bind(hash_token(token.value()))
            .execute(&db.0)
            .await;
    }
    cookies.remove_private(COOKIE);
    audit::event_logged(&db.0, kind::LOGOUT, &user.0.actor(), status::OK, None, None).await;
    Flash::success(Redirect::to("/login"), "You are logged out.")
}

/// The client address as a guard (never fails).
pub struct ClientAddr(pub Option<IpAddr>);

#[rocket::async_trait]
impl<'r> FromRequest<'r> for ClientAddr {
    type Error = ();
    async fn from_request(req: &'r Request<'_>) -> request::Outcome<Self, ()> {
        request::Outcome::Success(ClientAddr(client_addr(req)))
    }
}

/// Whether the request came from this server's own pages (guard, never fails).
pub struct SameOrigin(pub bool);

#[rocket::async_trait]
impl<'r> FromRequest<'r> for SameOrigin {
    type Error = ();
    async fn from_request(req: &'r Request<'_>) -> request::Outcome<Self, ()> {
        request::Outcome::Success(SameOrigin(same_origin(req)))
    }
}

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

/// At startup: with no users, say how to create the first admin; in the demo, create one with a
/// generated password printed once.
pub async fn first_run(pool: &SqlitePool, demo: bool) {
    if demo {
        // The demo's admin gets a fresh password at every start (printed once), as long as
        // nobody has set one of their own; the demo's sessions and data are throwaway anyway.
        let password = new_token()[..16].to_string();
        let outcome = match users::reset_demo_password(pool, "admin", password.clone()).await {
            Ok(true) => Ok(()),
            Ok(false) if users::count(pool).await.unwrap_or(1) == 0 => {
                users::add(pool, "admin", Role::Admin, password.clone(), true).await.map(|_| ())
            }
            Ok(false) => return,
            Err(e) => Err(e),
        };
        match outcome {
            Ok(()) => tracing::warn!(
                "DEMO: created user `admin` with password `{password}` (demo only, shown once; set your own with `vmdeck user passwd admin`)"
            ),
            Err(e) => tracing::error!("could not set up the demo admin: {e}"),
        }
        return;
    }
    match users::count(pool).await {
        Ok(0) => tracing::warn!(
            "No users yet: create the first admin with `vmdeck user add NAME --role admin` (the password is read from the terminal or stdin)"
        ),
        Ok(_) => {}
        Err(e) => tracing::error!("could not count users: {e}"),
    }
}

pub fn routes() -> Vec<Route> {
    rocket::routes![login_page, login, logout]
}

/// Managed state this module needs.
pub fn state() -> LoginThrottle {
    LoginThrottle(Throttle::default())
}
