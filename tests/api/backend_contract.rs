//! The backend contract: what every backend does the same way, written once and run against each
//! backend through what the server uses — a `[[hosts]]` table read by `Settings::from_figment`,
//! then `vmdeck::backend::connect`.
//!
//! Each backend brings a [`World`]: a host that backend can be pointed at (a test double), what
//! it holds, and a way to change it behind vmdeck's back. The `contract!` line at the bottom
//! runs every behaviour against every world, as tests named
//! `backend_contract::<world>::<behaviour>`. A new backend implements `World` for its own test
//! double and adds one line there.
//!
//! - libvirt: the test driver loaded with `tests/fixtures/breadth.xml`. Its state lives in the
//!   connection, so each backend opens a fresh lab, and nothing outside that connection can
//!   change it: a VM disappears when its transient domain is destroyed through the backend. A
//!   hanging host is a unix socket that accepts and never answers.
//! - VirtualBox: the stand-in VBoxManage (`examples/fake_vboxmanage.rs`) with its `lab`
//!   scenario in a directory of its own; a VM disappears from its state file, and a hanging host
//!   is its `hang` fault on `list vms`.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use rocket::figment::Figment;
use vmdeck::backend::{
    AfterRevert, Backend, BackendError, PowerAction, PowerState, SnapshotOp, SnapshotReport,
    VmReport, VmState,
};
use vmdeck::config::{HostConfig, Settings};

use crate::support::app::{breadth_uri, libvirt_host, virtualbox_host, HostSpec};
use crate::support::fakes::{fake_vboxmanage, SilentSocket};

/// The call time limit of the backends under test (a hanging one gets [`HANG_LIMIT`]).
const CALL_LIMIT: Duration = Duration::from_secs(10);
/// The call time limit of a backend whose host hangs.
const HANG_LIMIT: Duration = Duration::from_secs(1);
/// How long the suite waits for any call before it calls the backend hung.
const PATIENCE: Duration = Duration::from_secs(20);

/// A VM a world is known to hold, as its backend must report it.
#[derive(Debug, Clone)]
struct KnownVm {
    uuid: String,
    name: &'static str,
    state: PowerState,
    vcpus: u32,
    memory_max_kib: u64,
}

/// A backend's test world: a host, what it holds, and how to change it behind vmdeck's back.
trait World: Sized {
    /// Names the backend in failure messages.
    const BACKEND: &'static str;
    /// A fresh world, shared with no other test.
    fn new() -> Self;
    /// The host, as a configuration file's `[[hosts]]` table describes it.
    fn host(&self) -> HostSpec;
    /// How many VMs the host lists.
    fn vm_count(&self) -> usize;
    /// Whether the hypervisor takes `action` on `vm` depending on the VM's configuration
    /// rather than its state, which `Backend::offers` does not see (yet).
    fn depends_on_configuration(vm: &VmReport, action: PowerAction) -> bool;
    /// VMs the host holds: at least one running, one paused and one shut off.
    fn known(&self) -> Vec<KnownVm>;
    /// Makes a VM disappear from the host as if deleted outside vmdeck; returns its UUID.
    /// `backend` is connected to [`World::host`] (some worlds only change through it).
    async fn remove_a_vm(&self, backend: &dyn Backend) -> String;
    /// A host that accepts requests and never answers; it hangs while the guard lives.
    fn hanging_host() -> (HostSpec, Box<dyn std::any::Any>);
}

/// A UUID no world holds.
const UNKNOWN_UUID: &str = "0badc0de-0000-4000-8000-00000000dead";

// ---- the behaviours ----

async fn inventory_lists_every_vm_with_its_uuid_name_state_vcpus_and_memory<W: World>() {
    let world = W::new();
    let backend = connect::<W>(world.host(), CALL_LIMIT);
    let reports = within::<W, _>("inventory()", backend.inventory())
        .await
        .unwrap_or_else(|e| panic!("{}: inventory() failed: {e}", W::BACKEND));
    assert_eq!(reports.len(), world.vm_count(), "{}: number of VMs listed", W::BACKEND);
    let mut uuids: Vec<&str> = reports.iter().map(|r| r.uuid.as_str()).collect();
    uuids.sort_unstable();
    uuids.dedup();
    assert_eq!(uuids.len(), reports.len(), "{}: every VM is listed once", W::BACKEND);
    for vm in world.known() {
        let r = report_of::<W>(&reports, &vm.uuid);
        let what = format!("{}: VM {:?}", W::BACKEND, vm.name);
        assert_eq!(r.name, vm.name, "{what}: name");
        assert_eq!(r.state, vm.state, "{what}: state (the backend said {:?})", r.raw_state);
        assert!(!r.raw_state.is_empty(), "{what}: the backend's own state word is kept");
        assert_eq!(r.config.vcpus, vm.vcpus, "{what}: vCPUs");
        assert_eq!(r.config.memory_max_kib, vm.memory_max_kib, "{what}: memory");
    }
}

async fn states_map_to_the_same_power_state_in_the_inventory_and_in_vm_state<W: World>() {
    let world = W::new();
    let known = world.known();
    for needed in [PowerState::Running, PowerState::Paused, PowerState::ShutOff] {
        assert!(
            known.iter().any(|vm| vm.state == needed),
            "{}: the world must hold a VM that is {needed:?}",
            W::BACKEND
        );
    }
    let backend = connect::<W>(world.host(), CALL_LIMIT);
    let reports = within::<W, _>("inventory()", backend.inventory()).await.unwrap();
    for vm in known {
        let listed = report_of::<W>(&reports, &vm.uuid);
        let state = vm_state::<W>(&*backend, &vm.uuid)
            .await
            .unwrap_or_else(|e| panic!("{}: vm_state of {:?} failed: {e}", W::BACKEND, vm.name));
        assert_eq!(state.state, vm.state, "{}: vm_state of {:?}", W::BACKEND, vm.name);
        assert_eq!(
            (state.state, state.raw_state.as_str()),
            (listed.state, listed.raw_state.as_str()),
            "{}: {:?} in vm_state and in the inventory",
            W::BACKEND,
            vm.name
        );
    }
}

async fn power_actions_are_accepted_and_vm_state_then_shows_their_outcome<W: World>() {
    let world = W::new();
    let vm = world.known().into_iter().find(|v| v.state == PowerState::ShutOff).unwrap();
    let backend = connect::<W>(world.host(), CALL_LIMIT);
    let mut state = PowerState::ShutOff;
    for action in [
        PowerAction::Start,
        PowerAction::Pause,
        PowerAction::Resume,
        PowerAction::Shutdown,
        PowerAction::Start,
        PowerAction::PowerOff,
    ] {
        assert!(action.applies_to(state), "the sequence itself: {action:?} from {state:?}");
        within::<W, _>(action.label(), backend.power(&vm.uuid, action)).await.unwrap_or_else(|e| {
            panic!("{}: {action:?} on {:?} ({state:?}) was refused: {e}", W::BACKEND, vm.name)
        });
        state = action.expected_state();
        state_becomes::<W>(&*backend, &vm.uuid, state, action).await;
    }
}

async fn an_action_on_an_unknown_vm_fails_with_no_such_vm<W: World>() {
    let world = W::new();
    let backend = connect::<W>(world.host(), CALL_LIMIT);
    for action in [PowerAction::Start, PowerAction::PowerOff] {
        match within::<W, _>("power()", backend.power(UNKNOWN_UUID, action)).await {
            Err(BackendError::NoSuchVm) => {}
            other => panic!("{}: {action:?} on an unknown VM gave {other:?}", W::BACKEND),
        }
    }
    match vm_state::<W>(&*backend, UNKNOWN_UUID).await {
        Err(BackendError::NoSuchVm) => {}
        other => panic!("{}: vm_state of an unknown VM gave {other:?}", W::BACKEND),
    }
}

async fn an_action_the_vm_state_does_not_allow_fails_with_invalid_state<W: World>() {
    let world = W::new();
    let known = world.known();
    let backend = connect::<W>(world.host(), CALL_LIMIT);
    let vm = known.iter().find(|v| v.state == PowerState::ShutOff).unwrap();
    // Power off and reset of a shut-off VM: the refusals every backend reports as a state
    // error. libvirt's test driver refuses pause, resume, shutdown and start in the wrong state
    // with VIR_ERR_INTERNAL_ERROR ("domain 'x' not running"), where the QEMU driver says
    // VIR_ERR_OPERATION_INVALID; the backend passes those on as `Hypervisor` errors, so they
    // cannot be part of the contract on the test driver.
    for action in [PowerAction::PowerOff, PowerAction::Reset] {
        assert!(!action.applies_to(vm.state), "the case itself: {action:?} on {:?}", vm.state);
        match within::<W, _>("power()", backend.power(&vm.uuid, action)).await {
            Err(BackendError::InvalidState(_)) => {}
            other => panic!(
                "{}: {action:?} on {:?} ({:?}) gave {other:?}, not InvalidState",
                W::BACKEND,
                vm.name,
                vm.state
            ),
        }
        let after = vm_state::<W>(&*backend, &vm.uuid).await.unwrap();
        assert_eq!(after.state, vm.state, "{}: a refused {action:?} changed nothing", W::BACKEND);
    }
}

/// What the pages offer works: every action a backend offers (`Backend::offers`) for a VM in
/// the state it reports is accepted by its hypervisor, each tried on a fresh world, except
/// where the VM's configuration decides (`World::depends_on_configuration`). The one failure
/// allowed is `Unsupported`, an action this host's hypervisor cannot do at all (libvirt's
/// test driver has no `virDomainPMWakeup`; QEMU has), which power control reports in words.
async fn every_action_a_backend_offers_is_accepted_by_its_hypervisor<W: World>() {
    let world = W::new();
    let backend = connect::<W>(world.host(), CALL_LIMIT);
    let vms = within::<W, _>("inventory()", backend.inventory()).await.unwrap();
    let mut accepted = 0;
    for vm in &vms {
        for action in PowerAction::ALL {
            if !backend.offers(action, vm.state, &vm.raw_state).allowed()
                || W::depends_on_configuration(vm, action)
            {
                continue;
            }
            let fresh_world = W::new();
            let fresh = connect::<W>(fresh_world.host(), CALL_LIMIT);
            match within::<W, _>("power()", fresh.power(&vm.uuid, action)).await {
                Ok(()) => accepted += 1,
                Err(BackendError::Unsupported(_)) => {}
                Err(e) => panic!(
                    "{}: {action:?} is offered for {} ({}) but refused: {e:?}",
                    W::BACKEND,
                    vm.name,
                    vm.raw_state
                ),
            }
        }
    }
    assert!(accepted >= vms.len(), "{}: only {accepted} offered actions tried", W::BACKEND);
}

async fn a_host_that_hangs_makes_inventory_fail_with_a_timeout_within_the_limit<W: World>() {
    let (host, hanging) = W::hanging_host();
    let backend = connect::<W>(host, HANG_LIMIT);
    let result = tokio::time::timeout(PATIENCE, backend.inventory()).await.unwrap_or_else(|_| {
        panic!(
            "{}: inventory() of a hanging host did not return within {PATIENCE:?} (its limit is {HANG_LIMIT:?})",
            W::BACKEND
        )
    });
    match result {
        Err(BackendError::Timeout(limit)) => assert_eq!(limit, HANG_LIMIT, "{}", W::BACKEND),
        other => panic!("{}: inventory() of a hanging host gave {other:?}", W::BACKEND),
    }
    // The host stops hanging before the runtime ends (a blocked libvirt call holds a thread).
    drop(hanging);
}

async fn a_vm_removed_from_the_host_is_no_such_vm_and_leaves_the_inventory<W: World>() {
    let world = W::new();
    let backend = connect::<W>(world.host(), CALL_LIMIT);
    let before = within::<W, _>("inventory()", backend.inventory()).await.unwrap();
    let uuid = world.remove_a_vm(&*backend).await;
    report_of::<W>(&before, &uuid);
    match vm_state::<W>(&*backend, &uuid).await {
        Err(BackendError::NoSuchVm) => {}
        other => panic!("{}: vm_state of a removed VM gave {other:?}", W::BACKEND),
    }
    match within::<W, _>("power()", backend.power(&uuid, PowerAction::Start)).await {
        Err(BackendError::NoSuchVm) => {}
        other => panic!("{}: starting a removed VM gave {other:?}", W::BACKEND),
    }
    let after = within::<W, _>("inventory()", backend.inventory()).await.unwrap();
    assert!(
        after.iter().all(|r| r.uuid != uuid),
        "{}: the removed VM {uuid} is still listed",
        W::BACKEND
    );
    assert_eq!(after.len(), before.len() - 1, "{}: only the removed VM left", W::BACKEND);
}

/// Snapshots as a tree, the same way on every backend: a snapshot is taken as the child of
/// the current one and becomes current; a revert moves the current mark back; deleting a
/// snapshot keeps its child, re-parented to the deleted one's parent; a used name is refused in
/// words. (The second revert, back to the child, is there because VirtualBox does not delete
/// the current snapshot while it has a child; libvirt does.)
async fn snapshots_are_taken_listed_reverted_and_deleted_as_a_tree<W: World>() {
    let world = W::new();
    let backend = connect::<W>(world.host(), CALL_LIMIT);
    assert!(backend.snapshot_caps().supported, "{}: snapshots are supported", W::BACKEND);
    let vm = world.known().into_iter().find(|v| v.state == PowerState::ShutOff).unwrap();
    let list = async || -> Vec<SnapshotReport> {
        within::<W, _>("snapshots()", backend.snapshots(&vm.uuid))
            .await
            .unwrap_or_else(|e| panic!("{}: snapshots() of {:?} failed: {e}", W::BACKEND, vm.name))
    };
    let by_name = |snaps: &[SnapshotReport], name: &str| -> SnapshotReport {
        let found: Vec<&SnapshotReport> = snaps.iter().filter(|s| s.name == name).collect();
        assert_eq!(found.len(), 1, "{}: one snapshot named {name:?} in {snaps:?}", W::BACKEND);
        found[0].clone()
    };
    let run =
        async |op: SnapshotOp| within::<W, _>("snapshot()", backend.snapshot(&vm.uuid, &op)).await;
    let current = |snaps: &[SnapshotReport]| -> Vec<String> {
        snaps.iter().filter(|s| s.current).map(|s| s.name.clone()).collect()
    };
    assert_eq!(list().await, vec![], "{}: {:?} has no snapshots at first", W::BACKEND, vm.name);

    let take = |name: &str, description: &str| SnapshotOp::Take {
        name: name.into(),
        description: description.into(),
        with_memory: false,
    };
    let description = "before the \"upgrade\"\nsecond line";
    run(take("first", description))
        .await
        .unwrap_or_else(|e| panic!("{}: taking a snapshot failed: {e}", W::BACKEND));
    let snaps = list().await;
    let first = by_name(&snaps, "first");
    assert_eq!(snaps.len(), 1, "{}: {snaps:?}", W::BACKEND);
    assert_eq!(
        first.description,
        description,
        "{}: the description, line breaks and quotes kept",
        W::BACKEND
    );
    assert_eq!(first.parent_id, None, "{}: the first snapshot is a root", W::BACKEND);
    assert!(first.current, "{}: the new snapshot is current", W::BACKEND);

    run(take("second", "")).await.unwrap_or_else(|e| panic!("{}: second take: {e}", W::BACKEND));
    let snaps = list().await;
    let second = by_name(&snaps, "second");
    assert_eq!(
        second.parent_id.as_deref(),
        Some(first.id.as_str()),
        "{}: child of the current one",
        W::BACKEND
    );
    assert_eq!(current(&snaps), vec!["second"], "{}: the current mark moved", W::BACKEND);

    match run(take("first", "")).await {
        Err(e) => assert!(
            e.to_string().contains("already") && e.to_string().contains("choose another name"),
            "{}: a used name is refused in words: {e}",
            W::BACKEND
        ),
        Ok(()) => panic!("{}: a second snapshot named \"first\" was taken", W::BACKEND),
    }
    assert_eq!(list().await.len(), 2, "{}: the refused take changed nothing", W::BACKEND);

    let revert = |id: &str| SnapshotOp::Revert { id: id.into(), after: AfterRevert::AsTaken };
    run(revert(&first.id)).await.unwrap_or_else(|e| panic!("{}: revert: {e}", W::BACKEND));
    let snaps = list().await;
    assert_eq!(current(&snaps), vec!["first"], "{}: the current mark moved back", W::BACKEND);
    assert_eq!(snaps.len(), 2, "{}: a revert deletes nothing", W::BACKEND);
    let state = vm_state::<W>(&*backend, &vm.uuid).await.unwrap();
    assert_eq!(state.state, PowerState::ShutOff, "{}: as the snapshot was taken", W::BACKEND);

    run(revert(&second.id)).await.unwrap_or_else(|e| panic!("{}: revert: {e}", W::BACKEND));
    run(SnapshotOp::Delete { id: first.id.clone() })
        .await
        .unwrap_or_else(|e| panic!("{}: delete: {e}", W::BACKEND));
    let snaps = list().await;
    assert_eq!(snaps.len(), 1, "{}: {snaps:?}", W::BACKEND);
    let kept = by_name(&snaps, "second");
    assert_eq!(
        (kept.id.as_str(), kept.parent_id.as_deref()),
        (second.id.as_str(), None),
        "{}: the child survives, re-parented",
        W::BACKEND
    );
    assert!(kept.current, "{}", W::BACKEND);

    // Snapshots that do not exist (any more): refused as such, in words.
    for op in [revert(&first.id), SnapshotOp::Delete { id: first.id.clone() }, revert(UNKNOWN_UUID)]
    {
        match run(op.clone()).await {
            Err(BackendError::InvalidState(m)) => assert!(!m.is_empty()),
            other => panic!("{}: {op:?} of a missing snapshot gave {other:?}", W::BACKEND),
        }
    }
    match within::<W, _>("snapshots()", backend.snapshots(UNKNOWN_UUID)).await {
        Err(BackendError::NoSuchVm) => {}
        other => panic!("{}: snapshots() of an unknown VM gave {other:?}", W::BACKEND),
    }

    // A backend whose inventory reads the snapshots for free reports the same set.
    let reports = within::<W, _>("inventory()", backend.inventory()).await.unwrap();
    if let Some(listed) = &report_of::<W>(&reports, &vm.uuid).snapshots {
        assert_eq!(listed, &list().await, "{}: inventory and snapshots() agree", W::BACKEND);
    }
}

/// A running VM's snapshot is taken while it keeps running.
async fn a_running_vm_is_snapshotted_without_being_stopped<W: World>() {
    let world = W::new();
    let backend = connect::<W>(world.host(), CALL_LIMIT);
    let vm = world.known().into_iter().find(|v| v.state == PowerState::Running).unwrap();
    let op = SnapshotOp::Take {
        name: "live one".into(),
        description: String::new(),
        with_memory: backend.snapshot_caps().running_with_memory,
    };
    within::<W, _>("snapshot()", backend.snapshot(&vm.uuid, &op))
        .await
        .unwrap_or_else(|e| panic!("{}: snapshot of running {:?}: {e}", W::BACKEND, vm.name));
    let snaps = within::<W, _>("snapshots()", backend.snapshots(&vm.uuid)).await.unwrap();
    assert!(snaps.iter().any(|s| s.name == "live one" && s.current), "{}: {snaps:?}", W::BACKEND);
    let state = vm_state::<W>(&*backend, &vm.uuid).await.unwrap();
    assert_eq!(state.state, PowerState::Running, "{}: still running", W::BACKEND);
}

// ---- helpers ----

/// The host read from its table as the server reads its configuration, then its backend.
fn connect<W: World>(host: HostSpec, call_timeout: Duration) -> Arc<dyn Backend> {
    let figment = Figment::from(rocket::Config::debug_default()).merge(("hosts", vec![host]));
    let mut settings = Settings::from_figment(&figment)
        .unwrap_or_else(|e| panic!("{}: the world's host is refused: {e}", W::BACKEND));
    let host: HostConfig = settings.hosts.remove(0);
    vmdeck::backend::connect(&host.driver, call_timeout, settings.snapshot_timeout)
}

/// Awaits a backend call, failing the test with a message when it hangs.
async fn within<W: World, T>(what: &str, call: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, call)
        .await
        .unwrap_or_else(|_| panic!("{}: {what} did not return within {PATIENCE:?}", W::BACKEND))
}

async fn vm_state<W: World>(backend: &dyn Backend, uuid: &str) -> Result<VmState, BackendError> {
    within::<W, _>("vm_state()", backend.vm_state(uuid)).await
}

fn report_of<'a, W: World>(reports: &'a [VmReport], uuid: &str) -> &'a VmReport {
    reports
        .iter()
        .find(|r| r.uuid == uuid)
        .unwrap_or_else(|| panic!("{}: VM {uuid} is not in the inventory", W::BACKEND))
}

/// Waits until `vm_state` reports `want` (a backend may take a moment to get there).
async fn state_becomes<W: World>(
    backend: &dyn Backend,
    uuid: &str,
    want: PowerState,
    after: PowerAction,
) {
    let mut last = None;
    let reached = tokio::time::timeout(PATIENCE, async {
        loop {
            match backend.vm_state(uuid).await {
                Ok(s) if s.state == want => return,
                other => last = Some(other),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    if reached.is_err() {
        panic!(
            "{}: after {after:?}, vm_state did not report {want:?} within {PATIENCE:?}; last answer: {last:?}",
            W::BACKEND
        );
    }
}

// ---- libvirt: the test driver ----

struct LibvirtTestDriver;

impl World for LibvirtTestDriver {
    const BACKEND: &'static str = "libvirt (test driver)";

    /// A managed save needs a persistent domain.
    fn depends_on_configuration(vm: &VmReport, action: PowerAction) -> bool {
        action == PowerAction::Save && !vm.config.persistent
    }

    fn new() -> Self {
        LibvirtTestDriver
    }

    fn host(&self) -> HostSpec {
        libvirt_host("lab", &breadth_uri())
    }

    fn vm_count(&self) -> usize {
        21
    }

    fn known(&self) -> Vec<KnownVm> {
        let vm = |uuid: &str, name, state, vcpus, memory_mib: u64| KnownVm {
            uuid: uuid.to_string(),
            name,
            state,
            vcpus,
            memory_max_kib: memory_mib * 1024,
        };
        vec![
            vm("71ca17b5-4e5f-5f86-9c58-7a67bc62a5b5", "br-running", PowerState::Running, 1, 1024),
            vm("fe3c04a5-9634-5334-ab91-40851116f340", "br-paused", PowerState::Paused, 1, 1024),
            vm("b5262534-ea29-5582-9752-5bf83ba902be", "br-shutoff", PowerState::ShutOff, 1, 1024),
            vm("a032520b-7306-50a3-8d2d-780082c7ae64", "br-crashed", PowerState::Crashed, 1, 1024),
            vm(
                "242c9f38-559f-589e-81a4-e6ba81065d76",
                "br-pmsuspended",
                PowerState::Suspended,
                1,
                1024,
            ),
        ]
    }

    async fn remove_a_vm(&self, backend: &dyn Backend) -> String {
        // A transient domain exists only while it runs: destroying it removes it. The test
        // driver's state lives in the backend's own connection, so that is the way in.
        let transient = "8c815e8f-1bb7-5b36-9491-422c08ee9737"; // br-transient
        within::<Self, _>("power()", backend.power(transient, PowerAction::PowerOff))
            .await
            .expect("destroying the transient domain");
        transient.to_string()
    }

    fn hanging_host() -> (HostSpec, Box<dyn std::any::Any>) {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("hang.sock");
        let silent = SilentSocket::start(&sock);
        let uri = format!("qemu+unix:///system?socket={}", sock.display());
        (libvirt_host("hang", &uri), Box::new((silent, dir)))
    }
}

// ---- VirtualBox: the stand-in VBoxManage ----

struct StandInVBoxManage {
    dir: tempfile::TempDir,
}

/// The stand-in's `lab` scenario: UUID of VM `n`.
fn lab_uuid(n: u32) -> String {
    format!("6a1e0000-0000-4000-8000-{n:012x}")
}

impl StandInVBoxManage {
    fn state_file(&self) -> PathBuf {
        self.dir.path().join("state.json")
    }

    fn state(&self) -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(self.state_file()).unwrap()).unwrap()
    }

    fn save(&self, state: &serde_json::Value) {
        std::fs::write(self.state_file(), serde_json::to_string(state).unwrap()).unwrap();
    }
}

impl World for StandInVBoxManage {
    const BACKEND: &'static str = "VirtualBox (stand-in VBoxManage)";

    /// `controlvm reboot` goes through the guest's Guest Additions.
    fn depends_on_configuration(_: &VmReport, action: PowerAction) -> bool {
        action == PowerAction::Reboot
    }

    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(fake_vboxmanage(), dir.path().join("VBoxManage")).unwrap();
        let status = Command::new(fake_vboxmanage())
            .arg("fake-init")
            .arg(dir.path())
            .arg("lab")
            .status()
            .unwrap();
        assert!(status.success(), "fake-init of the stand-in VBoxManage failed");
        StandInVBoxManage { dir }
    }

    fn host(&self) -> HostSpec {
        virtualbox_host("vbox", &self.dir.path().join("VBoxManage"))
    }

    fn vm_count(&self) -> usize {
        7 // six VMs and one whose settings are unreadable (listed as inaccessible)
    }

    fn known(&self) -> Vec<KnownVm> {
        let vm = |n, name, state, vcpus, memory_mib: u64| KnownVm {
            uuid: lab_uuid(n),
            name,
            state,
            vcpus,
            memory_max_kib: memory_mib * 1024,
        };
        vec![
            vm(1, "web-01", PowerState::Running, 2, 2048),
            vm(5, "paused-vm", PowerState::Paused, 1, 512),
            vm(2, "db \"primary\" {main}", PowerState::ShutOff, 4, 8192),
            vm(4, "build box", PowerState::ShutOff, 8, 16384), // saved
            vm(6, "old-crash", PowerState::Crashed, 1, 512),   // aborted
        ]
    }

    async fn remove_a_vm(&self, _: &dyn Backend) -> String {
        let uuid = lab_uuid(3); // café ✓ ünïcode
        let mut state = self.state();
        state["vms"].as_array_mut().unwrap().retain(|vm| vm["uuid"] != uuid.as_str());
        self.save(&state);
        uuid
    }

    fn hanging_host() -> (HostSpec, Box<dyn std::any::Any>) {
        let world = Self::new();
        let mut state = world.state();
        state["faults"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({"command": "list vms", "behaviour": "hang"}));
        world.save(&state);
        (world.host(), Box::new(world))
    }
}

// ---- every behaviour against every world ----

/// One test per behaviour for one world, named after the behaviour.
macro_rules! behaviours {
    ($world:ty: $($behaviour:ident),+ $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $behaviour() {
            super::$behaviour::<$world>().await
        }
    )+};
}

macro_rules! contract {
    ($($module:ident => $world:ident),+ $(,)?) => {$(
        mod $module {
            behaviours!(super::$world:
                inventory_lists_every_vm_with_its_uuid_name_state_vcpus_and_memory,
                states_map_to_the_same_power_state_in_the_inventory_and_in_vm_state,
                power_actions_are_accepted_and_vm_state_then_shows_their_outcome,
                an_action_on_an_unknown_vm_fails_with_no_such_vm,
                an_action_the_vm_state_does_not_allow_fails_with_invalid_state,
                every_action_a_backend_offers_is_accepted_by_its_hypervisor,
                a_host_that_hangs_makes_inventory_fail_with_a_timeout_within_the_limit,
                a_vm_removed_from_the_host_is_no_such_vm_and_leaves_the_inventory,
                snapshots_are_taken_listed_reverted_and_deleted_as_a_tree,
                a_running_vm_is_snapshotted_without_being_stopped,
            );
        }
    )+};
}

contract! {
    libvirt => LibvirtTestDriver,
    virtualbox => StandInVBoxManage,
}
