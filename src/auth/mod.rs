//! Who is asking: accounts, roles, server-side sessions, login and logout, CSRF protection and
//! the client address. Authorization is decided here, by request guards: a route that takes
//! [`Operator`] cannot run for a viewer, whatever the page shows.

pub mod account;
pub mod admin;
pub mod password;
mod routes;
pub mod store;
pub mod throttle;
pub mod users;

use std::net::IpAddr;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::RngCore;
use rocket::data::{self, Data, FromData};
use rocket::form::{Form, FromForm};
use rocket::http::Status;
use rocket::request::{self, FromRequest, Request};
use rocket::{Catcher, Route};
use sha2::{Digest, Sha256};
use sqlx::SqlitePool;
use subtle::ConstantTimeEq;

use crate::config::Settings;
use crate::db::{now_ms, Db};
use crate::domain::{AuditKind, AuditOutcome};
use crate::events;
use throttle::Throttle;

pub use crate::domain::{CurrentUser, Role};
pub use routes::safe_next;

/// A new random token: 256 bits, URL-safe base64.
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// How a session id is stored: its SHA-256, hex.
pub(crate) fn hash_token(token: &str) -> String {
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

/// The request's path as the audit log keeps it: at most [`MAX_AUDITED_PATH`] characters, so a
/// logged-in client cannot write 64 KB entries one request at a time.
fn audited_path(req: &Request<'_>) -> String {
    let path = req.uri().path().as_str();
    match path.char_indices().nth(MAX_AUDITED_PATH) {
        Some((cut, _)) => format!("{}…", &path[..cut]),
        None => path.to_string(),
    }
}

/// Longest request path written to the audit log (real paths are far shorter).
const MAX_AUDITED_PATH: usize = 200;

// ---------------------------------------------------------------------------------------------
// Sessions and guards

async fn lookup_session(req: &Request<'_>) -> Option<CurrentUser> {
    let settings = req.rocket().state::<Settings>()?;
    let token = req.cookies().get_private(settings.session_cookie())?.value().to_string();
    let pool = &req.rocket().state::<Db>()?.0;
    let id_hash = hash_token(&token);
    let row = store::session(pool, &id_hash, settings.demo)
        .await
        .map_err(|e| tracing::error!("session lookup failed: {e}"))
        .ok()??;
    let now = now_ms();
    let idle_ok = now - row.last_seen <= settings.session_idle.as_millis() as i64;
    let life_ok = now - row.created_at <= settings.session_lifetime.as_millis() as i64;
    if !idle_ok || !life_ok {
        let _ = store::delete_session(pool, &id_hash).await;
        req.cookies().remove_private(settings.session_cookie());
        return None;
    }
    // Touch at most every 15 s: one write per request would serialise page loads on SQLite.
    if now - row.last_seen > 15_000 {
        let _ = store::touch_session(pool, &id_hash, now).await;
    }
    Some(CurrentUser {
        id: row.user_id,
        name: row.name,
        role: row.role,
        csrf: row.csrf_token,
        addr: client_addr(req),
        session: id_hash,
    })
}

/// Whether the session stored as `id_hash` is still alive (not logged out, idle or past its
/// lifetime), and its user's role now: long-lived connections (the console) ask this while
/// they run, so a logout, an expiry or a role change reaches them. Does not touch the session.
pub async fn session_role(
    pool: &SqlitePool,
    settings: &Settings,
    id_hash: &str,
) -> sqlx::Result<Option<Role>> {
    let Some(row) = store::session(pool, id_hash, settings.demo).await? else { return Ok(None) };
    let now = now_ms();
    let idle_ok = now - row.last_seen <= settings.session_idle.as_millis() as i64;
    let life_ok = now - row.created_at <= settings.session_lifetime.as_millis() as i64;
    Ok((idle_ok && life_ok).then_some(row.role))
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
            format!("{} {} needs the {} role", req.method(), audited_path(req), role.as_str());
        events::record_logged(
            &db.0,
            AuditKind::AccessDenied,
            &user.actor(),
            AuditOutcome::Refused,
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

/// A form that carries nothing but the CSRF token: a button that acts on what its URL names
/// (log out, delete, end a silence).
#[derive(rocket::FromForm)]
pub struct TokenForm {
    #[field(default = String::new())]
    csrf_token: String,
}

impl CsrfForm for TokenForm {
    fn csrf_token(&self) -> &str {
        &self.csrf_token
    }
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
            let detail = format!("{} {}: {why}", req.method(), audited_path(req));
            events::record_logged(
                &db.0,
                AuditKind::CsrfRefused,
                &user.actor(),
                AuditOutcome::Refused,
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
            // On the terminal, not in the log stream: logs are kept and shipped elsewhere.
            Ok(()) => eprintln!(
                "DEMO: user `admin` has password `{password}` (demo only, shown once; this account cannot log in outside the demo)"
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
    routes::routes()
}

/// The login form for requests without a (live) session.
pub fn catchers() -> Vec<Catcher> {
    routes::catchers()
}

/// Login throttling, and which refused attempts are audited (see `throttle`).
pub struct LoginThrottle(pub Throttle, pub throttle::RefusalLog);

/// Managed state this module needs.
pub fn state() -> LoginThrottle {
    LoginThrottle(Throttle::default(), throttle::RefusalLog::default())
}
