//! Alert evaluation and lifecycle against the breadth lab (libvirt's test driver) and a real
//! SQLite file: `for` keeps an alert pending, then it fires; it resolves when the VM is started
//! through vmdeck; a condition that stops early leaves it inactive; an unreachable host fires
//! its own alert; the configuration file's rules are synced at every start and are read-only.
//! Time is driven by calling `AlertEngine::evaluate(now)` with a "now" a day ahead of the real
//! clock: the engine's clock never goes back, so the server's own evaluations (after each poll,
//! every 30 s) happen at the test's latest time. Each test moves the clock *before* it changes
//! anything (adds a rule, starts a VM), so whichever evaluation comes next, the server's or the
//! test's, sees the change at the same time.

use serde_json::json;
use sqlx::SqlitePool;
use vmdeck::alerts::rules::RuleFields;
use vmdeck::alerts::store::{self, SaveError, Source};

use crate::support::app::{
    breadth_app, breadth_uri, libvirt_host, spawn_app, spawn_app_in, uuid_of, AppOptions, TestApp,
};
use crate::support::audit::settled_power;

const MIN: i64 = 60_000;
const DAY: i64 = 24 * 60 * MIN;

/// Sets the engine's clock to a day ahead of the real one (before any rule exists, so the
/// evaluation changes nothing) and returns that time.
async fn clock_to_tomorrow(app: &TestApp) -> i64 {
    let t0 = vmdeck::db::now_ms() + DAY;
    app.alerts.evaluate(t0).await.unwrap();
    t0
}

async fn add_rule(app: &TestApp, fields: RuleFields) -> i64 {
    let spec = fields.parse().unwrap_or_else(|e| panic!("a valid rule: {e}"));
    store::insert_rule(&app.pool, &spec, Source::Page, "test", vmdeck::db::now_ms())
        .await
        .expect("rule stored")
}

/// The alerts of one rule: (state, subject, summary), oldest first.
async fn alerts_of(pool: &SqlitePool, rule: &str) -> Vec<(String, String, String)> {
    sqlx::query_as("SELECT state, subject, summary FROM alerts WHERE rule_name = ? ORDER BY id")
        .bind(rule)
        .fetch_all(pool)
        .await
        .unwrap()
}

/// One alert's transitions: (at, from, to, detail).
async fn transitions(pool: &SqlitePool, rule: &str) -> Vec<(i64, String, String, String)> {
    sqlx::query_as(
        "SELECT t.at, t.from_state, t.to_state, t.detail FROM alert_transitions t
         JOIN alerts a ON a.id = t.alert_id WHERE a.rule_name = ? ORDER BY t.id",
    )
    .bind(rule)
    .fetch_all(pool)
    .await
    .unwrap()
}

fn should_run(name: &str, vm: &str, for_: &str) -> RuleFields {
    RuleFields {
        name: name.into(),
        condition: "vm_state".into(),
        expected: "running".into(),
        scope: "vms".into(),
        vms: vec![vm.into()],
        for_: for_.into(),
        ..RuleFields::default()
    }
}

async fn start_vm(app: &TestApp, uuid: &str) {
    let op = app.session("operator").await;
    let res = op.post(&format!("/vms/lab/{uuid}/power"), &[("action", "start")]).await;
    assert_eq!(res.status().as_u16(), 303, "start accepted");
    assert_eq!(settled_power(app, uuid).await.0, "confirmed");
    app.poll("lab").await;
}

#[tokio::test]
async fn an_alert_waits_out_its_for_then_fires_and_resolves_with_every_transition_stored() {
    let app = breadth_app().await;
    let uuid = uuid_of(&app, "br-shutoff").await;
    let t0 = clock_to_tomorrow(&app).await;
    add_rule(&app, should_run("db must run", &format!("lab/{uuid}"), "5m")).await;

    let e = app.alerts.evaluate(t0).await.unwrap();
    assert_eq!(e.hits, 1, "{e:?}");
    let alerts = alerts_of(&app.pool, "db must run").await;
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].0, "pending");
    assert_eq!(alerts[0].1, format!("vm:lab/{uuid}"));
    assert!(
        alerts[0].2.contains("br-shutoff") && alerts[0].2.contains("should be running"),
        "{alerts:?}"
    );

    app.alerts.evaluate(t0 + 5 * MIN - 1).await.unwrap();
    assert_eq!(alerts_of(&app.pool, "db must run").await[0].0, "pending", "for not elapsed yet");
    let e = app.alerts.evaluate(t0 + 5 * MIN).await.unwrap();
    assert_eq!(e.applied.fired, 1);
    assert_eq!(alerts_of(&app.pool, "db must run").await[0].0, "firing");
    // Later evaluations while it holds change nothing.
    let e = app.alerts.evaluate(t0 + 6 * MIN).await.unwrap();
    assert_eq!(e.applied.transitions(), 0, "{e:?}");
    // An earlier time than the last evaluation's counts as that one: nothing goes back.
    let e = app.alerts.evaluate(0).await.unwrap();
    assert_eq!(e.now, t0 + 6 * MIN);

    app.alerts.evaluate(t0 + 7 * MIN).await.unwrap();
    start_vm(&app, &uuid).await;
    // The poll's own evaluation or this one resolves it, at the same time.
    app.alerts.evaluate(t0 + 7 * MIN).await.unwrap();
    let alerts = alerts_of(&app.pool, "db must run").await;
    assert_eq!(alerts.len(), 1, "the same alert resolved, no new one");
    assert_eq!(alerts[0].0, "resolved");

    let steps: Vec<(i64, String, String)> = transitions(&app.pool, "db must run")
        .await
        .into_iter()
        .map(|(at, from, to, _)| (at, from, to))
        .collect();
    assert_eq!(
        steps,
        vec![
            (t0, "inactive".into(), "pending".into()),
            (t0 + 5 * MIN, "pending".into(), "firing".into()),
            (t0 + 7 * MIN, "firing".into(), "resolved".into()),
        ]
    );
    let (firing_since, ended_at): (Option<i64>, Option<i64>) =
        sqlx::query_as("SELECT firing_since, ended_at FROM alerts WHERE rule_name = 'db must run'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!((firing_since, ended_at), (Some(t0 + 5 * MIN), Some(t0 + 7 * MIN)));
    let e = app.alerts.evaluate(t0 + 8 * MIN).await.unwrap();
    assert_eq!((e.hits, e.applied.transitions()), (0, 0), "the VM runs: nothing holds");
}

#[tokio::test]
async fn a_condition_that_stops_before_for_leaves_the_alert_inactive_not_resolved() {
    let app = breadth_app().await;
    let uuid = uuid_of(&app, "br-shutoff").await;
    let t0 = clock_to_tomorrow(&app).await;
    add_rule(&app, should_run("slow", &format!("lab/{uuid}"), "10m")).await;
    app.alerts.evaluate(t0).await.unwrap();
    assert_eq!(alerts_of(&app.pool, "slow").await[0].0, "pending");
    app.alerts.evaluate(t0 + MIN).await.unwrap();
    start_vm(&app, &uuid).await;
    app.alerts.evaluate(t0 + MIN).await.unwrap();
    let alerts = alerts_of(&app.pool, "slow").await;
    assert_eq!(alerts[0].0, "inactive");
    let steps = transitions(&app.pool, "slow").await;
    assert_eq!(steps.len(), 2);
    assert_eq!((steps[1].1.as_str(), steps[1].2.as_str()), ("pending", "inactive"));
    assert!(steps[1].3.contains("no longer holds"), "{steps:?}");
}

#[tokio::test]
async fn an_unreachable_host_fires_its_own_alert_once_with_the_error_in_words() {
    let missing = std::env::temp_dir().join("vmdeck-no-such-dir/none.xml");
    let app = spawn_app(AppOptions::with_hosts(vec![
        libvirt_host("lab", &breadth_uri()),
        libvirt_host("gone", &format!("test://{}", missing.display())),
    ]))
    .await;
    let t0 = clock_to_tomorrow(&app).await;
    add_rule(
        &app,
        RuleFields {
            name: "host down".into(),
            condition: "host_unreachable".into(),
            severity: "critical".into(),
            ..RuleFields::default()
        },
    )
    .await;
    app.alerts.evaluate(t0).await.unwrap();
    let alerts = alerts_of(&app.pool, "host down").await;
    assert_eq!(alerts[0].0, "firing");
    assert_eq!(alerts[0].1, "host:gone");
    assert!(
        alerts[0].2.contains("“gone” unreachable") && alerts[0].2.contains("never polled"),
        "{alerts:?}"
    );
    let severity: String =
        sqlx::query_scalar("SELECT severity FROM alerts WHERE rule_name = 'host down'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(severity, "critical");
    // Another failed poll keeps the one alert.
    app.poll("gone").await;
    app.alerts.evaluate(t0 + MIN).await.unwrap();
    let alerts = alerts_of(&app.pool, "host down").await;
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0].0, "firing");
}

#[tokio::test]
async fn configuration_file_rules_are_synced_at_every_start_and_read_only_on_the_page() {
    let rules = |for_: &str, with_second: bool| {
        let mut list = vec![json!({
            "name": "shut-off VMs",
            "condition": "vm_state",
            "expected": "running",
            "scope": "pattern",
            "scope_value": "br-shut*",
            "for": for_,
            "severity": "info",
        })];
        if with_second {
            list.push(json!({"name": "hosts", "condition": "host_unreachable"}));
        }
        json!(list)
    };
    let opts = |for_: &str, second: bool| AppOptions {
        extra: vec![("alert_rules", rules(for_, second))],
        ..AppOptions::breadth()
    };
    let app = spawn_app(opts("0", true)).await;
    let stored = store::rules(&app.pool).await.unwrap();
    assert_eq!(stored.len(), 2);
    let shut = stored.iter().find(|r| r.spec.name == "shut-off VMs").unwrap();
    assert_eq!(shut.source, Source::File);
    assert_eq!(shut.spec.for_secs, 0);
    let err = store::update_rule(&app.pool, shut.id, &shut.spec, 0).await.unwrap_err();
    assert!(matches!(err, SaveError::FromFile), "{err}");
    assert!(matches!(store::delete_rule(&app.pool, shut.id).await, Err(SaveError::FromFile)));

    let t0 = vmdeck::db::now_ms() + DAY;
    app.alerts.evaluate(t0).await.unwrap();
    let firing = alerts_of(&app.pool, "shut-off VMs").await;
    assert_eq!(firing.len(), 2, "br-shutoff and br-shutdown: {firing:?}");
    assert!(firing.iter().all(|a| a.0 == "firing"));

    // Restart with the rule changed and the other removed: same id, new `for`; the removed
    // one is gone.
    let dir = app.stop().await;
    let app = spawn_app_in(dir, opts("15m", false)).await;
    let stored = store::rules(&app.pool).await.unwrap();
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert_eq!(stored[0].id, shut.id, "a changed file rule keeps its id and its alerts");
    assert_eq!(stored[0].spec.for_secs, 900);
    app.alerts.evaluate(t0 + MIN).await.unwrap();
    let after = alerts_of(&app.pool, "shut-off VMs").await;
    assert_eq!(after, firing, "its firing alerts go on");
}

#[tokio::test]
async fn removing_or_disabling_a_rule_ends_its_open_alerts() {
    let app = breadth_app().await;
    let uuid = uuid_of(&app, "br-shutoff").await;
    let t0 = clock_to_tomorrow(&app).await;
    let id = add_rule(&app, should_run("to remove", &format!("lab/{uuid}"), "0")).await;
    let id2 = add_rule(&app, should_run("to disable", &format!("lab/{uuid}"), "0")).await;
    app.alerts.evaluate(t0).await.unwrap();
    store::delete_rule(&app.pool, id).await.unwrap();
    let mut spec = store::rule(&app.pool, id2).await.unwrap().unwrap().spec;
    spec.enabled = false;
    store::update_rule(&app.pool, id2, &spec, t0).await.unwrap();
    app.alerts.evaluate(t0 + MIN).await.unwrap();
    assert_eq!(alerts_of(&app.pool, "to remove").await[0].0, "resolved");
    assert_eq!(alerts_of(&app.pool, "to disable").await[0].0, "resolved");
    let removed = transitions(&app.pool, "to remove").await;
    assert!(removed.last().unwrap().3.contains("removed"), "{removed:?}");
    let disabled = transitions(&app.pool, "to disable").await;
    assert!(disabled.last().unwrap().3.contains("disabled"), "{disabled:?}");
    let rule_id: Option<i64> =
        sqlx::query_scalar("SELECT rule_id FROM alerts WHERE rule_name = 'to remove'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(rule_id, None, "the history outlives its rule");
}

#[tokio::test]
async fn a_poll_wakes_the_servers_own_evaluation() {
    let app = breadth_app().await;
    let uuid = uuid_of(&app, "br-shutoff").await;
    add_rule(&app, should_run("auto", &format!("lab/{uuid}"), "0")).await;
    app.poll("lab").await;
    crate::support::wait::eventually(
        "the evaluation after the poll",
        std::time::Duration::from_secs(10),
        async || !alerts_of(&app.pool, "auto").await.is_empty(),
    )
    .await;
    assert_eq!(alerts_of(&app.pool, "auto").await[0].0, "firing");
}

#[tokio::test]
async fn an_evaluation_that_read_a_rule_removed_meanwhile_starts_nothing_for_it() {
    use vmdeck::alerts::eval::{vm_subject, Hit, Rule, Step};
    let app = breadth_app().await;
    let uuid = uuid_of(&app, "br-shutoff").await;
    let t0 = clock_to_tomorrow(&app).await;
    let id = add_rule(&app, should_run("removed meanwhile", &format!("lab/{uuid}"), "0")).await;
    let spec = store::rule(&app.pool, id).await.unwrap().unwrap().spec;
    store::delete_rule(&app.pool, id).await.unwrap();
    // The steps an evaluation that read the rule just before it was removed would write.
    let hit = Hit {
        rule_id: id,
        subject: vm_subject("lab", &uuid),
        host: "lab".into(),
        vm_uuid: Some(uuid.clone()),
        vm_name: Some("br-shutoff".into()),
        summary: "x".into(),
        value: None,
    };
    let applied =
        store::apply(&app.pool, &[Rule { id, spec }], vec![Step::Start { hit, firing: true }], t0)
            .await
            .expect("no foreign key failure");
    assert_eq!(applied.started, 0);
    assert!(alerts_of(&app.pool, "removed meanwhile").await.is_empty());
}
