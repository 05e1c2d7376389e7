//! The console page (`GET /vms/<host>/<uuid>/console`) and its WebSocket
//! (`GET /vms/<host>/<uuid>/console/ws?ticket=…`).
//!
//! The WebSocket speaks a one-message preamble before RFB: the server's first message is a
//! text frame, `{"ok":true,"mode":"interactive"|"view-only"}` once the VM's display is
//! connected, or `{"ok":false,"error":"…"}` followed by a close; then binary frames carry RFB
//! both ways. A console the server ends (idle, logout, role change, the VM's display closing)
//! is closed with code 4000 and the reason. Refusals of the upgrade itself (no session, a bad
//! ticket, a foreign `Origin`) are plain HTTP 401/403 answers: nothing is upgraded.

use futures::{SinkExt, StreamExt};
use rocket::http::Status;
use rocket::request::{FlashMessage, FromRequest, Outcome, Request};
use rocket::{Route, State};
use rocket_dyn_templates::Template;
use rocket_ws::frame::{CloseCode, CloseFrame};
use rocket_ws::stream::DuplexStream;
use rocket_ws::{Channel, Message, WebSocket};
use serde::Serialize;
use sqlx::SqlitePool;
use std::sync::Arc;

use super::relay::{self, End, Summary, Watch};
use super::{audit, AuditTarget, Consoles, Mode, OpenConsole, Place};
use crate::auth::{CurrentUser, Role, Viewer};
use crate::backend::{DisplayError, DisplayStream};
use crate::config::Settings;
use crate::control::{find, Control, Target};
use crate::db::Db;
use crate::domain::{AuditOutcome, HostName, PowerState, VmKey, VmUuid};
use crate::web::format::{bytes, duration_words};
use crate::web::{AppError, Chrome};

pub fn routes() -> Vec<Route> {
    rocket::routes![page, socket]
}

/// The VM as the console page shows it.
#[derive(Serialize)]
struct VmView {
    name: String,
    host: String,
    uuid: String,
    state: &'static str,
    href: String,
}

#[derive(Serialize)]
struct ConsolePage {
    title: String,
    chrome: Chrome,
    vm: VmView,
    /// `interactive` or `view-only`.
    mode: Mode,
    /// The WebSocket's path with this page's one-time ticket; None when the console is not
    /// available (then `unavailable` says why).
    ws_path: Option<String>,
    unavailable: Option<String>,
    /// When an unused console closes, for the page to say.
    idle_secs: u64,
}

/// Why `target` has no console now, known without asking its host.
fn unavailable(target: &Target, consoles: &Consoles) -> Option<String> {
    if consoles.limits().per_user == 0 || consoles.limits().total == 0 {
        return Some(
            "The browser console is turned off on this vmdeck (console_max_* = 0).".into(),
        );
    }
    if let Err(why) = target.host.backend.display_support() {
        return Some(format!("No console for this VM: {why}."));
    }
    // What the last poll read of its display, before a ticket is issued for nothing.
    match target.graphics.as_deref() {
        Some("vnc") => {}
        None | Some("") => {
            return Some(
                "The VM has no VNC display: add <graphics type='vnc'> to its definition \
                 (virt-manager: Add Hardware → Graphics → VNC), restart it, then reload this page."
                    .into(),
            )
        }
        Some(other) => {
            return Some(format!(
                "The VM's display is {}, not VNC: this console speaks VNC only.",
                other.to_uppercase()
            ))
        }
    }
    if !matches!(target.state, PowerState::Running | PowerState::Paused) {
        return Some(format!(
            "The VM is {}: its screen exists only while it runs. Start it, then reload this page.",
            target.state.label()
        ));
    }
    None
}

#[rocket::get("/vms/<host>/<uuid>/console")]
async fn page(
    user: Viewer<'_>,
    host: Result<HostName, &str>,
    uuid: Result<VmUuid, &str>,
    control: &State<Control>,
    consoles: &State<Arc<Consoles>>,
    settings: &State<Settings>,
    flash: Option<FlashMessage<'_>>,
) -> Result<Template, AppError> {
    let target = find(control, host, uuid).await?;
    let user = user.0;
    let key = target.key();
    let unavailable = unavailable(&target, consoles);
    let ws_path = unavailable.is_none().then(|| {
        let ticket = consoles.issue(&user.session, user.id, &key);
        format!("{}/console/ws?ticket={ticket}", key.href())
    });
    let page = ConsolePage {
        title: format!("Console of {}", target.name),
        chrome: Chrome::new(user, flash, settings),
        vm: VmView {
            name: target.name.clone(),
            host: key.host.to_string(),
            uuid: key.uuid.to_string(),
            state: target.state.label(),
            href: key.href(),
        },
        mode: Mode::for_role(user.role),
        ws_path,
        unavailable,
        idle_secs: consoles.limits().idle.as_secs(),
    };
    Ok(Template::render("console/console", page))
}

/// The request's `Origin` header, for the check that the page asking is vmdeck's own.
pub struct RequestOrigin {
    origin: Option<String>,
    host: Option<String>,
}

#[rocket::async_trait]
impl<'r> FromRequest<'r> for RequestOrigin {
    type Error = ();

    async fn from_request(req: &'r Request<'_>) -> Outcome<Self, ()> {
        Outcome::Success(RequestOrigin {
            origin: req.headers().get_one("Origin").map(str::to_string),
            host: req.headers().get_one("Host").map(str::to_string),
        })
    }
}

/// Whether `origin` is vmdeck's own: `public_url`'s origin when configured, else an http(s)
/// origin whose host and port are the request's `Host`. A browser always sends `Origin` with
/// a WebSocket upgrade; a page on another site cannot make it say vmdeck's.
pub fn same_origin(
    origin: Option<&str>,
    host: Option<&str>,
    public_url: Option<&url::Url>,
) -> Result<(), String> {
    let origin = origin.ok_or("no Origin header")?;
    let parsed = url::Url::parse(origin).map_err(|_| format!("Origin {origin:?} is not a URL"))?;
    let own = match public_url {
        Some(public) => public.origin() == parsed.origin(),
        None => {
            let authority = match (parsed.host_str(), parsed.port()) {
                (Some(h), Some(p)) => format!("{h}:{p}"),
                (Some(h), None) => h.to_string(),
                (None, _) => String::new(),
            };
            matches!(parsed.scheme(), "http" | "https")
                && host.is_some_and(|h| h.eq_ignore_ascii_case(&authority))
        }
    };
    if own {
        Ok(())
    } else {
        Err(format!("Origin {origin:?} is not vmdeck's own"))
    }
}

/// The session and role checks a running console repeats.
struct SessionWatch {
    pool: SqlitePool,
    settings: Settings,
    session: String,
    mode: Mode,
}

#[rocket::async_trait]
impl Watch for SessionWatch {
    async fn check(&self, input: bool) -> Option<End> {
        match crate::auth::session_role(&self.pool, &self.settings, &self.session).await {
            Ok(None) => Some(End::SessionEnded),
            Ok(Some(role)) if self.mode == Mode::Interactive && role < Role::Operator => {
                Some(End::RoleChanged)
            }
            Ok(Some(_)) => {
                // Typing into a console is using vmdeck: it keeps the session alive.
                if input {
                    let now = crate::db::now_ms();
                    let _ = crate::auth::store::touch_session(&self.pool, &self.session, now).await;
                }
                None
            }
            Err(e) => {
                tracing::warn!("console session check failed (console kept open): {e}");
                None
            }
        }
    }
}

fn summary_words(mode: Mode, via: &str, s: &Summary) -> String {
    let secs = s.duration.as_secs().max(1);
    let mut words = format!(
        "{} console closed after {}: {}; {} to the browser, {} to the VM (via {via})",
        mode.words(),
        duration_words(secs as i64 * 1000),
        s.end.words(),
        bytes(s.to_browser),
        bytes(s.to_vm),
    );
    if s.dropped > 0 {
        words.push_str(&format!("; {} input message(s) dropped (view-only)", s.dropped));
    }
    words
}

#[allow(clippy::too_many_arguments)]
#[rocket::get("/vms/<host>/<uuid>/console/ws?<ticket>")]
async fn socket(
    ws: WebSocket,
    user: Option<&CurrentUser>,
    origin: RequestOrigin,
    host: Result<HostName, &str>,
    uuid: Result<VmUuid, &str>,
    ticket: Option<&str>,
    control: &State<Control>,
    consoles: &State<Arc<Consoles>>,
    settings: &State<Settings>,
    db: &State<Db>,
) -> Result<Channel<'static>, Status> {
    let Some(user) = user else { return Err(Status::Unauthorized) };
    let pool = db.0.clone();
    let (Ok(host), Ok(uuid)) = (host, uuid) else { return Err(Status::NotFound) };
    let vm = VmKey::new(host, uuid);
    let actor = user.actor();
    let refuse = |why: String| {
        let (pool, actor, vm) = (pool.clone(), actor.clone(), vm.clone());
        async move {
            let target = AuditTarget { vm: &vm, vm_name: None };
            audit(&pool, &actor, &target, AuditOutcome::Refused, "console_open", &why).await;
            Status::Forbidden
        }
    };
    if let Err(why) =
        same_origin(origin.origin.as_deref(), origin.host.as_deref(), settings.public_url.as_ref())
    {
        return Err(refuse(format!("console refused: {why}")).await);
    }
    if let Err(why) = consoles.redeem(ticket, &user.session, &vm) {
        return Err(refuse(format!("console refused: {}", why.words())).await);
    }
    // The role now, not when the ticket was issued: the session guard read it just now.
    let mode = Mode::for_role(user.role);
    let target = control.target(&vm).await.ok().flatten();
    let vm_name = target.as_ref().map(|t| t.name.clone());
    let watch = SessionWatch {
        pool: pool.clone(),
        settings: settings.inner().clone(),
        session: user.session.clone(),
        mode,
    };
    let consoles = consoles.inner().clone();
    let (user_id, user_name) = (user.id, user.name.clone());
    let idle = consoles.limits().idle;
    Ok(ws.config(relay::ws_config()).channel(move |mut stream| {
        Box::pin(async move {
            let audit_target = AuditTarget { vm: &vm, vm_name: vm_name.as_deref() };
            let console = OpenConsole {
                user_id,
                user: user_name,
                vm: vm.clone(),
                mode,
                since: std::time::Instant::now(),
            };
            let (place, display) = match prepare(target, &consoles, console).await {
                Ok(ready) => ready,
                Err(why) => {
                    let refused = AuditOutcome::Refused;
                    audit(&pool, &actor, &audit_target, refused, "console_open", &why).await;
                    refuse_in_preamble(&mut stream, &why).await;
                    return Ok(());
                }
            };
            let hello = serde_json::json!({ "ok": true, "mode": mode }).to_string();
            if stream.send(Message::Text(hello)).await.is_err() {
                return Ok(());
            }
            let opened = format!("{} console opened (via {})", mode.words(), display.via);
            audit(&pool, &actor, &audit_target, AuditOutcome::Ok, "console_open", &opened).await;
            let via = display.via.clone();
            let summary = relay::relay(stream, display.io, mode, idle, &watch).await;
            drop(place);
            let words = summary_words(mode, &via, &summary);
            audit(&pool, &actor, &audit_target, AuditOutcome::Ok, "console_close", &words).await;
            Ok(())
        })
    }))
}

/// Everything between a spent ticket and the relay: the console's place under the caps, then
/// the VM's display; or why not, in words for the preamble and the audit log.
async fn prepare(
    target: Option<Target>,
    consoles: &Arc<Consoles>,
    console: OpenConsole,
) -> Result<(Place, DisplayStream), String> {
    let target = target.ok_or("the VM is no longer known to vmdeck")?;
    let place = consoles.enter(console).map_err(|full| full.words())?;
    let display = target.host.backend.open_display(target.uuid.as_str()).await.map_err(|e| {
        match e {
            // The host's own words alone ("Cannot write data: Broken pipe") do not say what
            // failed.
            DisplayError::Host(e) => {
                format!("vmdeck could not get the VM's display from its host: {e}")
            }
            e => e.to_string(),
        }
    })?;
    Ok((place, display))
}

/// Refuses a console after its upgrade: the `{"ok":false,"error":…}` preamble, then a close
/// (code 4000, the same reason), waiting briefly for the browser's reply so the close handshake
/// completes (without it the browser sees a reset connection, not a closed console).
async fn refuse_in_preamble(stream: &mut DuplexStream, why: &str) {
    let text = serde_json::json!({ "ok": false, "error": why }).to_string();
    if stream.send(Message::Text(text)).await.is_err() {
        return;
    }
    let frame =
        CloseFrame { code: CloseCode::Library(4000), reason: relay::close_reason(why).into() };
    let wait = std::time::Duration::from_secs(2);
    if tokio::time::timeout(wait, stream.send(Message::Close(Some(frame)))).await.is_ok() {
        let _ = tokio::time::timeout(wait, stream.next()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_vmdecks_own_origin_may_open_a_console() {
        let host = Some("vmdeck.example.org:8000");
        assert!(same_origin(Some("http://vmdeck.example.org:8000"), host, None).is_ok());
        assert!(same_origin(Some("https://VMDECK.example.org:8000"), host, None).is_ok());
        for bad in [
            None,
            Some("null"),
            Some("http://evil.example"),
            Some("http://vmdeck.example.org:8001"),
            Some("http://vmdeck.example.org"),
            Some("file:///x"),
        ] {
            assert!(same_origin(bad, host, None).is_err(), "{bad:?}");
        }
        let public = url::Url::parse("https://vms.example.org/").unwrap();
        assert!(same_origin(
            Some("https://vms.example.org"),
            Some("127.0.0.1:8000"),
            Some(&public)
        )
        .is_ok());
        assert!(same_origin(
            Some("http://vms.example.org"),
            Some("vms.example.org"),
            Some(&public)
        )
        .is_err());
    }
}
