//! Faults: a host that cannot be reached, a host that hangs, a database that is full. The
//! failure is recorded (or, for the database, said) and shown, other hosts keep polling,
//! nothing panics. (A daemon killed and restarted is in real_vm.rs.)

use std::time::Duration;

use vmdeck::hosts::PollOutcome;

use vmdeck::domain::PowerState;

use crate::support::app::{
    app_with, breadth_uri, libvirt_host, spawn_app, uuid_of, vm_names, AppOptions, TestApp,
};
use crate::support::audit::settled_power;
use crate::support::fakes::SilentSocket;
use crate::support::wait::eventually;

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
    // Sent in the background, and failed there within the limit.
    let (status, error, _) =
        tokio::time::timeout(Duration::from_secs(5), settled_power(&app, uuid)).await.expect(
            "the power request to the hanging host did not settle within 5 s despite its 1 s limit",
        );
    assert_eq!(status, "failed");
    let error = error.unwrap_or_default();
    assert!(error.contains("did not answer") || error.contains("hanging"), "{error}");
    drop(hanging.silent);
}

// A full database: `database_max_size_mb` caps the file the way a full disk would (SQLite's
// `max_page_count`: the same SQLITE_FULL at the same place, every connection), and deleting
// rows makes room again inside the file, as retention pruning does.

/// Grows the database with a filler table until SQLite refuses (`SQLITE_FULL`), through the
/// app's own pool and so its cap.
async fn fill_database(app: &TestApp) {
    sqlx::query("CREATE TABLE filler (b BLOB)").execute(&app.pool).await.unwrap();
    for size in [65_536, 4_096, 256, 16] {
        loop {
            let res = sqlx::query("INSERT INTO filler (b) VALUES (zeroblob(?))")
                .bind(size)
                .execute(&app.pool)
                .await;
            match res {
                Ok(_) => continue,
                Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("13") => break,
                Err(e) => panic!("filling the database failed otherwise than full: {e}"),
            }
        }
    }
}

async fn power_rows(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM audit_log WHERE kind = 'power'")
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

async fn polls_stored(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM polls").fetch_one(&app.pool).await.unwrap()
}

async fn observed_state(app: &TestApp, uuid: &str) -> PowerState {
    let lab = app.hosts.get("lab").unwrap();
    lab.backend.vm_state(uuid).await.expect("the test driver answers").state
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_database_is_said_plainly_power_is_refused_unsent_and_polls_resume_when_space_returns(
) {
    // Arrange: the breadth lab polled every second, the database capped at 2 MiB.
    let app = spawn_app(AppOptions {
        poll_interval_secs: 1,
        extra: vec![("database_max_size_mb", serde_json::json!(2))],
        ..AppOptions::breadth()
    })
    .await;
    let operator = app.session("operator").await;
    let uuid = uuid_of(&app, "br-running").await;
    assert_eq!(observed_state(&app, &uuid).await, PowerState::Running);

    // Act: the disk fills up.
    fill_database(&app).await;

    // Assert: the poller keeps polling, and the banner and /healthz say why nothing is stored.
    eventually("/healthz saying the database is full", Duration::from_secs(30), async || {
        let health = app.health().await;
        health["database"] == "full" && health["hosts"][0]["status"] == "unstored"
    })
    .await;
    let health = app.health().await;
    assert_eq!(health["status"], "degraded", "{health}");
    assert_eq!(health["hosts"][0]["last_error"], "database full: cannot store polls", "{health}");
    assert!(
        health["database_error"].as_str().unwrap().contains("free space on the disk"),
        "{health}"
    );
    let failures = health["hosts"][0]["consecutive_failures"].as_u64().unwrap();
    let stored = polls_stored(&app).await;
    eventually("the poller still polling the full database", Duration::from_secs(10), async || {
        app.health().await["hosts"][0]["consecutive_failures"].as_u64().unwrap() >= failures + 2
    })
    .await;
    assert_eq!(polls_stored(&app).await, stored, "no poll is half-stored");
    let (status, html) = app.get("/vms").await;
    assert_eq!(status, 200, "the list still shows the stored inventory");
    assert!(html.contains("database full: cannot store polls"), "the banner says it plainly");
    assert_eq!(vm_names(&html).len(), 21);

    // A power request is refused, with the reason, and the hypervisor is never called.
    let before = power_rows(&app).await;
    let res = operator.post(&format!("/vms/lab/{uuid}/power"), &[("action", "pause")]).await;
    assert_eq!(res.status().as_u16(), 503, "refused as unavailable, not a redirect or a 500");
    let page = res.text().await.unwrap();
    assert!(
        page.contains("Pause br-running was not sent") && page.contains("Database full"),
        "the page says what happened and why: {page}"
    );
    assert_eq!(power_rows(&app).await, before, "no power entry was written, not even half");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(observed_state(&app, &uuid).await, PowerState::Running, "the VM was not paused");

    // Space returns (pruning would do the same): the next poll is stored, the banner goes.
    sqlx::query("DROP TABLE filler").execute(&app.pool).await.expect("deleting frees pages");
    eventually("/healthz ok again", Duration::from_secs(30), async || {
        app.health().await["status"] == "ok"
    })
    .await;
    let health = app.health().await;
    assert_eq!(health["database"], "ok", "{health}");
    assert!(health.get("database_error").is_none(), "{health}");
    assert!(polls_stored(&app).await > stored, "polls are stored again");
    let (_, html) = app.get("/vms").await;
    assert!(!html.contains("cannot store polls"), "the banner is gone");

    // And power control works again, without a restart.
    let res = operator.post(&format!("/vms/lab/{uuid}/power"), &[("action", "pause")]).await;
    assert_eq!(res.status().as_u16(), 303);
    eventually("br-running paused", Duration::from_secs(10), async || {
        observed_state(&app, &uuid).await == PowerState::Paused
    })
    .await;
    assert_eq!(power_rows(&app).await, before + 1, "the request was recorded");
}
