//! Faults: a host that cannot be reached, a host that hangs. The failure is recorded and shown,
//! other hosts keep polling, nothing panics. (A daemon killed and restarted is in real_vm.rs.)

use std::time::Duration;

use vmdeck::hosts::PollOutcome;

use crate::support::app::{app_with, breadth_uri, libvirt_host, spawn_app, vm_names, AppOptions};
use crate::support::fakes::SilentSocket;

#[tokio::test]
async fn an_unreachable_host_is_shown_failing_while_the_others_keep_working() {
    let dir = tempfile::tempdir().unwrap();
    let dead = format!("qemu+unix:///system?socket={}/no-such.sock", dir.path().display());
    let app =
        app_with(vec![libvirt_host("lab", &breadth_uri()), libvirt_host("dead", &dead)]).await;
    let (status, html) = app.get("/vms").await;
    assert_eq!(status, 200);
    assert_eq!(vm_names(&html).len(), 21, "the working host's VMs are listed");
    assert!(html.contains("data-host=\"dead\""));
    assert!(
        html.contains("unreachable") && html.contains("no-such.sock"),
        "the banner shows the error"
    );

    let body = app.health().await;
    assert_eq!(body["status"], "degraded");
    let dead_host = body["hosts"].as_array().unwrap().iter().find(|h| h["name"] == "dead").unwrap();
    assert_eq!(dead_host["status"], "failing");
    assert!(dead_host["last_error"].as_str().unwrap().contains("cannot connect"));

    // The next attempt comes after a backoff and says so instead of hammering the host.
    match app.poll("dead").await {
        PollOutcome::Failed(msg) => {
            assert!(msg.contains("next try in") || msg.contains("cannot connect"), "{msg}")
        }
        other => panic!("expected a failure, got {other:?}"),
    }
    assert!(matches!(app.poll("lab").await, PollOutcome::Recorded(_)));
    let failures: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM polls p JOIN hosts h ON h.id = p.host_id WHERE h.name = 'dead' AND p.ok = 0")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert!(failures >= 2, "each failed poll is recorded");
}

/// A host that hangs: a silent socket in a directory of its own, and the URI that reaches it.
struct HangingHost {
    uri: String,
    silent: SilentSocket,
    _dir: tempfile::TempDir,
}

impl HangingHost {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("hang.sock");
        let silent = SilentSocket::start(&sock);
        let uri = format!("qemu+unix:///system?socket={}", sock.display());
        HangingHost { uri, silent, _dir: dir }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_host_times_out_and_does_not_delay_the_other_hosts() {
    let hanging = HangingHost::start();
    let hang_uri = hanging.uri.clone();
    let app = spawn_app(AppOptions {
        hosts: vec![libvirt_host("lab", &breadth_uri()), libvirt_host("hang", &hang_uri)],
        call_timeout_secs: 1,
        ..Default::default()
    })
    .await;

    // The liftoff poll of "hang" timed out after 1 s and was recorded as a failure.
    let err: String = sqlx::query_scalar(
        "SELECT p.error FROM polls p JOIN hosts h ON h.id = p.host_id WHERE h.name = 'hang' ORDER BY p.id LIMIT 1",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert!(err.contains("did not answer within"), "{err}");

    // While the first call is still stuck inside libvirt, a new poll fails fast (no queueing),
    // and the healthy host polls at its normal speed meanwhile.
    let both = async { tokio::join!(app.poll("hang"), app.poll("lab")) };
    let (hang, lab) = tokio::time::timeout(Duration::from_secs(3), both).await.expect(
        "the polls of the hanging host and the healthy one hung for 3 s: a stuck call queued them",
    );
    match hang {
        PollOutcome::Failed(msg) => {
            assert!(msg.contains("has not returned yet") || msg.contains("did not answer"), "{msg}")
        }
        other => panic!("expected a failure, got {other:?}"),
    }
    assert!(matches!(lab, PollOutcome::Recorded(_)), "{lab:?}");

    let (_, html) = app.get("/vms").await;
    assert!(html.contains("data-host=\"hang\"") && html.contains("unreachable"));
    assert_eq!(vm_names(&html).len(), 21);
    drop(hanging.silent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_power_call_to_a_hanging_host_fails_within_the_time_limit() {
    let hanging = HangingHost::start();
    let hang_uri = hanging.uri.clone();
    let app = spawn_app(AppOptions {
        hosts: vec![libvirt_host("hang", &hang_uri)],
        call_timeout_secs: 1,
        ..Default::default()
    })
    .await;
    // A VM vmdeck saw on this host before it started hanging.
    let host_id = app.host_id("hang").await;
    let uuid = "11111111-2222-3333-4444-555555555555";
    sqlx::query(
        "INSERT INTO vms (host_id, uuid, name, first_seen, state, raw_state, state_reason, state_since)
         VALUES (?, ?, 'stuck-vm', 0, 'running', 'running', 'booted', 0)",
    )
    .bind(host_id)
    .bind(uuid)
    .execute(&app.pool)
    .await
    .unwrap();
    let op = app.session("operator").await;
    let path = format!("/vms/hang/{uuid}/power");
    let res = tokio::time::timeout(Duration::from_secs(5), op.post(&path, &[("action", "pause")]))
        .await
        .expect("the power request to the hanging host hung for 5 s despite its 1 s limit");
    assert_eq!(res.status().as_u16(), 303);
    let (status, error): (String, Option<String>) =
        sqlx::query_as("SELECT status, error FROM audit_log WHERE kind = 'power' AND vm_uuid = ?")
            .bind(uuid)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(status, "failed");
    let error = error.unwrap_or_default();
    assert!(error.contains("did not answer") || error.contains("hanging"), "{error}");
    drop(hanging.silent);
}
