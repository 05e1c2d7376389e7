//! Snapshot schedules with retention: admins define which VMs (a list, a name pattern or a
//! host), when (hourly, daily or weekly, UTC) and how many snapshots to keep; the scheduler
//! takes them on time as the system user, names them `vmdeck-<frequency>-<slot>`, and prunes
//! only the snapshots it took under that schedule once they fall out of retention.
//!
//! `model`: the pure slot, naming, pattern and retention logic; `store`: its SQL; `routes`:
//! the pages (admins). [`Scheduler::tick`] is the whole background job, driven by the clock in
//! `stage` and by tests with a "now" of their choosing.

pub mod model;
mod routes;
pub mod store;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use rocket::fairing::AdHoc;
use sqlx::SqlitePool;

use crate::config::Settings;
use crate::control::snapshots::{settle_bound, SnapshotOutcome, SnapshotRequest};
use crate::control::Control;
use crate::db::{Db, Storage};
use crate::domain::{Actor, AfterRevert, SnapshotAction, VmKey};
use crate::hosts::Hosts;
use model::{due_slot, slot_of_name, snapshot_name};
use store::{RunVm, Schedule, Scope, ScopeVm};

pub use routes::routes;

pub use crate::domain::SYSTEM_USER;

/// How often the scheduler looks for due slots.
const TICK: Duration = Duration::from_secs(30);
/// VMs of one schedule handled at the same time (each VM's own requests go one at a time).
const VMS_AT_ONCE: usize = 4;
/// How long to wait for a request on a host that is not configured (it is refused at once).
const SETTLE_FALLBACK: Duration = Duration::from_secs(60);
/// How often a request's audit entry is read while waiting for it to settle.
const SETTLE_POLL: Duration = Duration::from_millis(100);

/// The actor of every scheduled take and prune.
pub fn system_actor() -> Actor {
    Actor { user: Some(SYSTEM_USER.into()), addr: None }
}

/// The scheduler: its own power-and-snapshot control (the same request lifecycle and audit log
/// as the pages'), managed by Rocket as `Arc<Scheduler>`.
pub struct Scheduler {
    pool: SqlitePool,
    hosts: Arc<Hosts>,
    control: Control,
    /// Longest wait for a request to settle (sent, answered and confirmed or not), by host:
    /// `control::snapshots::settle_bound` (its snapshot limit and confirmation included) and
    /// a margin.
    settle_timeout: HashMap<String, Duration>,
    /// One tick at a time (the clock's and a test's).
    running: tokio::sync::Mutex<()>,
    /// Set once the runs a previous process left unfinished are settled ([`Scheduler::start`]).
    started: tokio::sync::OnceCell<()>,
}

/// What one tick did: the runs it started (and finished), by id.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TickReport {
    pub runs: Vec<i64>,
}

impl Scheduler {
    pub fn new(
        pool: SqlitePool,
        hosts: Arc<Hosts>,
        storage: Arc<Storage>,
        settings: &Settings,
    ) -> Scheduler {
        let control = Control::new(pool.clone(), hosts.clone(), storage, settings);
        let settle_timeout = hosts
            .0
            .iter()
            .map(|h| {
                let bound = settle_bound(settings, &h.config) + Duration::from_secs(10);
                (h.config.name.to_string(), bound)
            })
            .collect();
        Scheduler {
            pool,
            hosts,
            control,
            settle_timeout,
            running: tokio::sync::Mutex::new(()),
            started: tokio::sync::OnceCell::new(),
        }
    }

    /// Settles, once per process and before the first tick, the runs a previous process left
    /// unfinished (vmdeck stopped or crashed during them): each ends now as interrupted, with
    /// the VM results it recorded; the run page shows its other VMs as not reached. Their slot
    /// stays claimed: an interrupted run is not run again, the next slot runs as usual.
    ///
    /// How this relates to `control::settle_leftovers` (run at the same start, from control's
    /// liftoff): that settles the snapshot requests such a run had in flight, each against the
    /// VM's snapshot set, in the audit log; this settles the run's own record. The two do not
    /// wait for each other: a VM whose take was in flight has no result in the run (not
    /// reached), and the run page links the request's audit entry, which says how it ended.
    pub async fn start(&self) {
        self.started
            .get_or_init(|| async {
                match store::settle_interrupted(&self.pool, crate::db::now_ms()).await {
                    Ok(runs) => {
                        for (run, schedule) in runs {
                            tracing::warn!(%schedule, run, "a scheduled run was interrupted: vmdeck stopped during it");
                        }
                    }
                    // Not settled: the runs stay unfinished (shown as running) until a start
                    // that can write; nothing else depends on it.
                    Err(e) => tracing::error!("settling interrupted scheduled runs failed: {e}"),
                }
            })
            .await;
    }

    /// Runs every enabled schedule whose slot is due at `now` (ms), one schedule after the
    /// other, and waits for the runs to finish. A slot missed while vmdeck was down is due once
    /// (`model::due_slot`); a slot is claimed in the database before it runs, so it never runs
    /// twice. Errors are logged and recorded on the run, never raised.
    pub async fn tick(&self, now: i64) -> TickReport {
        let _one = self.running.lock().await;
        self.start().await;
        let mut report = TickReport::default();
        let schedules = match store::list(&self.pool).await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!("reading snapshot schedules failed: {e}");
                return report;
            }
        };
        for s in schedules.into_iter().filter(|s| s.enabled) {
            let Some(slot) = due_slot(s.frequency, now, s.last_slot, s.created_at) else {
                continue;
            };
            let run = match store::claim_slot(&self.pool, s.id, slot, crate::db::now_ms()).await {
                Ok(Some(run)) => run,
                Ok(None) => continue,
                // A database that refuses writes (full, read-only) is said once by the poller
                // and /healthz; the slot stays due and runs once writes work again.
                Err(e) if crate::db::StorageFault::of(&e).is_some() => {
                    tracing::warn!(schedule = %s.name, "scheduled run postponed: {e}");
                    continue;
                }
                Err(e) => {
                    tracing::error!(schedule = %s.name, "starting a scheduled run failed: {e}");
                    continue;
                }
            };
            tracing::info!(schedule = %s.name, slot = %model::slot_label(slot), "scheduled snapshots");
            self.run(&s, slot, run, now).await;
            report.runs.push(run);
        }
        report
    }

    /// The present VMs a scope covers on configured hosts.
    pub async fn vms_in_scope(&self, scope: &Scope) -> sqlx::Result<Vec<ScopeVm>> {
        let hosts = self.hosts.names();
        let all = store::present_vms(&self.pool, &hosts).await?;
        Ok(select_scope(all, scope))
    }

    async fn run(&self, s: &Schedule, slot: i64, run: i64, now: i64) {
        let vms = match self.vms_in_scope(&s.scope).await {
            Ok(vms) => vms,
            Err(e) => {
                tracing::error!(schedule = %s.name, "listing the schedule's VMs failed: {e}");
                Vec::new()
            }
        };
        // A listed VM that is no longer present (deleted since) is a failure of its own.
        let mut missing = Vec::new();
        if let Scope::Vms(keys) = &s.scope {
            for (host, uuid) in keys {
                if !vms.iter().any(|v| &v.host_name == host && &v.uuid == uuid) {
                    let known = store::known_vm_name(&self.pool, host, uuid).await.ok().flatten();
                    missing.push(ScopeVm {
                        host_name: host.clone(),
                        uuid: uuid.clone(),
                        name: known.unwrap_or_else(|| format!("{host}/{uuid}")),
                    });
                }
            }
        }
        // Each VM's result is recorded as soon as it is known, so a run that vmdeck stops
        // during keeps the results it had ([`Scheduler::start`] settles the rest).
        futures::stream::iter(vms.into_iter().chain(missing))
            .map(|vm| async move {
                let r = self.one_vm(s, slot, vm, now).await;
                if let Err(e) = store::record_run_vm(&self.pool, run, &r).await {
                    tracing::error!(schedule = %s.name, vm = %r.vm_name, "recording a run's result failed: {e}");
                }
            })
            .buffer_unordered(VMS_AT_ONCE)
            .collect::<Vec<()>>()
            .await;
        if let Err(e) = store::finish_run(&self.pool, run, crate::db::now_ms()).await {
            tracing::error!(schedule = %s.name, "finishing a run failed: {e}");
        }
    }

    /// Takes the slot's snapshot of one VM and, once it is confirmed, prunes the schedule's
    /// own snapshots of that VM that fall out of retention, one request at a time.
    async fn one_vm(&self, s: &Schedule, slot: i64, vm: ScopeVm, now: i64) -> RunVm {
        let mut result = RunVm {
            host_name: vm.host_name.clone(),
            vm_uuid: vm.uuid.clone(),
            vm_name: vm.name.clone(),
            outcome: "failed".into(),
            error: None,
            audit_id: None,
            pruned: 0,
            prune_error: None,
        };
        let name = snapshot_name(s.frequency, slot);
        let request = SnapshotRequest {
            action: SnapshotAction::Take,
            snapshot_name: name.clone(),
            snap_id: None,
            description: format!("Taken by vmdeck's schedule {}.", crate::domain::quoted(&s.name)),
            with_memory: s.with_memory,
            after: AfterRevert::AsTaken,
            schedule_id: Some(s.id),
        };
        match self.request(&vm, request).await {
            Ok(audit_id) => {
                result.audit_id = Some(audit_id);
                result.outcome = "taken".into();
            }
            Err((audit_id, why)) => {
                result.audit_id = audit_id;
                result.error = Some(why);
                return result;
            }
        }
        let own = match store::own_snapshots(&self.pool, s.id, &vm.host_name, &vm.uuid, "vmdeck-")
            .await
        {
            Ok(own) => own,
            Err(e) => {
                tracing::error!(vm = %vm.name, "reading a schedule's snapshots failed: {e}");
                result.prune_error = Some("its snapshots could not be read".into());
                return result;
            }
        };
        let aged: Vec<(store::OwnSnapshot, i64)> = own
            .into_iter()
            .map(|o| {
                let at = slot_of_name(&o.name).or(o.created_at).unwrap_or(o.first_seen);
                (o, at)
            })
            .collect();
        let keyed: Vec<(usize, i64)> =
            aged.iter().enumerate().map(|(i, (_, at))| (i, *at)).collect();
        for i in s.retention.to_prune(&keyed, now) {
            let old = &aged[i].0;
            let request = SnapshotRequest {
                action: SnapshotAction::Delete,
                snapshot_name: old.name.clone(),
                snap_id: Some(old.snap_id.clone()),
                description: String::new(),
                with_memory: false,
                after: AfterRevert::AsTaken,
                schedule_id: Some(s.id),
            };
            match self.request(&vm, request).await {
                Ok(_) => result.pruned += 1,
                Err((_, why)) => {
                    result.prune_error = Some(format!("deleting {}: {why}", old.name));
                    break;
                }
            }
        }
        result
    }

    /// Sends one snapshot request for `vm` as the system user and waits for its audit entry to
    /// settle: Ok(audit id) once confirmed, else the audit id (if recorded) and why, in words.
    async fn request(
        &self,
        vm: &ScopeVm,
        req: SnapshotRequest,
    ) -> Result<i64, (Option<i64>, String)> {
        let key = match VmKey::parse(&format!("{}/{}", vm.host_name, vm.uuid)) {
            Ok(k) => k,
            Err(e) => return Err((None, e)),
        };
        let target = match self.control.target(&key).await {
            Ok(Some(t)) => t,
            Ok(None) => {
                return Err((None, "the VM no longer exists, or its host is not configured".into()))
            }
            Err(e) => {
                tracing::error!(vm = %vm.name, "looking up a VM failed: {e}");
                return Err((None, "the VM could not be looked up".into()));
            }
        };
        let audit_id = match self.control.snapshot(&target, req, &system_actor()).await {
            SnapshotOutcome::Requested { audit_id } => audit_id,
            SnapshotOutcome::Refused(why) | SnapshotOutcome::Failed(why) => {
                return Err((None, why))
            }
            SnapshotOutcome::Unrecorded(fault) => {
                return Err((None, format!("not sent: {}", fault.label())))
            }
        };
        let settle = self.settle_timeout.get(&vm.host_name).copied().unwrap_or(SETTLE_FALLBACK);
        let deadline = tokio::time::Instant::now() + settle;
        loop {
            match store::audit_status(&self.pool, audit_id).await {
                Ok(Some((status, error))) => match status.as_str() {
                    "requested" | "sent" | "accepted" => {}
                    "confirmed" => return Ok(audit_id),
                    other => {
                        let why = error.unwrap_or_else(|| format!("the request ended {other}"));
                        return Err((Some(audit_id), why));
                    }
                },
                Ok(None) => return Err((Some(audit_id), "its audit entry is gone".into())),
                Err(e) => tracing::warn!("reading a request's status failed: {e}"),
            }
            if tokio::time::Instant::now() >= deadline {
                return Err((
                    Some(audit_id),
                    "still not settled when the run gave up waiting".into(),
                ));
            }
            tokio::time::sleep(SETTLE_POLL).await;
        }
    }
}

/// The VMs of `all` that `scope` covers.
pub fn select_scope(all: Vec<ScopeVm>, scope: &Scope) -> Vec<ScopeVm> {
    all.into_iter()
        .filter(|v| match scope {
            Scope::Vms(keys) => keys.iter().any(|(h, u)| *h == v.host_name && *u == v.uuid),
            Scope::Pattern(p) => model::glob_matches(p, &v.name),
            Scope::Host(h) => *h == v.host_name,
        })
        .collect()
}

/// Manages the [`Scheduler`] at ignite and ticks it every 30 s from liftoff (so a slot missed
/// while vmdeck was down runs at start).
pub fn stage() -> AdHoc {
    AdHoc::on_ignite("Snapshot schedules", |rocket| async move {
        let (Some(db), Some(hosts), Some(settings), Some(storage)) = (
            rocket.state::<Db>(),
            rocket.state::<Arc<Hosts>>(),
            rocket.state::<Settings>(),
            rocket.state::<Arc<Storage>>(),
        ) else {
            return rocket;
        };
        let scheduler =
            Arc::new(Scheduler::new(db.0.clone(), hosts.clone(), storage.clone(), settings));
        rocket.manage(scheduler).attach(AdHoc::on_liftoff("Snapshot scheduler", |rocket| {
            Box::pin(async move {
                let Some(scheduler) = rocket.state::<Arc<Scheduler>>().cloned() else { return };
                // Before the first tick: runs a previous process left unfinished.
                scheduler.start().await;
                crate::background::every(rocket, "snapshot schedules", TICK, move || {
                    let scheduler = scheduler.clone();
                    async move {
                        // Its own task: a run that waits on slow hosts never holds the timer's
                        // loop; the next tick waits for it (`running`).
                        let _ = tokio::spawn(async move {
                            scheduler.tick(crate::db::now_ms()).await;
                        })
                        .await;
                    }
                });
            })
        }))
    })
}
