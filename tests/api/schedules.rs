//! Snapshot schedules against the breadth lab (libvirt's test driver, which keeps snapshots in
//! memory per connection): a due schedule runs once and takes its named snapshots as the
//! system user, retention prunes only the schedule's own snapshots over simulated days, a
//! slot missed while vmdeck was down runs once at start, and a failing VM does not stop the
//! others and shows on the pages. Time is driven by calling `Scheduler::tick(now)` with a
//! "now" days ahead of the real clock, so the server's own 30-second tick (real time) never
//! finds these schedules due.

use std::time::Duration;

use sqlx::SqlitePool;
use vmdeck::backend::SnapshotOp;
use vmdeck::schedules::model::{slot_label, Frequency, Retention};
use vmdeck::schedules::store::{self, ScheduleSpec, Scope};

use crate::support::app::{
    breadth_app, spawn_app_in, strip_tags, unescape, uuid_of, AppOptions, TestApp,
};
use crate::support::wait::eventually;

const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;

/// Midnight UTC `days` days after the real today: a virtual clock the real one never reaches
/// during a test.
fn future_midnight(days: i64) -> i64 {
    (vmdeck::db::now_ms().div_euclid(DAY) + days) * DAY
}

fn daily(hour: u8) -> Frequency {
    Frequency::Daily { hour, minute: 0 }
}

async fn add_schedule(
    app: &TestApp,
    name: &str,
    scope: Scope,
    frequency: Frequency,
    keep_last: u32,
    created_at: i64,
) -> i64 {
    let spec = ScheduleSpec {
        name: name.into(),
        enabled: true,
        scope,
        frequency,
        retention: Retention { keep_last: Some(keep_last), keep_daily: None },
        with_memory: false,
    };
    store::insert(&app.pool, &spec, "admin", created_at).await.expect("schedule saved")
}

/// The existing snapshots of a VM as vmdeck recorded them: (name, taken_by_audit_id).
async fn recorded(pool: &SqlitePool, uuid: &str) -> Vec<(String, Option<i64>)> {
    sqlx::query_as(
        "SELECT s.name, s.taken_by_audit_id FROM vm_snapshots s JOIN vms v ON v.id = s.vm_id
          WHERE v.uuid = ? AND s.gone_at IS NULL ORDER BY s.name",
    )
    .bind(uuid)
    .fetch_all(pool)
    .await
    .unwrap()
}

/// The snapshot names the hypervisor itself lists for a VM, sorted.
async fn on_hypervisor(app: &TestApp, uuid: &str) -> Vec<String> {
    let entry = app.hosts.get("lab").expect("host lab");
    let mut names: Vec<String> = entry
        .backend
        .snapshots(uuid)
        .await
        .expect("the test driver lists snapshots")
        .into_iter()
        .map(|s| s.name)
        .collect();
    names.sort();
    names
}

/// Takes a snapshot by hand, straight on the hypervisor (not through vmdeck's requests), and
/// records the VM's set as the poller would.
async fn hand_snapshot(app: &TestApp, uuid: &str, name: &str) {
    let entry = app.hosts.get("lab").expect("host lab");
    let op = SnapshotOp::Take { name: name.into(), description: String::new(), with_memory: false };
    entry.backend.snapshot(uuid, &op).await.expect("hand-taken snapshot");
    let snaps = entry.backend.snapshots(uuid).await.unwrap();
    let vm_id: i64 = sqlx::query_scalar("SELECT id FROM vms WHERE uuid = ?")
        .bind(uuid)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    vmdeck::hosts::snapshots::record_snapshots(
        &app.pool,
        vm_id,
        &snaps,
        vmdeck::db::now_ms(),
        None,
        None,
    )
    .await
    .unwrap();
}

/// A schedule named `name` and a finished run in which one VM failed, for the role matrix, the
/// fuzzer and the accessibility scan: (schedule id, run id).
pub async fn seeded_schedule(app: &TestApp, name: &str) -> (i64, i64) {
    let created = future_midnight(100);
    let id = add_schedule(app, name, Scope::Pattern("br-*".into()), daily(3), 3, created).await;
    let run = store::claim_slot(&app.pool, id, created + 3 * HOUR, vmdeck::db::now_ms())
        .await
        .unwrap()
        .expect("a new slot");
    let uuid = uuid_of(app, "br-running").await;
    let result = store::RunVm {
        host_name: "lab".into(),
        vm_uuid: uuid,
        vm_name: "br-running".into(),
        outcome: "failed".into(),
        error: Some("the hypervisor said no".into()),
        audit_id: None,
        pruned: 0,
        prune_error: None,
    };
    store::record_run_vm(&app.pool, run, &result).await.unwrap();
    store::finish_run(&app.pool, run, vmdeck::db::now_ms()).await.unwrap();
    (id, run)
}

#[tokio::test]
async fn a_due_schedule_runs_once_and_takes_named_snapshots_as_the_system_user() {
    let app = breadth_app().await;
    let running = uuid_of(&app, "br-running").await;
    let shutoff = uuid_of(&app, "br-shutoff").await;
    let other = uuid_of(&app, "br-no-disks").await;
    let t0 = future_midnight(30);
    let id = add_schedule(
        &app,
        "nightly",
        Scope::Vms(vec![("lab".into(), running.clone()), ("lab".into(), shutoff.clone())]),
        daily(3),
        3,
        t0,
    )
    .await;

    // Before its slot: nothing.
    assert!(app.scheduler.tick(t0 + 2 * HOUR).await.runs.is_empty(), "not due before 03:00");
    let report = app.scheduler.tick(t0 + 3 * HOUR + 60_000).await;
    assert_eq!(report.runs.len(), 1, "the 03:00 slot runs once");
    // The same slot again (the next tick): nothing more.
    assert!(app.scheduler.tick(t0 + 3 * HOUR + 90_000).await.runs.is_empty(), "a slot runs once");

    let name = format!("vmdeck-daily-{}", slot_label(t0 + 3 * HOUR));
    for uuid in [&running, &shutoff] {
        assert_eq!(on_hypervisor(&app, uuid).await, vec![name.clone()], "the hypervisor has it");
        let snaps = recorded(&app.pool, uuid).await;
        assert_eq!(snaps.len(), 1, "{snaps:?}");
        let audit = snaps[0].1.expect("vmdeck credits the request that took it");
        let (user, kind, action, status): (Option<String>, String, String, String) =
            sqlx::query_as("SELECT user_name, kind, action, status FROM audit_log WHERE id = ?")
                .bind(audit)
                .fetch_one(&app.pool)
                .await
                .unwrap();
        assert_eq!(
            (user.as_deref(), kind.as_str(), action.as_str(), status.as_str()),
            (Some("system"), "snapshot", "snapshot_take", "confirmed")
        );
        let linked: Option<i64> =
            sqlx::query_scalar("SELECT schedule_id FROM snapshot_requests WHERE audit_id = ?")
                .bind(audit)
                .fetch_one(&app.pool)
                .await
                .unwrap();
        assert_eq!(linked, Some(id), "the request names its schedule");
    }
    assert!(on_hypervisor(&app, &other).await.is_empty(), "a VM outside the scope is untouched");

    let admin = app.session("admin").await;
    let (status, html) = admin.get("/schedules").await;
    assert_eq!(status, 200);
    let text = unescape(&strip_tags(&html));
    assert!(text.contains("nightly") && text.contains("2 taken, 0 pruned"), "{text}");
    let run = report.runs[0];
    let (status, html) = admin.get(&format!("/schedules/runs/{run}")).await;
    assert_eq!(status, 200);
    assert_eq!(html.matches("data-outcome=\"taken\"").count(), 2, "{html}");
}

#[tokio::test]
async fn retention_over_ten_days_prunes_only_the_schedules_own_snapshots() {
    let app = breadth_app().await;
    let vm = uuid_of(&app, "br-running").await;
    let t0 = future_midnight(40);
    let scope = || Scope::Vms(vec![("lab".into(), vm.clone())]);
    let keep3 = add_schedule(&app, "keep three", scope(), daily(3), 3, t0).await;
    let other = add_schedule(&app, "another", scope(), daily(4), 20, t0).await;
    // A snapshot taken by hand, and one taken by hand under a name the schedule would use: a
    // name alone never makes a snapshot the schedule's.
    hand_snapshot(&app, &vm, "before-upgrade").await;
    let lookalike = format!("vmdeck-daily-{}", slot_label(t0 - 7 * DAY + 3 * HOUR));
    hand_snapshot(&app, &vm, &lookalike).await;

    for day in 0..10 {
        let report = app.scheduler.tick(t0 + day * DAY + 5 * HOUR).await;
        assert_eq!(report.runs.len(), 2, "day {day}: both schedules run once");
    }

    let own = |d: i64| format!("vmdeck-daily-{}", slot_label(t0 + d * DAY + 3 * HOUR));
    let others = |d: i64| format!("vmdeck-daily-{}", slot_label(t0 + d * DAY + 4 * HOUR));
    let mut expected: Vec<String> = vec!["before-upgrade".into(), lookalike.clone()];
    expected.extend((7..10).map(own));
    expected.extend((0..10).map(others));
    expected.sort();
    assert_eq!(
        on_hypervisor(&app, &vm).await,
        expected,
        "kept: the last 3 of 'keep three' and the rest"
    );
    let names: Vec<String> = recorded(&app.pool, &vm).await.into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, expected, "vmdeck's record agrees with the hypervisor");

    // Seven prunes, each its own confirmed request as the system user under the schedule.
    let prunes: Vec<(Option<String>, String)> = sqlx::query_as(
        "SELECT a.user_name, a.status FROM audit_log a JOIN snapshot_requests r ON r.audit_id = a.id
          WHERE a.action = 'snapshot_delete' AND r.schedule_id = ?",
    )
    .bind(keep3)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(prunes.len(), 7, "{prunes:?}");
    assert!(
        prunes.iter().all(|(u, s)| u.as_deref() == Some("system") && s == "confirmed"),
        "{prunes:?}"
    );
    let other_prunes: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM snapshot_requests r JOIN audit_log a ON a.id = r.audit_id
          WHERE a.action = 'snapshot_delete' AND r.schedule_id = ?",
    )
    .bind(other)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(other_prunes, 0, "'another' keeps 20, so it pruned nothing");
}

#[tokio::test]
async fn a_slot_missed_while_vmdeck_was_down_runs_once_at_start() {
    let app = breadth_app().await;
    let vm = uuid_of(&app, "br-running").await;
    let now = vmdeck::db::now_ms();
    // A daily slot 12 hours ago, so the real clock does not cross one during the test.
    let slot = now - 12 * HOUR;
    let at = slot.rem_euclid(DAY);
    let frequency =
        Frequency::Daily { hour: (at / HOUR) as u8, minute: ((at % HOUR) / 60_000) as u8 };
    let slot = frequency.latest_slot(now);
    let id = add_schedule(
        &app,
        "missed",
        Scope::Vms(vec![("lab".into(), vm.clone())]),
        frequency,
        5,
        now - 30 * DAY,
    )
    .await;
    // Not due while this server runs: its last run is the current slot.
    store::set_last_slot(&app.pool, id, Some(slot)).await.unwrap();
    let dir = app.stop().await;

    // While it was down, three slots went by (set the last run back three days).
    {
        let url = format!("sqlite://{}/vmdeck.db", dir.path().display());
        let pool = SqlitePool::connect(&url).await.unwrap();
        store::set_last_slot(&pool, id, Some(slot - 3 * DAY)).await.unwrap();
        pool.close().await;
    }
    let app = spawn_app_in(dir, AppOptions::breadth()).await;
    eventually("the missed run to finish", Duration::from_secs(30), async || {
        let done: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM schedule_runs WHERE schedule_id = ? AND finished_at IS NOT NULL",
        )
        .bind(id)
        .fetch_one(&app.pool)
        .await
        .unwrap();
        done > 0
    })
    .await;
    let runs: Vec<(i64, i64)> =
        sqlx::query_as("SELECT slot, taken FROM schedule_runs WHERE schedule_id = ?")
            .bind(id)
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(runs, vec![(slot, 1)], "one run, for the latest slot, not one per missed slot");
    assert_eq!(
        on_hypervisor(&app, &vm).await,
        vec![format!("vmdeck-daily-{}", slot_label(slot))],
        "one snapshot, named for the latest slot"
    );
    // The next ticks (the server's own, or this one) find nothing due.
    assert!(app.scheduler.tick(vmdeck::db::now_ms()).await.runs.is_empty());
}

#[tokio::test]
async fn a_run_left_unfinished_by_a_crash_is_settled_as_interrupted_at_the_next_start() {
    let app = breadth_app().await;
    let running = uuid_of(&app, "br-running").await;
    let shutoff = uuid_of(&app, "br-shutoff").await;
    let t0 = future_midnight(70);
    let id = add_schedule(
        &app,
        "cut short",
        Scope::Vms(vec![("lab".into(), running.clone()), ("lab".into(), shutoff.clone())]),
        daily(3),
        3,
        t0,
    )
    .await;
    // As a crash leaves it: the slot claimed, the run started, one VM's result recorded, no
    // end.
    let slot = t0 + 3 * HOUR;
    let started = vmdeck::db::now_ms() - 60_000;
    sqlx::query("UPDATE snapshot_schedules SET last_slot = ? WHERE id = ?")
        .bind(slot)
        .bind(id)
        .execute(&app.pool)
        .await
        .unwrap();
    let run: i64 = sqlx::query_scalar(
        "INSERT INTO schedule_runs (schedule_id, slot, started_at) VALUES (?, ?, ?) RETURNING id",
    )
    .bind(id)
    .bind(slot)
    .bind(started)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO schedule_run_vms (run_id, host_name, vm_uuid, vm_name, outcome)
         VALUES (?, 'lab', ?, 'br-running', 'taken')",
    )
    .bind(run)
    .bind(&running)
    .execute(&app.pool)
    .await
    .unwrap();
    let dir = app.stop().await;

    let app = spawn_app_in(dir, AppOptions::breadth()).await;
    let (finished, interrupted, taken, failed): (Option<i64>, bool, i64, i64) = sqlx::query_as(
        "SELECT finished_at, interrupted, taken, failed FROM schedule_runs WHERE id = ?",
    )
    .bind(run)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert!(finished.is_some_and(|f| f >= started), "ended at the start: {finished:?}");
    assert!(interrupted, "settled as interrupted");
    assert_eq!((taken, failed), (1, 0), "the counts of what it recorded");

    let admin = app.session("admin").await;
    let (status, html) = admin.get("/schedules").await;
    assert_eq!(status, 200);
    let text = unescape(&strip_tags(&html));
    assert!(
        text.contains(
            "interrupted: vmdeck stopped during the run (1 taken, 0 pruned before it stopped)"
        ) && text.contains("The last run was interrupted"),
        "{text}"
    );
    assert!(!text.contains("running (or interrupted)"), "{text}");
    assert!(!text.contains(" failed for "), "not a failure of its VMs: {text}");

    let (status, html) = admin.get(&format!("/schedules/{id}")).await;
    assert_eq!(status, 200);
    assert!(unescape(&strip_tags(&html)).contains("interrupted: vmdeck stopped during the run"));

    let (status, html) = admin.get(&format!("/schedules/runs/{run}")).await;
    assert_eq!(status, 200);
    assert!(html.contains("data-vm=\"br-running\" data-outcome=\"taken\""), "{html}");
    assert!(html.contains("data-vm=\"br-shutoff\" data-outcome=\"not-reached\""), "{html}");
    let text = unescape(&strip_tags(&html));
    assert!(text.contains("not reached: vmdeck stopped during the run"), "{text}");
    assert!(!text.contains("not finished"), "nothing is still running: {text}");
    assert!(!html.contains("data-outcome=\"failed\""), "{html}");
}

#[tokio::test]
async fn a_failing_vm_does_not_stop_the_others_and_its_streak_shows_on_the_page() {
    let app = breadth_app().await;
    let running = uuid_of(&app, "br-running").await;
    let shutoff = uuid_of(&app, "br-shutoff").await;
    // A VM vmdeck still lists but the hypervisor no longer has (deleted between the last poll
    // and the run): every request for it fails at the hypervisor.
    let ghost = "0d5e3c1a-9b7f-4c2e-8a11-3f6b2d9e7c40";
    let host_id = app.host_id("lab").await;
    sqlx::query(
        "INSERT INTO vms (host_id, uuid, name, first_seen, state, raw_state, state_reason, state_since)
         VALUES (?, ?, 'ghost-01', 0, 'running', 'running', 'booted', 0)",
    )
    .bind(host_id)
    .bind(ghost)
    .execute(&app.pool)
    .await
    .unwrap();
    let t0 = future_midnight(50);
    let id = add_schedule(
        &app,
        "with a ghost",
        Scope::Vms(vec![
            ("lab".into(), running.clone()),
            ("lab".into(), ghost.into()),
            ("lab".into(), shutoff.clone()),
        ]),
        daily(3),
        2,
        t0,
    )
    .await;

    let mut runs = Vec::new();
    for day in 0..3 {
        runs.extend(app.scheduler.tick(t0 + day * DAY + 4 * HOUR).await.runs);
    }
    assert_eq!(runs.len(), 3);
    let counts: Vec<(i64, i64, i64)> = sqlx::query_as(
        "SELECT taken, failed, pruned FROM schedule_runs WHERE schedule_id = ? ORDER BY slot",
    )
    .bind(id)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(counts, vec![(2, 1, 0), (2, 1, 0), (2, 1, 2)], "the others are taken and pruned");
    for uuid in [&running, &shutoff] {
        assert_eq!(on_hypervisor(&app, uuid).await.len(), 2, "keep 2 on each healthy VM");
    }

    let admin = app.session("admin").await;
    let (_, html) = admin.get("/schedules").await;
    let text = unescape(&strip_tags(&html));
    assert!(
        text.contains("3 runs in a row failed for ghost-01 (on lab): "),
        "the streak is said in words: {text}"
    );
    assert!(!text.contains("for br-running"), "healthy VMs are not listed as failing: {text}");
    let (status, html) = admin.get(&format!("/schedules/runs/{}", runs[2])).await;
    assert_eq!(status, 200);
    assert!(html.contains("data-vm=\"ghost-01\" data-outcome=\"failed\""), "{html}");
    assert_eq!(html.matches("data-outcome=\"taken\"").count(), 2, "{html}");
}

#[tokio::test]
async fn the_form_explains_bad_input_in_words_and_saves_nothing() {
    let app = breadth_app().await;
    let admin = app.session("admin").await;
    let base: Vec<(&str, &str)> = vec![
        ("name", "nightly"),
        ("enabled", "on"),
        ("scope", "pattern"),
        ("pattern", "br-*"),
        ("frequency", "daily"),
        ("time", "03:00"),
        ("keep_last", "3"),
    ];
    let with = |changes: &[(&'static str, &'static str)]| {
        let mut form: Vec<(&str, &str)> =
            base.iter().filter(|(k, _)| !changes.iter().any(|(c, _)| c == k)).cloned().collect();
        form.extend(changes.iter().cloned());
        form
    };
    let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (with(&[("time", "25:00")]), "The time must be HH:MM in UTC"),
        (with(&[("time", "3pm")]), "The time must be HH:MM in UTC"),
        (with(&[("frequency", "hourly"), ("minute", "60")]), "The minute of an hourly schedule"),
        (with(&[("keep_last", "0")]), "Keep last must be at least 1"),
        (with(&[("keep_last", "")]), "Say how many to keep"),
        (with(&[("keep_daily", "many")]), "Keep daily must be a whole number"),
        (with(&[("pattern", "")]), "Give a name pattern"),
        (with(&[("scope", "vms")]), "Choose at least one VM"),
        (with(&[("scope", "host"), ("host", "nowhere")]), "“nowhere” is not a configured host"),
        (with(&[("name", "")]), "Give the schedule a name"),
        (with(&[("frequency", "weekly"), ("weekday", "Caturday")]), "Choose the day of the week"),
    ];
    for (form, expected) in cases {
        let res = admin.post("/schedules", &form).await;
        assert_eq!(res.status().as_u16(), 400, "{form:?}");
        let html = unescape(&res.text().await.unwrap());
        assert!(html.contains(expected), "{form:?}: expected {expected:?} in the page");
    }
    let saved: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM snapshot_schedules")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(saved, 0, "nothing half-done");

    // A pattern that matches nothing is saved, with a warning.
    let res = admin.post("/schedules", &with(&[("pattern", "nothing-like-this-*")])).await;
    assert_eq!(res.status().as_u16(), 303);
    let location = res.headers()["location"].to_str().unwrap().to_string();
    let flash = admin.flash_at(&location).await;
    assert!(flash.contains("Warning: no VM is named like"), "{flash}");
    // The same name twice is refused.
    let res = admin.post("/schedules", &base).await;
    assert_eq!(res.status().as_u16(), 400);
    assert!(unescape(&res.text().await.unwrap()).contains("exists already"));

    // Edit, then delete through the confirmation page.
    let res = admin.post(&location, &with(&[("name", "renamed"), ("keep_daily", "7")])).await;
    assert_eq!(res.status().as_u16(), 303);
    let (_, list) = admin.get("/schedules").await;
    assert!(list.contains("renamed") && list.contains("keep the last 3 and one a day for 7 days"));
    let (status, confirm) = admin.get(&format!("{location}/delete")).await;
    assert_eq!(status, 200);
    assert!(confirm.contains("The snapshots it took stay"));
    assert_eq!(admin.post(&format!("{location}/delete"), &[]).await.status().as_u16(), 303);
    let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM snapshot_schedules")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(left, 0);
}

#[tokio::test]
async fn no_account_can_be_named_system() {
    let app = breadth_app().await;
    let admin = app.session("admin").await;
    let pw = crate::support::app::PASSWORD;
    let res = admin
        .post(
            "/users",
            &[("name", "System"), ("role", "admin"), ("password", pw), ("password_again", pw)],
        )
        .await;
    assert_eq!(res.status().as_u16(), 303);
    assert!(admin.flash_at("/users").await.contains("reserved"));
    assert!(vmdeck::auth::users::credentials(&app.pool, "system", true).await.unwrap().is_none());
}

#[tokio::test]
async fn an_hourly_schedule_keeps_its_last_two_and_the_newest_of_each_of_three_days() {
    let app = breadth_app().await;
    let vm = uuid_of(&app, "br-shutoff").await;
    let t0 = future_midnight(60);
    let spec = ScheduleSpec {
        name: "hourly".into(),
        enabled: true,
        scope: Scope::Vms(vec![("lab".into(), vm.clone())]),
        frequency: Frequency::Hourly { minute: 0 },
        retention: Retention { keep_last: Some(2), keep_daily: Some(3) },
        with_memory: false,
    };
    store::insert(&app.pool, &spec, "admin", t0).await.unwrap();

    // Four days, checked every six hours (the slots in between were missed: one run each).
    for day in 0..4 {
        for hour in [0, 6, 12, 18] {
            let runs = app.scheduler.tick(t0 + day * DAY + hour * HOUR + 30 * 60_000).await.runs;
            assert_eq!(runs.len(), 1, "day {day} {hour}:30");
        }
    }
    let name =
        |day: i64, hour: i64| format!("vmdeck-hourly-{}", slot_label(t0 + day * DAY + hour * HOUR));
    // The last 2 (day 3 at 12:00 and 18:00) and the newest of days 1, 2 and 3.
    let mut expected = vec![name(1, 18), name(2, 18), name(3, 12), name(3, 18)];
    expected.sort();
    assert_eq!(on_hypervisor(&app, &vm).await, expected);
}
