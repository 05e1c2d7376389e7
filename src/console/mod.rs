//! The VM's screen in the browser: a noVNC page (`/vms/<host>/<uuid>/console`) and a WebSocket
//! (`…/console/ws`) that relays RFB between the browser and the VM's VNC server.
//!
//! Who may connect is decided three times: the page needs a viewer's session and issues a
//! one-time ticket ([`tickets`]) bound to that session and VM; the upgrade needs that ticket,
//! the same session and an `Origin` that is vmdeck's own (so another site's page cannot open a
//! console with the user's cookie); and while the console runs, [`relay`] rechecks the session
//! and its role every few seconds, so a logout, an expiry or a demotion closes it. Operators
//! and admins get an interactive console; viewers a view-only one, enforced here by
//! [`rfb::ClientFilter`], which drops every input message before it reaches the VM.
//!
//! Open consoles are counted per user and in total ([`Consoles`], `console_max_*`), close after
//! `console_idle_secs` without input or screen change, and relay through fixed-size buffers.
//! Every open, close (duration, bytes each way, inputs dropped) and refusal is audited.

pub mod relay;
pub mod rfb;
mod routes;
pub mod tickets;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use sqlx::SqlitePool;

use crate::config::ConsoleLimits;
use crate::db::now_ms;
use crate::domain::{Actor, AuditKind, AuditOutcome, VmKey};
use crate::events::chain;

pub use routes::routes;
use tickets::Tickets;

/// What a console shows its user: everything, or the screen only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    Interactive,
    ViewOnly,
}

impl Mode {
    /// Operators and admins type; viewers watch.
    pub fn for_role(role: crate::domain::Role) -> Mode {
        if role >= crate::domain::Role::Operator {
            Mode::Interactive
        } else {
            Mode::ViewOnly
        }
    }

    pub fn words(self) -> &'static str {
        match self {
            Mode::Interactive => "interactive",
            Mode::ViewOnly => "view-only",
        }
    }
}

/// One open console, as the registry counts it.
#[derive(Debug, Clone)]
pub struct OpenConsole {
    pub user_id: i64,
    pub user: String,
    pub vm: VmKey,
    pub mode: Mode,
    pub since: Instant,
}

/// The console's shared state (Rocket state): unspent tickets and open consoles.
pub struct Consoles {
    limits: ConsoleLimits,
    tickets: Mutex<Tickets>,
    open: Mutex<HashMap<u64, OpenConsole>>,
    next: AtomicU64,
}

/// Why a console could not be opened although its ticket was good.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Full {
    User(usize),
    Total(usize),
}

impl Full {
    pub fn words(&self) -> String {
        match self {
            Full::User(n) => format!(
                "you already have {n} console(s) open, the most one user may have \
                 (console_max_per_user): close one first"
            ),
            Full::Total(n) => format!(
                "{n} consoles are open, the most this vmdeck allows at once \
                 (console_max_total): try again later"
            ),
        }
    }
}

impl Consoles {
    pub fn new(limits: ConsoleLimits) -> Consoles {
        Consoles {
            limits,
            tickets: Mutex::default(),
            open: Mutex::default(),
            next: AtomicU64::new(1),
        }
    }

    pub fn limits(&self) -> ConsoleLimits {
        self.limits
    }

    /// Issues a one-time ticket for `vm` to this session.
    pub fn issue(&self, session: &str, user_id: i64, vm: &VmKey) -> String {
        let mut tickets = self.tickets.lock().unwrap_or_else(|p| p.into_inner());
        tickets.issue(session, user_id, vm, self.limits.ticket, Instant::now())
    }

    /// Spends a ticket (see [`Tickets::redeem`]).
    pub fn redeem(
        &self,
        secret: Option<&str>,
        session: &str,
        vm: &VmKey,
    ) -> Result<tickets::Ticket, tickets::Refusal> {
        let mut tickets = self.tickets.lock().unwrap_or_else(|p| p.into_inner());
        tickets.redeem(secret, session, vm, Instant::now())
    }

    /// Takes a place for a console if the caps allow: the place is given back when the
    /// returned [`Place`] is dropped, however the console ends.
    pub fn enter(self: &Arc<Self>, console: OpenConsole) -> Result<Place, Full> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let mine = open.values().filter(|c| c.user_id == console.user_id).count();
        if mine >= self.limits.per_user {
            return Err(Full::User(self.limits.per_user));
        }
        if open.len() >= self.limits.total {
            return Err(Full::Total(self.limits.total));
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        open.insert(id, console);
        Ok(Place { consoles: self.clone(), id })
    }

    /// The consoles open now.
    pub fn open(&self) -> Vec<OpenConsole> {
        self.open.lock().unwrap_or_else(|p| p.into_inner()).values().cloned().collect()
    }
}

/// A console's place in the registry; dropping it frees the place.
pub struct Place {
    consoles: Arc<Consoles>,
    id: u64,
}

impl Drop for Place {
    fn drop(&mut self) {
        self.consoles.open.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.id);
    }
}

/// What a console audit entry is about.
pub struct AuditTarget<'a> {
    pub vm: &'a VmKey,
    pub vm_name: Option<&'a str>,
}

/// Writes a console audit entry (settled at once), logging instead of failing: a console
/// must not fail because the audit write did, but the loss must be visible in the log.
pub async fn audit(
    pool: &SqlitePool,
    actor: &Actor,
    target: &AuditTarget<'_>,
    outcome: AuditOutcome,
    action: &str,
    detail: &str,
) {
    let content = chain::Content {
        host_name: Some(target.vm.host.to_string()),
        vm_uuid: Some(target.vm.uuid.to_string()),
        vm_name: target.vm_name.map(str::to_string),
        action: Some(action.to_string()),
        detail: Some(detail.to_string()),
        ..chain::Content::settled(AuditKind::Console, actor, outcome, now_ms())
    };
    if let Err(e) = chain::append(pool, content).await {
        tracing::error!(action, "could not write the console's audit entry: {e}");
    }
}

/// The console's Rocket state, built from the settings at ignite.
pub fn stage() -> rocket::fairing::AdHoc {
    rocket::fairing::AdHoc::on_ignite("Consoles", |rocket| async move {
        let limits =
            rocket.state::<crate::config::Settings>().map(|s| s.console).unwrap_or_default();
        rocket.manage(Arc::new(Consoles::new(limits)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{HostName, VmUuid};

    fn console(user_id: i64) -> OpenConsole {
        let uuid = VmUuid::parse("00000000-0000-4000-8000-000000000001").unwrap();
        OpenConsole {
            user_id,
            user: format!("u{user_id}"),
            vm: VmKey::new(HostName::parse("lab").unwrap(), uuid),
            mode: Mode::Interactive,
            since: Instant::now(),
        }
    }

    #[test]
    fn places_are_capped_per_user_and_in_total_and_freed_on_drop() {
        let limits = ConsoleLimits { per_user: 2, total: 3, ..ConsoleLimits::default() };
        let consoles = Arc::new(Consoles::new(limits));
        let a1 = consoles.enter(console(1)).unwrap();
        let _a2 = consoles.enter(console(1)).unwrap();
        assert_eq!(consoles.enter(console(1)).err(), Some(Full::User(2)));
        let _b1 = consoles.enter(console(2)).unwrap();
        assert_eq!(consoles.enter(console(3)).err(), Some(Full::Total(3)));
        drop(a1);
        assert_eq!(consoles.open().len(), 2);
        assert!(consoles.enter(console(1)).is_ok(), "a closed console frees its place");
    }
}
