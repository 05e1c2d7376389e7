//! Truth against a real libvirtd running real QEMU VMs (TCG when /dev/kvm is not usable by the
//! daemon's user): vmdeck's stored figures must match what libvirt itself reports.
//!
//! These tests need libvirtd and QEMU; without them they fail saying how to install them.
//! `VMDECK_SKIP_REAL_VM=1` is the only way to skip them.

use std::time::Duration;

use vmdeck::poller::PollOutcome;

use crate::support::app::{libvirt_host, spawn_app, vm_names, AppOptions, TestApp};
use crate::support::libvirtd::{real_vm_tests_enabled, LibvirtDaemon};

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

    let app = spawn_app(AppOptions {
        hosts: vec![libvirt_host("lab", daemon.uri())],
        ..Default::default()
    })
    .await;
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
    let app = spawn_app(AppOptions {
        hosts: vec![libvirt_host("lab", daemon.uri())],
        ..Default::default()
    })
    .await;
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
    let mut recovered = false;
    for _ in 0..20 {
        if let PollOutcome::Recorded(_) = app.poll("lab").await {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(recovered, "vmdeck reconnects after the daemon comes back");
    let body: serde_json::Value =
        app.client.get(format!("{}/healthz", app.base)).send().await.unwrap().json().await.unwrap();
    assert_eq!(body["hosts"][0]["status"], "ok");
}
