//! The Alerts pages against the breadth lab: a rule added through the form (and the form's
//! refusals), its alert driven through pending, firing and resolved by evaluating with a clock
//! ahead of the real one, as "firing now", the history's filters, the CSV, the alert's page and
//! the VM page show it; acknowledgement and silences through the operators' forms, each
//! audited; configuration-file rules read-only. The lab's `br-shutoff` is shut off, so a
//! `vm_state` rule expecting it running fires without touching anything.

use serde_json::json;
use vmdeck::alerts::rules::{Condition, Expected, RuleSpec, Scope, Severity};
use vmdeck::alerts::store::{self, Source};

use crate::support::app::{
    breadth_app, spawn_app, strip_tags, unescape, uuid_of, AppOptions, TestApp,
};

const MINUTE: i64 = 60_000;

/// A "now" ahead of the real clock by `minutes` (the engine's clock never goes back, so the
/// server's own evaluations at the real time do not undo the test's).
fn ahead(minutes: i64) -> i64 {
    vmdeck::db::now_ms() + minutes * MINUTE
}

/// The page's text without tags, unescaped.
fn text(html: &str) -> String {
    unescape(&strip_tags(html))
}

async fn alert_entries(app: &TestApp, action: &str) -> Vec<(Option<String>, Option<String>)> {
    sqlx::query_as(
        "SELECT user_name, detail FROM audit_log WHERE kind = 'alert' AND action = ? ORDER BY id",
    )
    .bind(action)
    .fetch_all(&app.pool)
    .await
    .unwrap()
}

/// A page rule "<name>" expecting `br-shutoff` running (for 0) and its alert, firing: (rule id,
/// alert id). For the other modules' pages (role matrix, fuzzing, accessibility).
pub async fn seeded_alert(app: &TestApp, name: &str) -> (i64, i64) {
    let uuid = uuid_of(app, "br-shutoff").await;
    let spec = RuleSpec {
        name: name.into(),
        enabled: true,
        condition: Condition::VmState { expected: Expected::Running },
        scope: Scope::Vms(vec![("lab".into(), uuid)]),
        for_secs: 0,
        severity: Severity::Critical,
    };
    let rule = store::insert_rule(&app.pool, &spec, Source::Page, "admin", vmdeck::db::now_ms())
        .await
        .expect("rule saved");
    app.alerts.evaluate(ahead(1)).await.expect("evaluation");
    let alert: i64 =
        sqlx::query_scalar("SELECT id FROM alerts WHERE rule_id = ? AND state = 'firing'")
            .bind(rule)
            .fetch_one(&app.pool)
            .await
            .expect("the seeded rule's alert fires");
    (rule, alert)
}

#[tokio::test]
async fn a_rule_added_in_the_form_fires_shows_everywhere_and_resolves() {
    let app = breadth_app().await;
    let uuid = uuid_of(&app, "br-shutoff").await;
    let listed = format!("lab/{uuid}");
    let admin = app.session("admin").await;
    let operator = app.session("operator").await;
    let form = |name: &'static str| {
        vec![
            ("name", name),
            ("enabled", "on"),
            ("condition", "vm_state"),
            ("expected", "running"),
            ("scope", "vms"),
            ("for", "5m"),
            ("severity", "critical"),
        ]
    };
    let mut good = form("shutoff should run");
    good.push(("vms", listed.as_str()));

    // Viewers see the rules but get no form; operators cannot add one.
    assert_eq!(app.get("/alerts/rules/new").await.0, 403);
    assert_eq!(app.viewer.post("/alerts/rules", &good).await.status().as_u16(), 403);
    assert_eq!(operator.post("/alerts/rules", &good).await.status().as_u16(), 403);
    // A mistake names its field and keeps what was typed.
    let mut bad = form("typed name kept");
    bad[2] = ("condition", "cpu_above");
    bad.push(("threshold", "lots"));
    let res = admin.post("/alerts/rules", &bad).await;
    assert_eq!(res.status().as_u16(), 400);
    let html = res.text().await.unwrap();
    assert!(text(&html).contains("threshold: a percentage between 0 and 100"), "{html}");
    assert!(html.contains("value=\"typed name kept\""), "the name typed is kept");
    assert!(html.contains("value=\"lots\""), "the threshold typed is kept");
    let mut bad_vm = form("bad vm");
    bad_vm.push(("vms_text", "lab/not-a-uuid"));
    let res = admin.post("/alerts/rules", &bad_vm).await;
    assert_eq!(res.status().as_u16(), 400);
    assert!(text(&res.text().await.unwrap()).contains("vms: “lab/not-a-uuid” is not host/uuid"));
    let rules: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM alert_rules").fetch_one(&app.pool).await.unwrap();
    assert_eq!(rules, 0, "refused forms save nothing");

    let res = admin.post("/alerts/rules", &good).await;
    assert_eq!(res.status().as_u16(), 303);
    let (rule_id, kind, for_secs): (i64, String, i64) = sqlx::query_as(
        "SELECT id, kind, for_secs FROM alert_rules WHERE name = 'shutoff should run'",
    )
    .fetch_one(&app.pool)
    .await
    .expect("the rule is saved");
    assert_eq!((kind.as_str(), for_secs), ("vm_state", 300));
    let added = alert_entries(&app, "rule_added").await;
    assert_eq!(added.len(), 1);
    assert!(added[0].1.as_deref().unwrap().contains("VM not running for 5m"), "{added:?}");
    let (_, html) = app.get("/alerts/rules").await;
    let page = text(&html);
    assert!(page.contains("shutoff should run") && page.contains("1 listed VM(s)"), "{page}");
    assert!(!html.contains("/alerts/rules/new"), "viewers get no forms");
    // A duplicate name is refused in words.
    let res = admin.post("/alerts/rules", &good).await;
    assert_eq!(res.status().as_u16(), 400);
    assert!(text(&res.text().await.unwrap()).contains("exists already"));

    // Pending, then firing once `for` has passed.
    app.alerts.evaluate(ahead(1)).await.unwrap();
    let (_, html) = app.get("/alerts").await;
    let firing = html.split("id=\"firing-table\"").nth(1).expect("firing now lists the alert");
    let firing = firing.split("</table>").next().unwrap();
    assert!(firing.contains("br-shutoff") && firing.contains(">pending<"), "{firing}");
    app.alerts.evaluate(ahead(10)).await.unwrap();
    let alert: i64 =
        sqlx::query_scalar("SELECT id FROM alerts WHERE rule_id = ? AND state = 'firing'")
            .bind(rule_id)
            .fetch_one(&app.pool)
            .await
            .expect("the alert fires after 5 minutes");
    let (_, html) = app.get("/alerts").await;
    let firing =
        html.split("id=\"firing-table\"").nth(1).unwrap().split("</table>").next().unwrap();
    assert!(firing.contains(">firing<"), "{firing}");
    assert!(firing.contains(&format!("href=\"/vms/lab/{uuid}\"")), "links to the VM's page");
    // The history's filters.
    let (_, html) = app.get("/alerts?state=firing&severity=critical&vm=shutoff").await;
    assert!(html.contains(&format!("data-alert=\"{alert}\"")));
    assert!(html.contains("id=\"history-table\""));
    let (_, html) = app.get("/alerts?state=resolved").await;
    assert!(html.contains("id=\"history-empty\""), "no resolved alert yet");
    let (_, html) = app.get("/alerts?host=lab&rule=SHUTOFF%20SHOULD%20RUN").await;
    assert!(html.contains("id=\"history-table\""), "the rule filter ignores case");
    let (_, html) = app.get("/alerts?vm=br-running").await;
    assert!(html.contains("id=\"history-empty\""));
    let (_, html) = app.get("/alerts?state=teleported").await;
    assert!(text(&html).contains("Unknown state “teleported”"));
    let (_, html) = app.get("/alerts?from=2000-01-01&to=2000-01-02").await;
    assert!(html.contains("id=\"history-empty\""), "the period excludes it");
    // The CSV, with the same filters.
    let rows = app.viewer.csv("/alerts.csv?state=firing").await;
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(&rows[0][1], "rule");
    assert_eq!(
        (&rows[1][0], &rows[1][1], &rows[1][3]),
        (&*alert.to_string(), "shutoff should run", "firing")
    );
    assert_eq!(&rows[1][6], uuid.as_str());
    assert_eq!(app.viewer.csv("/alerts.csv?state=resolved").await.len(), 1, "header only");
    // The alert's page: its transitions, its rule.
    let (status, html) = app.get(&format!("/alerts/{alert}")).await;
    assert_eq!(status, 200);
    let table = html.split("id=\"transitions-table\"").nth(1).unwrap();
    let rows: Vec<String> = table
        .split("<tr>")
        .skip(2)
        .map(|r| text(&r.replace("</td>", " ")).split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert!(rows[0].contains("inactive pending") && rows[1].contains("pending firing"), "{rows:?}");
    assert!(html.contains(&format!("href=\"/alerts/rules#rule-{rule_id}\"")));
    assert!(!html.contains("id=\"acknowledge\""), "viewers cannot acknowledge");
    // The VM page's section.
    let (_, html) = app.get(&format!("/vms/lab/{uuid}?range=1h")).await;
    let section = html.split("id=\"vm-alerts\"").nth(1).expect("the VM page has an Alerts section");
    let section = unescape(section.split("</section>").next().unwrap());
    assert!(section.contains(&format!("href=\"/alerts/{alert}\"")), "{section}");
    assert!(section.contains(&format!("href=\"/alerts?host=lab&vm={uuid}\"")), "{section}");

    // Disabling the rule resolves its alert.
    let res = admin.post(&format!("/alerts/rules/{rule_id}/enabled"), &[("enabled", "off")]).await;
    assert_eq!(res.status().as_u16(), 303);
    let changed = alert_entries(&app, "rule_changed").await;
    assert!(changed.last().unwrap().1.as_deref().unwrap().contains("disabled"), "{changed:?}");
    app.alerts.evaluate(ahead(20)).await.unwrap();
    let state: String = sqlx::query_scalar("SELECT state FROM alerts WHERE id = ?")
        .bind(alert)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(state, "resolved");
    let (_, html) = app.get("/alerts").await;
    assert!(html.contains("id=\"firing-empty\""), "nothing fires now");
    let (_, html) = app.get("/alerts?state=resolved").await;
    assert!(html.contains(&format!("data-alert=\"{alert}\"")));
    let (_, html) = app.get(&format!("/alerts/{alert}")).await;
    assert!(text(&html).contains("its rule was disabled"), "the resolution says why");
    let (_, html) = app.get(&format!("/vms/lab/{uuid}?range=1h")).await;
    let section =
        html.split("id=\"vm-alerts\"").nth(1).unwrap().split("</section>").next().unwrap();
    assert!(section.contains(">resolved<"), "{section}");

    // Edit it back on, then delete it through its confirmation page.
    let (status, html) = admin.get(&format!("/alerts/rules/{rule_id}/edit")).await;
    assert_eq!(status, 200);
    let html = unescape(&html);
    assert!(html.contains(&format!("value=\"{listed}\" id=\"vm-")), "the picker lists the VM");
    let picked = html.split(&format!("value=\"{listed}\"")).nth(1).unwrap();
    assert!(picked.split('>').next().unwrap().contains("checked"), "the VM is checked");
    let mut edited = form("shutoff must run");
    edited.push(("vms", listed.as_str()));
    let res = admin.post(&format!("/alerts/rules/{rule_id}"), &edited).await;
    assert_eq!(res.status().as_u16(), 303);
    let changed = alert_entries(&app, "rule_changed").await;
    let detail = changed.last().unwrap().1.clone().unwrap();
    assert!(
        detail.contains("shutoff should run") && detail.contains("shutoff must run"),
        "{detail}"
    );
    let (status, html) = admin.get(&format!("/alerts/rules/{rule_id}/delete")).await;
    assert_eq!(status, 200);
    assert!(html.contains("Delete rule shutoff must run"));
    assert_eq!(
        operator.post(&format!("/alerts/rules/{rule_id}/delete"), &[]).await.status().as_u16(),
        403
    );
    let res = admin.post(&format!("/alerts/rules/{rule_id}/delete"), &[]).await;
    assert_eq!(res.status().as_u16(), 303);
    assert_eq!(alert_entries(&app, "rule_removed").await.len(), 1);
    let (_, html) = app.get(&format!("/alerts/{alert}")).await;
    assert!(text(&html).contains("(rule removed)"), "the history outlives the rule");
    assert_eq!(app.get("/alerts/999999").await.0, 404);
    assert_eq!(admin.get(&format!("/alerts/rules/{rule_id}/edit")).await.0, 404);
}

#[tokio::test]
async fn operators_acknowledge_and_silence_through_the_forms() {
    let app = breadth_app().await;
    let (_, alert) = seeded_alert(&app, "shutoff down").await;
    let operator = app.session("operator").await;
    let path = format!("/alerts/{alert}/acknowledge");

    assert_eq!(app.viewer.post(&path, &[("comment", "mine")]).await.status().as_u16(), 403);
    let (_, html) = operator.get(&format!("/alerts/{alert}")).await;
    assert!(html.contains("id=\"acknowledge\""), "operators get the form");
    let res = operator.post(&path, &[("comment", "  ")]).await;
    assert_eq!(res.status().as_u16(), 400);
    assert!(text(&res.text().await.unwrap()).contains("an acknowledgement needs one"));
    let long = "x".repeat(501);
    let res = operator.post(&path, &[("comment", &long)]).await;
    assert_eq!(res.status().as_u16(), 400);
    assert!(text(&res.text().await.unwrap()).contains("at most 500 characters"));
    let ack: Option<String> = sqlx::query_scalar("SELECT ack_by FROM alerts WHERE id = ?")
        .bind(alert)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(ack, None, "refused acknowledgements change nothing");

    let res = operator.post(&path, &[("comment", "disk swap under way")]).await;
    assert_eq!(res.status().as_u16(), 303);
    let (by, comment): (String, String) =
        sqlx::query_as("SELECT ack_by, ack_comment FROM alerts WHERE id = ?")
            .bind(alert)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert!(by.starts_with("operator-"));
    assert_eq!(comment, "disk swap under way");
    let detail: String = sqlx::query_scalar(
        "SELECT detail FROM alert_transitions WHERE alert_id = ? AND from_state = 'firing' AND to_state = 'firing'",
    )
    .bind(alert)
    .fetch_one(&app.pool)
    .await
    .expect("the acknowledgement is a transition");
    assert_eq!(detail, format!("acknowledged by {by}: disk swap under way"));
    let entries = alert_entries(&app, "alert_acknowledged").await;
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].0.as_deref(), Some(by.as_str()));
    let (_, html) = app.get("/alerts").await;
    assert!(text(&html).contains(&format!("{by}: disk swap under way")), "firing now shows who");
    // Once only.
    let res = operator.post(&path, &[("comment", "again")]).await;
    assert_eq!(res.status().as_u16(), 303);
    assert!(operator.flash_at(&format!("/alerts/{alert}")).await.contains("acknowledged already"));
    assert_eq!(alert_entries(&app, "alert_acknowledged").await.len(), 1);

    // "Silence like this" prefills the form.
    let (_, html) = operator.get(&format!("/alerts/{alert}")).await;
    let href = html.split("id=\"silence-like-this\"").next().unwrap();
    let href = unescape(href.rsplit("href=\"").next().unwrap().split('"').next().unwrap());
    assert!(href.starts_with("/alerts/silences/new?rule_name=shutoff+down"), "{href}");
    let (status, html) = operator.get(&href).await;
    assert_eq!(status, 200);
    assert!(html.contains("<option value=\"shutoff down\" selected>"), "{html}");
    assert!(html.contains("value=\"br-shutoff\""));
    assert_eq!(app.get("/alerts/silences/new").await.0, 403);
    // Refusals: no matcher, no comment, a bad end.
    let res = operator.post("/alerts/silences", &[("comment", "c"), ("until", "2h")]).await;
    assert_eq!(res.status().as_u16(), 400);
    assert!(text(&res.text().await.unwrap()).contains("Choose at least one matcher"));
    let res = operator
        .post("/alerts/silences", &[("rule_name", "shutoff down"), ("until", "soonish")])
        .await;
    assert_eq!(res.status().as_u16(), 400);
    let page = text(&res.text().await.unwrap());
    assert!(page.contains("a silence needs one") && page.contains("neither a duration"), "{page}");
    let res = operator
        .post("/alerts/silences", &[("host_name", "elsewhere"), ("comment", "c"), ("until", "1h")])
        .await;
    assert_eq!(res.status().as_u16(), 400);
    assert_eq!(
        app.viewer
            .post(
                "/alerts/silences",
                &[("rule_name", "shutoff down"), ("comment", "c"), ("until", "2h")]
            )
            .await
            .status()
            .as_u16(),
        403
    );
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM alert_silences")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(n, 0, "refused silences save nothing");

    let res = operator
        .post(
            "/alerts/silences",
            &[
                ("rule_name", "shutoff down"),
                ("host_name", "lab"),
                ("vm_pattern", "br-*"),
                ("comment", "maintenance"),
                ("until", "2h"),
            ],
        )
        .await;
    assert_eq!(res.status().as_u16(), 303);
    let (silence, ends, starts): (i64, i64, i64) =
        sqlx::query_as("SELECT id, ends_at, starts_at FROM alert_silences")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(ends - starts, 2 * 60 * MINUTE);
    let added = alert_entries(&app, "silence_added").await;
    assert_eq!(added.len(), 1);
    assert!(added[0].1.as_deref().unwrap().contains("maintenance"));
    let (_, html) = app.get("/alerts").await;
    assert!(html.contains(&format!("silence {silence}</a>")), "firing now says which silence");
    let (_, html) = app.get("/alerts/silences").await;
    let active = html.split("id=\"active-silences\"").nth(1).expect("listed as active");
    assert!(active.contains("maintenance"));
    assert!(!html.contains("/end\""), "viewers cannot end silences");

    assert_eq!(
        app.viewer.post(&format!("/alerts/silences/{silence}/end"), &[]).await.status().as_u16(),
        403
    );
    let res = operator.post(&format!("/alerts/silences/{silence}/end"), &[]).await;
    assert_eq!(res.status().as_u16(), 303);
    let ended_by: Option<String> =
        sqlx::query_scalar("SELECT ended_by FROM alert_silences WHERE id = ?")
            .bind(silence)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(ended_by.as_deref(), Some(by.as_str()));
    assert_eq!(alert_entries(&app, "silence_ended").await.len(), 1);
    let (_, html) = app.get("/alerts/silences").await;
    assert!(html.contains("id=\"active-empty\""));
    assert!(html.split("id=\"expired-silences\"").nth(1).unwrap().contains("maintenance"));
    let (_, html) = app.get("/alerts").await;
    assert!(!html.contains(&format!("silence {silence}</a>")), "no longer silenced");

    // Until an end time (UTC) rather than a duration; past ones and ones beyond 30 days refused.
    let operator = &operator;
    let form = |until: String| async move {
        let fields = [("host_name", "lab"), ("comment", "window"), ("until", until.as_str())];
        operator.post("/alerts/silences", &fields).await
    };
    let res = form("2000-01-01 00:00".into()).await;
    assert_eq!(res.status().as_u16(), 400);
    assert!(text(&res.text().await.unwrap()).contains("is in the past"));
    let res = form("2999-01-01".into()).await;
    assert_eq!(res.status().as_u16(), 400);
    assert!(text(&res.text().await.unwrap()).contains("at most 30 days"));
    let end = vmdeck::web::format::absolute(ahead(180));
    let end = end.trim_end_matches(" UTC").get(..16).unwrap().to_string();
    assert_eq!(form(end.clone()).await.status().as_u16(), 303);
    let ends: i64 =
        sqlx::query_scalar("SELECT ends_at FROM alert_silences WHERE comment = 'window'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(vmdeck::domain::time::parse_time(&end, false), Some(ends));
}

#[tokio::test]
async fn a_failing_notification_target_is_said_on_the_alerts_page() {
    let app = breadth_app().await;
    let (_, html) = app.get("/alerts").await;
    assert!(!html.contains("target-failing"));
    assert!(html.contains("href=\"/alerts/targets\""), "links to the targets");
    sqlx::query(
        "INSERT INTO alert_targets (name, source, kind, created_by, created_at, updated_at,
                                    last_error_at, last_error, failures)
         VALUES ('pager', 'page', 'webhook', 'admin', 1, 1, 1764547200000, 'connection refused', 3)",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    let (_, html) = app.get("/alerts").await;
    let notice = html.split("class=\"notice target-failing\"").nth(1).expect("a notice");
    let notice = text(notice.split("</p>").next().unwrap());
    assert!(
        notice.contains(
            "pager is failing (3 failures since 2025-12-01 00:00:00 UTC): connection refused"
        ),
        "{notice}"
    );
}

#[tokio::test]
async fn file_rules_are_read_only_in_the_page() {
    let app = spawn_app(AppOptions {
        extra: vec![(
            "alert_rules",
            json!([{ "name": "lab unreachable", "condition": "host_unreachable", "for": "2m" }]),
        )],
        ..AppOptions::breadth()
    })
    .await;
    let id: i64 = sqlx::query_scalar("SELECT id FROM alert_rules WHERE source = 'file'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let admin = app.session("admin").await;
    let (_, html) = admin.get("/alerts/rules").await;
    let row =
        html.split(&format!("id=\"rule-{id}\"")).nth(1).unwrap().split("</tr>").next().unwrap();
    assert!(text(row).contains("from the configuration file"), "{row}");
    assert!(!row.contains("/edit") && !row.contains("/delete"), "no edit or delete for it");
    let (status, html) = admin.get(&format!("/alerts/rules/{id}/edit")).await;
    assert_eq!(status, 200);
    assert!(text(&html).contains("read-only here"));
    let res = admin
        .post(
            &format!("/alerts/rules/{id}"),
            &[("name", "lab unreachable"), ("condition", "host_unreachable"), ("for", "0")],
        )
        .await;
    assert_eq!(res.status().as_u16(), 400);
    assert!(text(&res.text().await.unwrap()).contains("comes from the configuration file"));
    let res = admin.post(&format!("/alerts/rules/{id}/delete"), &[]).await;
    assert_eq!(res.status().as_u16(), 303);
    assert!(admin.flash_at("/alerts/rules").await.contains("configuration file"));
    let (for_secs,): (i64,) = sqlx::query_as("SELECT for_secs FROM alert_rules WHERE id = ?")
        .bind(id)
        .fetch_one(&app.pool)
        .await
        .expect("the file rule stays");
    assert_eq!(for_secs, 120);
    assert!(alert_entries(&app, "rule_changed").await.is_empty());
    assert!(alert_entries(&app, "rule_removed").await.is_empty());
}
