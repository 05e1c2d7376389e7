//! Snapshot requests: take, revert to and delete a VM's snapshots through the power requests'
//! lifecycle and audit log (kind `snapshot`). A request is validated, recorded (`requested`,
//! with its `snapshot_requests` row, in one transaction) while the form is answered, then sent
//! in the background under its host's snapshot slot (as many per host as power actions, but
//! apart from theirs, so a power action never waits behind a long snapshot), and confirmed once
//! the VM's snapshot set read back from the hypervisor shows it: the snapshot appears (take,
//! matched by name), disappears (delete) or becomes current (revert). Each read is recorded
//! through `hosts::snapshots::record_snapshots`, crediting the request, so the VM page shows
//! the result at once. One request is in flight per VM, power or snapshot.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::SqlitePool;
use tokio::sync::Semaphore;
use tracing::Instrument;

use super::store::{self, RequestError, SnapshotRecord};
use super::{describe, Control, Target};
use crate::backend::DriverConfig;
use crate::backend::{SnapshotOp, SnapshotReport};
use crate::config::{HostConfig, Settings};
use crate::db::{now_ms, StorageFault};
use crate::domain::{Actor, AfterRevert, AuditOutcome, SnapshotAction};
use crate::hosts::snapshots::{record_snapshots, SnapshotCause};
use crate::hosts::HostEntry;

/// Longest snapshot name, in characters.
pub const MAX_NAME: usize = 64;
/// Longest snapshot description, in characters.
pub const MAX_DESCRIPTION: usize = 256;
/// The name prefix reserved for scheduled snapshots: a hand-taken one may not use it, so a
/// schedule's retention never mistakes it for its own.
pub const SCHEDULE_PREFIX: &str = "vmdeck-";

/// A snapshot request as a form (or a schedule) asks for it.
#[derive(Debug, Clone)]
pub struct SnapshotRequest {
    pub action: SnapshotAction,
    /// Take: the new snapshot's name; revert and delete: the target's name as shown.
    pub snapshot_name: String,
    /// Revert and delete: the target's hypervisor id (required); take: None.
    pub snap_id: Option<String>,
    pub description: String,
    /// Take: a running VM's memory too, where the backend offers the choice.
    pub with_memory: bool,
    /// Revert: the VM's state afterwards.
    pub after: AfterRevert,
    /// A scheduled take or prune: its schedule.
    pub schedule_id: Option<i64>,
}

/// What happened to a snapshot request by the time the form is answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnapshotOutcome {
    /// Recorded as audit entry `audit_id`, and being sent in the background.
    Requested { audit_id: i64 },
    /// Refused before anything was sent (bad name, already pending, no snapshots here).
    Refused(String),
    /// It could not be recorded, so it was not sent.
    Failed(String),
    /// Not sent because the database refuses writes.
    Unrecorded(StorageFault),
}

/// Why `req`'s input is not acceptable, in words; None when it is.
pub fn invalid(req: &SnapshotRequest) -> Option<String> {
    let name = &req.snapshot_name;
    let chars = name.chars().count();
    if name.trim().is_empty() {
        return Some("Give the snapshot a name.".into());
    }
    if chars > MAX_NAME {
        return Some(format!(
            "The snapshot name is {chars} characters long; at most {MAX_NAME} are allowed."
        ));
    }
    if name.chars().any(char::is_control) {
        return Some(
            "The snapshot name contains a control character (a line break or tab); use letters, digits, spaces and punctuation.".into(),
        );
    }
    if name.contains('/') || name.contains('\\') {
        return Some("The snapshot name contains a slash (/ or \\); use another character.".into());
    }
    if name.trim() != name {
        return Some("The snapshot name starts or ends with a space; remove it.".into());
    }
    if req.action == SnapshotAction::Take
        && req.schedule_id.is_none()
        && name.starts_with(SCHEDULE_PREFIX)
    {
        return Some(format!(
            "Names starting with {} are reserved for scheduled snapshots; choose another name.",
            crate::domain::quoted(SCHEDULE_PREFIX)
        ));
    }
    let dchars = req.description.chars().count();
    if dchars > MAX_DESCRIPTION {
        return Some(format!(
            "The description is {dchars} characters long; at most {MAX_DESCRIPTION} are allowed."
        ));
    }
    if req.description.chars().any(|c| c.is_control() && c != '\n' && c != '\r' && c != '\t') {
        return Some("The description contains a control character; remove it.".into());
    }
    if req.action != SnapshotAction::Take && req.snap_id.as_deref().is_none_or(str::is_empty) {
        return Some("Which snapshot? The request names none.".into());
    }
    None
}

impl Control {
    /// Records one snapshot request and sends it in the background: the answer never waits
    /// for the host. Bad input is refused in words with nothing recorded; a host without
    /// snapshots or a VM with a request in flight is refused and the refusal recorded. Never
    /// panics; every outcome past validation is in the audit log.
    pub async fn snapshot(
        &self,
        target: &Target,
        req: SnapshotRequest,
        actor: &Actor,
    ) -> SnapshotOutcome {
        if let Some(why) = invalid(&req) {
            return SnapshotOutcome::Refused(why);
        }
        let record = SnapshotRecord {
            actor,
            host: target.host.config.name.as_str(),
            vm_uuid: &target.uuid,
            vm_name: &target.name,
            action: req.action,
            snapshot_name: &req.snapshot_name,
            snap_id: req.snap_id.as_deref(),
            description: &req.description,
            with_memory: req.with_memory,
            after: (req.action == SnapshotAction::Revert).then_some(req.after),
            schedule_id: req.schedule_id,
        };
        if let Some(fault) = self.storage.fault() {
            tracing::warn!(vm = %target.name, "{}: snapshot request not sent", fault.label());
            return SnapshotOutcome::Unrecorded(fault);
        }
        if !target.host.backend.snapshot_caps().supported {
            let why = format!(
                "{} is not possible for {}: its host ({}) has no snapshot support.",
                req.action.label(),
                target.name,
                target.host.config.name
            );
            return self.refuse_snapshot(&record, why).await;
        }
        let vm_id = match store::vm_row_id(&self.pool, target.host.id, &target.uuid).await {
            Ok(Some(id)) => id,
            Ok(None) => {
                return SnapshotOutcome::Refused(format!(
                    "{} is no longer present on {}.",
                    target.name, target.host.config.name
                ))
            }
            Err(e) => {
                tracing::error!("reading a VM before a snapshot request failed: {e}");
                return SnapshotOutcome::Failed(
                    "The request could not be recorded, so it was not sent.".into(),
                );
            }
        };
        let id = match store::snapshot_requested(&self.pool, &record).await {
            Ok(id) => id,
            Err(RequestError::Pending(pending)) => {
                let what = store::what(req.action.into(), Some(&req.snapshot_name));
                let why = match pending {
                    Some(p) => format!(
                        "{what} was not requested: {} (requested by {}, {}) is still pending for {}; wait for it to settle.",
                        store::what(p.action, p.snapshot_name.as_deref()),
                        p.user_name.as_deref().unwrap_or("the system"),
                        p.status.as_str(),
                        target.name
                    ),
                    None => format!(
                        "{what} was not requested: another request is still pending for {}; wait for it to settle.",
                        target.name
                    ),
                };
                return self.refuse_snapshot(&record, why).await;
            }
            Err(RequestError::Db(e)) => {
                tracing::error!("recording a snapshot request failed, so it was not sent: {e}");
                if let Some(fault) = self.storage.failed(&e) {
                    return SnapshotOutcome::Unrecorded(fault);
                }
                return SnapshotOutcome::Failed(
                    "The request could not be recorded, so it was not sent.".into(),
                );
            }
        };
        let op = match req.action {
            SnapshotAction::Take => SnapshotOp::Take {
                name: req.snapshot_name.clone(),
                description: req.description.clone(),
                with_memory: req.with_memory,
            },
            SnapshotAction::Revert => {
                SnapshotOp::Revert { id: req.snap_id.clone().unwrap_or_default(), after: req.after }
            }
            SnapshotAction::Delete => {
                SnapshotOp::Delete { id: req.snap_id.clone().unwrap_or_default() }
            }
        };
        let dispatch = SnapshotDispatch {
            pool: self.pool.clone(),
            host: target.host.clone(),
            uuid: target.uuid.to_string(),
            vm_id,
            id,
            action: req.action,
            name: req.snapshot_name,
            snap_id: req.snap_id,
            op,
            slot: self.snapshot_slots.get(target.host.config.name.as_str()).cloned(),
            confirm_timeout: self.confirm_timeout,
        };
        let span = tracing::info_span!(
            "snapshot",
            host = %target.host.config.name,
            vm = %target.name,
            action = req.action.as_str(),
            id
        );
        tokio::spawn(dispatch.run().instrument(span));
        SnapshotOutcome::Requested { audit_id: id }
    }

    async fn refuse_snapshot(&self, record: &SnapshotRecord<'_>, why: String) -> SnapshotOutcome {
        if let Err(e) = store::snapshot_refused(&self.pool, record, &why).await {
            tracing::error!("recording a refused snapshot request failed: {e}");
        }
        SnapshotOutcome::Refused(why)
    }
}

/// One recorded snapshot request on its way to the host, run as a task of its own (see
/// `Dispatch` for power: the same steps, with a snapshot read as the confirmation).
struct SnapshotDispatch {
    pool: SqlitePool,
    host: Arc<HostEntry>,
    uuid: String,
    vm_id: i64,
    id: i64,
    action: SnapshotAction,
    name: String,
    snap_id: Option<String>,
    op: SnapshotOp,
    slot: Option<Arc<Semaphore>>,
    confirm_timeout: Duration,
}

impl SnapshotDispatch {
    async fn settle(&self, outcome: AuditOutcome, error: Option<&str>, detail: &str) {
        if let Err(e) = store::settled(&self.pool, self.id, outcome, error, Some(detail)).await {
            tracing::error!("settling a snapshot request failed: {e}");
        }
    }

    async fn run(self) {
        let Some(permit) = super::take_turn(&self.pool, self.id, self.slot.as_ref()).await else {
            return;
        };
        // A take is matched by name among the snapshots that were not there before (names
        // can repeat on VirtualBox): the ids stored before the call.
        let before: HashSet<String> =
            match self.action {
                SnapshotAction::Take => self.host.backend.snapshots(&self.uuid).await.map_or_else(
                    |_| HashSet::new(),
                    |snaps| snaps.into_iter().map(|s| s.id).collect(),
                ),
                _ => HashSet::new(),
            };
        let result = self.host.backend.snapshot(&self.uuid, &self.op).await;
        drop(permit);
        let detail = store::snapshot_detail(&self.name);
        match result {
            Ok(()) => {
                if let Err(e) = store::accepted(&self.pool, self.id).await {
                    tracing::error!("audit update failed: {e}");
                }
                self.watch(&before, &detail).await;
            }
            Err(e) => {
                let message = describe(&e);
                tracing::warn!("the host refused or did not answer: {message}");
                self.settle(AuditOutcome::Failed, Some(&message), &detail).await;
                // The set as it is now: a refusal may still have changed it (a half-taken
                // snapshot), and the page should show what exists.
                if let Ok(snaps) = self.host.backend.snapshots(&self.uuid).await {
                    self.record(&snaps).await;
                }
            }
        }
    }

    fn cause(&self) -> SnapshotCause {
        SnapshotCause {
            audit_id: self.id,
            action: self.action,
            subject: match self.action {
                SnapshotAction::Take => self.name.clone(),
                _ => self.snap_id.clone().unwrap_or_default(),
            },
        }
    }

    async fn record(&self, snaps: &[SnapshotReport]) {
        if let Err(e) =
            record_snapshots(&self.pool, self.vm_id, snaps, now_ms(), None, Some(&self.cause()))
                .await
        {
            tracing::error!("recording the snapshot set failed: {e}");
        }
    }

    /// Reads the VM's snapshot set until it shows the request done, or time runs out.
    async fn watch(&self, before: &HashSet<String>, detail: &str) {
        // `confirm_timeout` counts from the hypervisor's answer, never from the request: the
        // call itself may have run for up to `snapshot_timeout` (minutes), and a deadline that
        // included it would call a snapshot unconfirmed while it was still being taken.
        let start = Instant::now();
        let mut delays = [100u64, 200, 300, 500, 500, 1000, 1000, 2000].into_iter();
        let mut last_error: Option<String>;
        loop {
            if let Ok(false) = store::is_pending(&self.pool, self.id).await {
                return;
            }
            match self.host.backend.snapshots(&self.uuid).await {
                Ok(snaps) => {
                    self.record(&snaps).await;
                    if let Some(done) =
                        confirmed(self.action, &self.name, self.snap_id.as_deref(), before, &snaps)
                    {
                        if let Some(taken) = done {
                            if let Err(e) =
                                store::snapshot_taken_as(&self.pool, self.id, &taken).await
                            {
                                tracing::error!("noting the new snapshot's id failed: {e}");
                            }
                        }
                        if self.action == SnapshotAction::Revert {
                            // A revert changes the VM's state too: stored before the entry
                            // settles, so the page never shows it settled beside the old state.
                            if let Ok(s) = self.host.backend.vm_state(&self.uuid).await {
                                self.host.record_state(&self.pool, &self.uuid, &s).await;
                            }
                        }
                        self.settle(AuditOutcome::Confirmed, None, detail).await;
                        return;
                    }
                    last_error = None;
                }
                Err(e) => {
                    tracing::debug!("snapshot read failed: {e}");
                    last_error = Some(e.to_string());
                }
            }
            if start.elapsed() >= self.confirm_timeout {
                let secs = self.confirm_timeout.as_secs();
                let seen = match (&last_error, self.action) {
                    (Some(e), _) => format!("the snapshots could not be read within {secs} s: {e}"),
                    (None, SnapshotAction::Take) => format!("after {secs} s it was not listed"),
                    (None, SnapshotAction::Delete) => format!("after {secs} s it was still listed"),
                    (None, SnapshotAction::Revert) => {
                        format!("after {secs} s it was not the current snapshot")
                    }
                };
                self.settle(AuditOutcome::Unconfirmed, None, &format!("{detail}: {seen}")).await;
                return;
            }
            let wait = Duration::from_millis(delays.next().unwrap_or(3000));
            tokio::time::sleep(wait.min(
                self.confirm_timeout.saturating_sub(start.elapsed()) + Duration::from_millis(10),
            ))
            .await;
        }
    }
}

/// The longest a snapshot request sent to `host` can stay pending, for code that waits for
/// one to settle (scheduled snapshots): the read before the call, the call itself
/// (`snapshot_timeout`), the confirmation's reads (`confirm_timeout`, counted from the call's
/// answer) and one more read begun just before that ran out or after a failure. A read is an
/// ordinary call (`call_timeout`), or on VirtualBox one command (`command_timeout_secs`).
pub fn settle_bound(settings: &Settings, host: &HostConfig) -> Duration {
    let read = match &host.driver {
        DriverConfig::Virtualbox(s) => settings.call_timeout.max(s.command_timeout),
        _ => settings.call_timeout,
    };
    read * 2 + settings.snapshot_timeout + settings.confirm_timeout
}

/// Whether `snaps` shows the request done: `Some(Some(id))` for a take (the new snapshot's
/// id), `Some(None)` for a revert or delete, None while not yet.
fn confirmed(
    action: SnapshotAction,
    name: &str,
    snap_id: Option<&str>,
    before: &HashSet<String>,
    snaps: &[SnapshotReport],
) -> Option<Option<String>> {
    match action {
        SnapshotAction::Take => snaps
            .iter()
            .find(|s| s.name == name && !before.contains(&s.id))
            .map(|s| Some(s.id.clone())),
        SnapshotAction::Delete => {
            (!snaps.iter().any(|s| Some(s.id.as_str()) == snap_id)).then_some(None)
        }
        SnapshotAction::Revert => {
            snaps.iter().any(|s| s.current && Some(s.id.as_str()) == snap_id).then_some(None)
        }
    }
}

/// Settles a snapshot request a previous run left pending: never sent, failed; otherwise
/// against the VM's snapshot set as it is now.
pub(super) async fn settle_leftover(
    pool: &SqlitePool,
    host: Option<&Arc<HostEntry>>,
    p: &store::PendingPower,
    action: SnapshotAction,
) -> (AuditOutcome, Option<String>, String) {
    let params = store::snapshot_params(pool, p.id).await.ok().flatten();
    let name = params.as_ref().map(|r| r.snapshot_name.clone()).unwrap_or_default();
    let detail = store::snapshot_detail(&name);
    if p.status == AuditOutcome::Requested {
        return (
            AuditOutcome::Failed,
            Some("vmdeck stopped before sending the request".into()),
            detail,
        );
    }
    let Some(host) = host else {
        return (
            AuditOutcome::Unconfirmed,
            None,
            format!(
                "{detail}: vmdeck restarted before confirming; host {} is no longer configured",
                p.host_name
            ),
        );
    };
    match host.backend.snapshots(&p.vm_uuid).await {
        Ok(snaps) => {
            let snap_id = params.as_ref().and_then(|r| r.snap_id.as_deref());
            // A take's "before" set is unknown now: any snapshot of that name counts.
            if confirmed(action, &name, snap_id, &HashSet::new(), &snaps).is_some() {
                (AuditOutcome::Confirmed, None, format!("{detail}: confirmed after vmdeck restarted"))
            } else {
                (
                    AuditOutcome::Unconfirmed,
                    None,
                    format!("{detail}: vmdeck restarted before confirming, and the snapshots did not show it done"),
                )
            }
        }
        Err(e) => (
            AuditOutcome::Unconfirmed,
            None,
            format!("{detail}: vmdeck restarted before confirming; the snapshots could not be read: {e}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(id: &str, name: &str, current: bool) -> SnapshotReport {
        SnapshotReport {
            id: id.into(),
            name: name.into(),
            description: String::new(),
            parent_id: None,
            created_at_ms: None,
            vm_state: String::new(),
            with_memory: false,
            current,
        }
    }

    fn take(name: &str) -> SnapshotRequest {
        SnapshotRequest {
            action: SnapshotAction::Take,
            snapshot_name: name.into(),
            snap_id: None,
            description: String::new(),
            with_memory: false,
            after: AfterRevert::AsTaken,
            schedule_id: None,
        }
    }

    #[test]
    fn a_take_is_matched_by_name_among_the_snapshots_that_are_new() {
        // VirtualBox lets names repeat: the old "nightly" is not the new one.
        let before: HashSet<String> = ["u1".to_string()].into();
        let old = [snap("u1", "nightly", true)];
        assert_eq!(confirmed(SnapshotAction::Take, "nightly", None, &before, &old), None);
        let now = [snap("u1", "nightly", false), snap("u2", "nightly", true)];
        assert_eq!(
            confirmed(SnapshotAction::Take, "nightly", None, &before, &now),
            Some(Some("u2".into()))
        );
    }

    #[test]
    fn a_delete_is_done_when_it_is_gone_and_a_revert_when_it_is_current() {
        let none = HashSet::new();
        let snaps = [snap("a", "a", false), snap("b", "b", true)];
        assert_eq!(confirmed(SnapshotAction::Delete, "a", Some("a"), &none, &snaps), None);
        assert_eq!(confirmed(SnapshotAction::Delete, "c", Some("c"), &none, &snaps), Some(None));
        assert_eq!(confirmed(SnapshotAction::Revert, "a", Some("a"), &none, &snaps), None);
        assert_eq!(confirmed(SnapshotAction::Revert, "b", Some("b"), &none, &snaps), Some(None));
    }

    #[test]
    fn names_are_checked_before_anything_is_recorded() {
        assert!(invalid(&take("before-upgrade")).is_none());
        assert!(invalid(&take("ünïcode ✓ \"quoted\"")).is_none());
        for bad in ["", "   ", "a\nb", "a\tb", "../x", "a\\b", " x", &"n".repeat(65), "vmdeck-x"] {
            assert!(invalid(&take(bad)).is_some(), "{bad:?} is refused");
        }
        // A schedule may use its prefix.
        assert!(
            invalid(&SnapshotRequest { schedule_id: Some(1), ..take("vmdeck-daily") }).is_none()
        );
        // Revert and delete must name their snapshot.
        let revert = SnapshotRequest { action: SnapshotAction::Revert, ..take("x") };
        assert!(invalid(&revert).is_some());
        assert!(invalid(&SnapshotRequest { snap_id: Some("x".into()), ..revert }).is_none());
    }

    #[test]
    fn a_waiter_allows_for_a_take_that_uses_its_whole_limit_then_the_whole_confirmation() {
        use rocket::figment::Figment;
        let settings = |host: serde_json::Value| {
            let figment = Figment::from(rocket::Config::debug_default())
                .merge(("snapshot_timeout_secs", 900))
                .merge(("confirm_timeout_secs", 60))
                .merge(("call_timeout_secs", 20))
                .merge(("hosts", vec![host]));
            Settings::from_figment(&figment).expect("valid settings")
        };
        let s = settings(
            serde_json::json!({"name": "lab", "driver": "libvirt", "uri": "test:///default"}),
        );
        assert_eq!(settle_bound(&s, &s.hosts[0]), Duration::from_secs(900 + 60 + 2 * 20));
        let s = settings(
            serde_json::json!({"name": "vb", "driver": "virtualbox", "command_timeout_secs": 45}),
        );
        assert_eq!(
            settle_bound(&s, &s.hosts[0]),
            Duration::from_secs(900 + 60 + 2 * 45),
            "a VirtualBox read is one command, which may outlast call_timeout"
        );
    }
}
