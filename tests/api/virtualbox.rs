//! VirtualBox hosts through real processes: vmdeck runs the stand-in `VBoxManage`
//! (`examples/fake_vboxmanage.rs`, replaying the real output formats) as the host's
//! `vboxmanage`, and the poller → database → page path and the backend's power actions run
//! through it, including commands that hang, lie about their exit status or find the VM locked.
//!
//! Long because each VirtualBox fault (hang, exit 1 after success, locked VM) gets its own
//! end-to-end test; the backend-level behaviours shared with libvirt are in `backend_contract`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use vmdeck::backend::{
    AfterRevert, Backend, BackendError, PowerAction, PowerState, SnapshotOp, SnapshotReport,
};
use vmdeck::hosts::PollOutcome;

use crate::power_offers::{actions_in, offered};
use crate::support::app::{
    app_with, breadth_uri, libvirt_host, spawn_app, unescape, uuid_of, virtualbox_host, vm_names,
    AppOptions, HostSpec, TestApp,
};
use crate::support::audit::{is_settled, power_entries, settled_power};
use crate::support::binary::{config_for_app_database, vmdeck};
use crate::support::fakes::fake_vboxmanage;
use crate::support::wait::eventually;

/// The stand-in's lab (see `lab()` in the example): UUID of VM `n`.
fn lab_uuid(n: u32) -> String {
    format!("6a1e0000-0000-4000-8000-{n:012x}")
}
const WEB: u32 = 1; // running, Guest Additions, three NICs, two disks
const DB: u32 = 2; // powered off, name with quotes and braces
const CAFE: u32 = 3; // running, unicode name, no Guest Additions
const BUILD: u32 = 4; // saved
const PAUSED: u32 = 5;

/// One stand-in installation: its own directory, state and logs.
struct FakeVbox {
    dir: tempfile::TempDir,
}

impl FakeVbox {
    fn lab() -> Self {
        Self::init(&["lab"])
    }

    fn init(args: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(fake_vboxmanage(), dir.path().join("VBoxManage")).unwrap();
        let status = Command::new(fake_vboxmanage())
            .arg("fake-init")
            .arg(dir.path())
            .args(args)
            .status()
            .unwrap();
        assert!(status.success());
        FakeVbox { dir }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("VBoxManage")
    }

    fn host(&self, name: &str) -> HostSpec {
        virtualbox_host(name, &self.path())
    }

    fn state(&self) -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(self.dir.path().join("state.json")).unwrap())
            .unwrap()
    }

    /// Adds a fault rule (see `Fault` in the stand-in).
    fn fault(&self, rule: serde_json::Value) {
        let mut state = self.state();
        state["faults"].as_array_mut().unwrap().push(rule);
        std::fs::write(self.dir.path().join("state.json"), serde_json::to_string(&state).unwrap())
            .unwrap();
    }

    /// Every invocation so far, arguments joined by spaces.
    fn calls(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join("calls.log"))
            .unwrap_or_default()
            .lines()
            .map(|l| l.replace('\t', " "))
            .collect()
    }

    fn hung_pids(&self) -> Vec<u32> {
        std::fs::read_to_string(self.dir.path().join("hung.pids"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }
}

fn backend(app: &TestApp, host: &str) -> Arc<dyn Backend> {
    app.hosts.get(host).expect("configured host").backend.clone()
}

/// The `<tr>` of the VM with this UUID in the list page.
fn row<'a>(html: &'a str, uuid: &str) -> &'a str {
    let start =
        html.find(&format!("data-uuid=\"{uuid}\"")).unwrap_or_else(|| panic!("no row for {uuid}"));
    let end = html[start..].find("</tr>").unwrap() + start;
    &html[start..end]
}

async fn stored_state(app: &TestApp, uuid: &str) -> (String, String, String) {
    sqlx::query_as("SELECT state, raw_state, state_reason FROM vms WHERE uuid = ?")
        .bind(uuid)
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_virtualbox_host_lists_its_vms_with_state_ips_vcpus_memory_and_disks() {
    let fake = FakeVbox::lab();
    let app = app_with(vec![fake.host("vbox")]).await;

    let (status, html) = app.get("/vms").await;
    assert_eq!(status, 200);
    let mut names = vm_names(&html);
    names.sort();
    assert_eq!(
        names,
        vec![
            "<inaccessible>",
            "build box",
            "café ✓ ünïcode",
            "db \"primary\" {main}",
            "old-crash",
            "paused-vm",
            "web-01"
        ]
    );
    assert!(!html.contains("\"primary\" {main}"), "names are HTML-escaped");

    let expected = [
        (1, "running", "running"),
        (2, "shut_off", "poweroff"),
        (3, "running", "running"),
        (4, "shut_off", "saved"),
        (5, "paused", "paused"),
        (6, "crashed", "aborted"),
        (7, "unknown", "inaccessible"),
    ];
    for (n, state, raw) in expected {
        let (s, r, reason) = stored_state(&app, &lab_uuid(n)).await;
        assert_eq!((s.as_str(), r.as_str()), (state, raw), "VM {n} ({reason})");
    }
    let (_, _, reason) = stored_state(&app, &lab_uuid(WEB)).await;
    assert_eq!(
        reason, "running since 2025-11-20 14:02:11 UTC",
        "VirtualBox's own words and its VMStateChangeTime"
    );

    // web-01: the guest's addresses on its own NICs, IPv4 first; not the host-only interface
    // that is down, not the guest's Docker bridge.
    let web = row(&html, &lab_uuid(WEB));
    let ips: Vec<String> = web
        .split("<span class=\"ip\"")
        .skip(1)
        .map(|s| unescape(&s[s.find('>').unwrap() + 1..s.find("</span>").unwrap()]))
        .collect();
    assert_eq!(ips, vec!["10.0.2.15", "192.168.1.57", "fd00::a00:27ff:fed4:e5f6"]);
    assert!(web.contains("guest additions"), "the source is named: {web}");
    assert!(web.contains("col-vcpus num\">2<"), "{web}");
    assert!(web.contains(">2 GiB<"), "memory: {web}");
    assert!(web.contains(">120 GiB<"), "20 GiB + 100 GiB of disks: {web}");
    let (addresses,): (String,) = sqlx::query_as("SELECT addresses FROM vms WHERE uuid = ?")
        .bind(lab_uuid(WEB))
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert!(addresses.contains("\"source\":\"guest_additions\""), "{addresses}");
    assert!(addresses.contains("\"mac\":\"08:00:27:00:00:03\""), "{addresses}");

    // Without Guest Additions a running VM has no addresses and nobody asked for them.
    assert!(!row(&html, &lab_uuid(CAFE)).contains("class=\"ip\""));
    assert!(
        !fake.calls().iter().any(|c| c.starts_with("guestproperty") && c.contains(&lab_uuid(CAFE))),
        "{:?}",
        fake.calls()
    );

    let (body,): (String,) = sqlx::query_as(
        "SELECT c.body FROM vms v JOIN vm_configs c ON c.id = v.config_id WHERE v.uuid = ?",
    )
    .bind(lab_uuid(WEB))
    .fetch_one(&app.pool)
    .await
    .unwrap();
    let config: serde_json::Value = serde_json::from_str(&body).unwrap();
    let disks: Vec<(&str, &str, Option<u64>)> = config["disks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["target"].as_str().unwrap(),
                d["device"].as_str().unwrap(),
                d["capacity_bytes"].as_u64(),
            )
        })
        .collect();
    assert_eq!(
        disks,
        vec![
            ("SATA-0-0", "disk", Some(20480 << 20)),
            ("SATA-1-0", "disk", Some(102400 << 20)),
            ("IDE-1-0", "cdrom", None),
        ]
    );
    let nics: Vec<(&str, &str, &str)> = config["nics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (n["mac"].as_str().unwrap(), n["kind"].as_str().unwrap(), n["source"].as_str().unwrap())
        })
        .collect();
    assert_eq!(
        nics,
        vec![
            ("08:00:27:00:00:02", "nat", "nat"),
            ("08:00:27:00:00:03", "bridged", "enp3s0"),
            ("08:00:27:0a:0b:0c", "hostonly", "vboxnet0"),
        ]
    );

    // Every command ran with LC_ALL=C.
    let env = std::fs::read_to_string(fake.dir.path().join("env.log")).unwrap();
    assert!(env.lines().all(|l| l == "LC_ALL=C"), "{env}");
}

#[tokio::test]
async fn after_the_first_poll_a_poll_runs_at_most_two_commands_per_vm() {
    let fake = FakeVbox::lab();
    let app = app_with(vec![fake.host("vbox")]).await;
    let first = fake.calls().len();
    // A second apart, so the CPU figure below is not skewed by the first poll's extra commands.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(matches!(app.poll("vbox").await, PollOutcome::Recorded(_)));
    let calls = fake.calls()[first..].to_vec();
    let vms = 7;
    assert!(calls.len() <= 2 * vms, "{} commands for {vms} VMs: {calls:#?}", calls.len());
    for cached in ["showmediuminfo", "list hostinfo", "metrics setup", "--version"] {
        assert!(
            !calls.iter().any(|c| c.starts_with(cached)),
            "{cached} is not repeated: {calls:#?}"
        );
    }
    // The metrics of the two running VMs came from one query, and CPU and memory use show.
    assert_eq!(calls.iter().filter(|c| c.starts_with("metrics query")).count(), 1);
    let (cpu, mem): (Option<f64>, Option<i64>) = sqlx::query_as(
        "SELECT s.cpu_pct, s.memory_used_kib FROM samples s JOIN vms v ON v.id = s.vm_id
         WHERE v.uuid = ? ORDER BY s.ts DESC LIMIT 1",
    )
    .bind(lab_uuid(CAFE))
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(mem, Some(512 * 1024), "RAM/Usage/Used of the VM process");
    // 5.75 % user + 0.5 % kernel of 8 host CPUs is half a CPU busy: 50 % of its one vCPU
    // (give or take the few milliseconds between vmdeck's clock and the poll's timestamps).
    let cpu = cpu.expect("a CPU figure from the second poll");
    assert!((35.0..=65.0).contains(&cpu), "{cpu}");
}

#[tokio::test]
async fn backend_power_actions_reach_vboxmanage_and_vm_state_confirms_them() {
    let fake = FakeVbox::lab();
    let app = app_with(vec![fake.host("vbox")]).await;
    let vbox = backend(&app, "vbox");
    let db = lab_uuid(DB);

    vbox.power(&db, PowerAction::Start).await.unwrap();
    assert!(fake.calls().contains(&format!("startvm {db} --type headless")));
    assert_eq!(vbox.vm_state(&db).await.unwrap().state, PowerState::Running);

    let steps = [
        (PowerAction::Pause, "pause", PowerState::Paused),
        (PowerAction::Resume, "resume", PowerState::Running),
        (PowerAction::Reset, "reset", PowerState::Running),
        (PowerAction::Reboot, "reboot", PowerState::Running),
        (PowerAction::Save, "savestate", PowerState::ShutOff),
    ];
    for (action, word, expected) in steps {
        vbox.power(&db, action).await.unwrap_or_else(|e| panic!("{action:?}: {e}"));
        assert!(fake.calls().contains(&format!("controlvm {db} {word}")), "{action:?}");
        let state = vbox.vm_state(&db).await.unwrap();
        assert_eq!(state.state, expected, "{action:?} → {state:?}");
    }
    assert_eq!(vbox.vm_state(&db).await.unwrap().raw_state, "saved");
    vbox.power(&db, PowerAction::Start).await.unwrap();
    vbox.power(&db, PowerAction::Shutdown).await.unwrap();
    assert!(fake.calls().contains(&format!("controlvm {db} acpipowerbutton")));
    assert_eq!(vbox.vm_state(&db).await.unwrap().state, PowerState::ShutOff);
    vbox.power(&db, PowerAction::Start).await.unwrap();
    vbox.power(&db, PowerAction::PowerOff).await.unwrap();
    assert_eq!(vbox.vm_state(&db).await.unwrap().state, PowerState::ShutOff);

    // The next poll stores what the actions did.
    assert!(matches!(app.poll("vbox").await, PollOutcome::Recorded(_)));
    assert_eq!(stored_state(&app, &db).await.1, "poweroff");
}

#[tokio::test]
async fn refused_power_actions_say_why() {
    let fake = FakeVbox::lab();
    let app = app_with(vec![fake.host("vbox")]).await;
    let vbox = backend(&app, "vbox");

    match vbox.power(&lab_uuid(PAUSED), PowerAction::Shutdown).await {
        Err(BackendError::InvalidState(m)) => assert_eq!(m, "Invalid machine state: Paused"),
        other => panic!("ACPI shutdown of a paused VM: {other:?}"),
    }
    match vbox.power(&lab_uuid(DB), PowerAction::PowerOff).await {
        Err(BackendError::InvalidState(m)) => assert!(m.contains("PoweredOff"), "{m}"),
        other => panic!("power off of a powered-off VM: {other:?}"),
    }
    match vbox.power(&lab_uuid(DB), PowerAction::Pause).await {
        Err(BackendError::InvalidState(m)) => assert!(m.contains("not running"), "{m}"),
        other => panic!("pause of a powered-off VM: {other:?}"),
    }
    // Starting a running VM: VirtualBox finds its session locked.
    match vbox.power(&lab_uuid(WEB), PowerAction::Start).await {
        Err(BackendError::Hypervisor(m)) => assert!(m.contains("locked by another session"), "{m}"),
        other => panic!("start of a running VM: {other:?}"),
    }
    let gone = "0badc0de-0000-4000-8000-000000000000";
    assert!(matches!(vbox.power(gone, PowerAction::Start).await, Err(BackendError::NoSuchVm)));
    assert!(matches!(vbox.vm_state(gone).await, Err(BackendError::NoSuchVm)));
    assert!(
        matches!(
            vbox.power("not-a-uuid; rm -rf /", PowerAction::Start).await,
            Err(BackendError::NoSuchVm)
        ),
        "anything but a UUID never reaches a command line"
    );
    assert!(!fake.calls().iter().any(|c| c.contains("rm -rf")));
}

#[tokio::test]
async fn a_locked_vm_is_reported_as_locked_and_left_as_it_was() {
    let fake = FakeVbox::lab();
    let app = app_with(vec![fake.host("vbox")]).await;
    let vbox = backend(&app, "vbox");
    let db = lab_uuid(DB);
    fake.fault(
        serde_json::json!({"command": "startvm", "vm": db, "behaviour": "locked", "times": 1}),
    );

    match vbox.power(&db, PowerAction::Start).await {
        Err(BackendError::Hypervisor(m)) => {
            assert!(m.contains("locked by another session") && m.contains("try again"), "{m}")
        }
        other => panic!("expected the locked message, got {other:?}"),
    }
    assert_eq!(vbox.vm_state(&db).await.unwrap().state, PowerState::ShutOff);
    vbox.power(&db, PowerAction::Start).await.unwrap();
    assert_eq!(vbox.vm_state(&db).await.unwrap().state, PowerState::Running);
}

#[tokio::test]
async fn success_printed_before_exit_status_1_counts_as_success() {
    let fake = FakeVbox::lab();
    let app = app_with(vec![fake.host("vbox")]).await;
    let vbox = backend(&app, "vbox");
    let db = lab_uuid(DB);
    fake.fault(serde_json::json!({"command": "startvm", "behaviour": "success_then_exit1"}));
    fake.fault(
        serde_json::json!({"command": "controlvm pause", "behaviour": "success_then_exit1"}),
    );

    vbox.power(&db, PowerAction::Start)
        .await
        .expect("`successfully started` on stdout wins over exit status 1");
    assert_eq!(vbox.vm_state(&db).await.unwrap().state, PowerState::Running);
    // `pause` prints nothing on success: exit status 1 is all there is, and it is a failure.
    assert!(vbox.power(&db, PowerAction::Pause).await.is_err());
}

#[tokio::test]
async fn a_hung_command_times_out_its_poll_and_is_killed() {
    let fake = FakeVbox::lab();
    let mut host = fake.host("vbox");
    host.set("command_timeout_secs", 1);
    let app = app_with(vec![host]).await;
    fake.fault(serde_json::json!({"command": "showvminfo", "vm": lab_uuid(DB), "behaviour": "hang", "times": 1}));

    let poll = tokio::time::timeout(Duration::from_secs(5), app.poll("vbox"))
        .await
        .expect("the poll hung for 5 s on a VBoxManage that hangs, despite its 1 s limit");
    match poll {
        PollOutcome::Failed(m) => assert!(m.contains("did not answer within 1s"), "{m}"),
        other => panic!("expected a timed-out poll, got {other:?}"),
    }
    let pids = fake.hung_pids();
    assert_eq!(pids.len(), 1, "one command hung");
    let proc_dir = PathBuf::from(format!("/proc/{}", pids[0]));
    let reaped = format!("the hung VBoxManage (pid {}) being killed and reaped", pids[0]);
    eventually(&reaped, Duration::from_secs(5), async || !proc_dir.exists()).await;

    // The failure is shown, and the next poll (the fault was for one call) recovers.
    let (_, html) = app.get("/vms").await;
    assert!(html.contains("did not answer within 1s"), "the banner shows the error");
    assert!(matches!(app.poll("vbox").await, PollOutcome::Recorded(_)));
}

#[tokio::test]
async fn a_hung_power_action_times_out_instead_of_hanging_the_caller() {
    let fake = FakeVbox::lab();
    let mut host = fake.host("vbox");
    host.set("command_timeout_secs", 1);
    let app = app_with(vec![host]).await;
    fake.fault(serde_json::json!({"command": "startvm", "behaviour": "hang"}));
    let (vbox, db) = (backend(&app, "vbox"), lab_uuid(DB));
    let result = tokio::time::timeout(Duration::from_secs(5), vbox.power(&db, PowerAction::Start))
        .await
        .expect("the power action hung for 5 s on a `startvm` that hangs, despite its 1 s limit");
    assert!(matches!(result, Err(BackendError::Timeout(_))), "{result:?}");
}

#[tokio::test]
async fn a_virtualbox_6_host_is_read_in_its_own_formats_and_refuses_reboot() {
    let fake = FakeVbox::init(&["lab", "--version", "6.1.50r161033"]);
    let app = app_with(vec![fake.host("vbox6")]).await;
    let (addresses,): (String,) = sqlx::query_as("SELECT addresses FROM vms WHERE uuid = ?")
        .bind(lab_uuid(WEB))
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert!(
        addresses.contains("192.168.1.57"),
        "the pre-7.0 `Name: …, value: …` layout is read too: {addresses}"
    );
    match backend(&app, "vbox6").power(&lab_uuid(WEB), PowerAction::Reboot).await {
        Err(BackendError::Hypervisor(m)) => assert!(m.contains("needs VirtualBox 7.0"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert!(
        !fake.calls().iter().any(|c| c.contains("reboot")),
        "reboot is refused before any command"
    );
}

#[tokio::test]
async fn a_command_prefix_runs_vboxmanage_through_another_program() {
    let fake = FakeVbox::lab();
    let mut host = fake.host("vbox");
    // `env` stands in for `ssh host` or `sudo -u vbox`: it runs the rest as its command.
    host.set("command_prefix", ["env", "VMDECK_PREFIX_TEST=1"]);
    let app = app_with(vec![host]).await;
    let (_, html) = app.get("/vms").await;
    assert_eq!(vm_names(&html).len(), 7);
    assert!(
        unescape(&html).contains(&format!("env VMDECK_PREFIX_TEST=1 {}", fake.path().display())),
        "the banner shows the command line"
    );
}

#[tokio::test]
async fn a_missing_vboxmanage_fails_the_poll_with_a_message_naming_it() {
    let app = app_with(vec![virtualbox_host("vbox", Path::new("/nonexistent/VBoxManage"))]).await;
    let (_, html) = app.get("/vms").await;
    assert!(
        unescape(&html).contains("cannot run /nonexistent/VBoxManage"),
        "the banner says what could not run"
    );
}

#[tokio::test]
async fn libvirt_and_virtualbox_hosts_render_one_list() {
    let fake = FakeVbox::lab();
    let app = app_with(vec![libvirt_host("lab", &breadth_uri()), fake.host("vbox")]).await;
    let (status, html) = app.get("/vms").await;
    assert_eq!(status, 200);
    let names = vm_names(&html);
    assert_eq!(names.len(), 21 + 7, "{names:?}");
    assert!(names.iter().any(|n| n == "br-running"));
    assert!(names.iter().any(|n| n == "web-01"));
    let (_, only_vbox) = app.get("/vms?host=vbox").await;
    assert_eq!(vm_names(&only_vbox).len(), 7);
    let (_, running) = app.get("/vms?state=running").await;
    let running = vm_names(&running);
    assert!(running.iter().any(|n| n == "web-01") && running.iter().any(|n| n == "br-running"));
    let (_, by_ip) = app.get("/vms?q=192.168.1.57").await;
    assert_eq!(vm_names(&by_ip), vec!["web-01"]);
}

#[tokio::test]
async fn an_operator_stops_and_starts_a_virtualbox_vm_from_the_web_and_the_audit_log_joins_both_hosts(
) {
    let fake = FakeVbox::lab();
    let app = app_with(vec![libvirt_host("lab", &breadth_uri()), fake.host("vbox")]).await;
    let op = app.session("operator").await;
    let web = lab_uuid(WEB);

    // Through the form, the stand-in's real process, the confirmation watch and the audit log.
    let res = op
        .post(&format!("/vms/vbox/{web}/power"), &[("action", "power_off"), ("confirm", "yes")])
        .await;
    assert_eq!(res.status().as_u16(), 303);
    let (status, error, _) = settled_power(&app, &web).await;
    assert_eq!((status, error), ("confirmed".to_string(), None));
    assert!(fake.calls().contains(&format!("controlvm {web} poweroff")));
    let (state, raw, _) = stored_state(&app, &web).await;
    assert_eq!(
        (state.as_str(), raw.as_str()),
        ("shut_off", "poweroff"),
        "the list shows it at once"
    );

    op.post(&format!("/vms/vbox/{web}/power"), &[("action", "start")]).await;
    assert_eq!(settled_power(&app, &web).await.0, "confirmed");
    assert!(fake.calls().contains(&format!("startvm {web} --type headless")));

    // A libvirt VM in the same session, then one audit log for both hosts.
    let br = uuid_of(&app, "br-running").await;
    op.post(&format!("/vms/lab/{br}/power"), &[("action", "pause")]).await;
    assert_eq!(settled_power(&app, &br).await.0, "confirmed");
    let (_, html) = op.get("/audit?action=power_off").await;
    assert!(html.contains(">vbox<"), "{html}");
    let (_, html) = op.get("/audit?outcome=confirmed").await;
    assert!(html.contains(">vbox<") && html.contains(">lab<"), "one log for both hosts");
    assert_eq!(html.matches("<tr data-id").count(), 3);
}

/// The flash message shown on the next page of `session`, as text.
async fn flash_on(session: &crate::support::app::Session, path: &str) -> String {
    let (_, page) = session.get(path).await;
    page.split("id=\"flash\">")
        .nth(1)
        .and_then(|s| s.split("</p>").next())
        .map(unescape)
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_sent_to_a_hanging_host_is_answered_at_once_and_its_failure_shows_beside_the_vm()
{
    let fake = FakeVbox::lab();
    let mut host = fake.host("vbox");
    // The host hangs this long before vmdeck gives up on the command and kills it.
    let hang = 8;
    host.set("command_timeout_secs", hang);
    let app = app_with(vec![host]).await;
    fake.fault(serde_json::json!({"command": "controlvm acpipowerbutton", "behaviour": "hang"}));
    let op = app.session("operator").await;
    let web = lab_uuid(WEB);

    let res = op.post(&format!("/vms/vbox/{web}/power"), &[("action", "shutdown")]).await;
    assert_eq!(res.status().as_u16(), 303);
    // Ordering, not a stopwatch: the answer came while the request was still on its way to the
    // hanging host (a form that waited for the host would find it failed by now).
    let entries = power_entries(&app, &web).await;
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert!(
        !is_settled(&entries[0].0),
        "the form was answered only once the request was {:?}: it waited for the host",
        entries[0].0
    );

    // The answer says what it knows, and the list shows the request pending.
    let (_, page) = op.get("/vms").await;
    let flash = unescape(page.split("id=\"flash\">").nth(1).unwrap().split("</p>").next().unwrap());
    assert!(
        flash.starts_with("Shut down requested for web-01;") && !flash.contains(".."),
        "{flash}"
    );
    assert!(unescape(row(&page, &web)).contains("⏳ Shut down requested by"), "pending marker");

    // The host's failure arrives later, in the audit log, the list and the VM's page.
    let (status, error, _) = settled_power(&app, &web).await;
    assert_eq!(status, "failed");
    let error = error.unwrap_or_default();
    assert!(error.contains(&format!("did not answer within {hang} s")), "{error}");
    let (_, list) = op.get("/vms").await;
    let web_row = unescape(row(&list, &web));
    assert!(web_row.contains("⚠ Shut down failed: The host did not answer"), "{web_row}");
    assert!(!web_row.contains("⏳"), "no longer pending: {web_row}");
    let (_, vm_page) = op.get(&format!("/vms/vbox/{web}")).await;
    assert!(
        unescape(&vm_page).contains("⚠ Shut down failed: The host did not answer"),
        "the VM page shows it too"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_off_supersedes_a_shutdown_the_guest_ignores_and_the_chain_still_verifies() {
    let fake = FakeVbox::lab();
    let app = app_with(vec![fake.host("vbox")]).await;
    // The guest ignores the ACPI button: VirtualBox says yes, nothing happens.
    fake.fault(serde_json::json!({"command": "controlvm acpipowerbutton", "behaviour": "ignored"}));
    let op = app.session("operator").await;
    let web = lab_uuid(WEB);
    let path = format!("/vms/vbox/{web}/power");
    let status_of_first = async || power_entries(&app, &web).await[0].0.clone();

    op.post(&path, &[("action", "shutdown")]).await;
    eventually("the shutdown accepted", Duration::from_secs(10), async || {
        status_of_first().await == "accepted"
    })
    .await;

    // While it is pending, the list and the VM page offer only what overrules it.
    let (_, list) = op.get("/vms").await;
    let only_overruling = (Some("power_off".to_string()), vec!["reset".to_string()], vec![]);
    assert_eq!(offered(&actions_in(row(&list, &web))), only_overruling, "the row's buttons");
    let (_, page) = op.get(&format!("/vms/vbox/{web}")).await;
    let head = page.split("id=\"vm-audit-link\"").next().unwrap();
    assert_eq!(offered(&actions_in(head)), only_overruling, "the VM page's buttons");
    assert!(!head.contains("value=\"shutdown\""), "no graceful action offered");

    // Double-click protection stays: the same action again is refused, and says how to overrule.
    op.post(&path, &[("action", "shutdown")]).await;
    let refused = flash_on(&op, "/vms").await;
    assert!(
        refused.contains("Shut down (requested by operator-")
            && refused.contains("still pending for web-01")
            && refused.contains("overrule it with Power off or Reset."),
        "{refused}"
    );
    assert_eq!(status_of_first().await, "accepted", "the refusal left the pending one alone");

    // Power off overrules it.
    let res = op.post(&path, &[("action", "power_off"), ("confirm", "yes")]).await;
    assert_eq!(res.status().as_u16(), 303);
    let flash = flash_on(&op, "/vms").await;
    assert_eq!(
        flash,
        "Power off requested for web-01 (the pending Shut down is superseded); the list and its page show its progress."
    );
    let (status, error, _) = settled_power(&app, &web).await;
    assert_eq!((status.as_str(), error), ("confirmed", None), "the power off");
    assert!(fake.calls().contains(&format!("controlvm {web} poweroff")));

    // The shutdown reads superseded, by what, and its watch (which now sees the VM shut off,
    // the state it waited for) did not turn it into `confirmed`.
    let (first, detail): (String, Option<String>) = sqlx::query_as(
        "SELECT status, detail FROM audit_log WHERE kind = 'power' AND vm_uuid = ? AND action = 'shutdown' ORDER BY id LIMIT 1",
    )
    .bind(&web)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(first, "superseded");
    let detail = detail.unwrap_or_default();
    assert!(detail.starts_with("superseded by Power off, requested by operator-"), "{detail}");
    let statuses: Vec<String> = power_entries(&app, &web).await.into_iter().map(|e| e.0).collect();
    assert_eq!(statuses, ["superseded", "refused", "confirmed"]);

    // Shown on the audit page and in its CSV.
    let (_, audit) = op.get(&format!("/audit?vm={web}")).await;
    assert!(audit.contains("outcome-superseded") && audit.contains("superseded by Power off"));
    let rows = op.csv(&format!("/audit.csv?vm={web}&outcome=superseded")).await;
    assert_eq!(rows.len(), 2, "the header and the shutdown: {rows:?}");
    assert!(rows[1].iter().any(|f| f.starts_with("superseded by Power off")), "{:?}", rows[1]);

    // The settlement is sealed into the chain like any other.
    let config = config_for_app_database(app.dir.path());
    let (ok, out) = vmdeck(&config, &["audit", "verify"], "");
    assert!(ok.success(), "{out}");
    assert!(out.contains("audit log intact"), "{out}");
}

#[tokio::test]
async fn a_saved_vm_reads_saved_in_the_list_and_on_its_page() {
    let fake = FakeVbox::lab();
    let app = app_with(vec![fake.host("vbox")]).await;
    let build = lab_uuid(BUILD);
    let (_, list) = app.get("/vms").await;
    let cell = row(&list, &build);
    assert!(cell.contains("state-shut_off\">shut off (saved)</span>"), "{cell}");
    let (_, page) = app.get(&format!("/vms/vbox/{build}")).await;
    assert!(page.contains("state-shut_off\">shut off (saved)</span>"), "the VM page's badge");
    // A VM powered off is plain shut off.
    assert!(row(&list, &lab_uuid(DB)).contains("state-shut_off\">shut off</span>"));
}

#[tokio::test]
async fn an_aborted_vm_offers_start_a_stuck_one_power_off_and_a_refused_one_is_said_in_words() {
    let fake = FakeVbox::lab();
    let (db, cafe) = (lab_uuid(DB), lab_uuid(CAFE));
    let mut state = fake.state();
    for vm in state["vms"].as_array_mut().unwrap() {
        let uuid = vm["uuid"].as_str().unwrap().to_string();
        if uuid == db {
            vm["state"] = "aborted".into();
        } else if uuid == cafe {
            vm["state"] = "gurumeditation".into();
        }
    }
    std::fs::write(fake.dir.path().join("state.json"), serde_json::to_string(&state).unwrap())
        .unwrap();
    let app = app_with(vec![fake.host("vbox")]).await;
    let op = app.session("operator").await;
    let (_, html) = op.get("/vms").await;
    let (primary, menu, _) = offered(&actions_in(row(&html, &db)));
    assert_eq!((primary.as_deref(), menu.len()), (Some("start"), 0), "aborted: start only");
    let (primary, menu, _) = offered(&actions_in(row(&html, &cafe)));
    assert_eq!((primary.as_deref(), menu.len()), (Some("power_off"), 0), "stuck: power off only");

    // A forced power off of the aborted VM (an old page, a hand-made form): VirtualBox would
    // answer "Invalid machine state"; vmdeck refuses first, in words, and sends nothing.
    let res = op
        .post(&format!("/vms/vbox/{db}/power"), &[("action", "power_off"), ("confirm", "yes")])
        .await;
    assert_eq!(res.status().as_u16(), 303);
    let flash = op.flash_at("/vms").await;
    assert!(
        flash.contains("Power off is not possible for db")
            && flash.contains("VirtualBox has already stopped it (aborted): start it."),
        "flash: {flash}"
    );
    assert!(!fake.calls().iter().any(|c| c.contains("poweroff")), "nothing sent");
    // Unconfirmed, it is not sent to the confirmation page first either.
    let res = op.post(&format!("/vms/vbox/{db}/power"), &[("action", "power_off")]).await;
    assert_eq!(res.headers()["location"], "/vms", "no confirmation for a refused action");

    // What the pages offer works.
    op.post(&format!("/vms/vbox/{db}/power"), &[("action", "start")]).await;
    assert_eq!(settled_power(&app, &db).await.0, "confirmed");
    op.post(&format!("/vms/vbox/{cafe}/power"), &[("action", "power_off"), ("confirm", "yes")])
        .await;
    assert_eq!(settled_power(&app, &cafe).await.0, "confirmed");
    assert_eq!(stored_state(&app, &cafe).await.1, "poweroff");
}

// ---- snapshots (the tree itself is in `backend_contract`) ----

fn take(name: &str, description: &str) -> SnapshotOp {
    SnapshotOp::Take { name: name.into(), description: description.into(), with_memory: true }
}

fn revert(id: &str) -> SnapshotOp {
    SnapshotOp::Revert { id: id.into(), after: AfterRevert::AsTaken }
}

async fn snapshot_named(vbox: &dyn Backend, uuid: &str, name: &str) -> SnapshotReport {
    let snaps = vbox.snapshots(uuid).await.unwrap();
    snaps.into_iter().find(|s| s.name == name).unwrap_or_else(|| panic!("no snapshot {name:?}"))
}

#[tokio::test]
async fn a_running_vm_is_snapshotted_live_and_reverted_only_once_powered_off() {
    let fake = FakeVbox::lab();
    let app = app_with(vec![fake.host("vbox")]).await;
    let vbox = backend(&app, "vbox");
    let (web, db) = (lab_uuid(WEB), lab_uuid(DB));

    vbox.snapshot(&web, &take("before", "")).await.unwrap();
    assert!(
        fake.calls().contains(&format!("snapshot {web} take before --live")),
        "a running VM is not paused for its snapshot: {:?}",
        fake.calls()
    );
    vbox.snapshot(&db, &take("cold", "")).await.unwrap();
    assert!(fake.calls().contains(&format!("snapshot {db} take cold")), "no --live when off");

    let before = snapshot_named(&*vbox, &web, "before").await;
    match vbox.snapshot(&web, &revert(&before.id)).await {
        Err(BackendError::InvalidState(m)) => {
            assert!(m.contains("power it off or save its state first"), "{m}")
        }
        other => panic!("revert of a running VM: {other:?}"),
    }
    assert!(
        !fake.calls().iter().any(|c| c.contains("restore")),
        "refused before anything was sent"
    );
    assert_eq!(vbox.vm_state(&web).await.unwrap().state, PowerState::Running);
    match vbox
        .snapshot(&web, &SnapshotOp::Revert { id: before.id.clone(), after: AfterRevert::Running })
        .await
    {
        Err(BackendError::Unsupported(m)) => assert!(m.contains("as it was taken"), "{m}"),
        other => panic!("a revert state VirtualBox cannot choose: {other:?}"),
    }

    vbox.power(&web, PowerAction::PowerOff).await.unwrap();
    vbox.snapshot(&web, &revert(&before.id)).await.unwrap();
    assert!(fake.calls().contains(&format!("snapshot {web} restore {}", before.id)));
    let state = vbox.vm_state(&web).await.unwrap();
    assert_eq!(state.raw_state, "saved", "the running VM's snapshot held its memory");
}

#[tokio::test]
async fn a_locked_vm_fails_a_snapshot_in_words_and_nothing_is_taken() {
    let fake = FakeVbox::lab();
    let app = app_with(vec![fake.host("vbox")]).await;
    let vbox = backend(&app, "vbox");
    let db = lab_uuid(DB);
    fake.fault(serde_json::json!({"command": "snapshot take", "vm": db, "behaviour": "locked", "times": 1}));

    match vbox.snapshot(&db, &take("nightly", "")).await {
        Err(BackendError::Hypervisor(m)) => assert!(
            m.starts_with("Take snapshot: the VM is locked by another session")
                && m.contains("try again"),
            "{m}"
        ),
        other => panic!("expected the locked message, got {other:?}"),
    }
    assert_eq!(vbox.snapshots(&db).await.unwrap(), vec![], "nothing was taken");
    vbox.snapshot(&db, &take("nightly", "")).await.unwrap();
    assert_eq!(vbox.snapshots(&db).await.unwrap().len(), 1, "once the lock is gone it works");
}

#[tokio::test]
async fn virtualbox_snapshot_rules_and_raw_names_come_back_in_words() {
    let fake = FakeVbox::lab();
    let app = app_with(vec![fake.host("vbox")]).await;
    let vbox = backend(&app, "vbox");
    let db = lab_uuid(DB);
    let none: Vec<SnapshotReport> = vec![];
    assert_eq!(vbox.snapshots(&db).await.unwrap(), none, "exit status 1 + 'no snapshots' is empty");

    // A name with quotes and a multi-line description with quotes: printed raw, read back whole.
    let name = "say \"cheese\" ../ ✓";
    let description = "line one\nline \"two\"\r\nC:\\builds\\";
    vbox.snapshot(&db, &take(name, description)).await.unwrap();
    let a = snapshot_named(&*vbox, &db, name).await;
    assert_eq!(a.description, "line one\nline \"two\"\nC:\\builds\\");
    let reports = vbox.inventory().await.unwrap();
    let listed = reports.iter().find(|r| r.uuid == db).unwrap().snapshots.clone();
    assert_eq!(
        listed,
        Some(vbox.snapshots(&db).await.unwrap()),
        "showvminfo carries the same tree"
    );
    let web = reports.iter().find(|r| r.uuid == lab_uuid(WEB)).unwrap();
    assert_eq!(web.snapshots, Some(vec![]), "no snapshots, read for free");

    // VirtualBox's delete rules: not the current snapshot while it has a child...
    vbox.snapshot(&db, &take("b", "")).await.unwrap();
    vbox.snapshot(&db, &revert(&a.id)).await.unwrap();
    match vbox.snapshot(&db, &SnapshotOp::Delete { id: a.id.clone() }).await {
        Err(BackendError::InvalidState(m)) => {
            assert!(m.contains("revert to another snapshot first"), "{m}")
        }
        other => panic!("delete of the current snapshot with a child: {other:?}"),
    }
    // ...nor one with two children.
    vbox.snapshot(&db, &take("c", "")).await.unwrap();
    let c = snapshot_named(&*vbox, &db, "c").await;
    assert_eq!(
        c.parent_id.as_deref(),
        Some(a.id.as_str()),
        "a second branch under the reverted one"
    );
    match vbox.snapshot(&db, &SnapshotOp::Delete { id: a.id.clone() }).await {
        Err(BackendError::InvalidState(m)) => assert!(m.contains("at most one child"), "{m}"),
        other => panic!("delete of a snapshot with two children: {other:?}"),
    }
    assert_eq!(vbox.snapshots(&db).await.unwrap().len(), 3, "refusals changed nothing");

    // Bad input never reaches a command line.
    for bad in
        [take("", ""), take("two\nlines", ""), SnapshotOp::Delete { id: "../x; rm -rf /".into() }]
    {
        assert!(vbox.snapshot(&db, &bad).await.is_err(), "{bad:?}");
    }
    let takes =
        fake.calls().iter().filter(|c| c.starts_with(&format!("snapshot {db} take"))).count();
    assert_eq!(takes, 3, "only the three good takes were sent");
    assert!(!fake.calls().iter().any(|c| c.contains("rm -rf")));
}

#[tokio::test]
async fn snapshot_names_reach_vboxmanage_whole_through_ssh_whose_remote_shell_resplits_them() {
    let fake = FakeVbox::lab();
    // A stand-in `ssh`: like the real one, it joins its arguments after the host into one
    // command line and has a shell run it.
    let bin = tempfile::tempdir().unwrap();
    let ssh = bin.path().join("ssh");
    std::fs::write(&ssh, "#!/bin/sh\nshift\nexec /bin/sh -c \"$*\"\n").unwrap();
    std::fs::set_permissions(&ssh, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mut host = fake.host("vbox");
    host.set("command_prefix", [ssh.display().to_string(), "vbox@desk1".to_string()]);
    let app = app_with(vec![host]).await;
    let vbox = backend(&app, "vbox");
    let db = lab_uuid(DB);

    let canary = bin.path().join("ran");
    let name = format!("it's \"a\" test; touch {} $(touch {})", canary.display(), canary.display());
    vbox.snapshot(&db, &take(&name, "two words\nand 'quotes'")).await.unwrap();
    let snap = snapshot_named(&*vbox, &db, &name).await;
    assert_eq!(snap.description, "two words\nand 'quotes'");
    assert!(!canary.exists(), "nothing in a name is run by the remote shell");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_slower_than_the_command_limit_is_confirmed_and_polls_and_power_actions_go_on_meanwhile(
) {
    let fake = FakeVbox::lab();
    let mut host = fake.host("vbox");
    // The take lasts 7 s, within snapshot_timeout_secs (600 s by default) but longer than every
    // other limit: a command is killed after 2 s, a call gives up after 3 s, and the
    // confirmation watches for 5 s (counted from VirtualBox's answer, not from the request).
    host.set("command_timeout_secs", 2);
    let app = spawn_app(AppOptions {
        call_timeout_secs: 3,
        // One slot per host: a power action could only pass the take if snapshots do not
        // share the power actions' slots.
        extra: vec![
            ("confirm_timeout_secs", serde_json::json!(5)),
            ("power_concurrency_per_host", serde_json::json!(1)),
        ],
        ..AppOptions::with_hosts(vec![host])
    })
    .await;
    let db = lab_uuid(DB);
    fake.fault(serde_json::json!({
        "command": "snapshot take", "vm": db, "behaviour": "slow", "seconds": 7, "times": 1
    }));
    let entry = async || -> (String, Option<String>) {
        sqlx::query_as(
            "SELECT status, error FROM audit_log WHERE kind = 'snapshot' AND vm_uuid = ? ORDER BY id DESC LIMIT 1",
        )
        .bind(&db)
        .fetch_one(&app.pool)
        .await
        .unwrap()
    };
    let op = app.session("operator").await;

    let res = op
        .post(&format!("/vms/vbox/{db}/snapshots"), &[("name", "big-merge"), ("description", "")])
        .await;
    assert_eq!(res.status().as_u16(), 303);
    eventually("the take sent to VirtualBox", Duration::from_secs(10), async || {
        fake.calls().iter().any(|c| c.starts_with(&format!("snapshot {db} take big-merge")))
    })
    .await;

    // While the take runs, the host is polled as usual (ordering, not a stopwatch: the poll
    // finished while the request was still in flight).
    assert!(
        matches!(app.poll("vbox").await, PollOutcome::Recorded(_)),
        "a poll during the snapshot failed"
    );
    let (status, _) = entry().await;
    assert!(!is_settled(&status), "the take ended before the poll could show anything: {status}");

    // A power action on another VM of the host is sent and confirmed meanwhile: it does not
    // queue behind the snapshot.
    let web = lab_uuid(WEB);
    let res = op.post(&format!("/vms/vbox/{web}/power"), &[("action", "pause")]).await;
    assert_eq!(res.status().as_u16(), 303);
    let power = async || -> String {
        sqlx::query_scalar(
            "SELECT status FROM audit_log WHERE kind = 'power' AND vm_uuid = ? ORDER BY id DESC LIMIT 1",
        )
        .bind(&web)
        .fetch_one(&app.pool)
        .await
        .unwrap()
    };
    eventually("the pause settled", Duration::from_secs(10), async || is_settled(&power().await))
        .await;
    assert_eq!(power().await, "confirmed");
    let (status, _) = entry().await;
    assert!(!is_settled(&status), "the take ended before the pause could pass it: {status}");

    eventually("the take settled", Duration::from_secs(30), async || is_settled(&entry().await.0))
        .await;
    let (status, error) = entry().await;
    assert_eq!(
        (status.as_str(), error.as_deref()),
        ("confirmed", None),
        "a take longer than command_timeout_secs was cut short"
    );
    let vbox = backend(&app, "vbox");
    snapshot_named(&*vbox, &db, "big-merge").await;
}

#[tokio::test]
async fn a_virtualbox_vm_has_no_console_link_and_its_page_says_vrde_speaks_rdp() {
    let fake = FakeVbox::lab();
    let app = app_with(vec![fake.host("vbox")]).await;
    let web = lab_uuid(WEB);
    let graphics: Option<String> = sqlx::query_scalar("SELECT graphics FROM vms WHERE uuid = ?")
        .bind(&web)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(graphics.as_deref(), Some("rdp"), "vrde=\"on\" is recorded as an RDP display");

    let (_, list) = app.get("/vms").await;
    assert!(!row(&list, &web).contains("/console"), "no Console link for a VirtualBox VM");
    let (status, page) = app.get(&format!("/vms/vbox/{web}")).await;
    assert_eq!(status, 200);
    let page = unescape(&page);
    assert!(
        page.contains(
            "Console unavailable: VirtualBox's remote display (VRDE) speaks RDP, not VNC"
        ),
        "the running VM's page says why it has no console"
    );
    assert!(!page.contains(&format!("/vms/vbox/{web}/console\"")));
    // The console page, asked anyway, explains too.
    let (status, console) = app.get(&format!("/vms/vbox/{web}/console")).await;
    assert_eq!(status, 200);
    assert!(unescape(&console).contains("speaks RDP, not VNC"));
}
