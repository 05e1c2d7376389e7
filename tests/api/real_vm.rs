//! Truth against a real libvirtd running real QEMU VMs (TCG when /dev/kvm is not usable by the
//! daemon's user): vmdeck's stored figures must match what libvirt itself reports.
//!
//! These tests need libvirtd and QEMU; without them they fail saying how to install them.
//! `VMDECK_SKIP_REAL_VM=1` is the only way to skip them.

use std::time::Duration;

use vmdeck::hosts::PollOutcome;

use crate::support::app::{
    app_with, libvirt_host, strip_tags, unescape, vm_names, Session, TestApp,
};
use crate::support::audit::{is_settled, settled_power, SETTLE_TIMEOUT};
use crate::support::binary::vmdeck_user;
use crate::support::libvirtd::{real_vm_tests_enabled, LibvirtDaemon};
use crate::support::wait::{eventually, eventually_every, poll_until, EVERY};

fn daemon_or_skip() -> Option<LibvirtDaemon> {
    if let Err(why) = real_vm_tests_enabled() {
        eprintln!("SKIPPED (explicitly): {why}");
        return None;
    }
    match LibvirtDaemon::start() {
        Ok(d) => Some(d),
        Err(e) => panic!("the real-VM tests need a libvirt daemon and QEMU: {e}\n(set VMDECK_SKIP_REAL_VM=1 to skip them explicitly)"),
    }
}

/// A `Key:   value` line of virsh output.
fn field<'a>(text: &'a str, key: &str) -> &'a str {
    text.lines()
        .find_map(|l| l.strip_prefix(key).map(|v| v.trim_start_matches(':').trim()))
        .unwrap_or_else(|| panic!("no {key:?} in:\n{text}"))
}

async fn stored(app: &TestApp, uuid: &str) -> (String, i64, i64, i64, Option<i64>) {
    sqlx::query_as(
        "SELECT v.state, c.vcpus, c.memory_max_kib, c.disk_capacity_bytes, s.cpu_time_ns
         FROM vms v JOIN vm_configs c ON c.id = v.config_id
         JOIN hosts h ON h.id = v.host_id
         LEFT JOIN samples s ON s.vm_id = v.id AND s.ts = (SELECT started_at FROM polls WHERE id = h.last_ok_poll_id)
         WHERE v.uuid = ?",
    )
    .bind(uuid)
    .fetch_one(&app.pool)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_figures_match_what_libvirt_reports_for_real_vms() {
    let Some(daemon) = daemon_or_skip() else {
        return;
    };
    let running = daemon.define_vm("vmdeck-run", 2, 96, 1024).expect("define vmdeck-run");
    let idle = daemon.define_vm("vmdeck-off", 1, 64, 512).expect("define vmdeck-off");
    daemon.virsh(&["start", "vmdeck-run"]).expect("start vmdeck-run");

    let app = app_with(vec![libvirt_host("lab", daemon.uri())]).await;
    assert!(matches!(app.poll("lab").await, PollOutcome::Recorded(_)));

    for (uuid, name) in [(&running, "vmdeck-run"), (&idle, "vmdeck-off")] {
        let info = daemon.virsh(&["dominfo", name]).unwrap();
        let blk = daemon.virsh(&["domblkinfo", name, "vda"]).unwrap();
        let (state, vcpus, mem_kib, disk, _) = stored(&app, uuid).await;
        assert_eq!(vcpus.to_string(), field(&info, "CPU(s)"), "{name}: vCPUs");
        assert_eq!(format!("{mem_kib} KiB"), field(&info, "Max memory"), "{name}: memory");
        assert_eq!(disk.to_string(), field(&blk, "Capacity"), "{name}: disk capacity");
        let virsh_state = field(&info, "State");
        let expected = if virsh_state == "running" { "running" } else { "shut_off" };
        assert_eq!(state, expected, "{name}: virsh says {virsh_state}");
    }
    let (_, _, _, _, cpu1) = stored(&app, &running).await;
    let cpu1 = cpu1.expect("a running QEMU VM reports CPU time");
    let rss: Option<i64> = sqlx::query_scalar(
        "SELECT s.memory_used_kib FROM samples s JOIN vms v ON v.id = s.vm_id WHERE v.uuid = ? ORDER BY s.ts DESC LIMIT 1",
    )
    .bind(&running)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert!(rss.is_some_and(|r| r > 0), "balloon.rss comes from the bulk call on real QEMU");

    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(matches!(app.poll("lab").await, PollOutcome::Recorded(_)));
    let (_, _, _, _, cpu2) = stored(&app, &running).await;
    assert!(cpu2.unwrap() > cpu1, "CPU time grows between polls ({cpu1} -> {cpu2:?})");
    let pct: Option<f64> = sqlx::query_scalar(
        "SELECT s.cpu_pct FROM samples s JOIN vms v ON v.id = s.vm_id WHERE v.uuid = ? ORDER BY s.ts DESC LIMIT 1",
    )
    .bind(&running)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert!(pct.is_some_and(|p| (0.0..=100.0).contains(&p)), "a CPU % is derived: {pct:?}");

    let (_, html) = app.get("/vms").await;
    let names = vm_names(&html);
    assert!(
        names.contains(&"vmdeck-run".to_string()) && names.contains(&"vmdeck-off".to_string()),
        "{names:?}"
    );

    // Its page charts the real CPU figures.
    let (status, page) = app.get(&format!("/vms/lab/{running}?range=1h")).await;
    assert_eq!(status, 200);
    assert!(page.contains("<title>CPU "), "the CPU chart has real points");
    assert!(page.contains("class=\"state-running\""), "the timeline shows it running");

    // A domain undefined between polls is marked gone, its history kept.
    daemon.virsh(&["undefine", "vmdeck-off"]).unwrap();
    match app.poll("lab").await {
        PollOutcome::Recorded(r) => assert_eq!(r.gone_vms, 1),
        other => panic!("{other:?}"),
    }
    let (_, html) = app.get("/vms").await;
    assert!(!vm_names(&html).contains(&"vmdeck-off".to_string()));
    let (_, html) = app.get("/vms?state=gone").await;
    assert_eq!(vm_names(&html), vec!["vmdeck-off"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_killed_between_polls_is_reported_and_picked_up_again_after_restart() {
    let Some(mut daemon) = daemon_or_skip() else {
        return;
    };
    daemon.define_vm("vmdeck-k", 1, 64, 256).expect("define");
    let app = app_with(vec![libvirt_host("lab", daemon.uri())]).await;
    assert!(matches!(app.poll("lab").await, PollOutcome::Recorded(_)));

    daemon.kill();
    match app.poll("lab").await {
        PollOutcome::Failed(msg) => assert!(!msg.is_empty()),
        other => panic!("a poll of a dead daemon must fail, got {other:?}"),
    }
    let (_, html) = app.get("/vms").await;
    assert!(html.contains("unreachable"), "the page shows the failure");
    assert_eq!(vm_names(&html), vec!["vmdeck-k"], "the last known data stays visible");

    daemon.restart().expect("restart the daemon");
    // Reconnection waits out a short backoff; within a few polls the host is back.
    eventually_every(
        "vmdeck reconnecting after the daemon came back",
        Duration::from_secs(20),
        Duration::from_millis(500),
        async || matches!(app.poll("lab").await, PollOutcome::Recorded(_)),
    )
    .await;
    let body = app.health().await;
    assert_eq!(body["hosts"][0]["status"], "ok");
}

// ---------------------------------------------------------------------------------------------
// Power control against real QEMU

fn domstate(daemon: &LibvirtDaemon, name: &str) -> String {
    daemon.virsh(&["domstate", name]).unwrap().trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_stops_and_starts_real_vms_over_http() {
    let Some(daemon) = daemon_or_skip() else { return };
    let a = daemon.define_vm("vmdeck-a", 1, 64, 256).unwrap();
    let b = daemon.define_vm("vmdeck-b", 1, 64, 256).unwrap();
    daemon.virsh(&["start", "vmdeck-a"]).unwrap();
    daemon.virsh(&["start", "vmdeck-b"]).unwrap();
    let app = app_with(vec![libvirt_host("lab", daemon.uri())]).await;
    let op = app.session("operator").await;

    // Stop one (forced: a VM without an OS ignores ACPI), confirmed against libvirt.
    let res = op
        .post(&format!("/vms/lab/{a}/power"), &[("action", "power_off"), ("confirm", "yes")])
        .await;
    assert_eq!(res.status().as_u16(), 303);
    assert_eq!(settled_power(&app, &a).await.0, "confirmed");
    assert_eq!(domstate(&daemon, "vmdeck-a"), "shut off", "libvirt agrees");

    // Start it again.
    op.post(&format!("/vms/lab/{a}/power"), &[("action", "start")]).await;
    assert_eq!(settled_power(&app, &a).await.0, "confirmed");
    assert_eq!(domstate(&daemon, "vmdeck-a"), "running");

    // Bulk-stop both.
    let (ka, kb) = (format!("lab/{a}"), format!("lab/{b}"));
    let res = op
        .post(
            "/vms/power",
            &[("action", "power_off"), ("confirm", "yes"), ("vm", &ka), ("vm", &kb)],
        )
        .await;
    assert_eq!(res.status().as_u16(), 303);
    assert_eq!(settled_power(&app, &a).await.0, "confirmed");
    assert_eq!(settled_power(&app, &b).await.0, "confirmed");
    assert_eq!(
        (domstate(&daemon, "vmdeck-a"), domstate(&daemon, "vmdeck-b")),
        ("shut off".into(), "shut off".into())
    );

    // The VM's page shows the stop and the start in its timeline.
    app.poll("lab").await;
    let (_, page) = app.get(&format!("/vms/lab/{a}?range=1h")).await;
    let timeline = page.split("id=\"timeline\"").nth(1).unwrap_or_default();
    assert!(
        timeline.contains("state-shut_off") && timeline.contains("state-running"),
        "timeline: {timeline}"
    );

    // A viewer's attempt and a request without the CSRF token change nothing and are audited.
    assert_eq!(
        app.viewer
            .post(&format!("/vms/lab/{a}/power"), &[("action", "start")])
            .await
            .status()
            .as_u16(),
        403
    );
    let no_token = op
        .client
        .post(format!("{}/vms/lab/{a}/power", app.base))
        .form(&[("action", "start")])
        .send()
        .await
        .unwrap();
    assert_eq!(no_token.status().as_u16(), 403);
    assert_eq!(domstate(&daemon, "vmdeck-a"), "shut off");
    let refusals: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM audit_log WHERE kind IN ('access_denied', 'csrf_refused')",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(refusals, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hypervisor_refusals_are_recorded_in_words_an_operator_can_act_on() {
    let Some(mut daemon) = daemon_or_skip() else { return };
    let a = daemon.define_vm("vmdeck-r", 1, 64, 256).unwrap();
    let gone = daemon.define_vm("vmdeck-gone", 1, 64, 256).unwrap();
    daemon.virsh(&["start", "vmdeck-r"]).unwrap();
    let app = app_with(vec![libvirt_host("lab", daemon.uri())]).await;
    let op = app.session("operator").await;

    // Stopped behind vmdeck's back: vmdeck still believes it runs, libvirt refuses.
    daemon.virsh(&["destroy", "vmdeck-r"]).unwrap();
    op.post(&format!("/vms/lab/{a}/power"), &[("action", "pause")]).await;
    let (status, error, _) = settled_power(&app, &a).await;
    assert_eq!(status, "failed");
    assert!(error.as_deref().unwrap_or("").contains("not running"), "{error:?}");
    // The form was answered before libvirt refused: the list says so beside the VM.
    let (_, list) = op.get("/vms").await;
    assert!(unescape(&list).contains("Pause failed: "), "the row shows the failure");

    // Deleted behind vmdeck's back.
    daemon.virsh(&["undefine", "vmdeck-gone"]).unwrap();
    op.post(&format!("/vms/lab/{gone}/power"), &[("action", "start")]).await;
    let (status, error, _) = settled_power(&app, &gone).await;
    assert_eq!(
        (status.as_str(), error.as_deref()),
        ("failed", Some("The VM no longer exists on its host."))
    );

    // The daemon is down.
    app.poll("lab").await;
    daemon.kill();
    op.post(&format!("/vms/lab/{a}/power"), &[("action", "start")]).await;
    let (status, error, _) = settled_power(&app, &a).await;
    assert_eq!(status, "failed");
    assert!(!error.unwrap_or_default().is_empty());
}

/// Writes a config for the real binary and creates an operator with the CLI.
fn binary_setup(dir: &std::path::Path, uri: &str, port: u16) -> std::path::PathBuf {
    let config = dir.join("Rocket.toml");
    std::fs::write(
        &config,
        format!(
            "[default]\nport = {port}\ndatabase_url = \"sqlite://{}/vmdeck.db\"\n[[default.hosts]]\nname = \"lab\"\ndriver = \"libvirt\"\nuri = \"{uri}\"\n",
            dir.display()
        ),
    )
    .unwrap();
    let password = format!("{}\n", crate::support::app::PASSWORD);
    let (ok, out) = vmdeck_user(&config, &["add", "op", "--role", "operator"], &password);
    assert!(ok, "{out}");
    config
}

fn start_server(config: &std::path::Path) -> std::process::Child {
    std::process::Command::new(env!("CARGO_BIN_EXE_vmdeck"))
        .env("ROCKET_CONFIG", config)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

async fn wait_up(port: u16) {
    eventually("the server coming up", Duration::from_secs(15), async || {
        reqwest::get(format!("http://127.0.0.1:{port}/healthz")).await.is_ok()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_pending_when_the_server_is_killed_is_settled_after_restart() {
    let Some(daemon) = daemon_or_skip() else { return };
    let uuid = daemon.define_vm("vmdeck-kill", 1, 64, 256).unwrap();
    daemon.virsh(&["start", "vmdeck-kill"]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let port = crate::support::app::free_port();
    let config = binary_setup(dir.path(), daemon.uri(), port);
    let base = format!("http://127.0.0.1:{port}");

    let mut server = start_server(&config);
    wait_up(port).await;
    let op = crate::support::app::login(&base, "op", crate::support::app::PASSWORD).await.unwrap();
    // An ACPI shutdown: a VM without an operating system never acts on it, so the request stays
    // accepted-but-unconfirmed, exactly the state a crash would leave behind.
    let res = op.post(&format!("/vms/lab/{uuid}/power"), &[("action", "shutdown")]).await;
    assert_eq!(res.status().as_u16(), 303);
    // Sent in the background: wait until libvirt accepted it.
    let audit = format!("/audit?vm={uuid}");
    eventually("the shutdown accepted", Duration::from_secs(30), async || {
        op.get(&audit).await.1.contains("outcome-accepted")
    })
    .await;
    let again = op.post(&format!("/vms/lab/{uuid}/power"), &[("action", "shutdown")]).await;
    assert_eq!(again.status().as_u16(), 303);
    assert!(op.flash_at("/vms").await.contains("still pending"), "a second click is refused");

    server.kill().unwrap(); // SIGKILL
    server.wait().unwrap();
    let pool =
        vmdeck::db::connect(&format!("sqlite://{}/vmdeck.db", dir.path().display())).await.unwrap();
    let status: String = sqlx::query_scalar(
        "SELECT status FROM audit_log WHERE kind = 'power' AND vm_uuid = ? ORDER BY id LIMIT 1",
    )
    .bind(&uuid)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(status, "accepted", "the request survived the crash, still pending");

    let mut server = start_server(&config);
    wait_up(port).await;
    let oldest = async || -> Option<(String, Option<String>)> {
        let row: (String, Option<String>) = sqlx::query_as(
            "SELECT status, detail FROM audit_log WHERE kind = 'power' AND vm_uuid = ? ORDER BY id LIMIT 1",
        )
        .bind(&uuid)
        .fetch_one(&pool)
        .await
        .unwrap();
        (row.0 != "accepted").then_some(row)
    };
    // Not `eventually`: the server is stopped before a timeout is reported.
    let settled = poll_until(Duration::from_secs(10), Duration::from_millis(100), oldest).await;
    let _ = server.kill();
    let _ = server.wait();
    let (status, detail) = settled.expect("settled after restart");
    assert_eq!(status, "unconfirmed", "checked against the VM's actual state (still running)");
    assert!(detail.unwrap_or_default().contains("running"));
}

// ---------------------------------------------------------------------------------------------
// Snapshots against real QEMU: internal snapshots in the VM's qcow2 disk

/// `virsh snapshot-list <vm> --name`, one name a line, sorted.
fn virsh_snapshot_names(daemon: &LibvirtDaemon, vm: &str) -> Vec<String> {
    let out = daemon.virsh(&["snapshot-list", vm, "--name"]).unwrap();
    let mut names: Vec<String> =
        out.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_string).collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_snapshots_of_a_real_qcow2_vm_are_taken_listed_reverted_and_deleted() {
    use vmdeck::backend::{AfterRevert, BackendError, SnapshotOp};
    let Some(daemon) = daemon_or_skip() else { return };
    // define_vm gives a BIOS VM on a qcow2 disk: internal snapshots must work.
    let uuid = daemon.define_vm("vmdeck-snap", 1, 64, 256).unwrap();
    let app = app_with(vec![libvirt_host("lab", daemon.uri())]).await;
    let backend = app.hosts.get("lab").expect("configured host").backend.clone();
    let take = |name: &str| SnapshotOp::Take {
        name: name.into(),
        description: format!("{name} by vmdeck"),
        with_memory: true,
    };

    // Shut off: the disks only.
    backend.snapshot(&uuid, &take("cold")).await.expect("snapshot of a shut-off qcow2 VM");
    assert_eq!(virsh_snapshot_names(&daemon, "vmdeck-snap"), vec!["cold"]);
    let snaps = backend.snapshots(&uuid).await.unwrap();
    assert_eq!(snaps.len(), 1);
    let cold = snaps[0].clone();
    assert_eq!((cold.vm_state.as_str(), cold.with_memory, cold.current), ("shutoff", false, true));
    assert_eq!(cold.description, "cold by vmdeck");
    assert!(cold.created_at_ms.is_some(), "libvirt says when it was taken");

    // Running: a system checkpoint with the guest's memory.
    daemon.virsh(&["start", "vmdeck-snap"]).unwrap();
    backend.snapshot(&uuid, &take("warm")).await.expect("snapshot of a running qcow2 VM");
    let snaps = backend.snapshots(&uuid).await.unwrap();
    let warm = snaps.iter().find(|s| s.name == "warm").unwrap().clone();
    assert_eq!(warm.parent_id.as_deref(), Some("cold"), "{snaps:?}");
    assert!(warm.with_memory && warm.current, "{warm:?}");
    assert_eq!(warm.vm_state, "running");
    let parent = daemon.virsh(&["snapshot-parent", "vmdeck-snap", "warm"]).unwrap();
    assert_eq!(parent.trim(), "cold", "virsh agrees on the tree");
    assert_eq!(domstate(&daemon, "vmdeck-snap"), "running", "the VM ran on");

    // A used name: libvirt refuses it, vmdeck says so in words.
    match backend.snapshot(&uuid, &take("cold")).await {
        Err(e) => assert!(e.to_string().contains("choose another name"), "{e}"),
        Ok(()) => panic!("a second snapshot named cold"),
    }

    // Revert to the disk-only one: the VM is shut off, as it was then.
    let revert = |id: &str| SnapshotOp::Revert { id: id.into(), after: AfterRevert::AsTaken };
    backend.snapshot(&uuid, &revert("cold")).await.expect("revert to cold");
    assert_eq!(domstate(&daemon, "vmdeck-snap"), "shut off");
    let current = daemon.virsh(&["snapshot-current", "vmdeck-snap", "--name"]).unwrap();
    assert_eq!(current.trim(), "cold");
    // Back to the running checkpoint: the guest runs again from its memory.
    backend.snapshot(&uuid, &revert("warm")).await.expect("revert to warm");
    assert_eq!(domstate(&daemon, "vmdeck-snap"), "running");

    // Delete the parent: the child stays, now a root.
    backend.snapshot(&uuid, &SnapshotOp::Delete { id: "cold".into() }).await.expect("delete cold");
    assert_eq!(virsh_snapshot_names(&daemon, "vmdeck-snap"), vec!["warm"]);
    let snaps = backend.snapshots(&uuid).await.unwrap();
    assert_eq!(snaps.len(), 1);
    assert_eq!((snaps[0].name.as_str(), snaps[0].parent_id.as_deref()), ("warm", None));
    match backend.snapshot(&uuid, &revert("cold")).await {
        Err(BackendError::InvalidState(m)) => assert!(m.contains("no longer exists"), "{m}"),
        other => panic!("revert to a deleted snapshot: {other:?}"),
    }
    backend.snapshot(&uuid, &SnapshotOp::Delete { id: "warm".into() }).await.unwrap();
    assert_eq!(virsh_snapshot_names(&daemon, "vmdeck-snap"), Vec::<String>::new());
    daemon.virsh(&["destroy", "vmdeck-snap"]).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raw_disk_refuses_internal_snapshots_in_words() {
    use vmdeck::backend::{BackendError, SnapshotOp};
    let Some(daemon) = daemon_or_skip() else { return };
    daemon.define_vm("vmdeck-raw", 1, 64, 64).unwrap();
    // The same VM with its disk declared raw: QEMU cannot keep internal snapshots there.
    let xml =
        daemon.virsh(&["dumpxml", "vmdeck-raw"]).unwrap().replace("type='qcow2'", "type='raw'");
    assert!(xml.contains("type='raw'"), "{xml}");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("raw.xml");
    std::fs::write(&file, xml).unwrap();
    daemon.virsh(&["define", &file.to_string_lossy()]).unwrap();
    let uuid = daemon.virsh(&["domuuid", "vmdeck-raw"]).unwrap().trim().to_string();
    let app = app_with(vec![libvirt_host("lab", daemon.uri())]).await;
    let backend = app.hosts.get("lab").expect("configured host").backend.clone();

    let op =
        SnapshotOp::Take { name: "nope".into(), description: String::new(), with_memory: false };
    match backend.snapshot(&uuid, &op).await {
        Err(BackendError::Unsupported(m)) => assert!(m.contains("raw image, not qcow2"), "{m}"),
        other => panic!("snapshot of a raw-disk VM: {other:?}"),
    }
    assert_eq!(
        virsh_snapshot_names(&daemon, "vmdeck-raw"),
        Vec::<String>::new(),
        "nothing half-done"
    );
}

// ---------------------------------------------------------------------------------------------
// Snapshots of real QEMU VMs through HTTP, as an operator, against `virsh snapshot-list --tree`

/// A snapshot as one side lists it: (name, parent name, is current, captured VM state).
type Listed = (String, Option<String>, bool, String);

/// What virsh says about the VM's snapshots: the tree of `snapshot-list --tree` (a root at
/// column 0, a child as `+- name` four columns right of its parent's `+-`), and each one's
/// current flag and captured state from `snapshot-info`. Sorted by name.
fn virsh_snapshots(daemon: &LibvirtDaemon, vm: &str) -> Vec<Listed> {
    let tree = daemon.virsh(&["snapshot-list", vm, "--tree"]).unwrap();
    let mut path: Vec<String> = Vec::new();
    let mut out = Vec::new();
    for line in tree.lines() {
        let (depth, name) = match line.find("+- ") {
            Some(at) => (at / 4 + 1, line[at + 3..].trim()),
            None if !line.starts_with(' ') && !line.trim().is_empty() => (0, line.trim()),
            None => continue, // the `|` lines between a parent and its children
        };
        path.truncate(depth);
        let parent = path.last().cloned();
        path.push(name.to_string());
        let info = daemon.virsh(&["snapshot-info", vm, name]).unwrap();
        out.push((
            name.to_string(),
            parent,
            field(&info, "Current") == "yes",
            field(&info, "State").to_string(),
        ));
    }
    out.sort();
    out
}

/// The VM page's snapshot tree as an operator sees it: (row id, listed), in page order; and
/// the names under "Past snapshots".
fn page_snapshots(html: &str) -> (Vec<(i64, Listed)>, Vec<String>) {
    let section = html.split("id=\"snapshots\"").nth(1).expect("a Snapshots section");
    let tree = section
        .split("id=\"snapshot-tree\"")
        .nth(1)
        .map(|t| t.split("</table>").next().unwrap_or_default())
        .unwrap_or_default();
    let rows = tree
        .split("<tr class=\"snapshot ")
        .skip(1)
        .map(|r| {
            let attrs = r.split('>').next().unwrap();
            let id = attrs.split("data-snapshot-id=\"").nth(1).unwrap().split('"').next().unwrap();
            let cells: Vec<&str> = r.split("<td").collect();
            let name_cell = cells[1].split_once('>').unwrap().1;
            let name = name_cell
                .replace("<span aria-hidden=\"true\">└ </span>", "")
                .split('<')
                .next()
                .unwrap()
                .trim()
                .to_string();
            let parent = name_cell
                .split("(child of ")
                .nth(1)
                .map(|p| unescape(p.split(")</span>").next().unwrap()));
            let captured = unescape(&strip_tags(cells[4].split_once('>').unwrap().1));
            let state = captured
                .trim()
                .trim_end_matches(')')
                .rsplit_once('(')
                .map(|(_, s)| s.to_string())
                .unwrap_or_default();
            let current = attrs.contains(" current\"");
            (id.parse().unwrap(), (unescape(&name), parent, current, state))
        })
        .collect();
    let past = section
        .split("id=\"past-snapshots\"")
        .nth(1)
        .map(|p| {
            p.split("</table>")
                .next()
                .unwrap()
                .split("<tr><td>")
                .skip(1)
                .map(|r| unescape(r.split(['<', ' ']).next().unwrap()))
                .collect()
        })
        .unwrap_or_default();
    (rows, past)
}

/// Waits until the VM's newest snapshot entry after `after` is settled: (id, action, status,
/// error).
async fn settled_snapshot(
    app: &TestApp,
    uuid: &str,
    after: i64,
) -> (i64, String, String, Option<String>) {
    let newest = async || {
        let row: Option<(i64, String, String, Option<String>)> = sqlx::query_as(
            "SELECT id, action, status, error FROM audit_log
              WHERE kind = 'snapshot' AND vm_uuid = ? AND id > ? ORDER BY id DESC LIMIT 1",
        )
        .bind(uuid)
        .bind(after)
        .fetch_optional(&app.pool)
        .await
        .unwrap();
        row.filter(|(_, _, status, _)| is_settled(status))
    };
    poll_until(SETTLE_TIMEOUT, EVERY, newest)
        .await
        .unwrap_or_else(|| panic!("no settled snapshot entry of {uuid} after {after}"))
}

/// The VM page and virsh list the same snapshots, parents and current one; the page's rows
/// by name (row id) and its past snapshot names.
async fn page_agrees_with_virsh(
    op: &Session,
    daemon: &LibvirtDaemon,
    vm: &str,
    uuid: &str,
    step: &str,
) -> (Vec<(String, i64)>, Vec<String>) {
    let (status, html) = op.get(&format!("/vms/lab/{uuid}")).await;
    assert_eq!(status, 200, "{vm} after {step}");
    let (rows, past) = page_snapshots(&html);
    let mut listed: Vec<Listed> = rows.iter().map(|(_, l)| l.clone()).collect();
    listed.sort();
    assert_eq!(listed, virsh_snapshots(daemon, vm), "{vm} after {step}: page vs virsh");
    (rows.into_iter().map(|(id, l)| (l.0, id)).collect(), past)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_takes_reverts_and_deletes_real_vm_snapshots_over_http() {
    let Some(daemon) = daemon_or_skip() else { return };
    let hot = daemon.define_vm("vmdeck-hot", 1, 64, 256).unwrap();
    let cold = daemon.define_vm("vmdeck-cold", 1, 64, 256).unwrap();
    daemon.virsh(&["start", "vmdeck-hot"]).unwrap();
    let app = app_with(vec![libvirt_host("lab", daemon.uri())]).await;
    let op = app.session("operator").await;

    // The running VM keeps its memory and is reverted to run on; the shut-off one keeps its
    // disk, is reverted as taken, and loses the parent (its child becomes a root).
    let cases = [
        ("vmdeck-hot", &hot, "running", "running", "next"),
        ("vmdeck-cold", &cold, "as_taken", "shut off", "base"),
    ];
    for (vm, uuid, after, state_after, doomed) in cases {
        let mut last = 0;
        let mut settle = async |what: &str| {
            let (id, action, status, error) = settled_snapshot(&app, uuid, last).await;
            assert_eq!(
                (action.as_str(), status.as_str(), error),
                (what, "confirmed", None),
                "{vm}"
            );
            last = id;
        };
        let href = format!("/vms/lab/{uuid}");

        // Take two: the second a child of the first, and current.
        for name in ["base", "next"] {
            let desc = format!("{name} of {vm} / by vmdeck");
            let res = op
                .post(&format!("{href}/snapshots"), &[("name", name), ("description", &desc)])
                .await;
            assert_eq!(res.status().as_u16(), 303, "{vm}: take {name}");
            settle("snapshot_take").await;
            let (_, html) = op.get(&href).await;
            assert!(unescape(&html).contains(&desc), "{vm}: the description, unescaped");
        }
        let (rows, past) = page_agrees_with_virsh(&op, &daemon, vm, uuid, "two takes").await;
        assert_eq!(rows.len(), 2, "{vm}: {rows:?}");
        assert!(past.is_empty(), "{vm}: {past:?}");
        let listed = virsh_snapshots(&daemon, vm);
        let held = if vm == "vmdeck-hot" { "running" } else { "shutoff" };
        assert!(listed.iter().all(|s| s.3 == held), "{vm}: {listed:?}");
        let captured = if held == "running" { "disk and memory (running)" } else { "disk only" };
        let (_, html) = op.get(&href).await;
        assert!(strip_tags(&html).contains(captured), "{vm}: the page says {captured}");
        assert_eq!(listed[1].1.as_deref(), Some("base"), "{vm}: next is base's child");
        assert!(listed[1].2, "{vm}: the newest is current");

        // Revert to the first.
        let id = |rows: &[(String, i64)], name: &str| {
            rows.iter().find(|r| r.0 == name).unwrap_or_else(|| panic!("{vm}: {name}")).1
        };
        let base = id(&rows, "base");
        let res = op.post(&format!("{href}/snapshots/{base}/revert"), &[("after", after)]).await;
        assert_eq!(res.status().as_u16(), 303, "{vm}: revert");
        settle("snapshot_revert").await;
        let (rows, _) = page_agrees_with_virsh(&op, &daemon, vm, uuid, "revert").await;
        assert_eq!(domstate(&daemon, vm), state_after, "{vm} after the revert");
        let current: Vec<String> =
            virsh_snapshots(&daemon, vm).into_iter().filter(|s| s.2).map(|s| s.0).collect();
        assert_eq!(current, ["base"], "{vm}: reverted to base");

        // Delete one: it leaves the tree and shows under "Past snapshots".
        let doomed_id = id(&rows, doomed);
        let res = op.post(&format!("{href}/snapshots/{doomed_id}/delete"), &[]).await;
        assert_eq!(res.status().as_u16(), 303, "{vm}: delete");
        settle("snapshot_delete").await;
        let (rows, past) = page_agrees_with_virsh(&op, &daemon, vm, uuid, "delete").await;
        assert_eq!(rows.len(), 1, "{vm}: {rows:?}");
        assert!(rows.iter().all(|r| r.0 != doomed), "{vm}: {rows:?}");
        assert_eq!(past, [doomed], "{vm}: the deleted one is a past snapshot");
        let (_, html) = op.get(&href).await;
        let text = unescape(&strip_tags(&html));
        assert!(text.contains("removed by operator-"), "{vm}: credited to the operator");
    }
}
