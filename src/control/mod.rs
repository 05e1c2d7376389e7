//! Power control: the forms that start and stop VMs, one at a time or in bulk, and the lifecycle
//! of each request. A request is persisted (`requested`) while the form is answered, then sent
//! in the background (a hanging host never holds a browser): marked `sent`, `accepted` or
//! `failed`, and finally `confirmed` once vmdeck observes the expected state (or `unconfirmed`
//! after a deadline). A forced action asked for while a graceful one is pending settles that
//! one as `superseded`. Requests left pending by a crash are settled at the next start against
//! the VM's actual state.

mod routes;
mod snapshot_routes;
pub mod snapshots;
pub mod store;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rocket::fairing::AdHoc;
use sqlx::SqlitePool;
use tokio::sync::Semaphore;
use tracing::Instrument;

use crate::backend::BackendError;
use crate::config::Settings;
use crate::db::{Db, Storage, StorageFault};
use crate::domain::{
    Actor, AuditOutcome, Offer, PowerAction, PowerState, RequestAction, VmKey, VmUuid,
};
use crate::hosts::{HostEntry, Hosts};
use store::{PendingPower, PowerRequest, Recorded, RequestError};

pub use routes::{find, routes};
pub use snapshots::{SnapshotOutcome, SnapshotRequest};

/// Shared state for power control, managed by Rocket.
pub struct Control {
    pool: SqlitePool,
    hosts: Arc<Hosts>,
    /// Whether the database takes writes: a request that cannot be recorded is not sent.
    storage: Arc<Storage>,
    /// Caps the actions sent to one host at the same time.
    slots: HashMap<String, Arc<Semaphore>>,
    /// The same cap for snapshot requests, apart: a snapshot may take minutes
    /// (`snapshot_timeout_secs`), and power actions never queue behind one.
    snapshot_slots: HashMap<String, Arc<Semaphore>>,
    confirm_timeout: Duration,
}

/// A VM as the control layer needs it.
#[derive(Clone)]
pub struct Target {
    pub host: Arc<HostEntry>,
    pub uuid: VmUuid,
    pub name: String,
    pub state: PowerState,
    /// The backend's own word for the state, as last stored (`crashed`, `gurumeditation`...).
    pub raw_state: String,
    /// The VM's display as last stored (`vms.graphics`: `vnc`, `spice`, `rdp`; None: none).
    pub graphics: Option<String>,
}

impl Target {
    /// Whether the VM's hypervisor takes `action` in the VM's stored state.
    pub fn offers(&self, action: PowerAction) -> Offer {
        self.host.backend.offers(action, self.state, &self.raw_state)
    }

    /// The VM's key: its host's name and its uuid.
    pub fn key(&self) -> VmKey {
        VmKey::new(self.host.config.name.clone(), self.uuid.clone())
    }
}

/// What happened to one request by the time the form is answered, for the flash message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Recorded, and being sent in the background: the list, the VM page and the audit log
    /// show it move through its states. `superseded`: the graceful action it overruled.
    Requested { superseded: Option<PowerAction> },
    /// Refused before anything was sent (already pending, not applicable...).
    Refused(String),
    /// It could not be recorded (a database error other than refusing writes), so it was not
    /// sent. (What the hypervisor answers is in the audit log, not here.)
    Failed(String),
    /// Not sent because the database refuses writes (full, read-only...): it could not be
    /// recorded, so it was not sent, and no entry says it was asked for.
    Unrecorded(StorageFault),
}

impl Control {
    pub fn new(
        pool: SqlitePool,
        hosts: Arc<Hosts>,
        storage: Arc<Storage>,
        settings: &Settings,
    ) -> Control {
        let per_host = || -> HashMap<String, Arc<Semaphore>> {
            hosts
                .0
                .iter()
                .map(|h| {
                    let slot = Arc::new(Semaphore::new(settings.power_concurrency));
                    (h.config.name.to_string(), slot)
                })
                .collect()
        };
        Control {
            pool,
            slots: per_host(),
            snapshot_slots: per_host(),
            hosts,
            storage,
            confirm_timeout: settings.confirm_timeout,
        }
    }

    /// Looks up a VM that is present (not gone) on a configured host.
    pub async fn target(&self, vm: &VmKey) -> Result<Option<Target>, sqlx::Error> {
        let Some(entry) = self.hosts.get(vm.host.as_str()) else { return Ok(None) };
        let found = store::present_vm(&self.pool, entry.id, &vm.uuid).await?;
        Ok(found.map(|(name, state, raw_state, graphics)| Target {
            host: entry.clone(),
            uuid: vm.uuid.clone(),
            name,
            state,
            raw_state,
            graphics,
        }))
    }

    /// Records one power request and sends it in the background: the answer never waits for
    /// the host. Refusals decided before sending (not applicable, already pending, database
    /// refusing writes) are answered here. Never panics; every outcome is in the audit log.
    pub async fn execute(&self, target: &Target, action: PowerAction, actor: &Actor) -> Outcome {
        let request = PowerRequest {
            actor,
            host: target.host.config.name.as_str(),
            vm_uuid: &target.uuid,
            vm_name: &target.name,
            action,
        };
        // Known to refuse writes (a poll failed to store, or the last request did): nothing
        // could be recorded, not even a refusal. The next stored poll clears this.
        if let Some(fault) = self.storage.fault() {
            tracing::warn!(vm = %target.name, "{}: power request not sent", fault.label());
            return Outcome::Unrecorded(fault);
        }
        if let Offer::Unavailable(why) = target.offers(action) {
            return self.refuse(&request, why.refusal(action, &target.name)).await;
        }
        let Recorded { id, superseded } = match store::requested(&self.pool, &request).await {
            Ok(recorded) => recorded,
            Err(RequestError::Pending(pending)) => {
                let why = still_pending(&target.name, action, pending.as_ref());
                return self.refuse(&request, why).await;
            }
            Err(RequestError::Db(e)) => {
                tracing::error!("recording a power request failed, so it was not sent: {e}");
                if let Some(fault) = self.storage.failed(&e) {
                    return Outcome::Unrecorded(fault);
                }
                return Outcome::Failed(
                    "The request could not be recorded, so it was not sent.".into(),
                );
            }
        };
        if let Some(old) = &superseded {
            tracing::info!(vm = %target.name, "{} superseded by {}", old.action.label(), action.label());
        }
        let dispatch = Dispatch {
            pool: self.pool.clone(),
            target: target.clone(),
            action,
            id,
            slot: self.slots.get(target.host.config.name.as_str()).cloned(),
            confirm_timeout: self.confirm_timeout,
        };
        let span = tracing::info_span!(
            "power",
            host = %target.host.config.name,
            vm = %target.name,
            action = action.as_str(),
            id
        );
        tokio::spawn(dispatch.run().instrument(span));
        Outcome::Requested { superseded: superseded.and_then(|p| p.action.power()) }
    }
}

/// Why a request is refused while another is in flight, and what the operator can do.
fn still_pending(vm: &str, action: PowerAction, pending: Option<&PendingPower>) -> String {
    let Some(p) = pending else {
        return format!("Another power action is still pending for {vm}; wait for it to settle.");
    };
    let by = p.user_name.as_deref().map(|u| format!(" by {u}")).unwrap_or_default();
    let overrule = match p.action {
        RequestAction::Power(pending) if !pending.is_forced() && !action.is_forced() => {
            ", or overrule it with Power off or Reset"
        }
        // Forced already, or a snapshot request: nothing overrules it.
        _ => "",
    };
    format!(
        "{} (requested{by}, {}) is still pending for {vm}; wait for it to settle{overrule}.",
        store::what(p.action, p.snapshot_name.as_deref()),
        p.status.as_str()
    )
}

/// One recorded request on its way to the host, run as a task of its own: waits for a slot
/// on its host, marks the request sent, calls the hypervisor, records its answer and watches
/// for the expected state. Each step's failure goes to the audit entry or the log; the task
/// ends once the call's timeout and the watch's deadline have passed, whatever the host does.
struct Dispatch {
    pool: SqlitePool,
    target: Target,
    action: PowerAction,
    id: i64,
    /// The host's cap on actions sent at the same time.
    slot: Option<Arc<Semaphore>>,
    confirm_timeout: Duration,
}

impl Dispatch {
    async fn run(self) {
        let Some(permit) = take_turn(&self.pool, self.id, self.slot.as_ref()).await else {
            return;
        };
        let result = self.target.host.backend.power(self.target.uuid.as_str(), self.action).await;
        drop(permit);
        match result {
            Ok(()) => {
                if let Err(e) = store::accepted(&self.pool, self.id).await {
                    tracing::error!("audit update failed: {e}");
                }
                let watch = Watch {
                    pool: self.pool,
                    host: self.target.host,
                    uuid: self.target.uuid,
                    action: self.action,
                    id: self.id,
                    deadline: self.confirm_timeout,
                };
                watch.run().await;
            }
            Err(e) => {
                let message = describe(&e);
                tracing::warn!("the host refused or did not answer: {message}");
                if let Err(db) =
                    store::settled(&self.pool, self.id, AuditOutcome::Failed, Some(&message), None)
                        .await
                {
                    tracing::error!("audit update failed: {db}");
                }
            }
        }
    }
}

/// A recorded request's turn on its host: waits for a slot (`slot`: the host's cap), then marks
/// the request sent. None when it is no longer requested by then (superseded, or settled by a
/// restart's sweep): it must not be sent. The permit is held until the host has answered.
async fn take_turn(
    pool: &SqlitePool,
    id: i64,
    slot: Option<&Arc<Semaphore>>,
) -> Option<Option<tokio::sync::OwnedSemaphorePermit>> {
    let permit = match slot {
        Some(s) => s.clone().acquire_owned().await.ok(),
        None => None,
    };
    match store::sent(pool, id).await {
        Ok(true) => {}
        Ok(false) => {
            tracing::info!("no longer requested when its turn came: not sent");
            return None;
        }
        Err(e) => tracing::error!("audit update failed: {e}"),
    }
    Some(permit)
}

impl Control {
    async fn refuse(&self, request: &PowerRequest<'_>, why: String) -> Outcome {
        if let Err(e) = store::refused(&self.pool, request, &why).await {
            tracing::error!("recording a refused power request failed: {e}");
        }
        Outcome::Refused(why)
    }
}

/// A backend error in words an operator can act on.
fn describe(e: &BackendError) -> String {
    match e {
        BackendError::NoSuchVm => "The VM no longer exists on its host.".into(),
        // The page the request came from showed an older state than the VM's.
        BackendError::InvalidState(m) => {
            format!("The hypervisor refused: {m}. Refresh the page to see the VM's current state.")
        }
        BackendError::Unsupported(m) => format!("Not possible on this host: {m}."),
        BackendError::Timeout(d) => format!(
            "The host did not answer within {} s; the action may still happen, and the next poll shows the VM's state.",
            d.as_secs()
        ),
        other => other.to_string(),
    }
}

/// Watches a VM after an accepted action until it reaches the expected state or time runs out.
struct Watch {
    pool: SqlitePool,
    host: Arc<HostEntry>,
    uuid: VmUuid,
    action: PowerAction,
    id: i64,
    deadline: Duration,
}

impl Watch {
    async fn settle(&self, outcome: AuditOutcome, detail: Option<&str>) {
        if let Err(e) = store::settled(&self.pool, self.id, outcome, None, detail).await {
            tracing::error!("settling a power request failed: {e}");
        }
    }

    async fn run(self) {
        let start = Instant::now();
        let expected = self.action.expected_state();
        // Quick checks first (most actions settle in well under a second), then slower ones.
        let mut delays = [100u64, 200, 300, 500, 500, 1000, 1000, 2000].into_iter();
        let mut last_seen: Option<PowerState> = None;
        loop {
            // Settled otherwise (superseded by a forced action): nothing left to watch, and
            // settling it again would be a no-op anyway (`store::settled`).
            if let Ok(false) = store::is_pending(&self.pool, self.id).await {
                return;
            }
            // The new state is stored before the entry settles, so the list never shows the
            // action settled beside the old state. Only this VM's row is written: re-polling a
            // 1,000-VM host for every action would be wasteful.
            match self.host.backend.vm_state(self.uuid.as_str()).await {
                Ok(s) => {
                    self.host.record_state(&self.pool, self.uuid.as_str(), &s).await;
                    if s.state == expected {
                        self.settle(AuditOutcome::Confirmed, None).await;
                        return;
                    }
                    last_seen = Some(s.state);
                }
                Err(BackendError::NoSuchVm) if expected == PowerState::ShutOff => {
                    // A transient VM disappears when it stops: that is the stop. A poll of its
                    // host records it as gone.
                    self.host.poll(&self.pool).await;
                    self.settle(AuditOutcome::Confirmed, Some("the VM (transient) disappeared"))
                        .await;
                    return;
                }
                Err(e) => tracing::debug!(vm = %self.uuid, "state check failed: {e}"),
            }
            if start.elapsed() >= self.deadline {
                let secs = self.deadline.as_secs();
                let detail = match last_seen {
                    Some(s) => format!("after {secs} s the VM was still {}", s.label()),
                    None => format!("the VM's state could not be read within {secs} s"),
                };
                self.settle(AuditOutcome::Unconfirmed, Some(&detail)).await;
                return;
            }
            let wait = Duration::from_millis(delays.next().unwrap_or(3000));
            tokio::time::sleep(
                wait.min(self.deadline.saturating_sub(start.elapsed()) + Duration::from_millis(10)),
            )
            .await;
        }
    }
}

/// Settles requests a previous run left pending (it crashed or was killed): never sent ones
/// failed, the others against the VM's actual state.
pub async fn settle_leftovers(pool: &SqlitePool, hosts: &Hosts) {
    let pending = match store::pending(pool).await {
        Ok(p) => p,
        Err(e) => {
            tracing::error!("cannot read pending power requests: {e}");
            return;
        }
    };
    for p in pending {
        let action = match p.action {
            RequestAction::Power(a) => a,
            RequestAction::Snapshot(a) => {
                let host = hosts.get(&p.host_name);
                let (outcome, error, detail) = snapshots::settle_leftover(pool, host, &p, a).await;
                match store::settled(pool, p.id, outcome, error.as_deref(), Some(&detail)).await {
                    Ok(()) => {
                        tracing::info!(vm = %p.vm_name, action = a.as_str(), "settled a snapshot request left pending by the previous run")
                    }
                    Err(e) => tracing::error!("settling a leftover request failed: {e}"),
                }
                continue;
            }
        };
        let (outcome, error, detail) = if p.status == AuditOutcome::Requested {
            (AuditOutcome::Failed, Some("vmdeck stopped before sending the request"), None)
        } else {
            let observed = match hosts.get(&p.host_name) {
                Some(h) => {
                    h.backend.vm_state(&p.vm_uuid).await.map(|s| s.state).map_err(|e| e.to_string())
                }
                None => Err(format!("host {} is no longer configured", p.host_name)),
            };
            match observed {
                Ok(state) if state == action.expected_state() => (
                    AuditOutcome::Confirmed,
                    None,
                    Some("confirmed after vmdeck restarted".to_string()),
                ),
                Ok(state) => (
                    AuditOutcome::Unconfirmed,
                    None,
                    Some(format!(
                        "vmdeck restarted before confirming; the VM was then {}",
                        state.label()
                    )),
                ),
                Err(e) => (
                    AuditOutcome::Unconfirmed,
                    None,
                    Some(format!(
                        "vmdeck restarted before confirming; the state could not be read: {e}"
                    )),
                ),
            }
        };
        match store::settled(pool, p.id, outcome, error, detail.as_deref()).await {
            Ok(()) => {
                tracing::info!(vm = %p.vm_name, action = action.as_str(), "settled a power request left pending by the previous run")
            }
            Err(e) => tracing::error!("settling a leftover request failed: {e}"),
        }
    }
}

/// Manages [`Control`] and settles leftovers at liftoff.
pub fn stage() -> AdHoc {
    AdHoc::on_ignite("Power control", |rocket| async move {
        let (Some(db), Some(hosts), Some(settings)) =
            (rocket.state::<Db>(), rocket.state::<Arc<Hosts>>(), rocket.state::<Settings>())
        else {
            return rocket;
        };
        let Some(storage) = rocket.state::<Arc<Storage>>() else { return rocket };
        let control = Control::new(db.0.clone(), hosts.clone(), storage.clone(), settings);
        rocket.manage(control).attach(AdHoc::on_liftoff(
            "Settle pending power requests",
            |rocket| {
                Box::pin(async move {
                    if let (Some(db), Some(hosts)) =
                        (rocket.state::<Db>(), rocket.state::<Arc<Hosts>>())
                    {
                        settle_leftovers(&db.0, hosts).await;
                    }
                })
            },
        ))
    })
}
