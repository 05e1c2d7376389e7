//! Alert notifications against real receivers: a webhook receiver in the test (Alertmanager's
//! webhook JSON, version 4), a real SMTP server (Debian's python3-aiosmtpd), a real
//! Alertmanager (Debian's prometheus-alertmanager) fed by a real QEMU VM stopped behind
//! vmdeck's back. Grouping, repeat interval, resolution, silences and acknowledgements are
//! driven by the engine's controllable clock (`app.alerts.evaluate(now)`).

use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use vmdeck::alerts::notify::store as targets;
use vmdeck::alerts::notify::target::TargetFields;
use vmdeck::alerts::rules::RuleFields;
use vmdeck::alerts::store::{self as rules, Source};
use vmdeck::db::now_ms;

use crate::support::app::{free_port, libvirt_host, spawn_app, unescape, AppOptions, TestApp};
use crate::support::receiver::{Answer, Receiver};
use crate::support::wait::eventually;

const MINUTE: i64 = 60_000;
const TOKEN: &str = "tok-SECRET-0123456789abcdef";
const PASSWORD: &str = "pw-SECRET-9876543210";

/// The breadth lab with short notification timings (the clock does the rest).
async fn lab(extra: Vec<(&'static str, Value)>) -> TestApp {
    let mut opts = AppOptions::breadth();
    opts.extra = vec![
        ("alert_retry_secs", json!(1)),
        ("alert_resend_secs", json!(10)),
        ("alert_group_interval_secs", json!(300)),
        ("alert_repeat_interval_secs", json!(3600)),
    ];
    opts.extra.extend(extra);
    spawn_app(opts).await
}

/// A `vm_state` rule expecting the VMs named like `pattern` to run.
async fn vm_rule(app: &TestApp, name: &str, pattern: &str, severity: &str) -> i64 {
    let spec = RuleFields {
        name: name.into(),
        condition: "vm_state".into(),
        expected: "running".into(),
        scope: "pattern".into(),
        scope_value: pattern.into(),
        severity: severity.into(),
        ..RuleFields::default()
    }
    .parse()
    .expect("a valid rule");
    rules::insert_rule(&app.pool, &spec, Source::Page, "test", now_ms()).await.expect("rule saved")
}

async fn webhook(app: &TestApp, name: &str, url: &str, token: &str) -> i64 {
    let spec = TargetFields {
        name: name.into(),
        kind: "webhook".into(),
        url: url.into(),
        token: token.into(),
        ..TargetFields::default()
    }
    .parse()
    .expect("a valid target");
    targets::insert_target(&app.pool, &spec, Source::Page, "test", now_ms()).await.expect("saved")
}

async fn deliveries(app: &TestApp, target: i64) -> i64 {
    sqlx::query_scalar(
        "SELECT COUNT(*) FROM alert_deliveries WHERE target_id = ? AND state <> 'superseded'",
    )
    .bind(target)
    .fetch_one(&app.pool)
    .await
    .unwrap()
}

async fn firing(app: &TestApp, rule: &str) -> Vec<(String, String)> {
    sqlx::query_as(
        "SELECT vm_name, vm_uuid FROM alerts WHERE rule_name = ? AND state = 'firing' ORDER BY vm_name",
    )
    .bind(rule)
    .fetch_all(&app.pool)
    .await
    .unwrap()
}

/// Everything logged on this thread (the test's runtime runs the server's tasks too) from now
/// until the guard is dropped, at every level.
fn capture_logs() -> (tracing::subscriber::DefaultGuard, Arc<Mutex<Vec<u8>>>) {
    let buf = Arc::new(Mutex::new(Vec::new()));
    let sink = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || LogSink(sink.clone()))
        .finish();
    (tracing::subscriber::set_default(subscriber), buf)
}

struct LogSink(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogSink {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn logged(buf: &Arc<Mutex<Vec<u8>>>) -> String {
    String::from_utf8_lossy(&buf.lock().unwrap()).into_owned()
}

/// Evaluates at `at` and returns when the engine is done (planning included).
async fn evaluate(app: &TestApp, at: i64) {
    app.alerts.evaluate(at).await.expect("evaluation");
}

async fn requests_eventually(r: &Receiver, n: usize) -> Vec<crate::support::receiver::Received> {
    eventually(&format!("{n} webhook request(s)"), Duration::from_secs(15), async || {
        let got = r.received();
        (got.len() >= n).then_some(got)
    })
    .await
}

fn string(v: &Value, key: &str) -> String {
    v.get(key)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("{key} is not a string in {v}"))
        .to_string()
}

/// Checks one webhook payload's shape (Alertmanager webhook JSON, version 4).
fn check_v4(p: &Value, receiver: &str, status: &str, n: usize) {
    assert_eq!(p["version"], "4");
    assert!(string(p, "groupKey").starts_with("{}:{alertname="), "{p}");
    assert_eq!(p["truncatedAlerts"], 0);
    assert_eq!(p["status"], status);
    assert_eq!(p["receiver"], receiver);
    assert!(p["groupLabels"]["alertname"].is_string() && p["groupLabels"]["host"] == "lab", "{p}");
    assert!(p["commonLabels"].is_object() && p["commonAnnotations"].is_object());
    assert_eq!(p["commonLabels"]["host"], "lab");
    assert!(string(p, "externalURL").starts_with("http://127.0.0.1:"));
    let alerts = p["alerts"].as_array().expect("alerts is an array");
    assert_eq!(alerts.len(), n, "{p}");
    for a in alerts {
        assert!(["firing", "resolved"].contains(&string(a, "status").as_str()));
        for key in ["alertname", "severity", "host", "vm", "uuid"] {
            assert!(a["labels"][key].is_string(), "label {key} in {a}");
        }
        assert!(
            a["annotations"]["summary"].is_string() && a["annotations"]["description"].is_string()
        );
        for key in ["startsAt", "endsAt"] {
            let t = string(a, key);
            assert!(t.len() >= 20 && t.as_bytes()[10] == b'T' && t.ends_with('Z'), "{key}: {t}");
        }
        let fp = string(a, "fingerprint");
        assert!(fp.len() == 16 && fp.chars().all(|c| c.is_ascii_hexdigit()), "{fp}");
        let uuid = string(&a["labels"], "uuid");
        assert!(string(a, "generatorURL").ends_with(&format!("/vms/lab/{uuid}")));
    }
}

#[tokio::test]
async fn a_host_going_down_sends_one_webhook_notification_then_repeats_and_resolves() {
    let app = lab(vec![]).await;
    let hook = Receiver::start().await;
    let target = webhook(&app, "ops hook", &format!("{}/hook", hook.base), TOKEN).await;
    let rule = vm_rule(&app, "VM stopped", "br-*", "critical").await;
    let t0 = now_ms() + MINUTE;
    evaluate(&app, t0).await;
    let down = firing(&app, "VM stopped").await;
    assert!(down.len() >= 3, "several lab VMs are not running: {down:?}");

    // One notification for all of them, with the bearer token.
    let got = requests_eventually(&hook, 1).await;
    assert_eq!(got.len(), 1, "one notification for the whole group");
    assert_eq!(got[0].method, "POST");
    assert_eq!(got[0].path, "/hook");
    assert_eq!(got[0].header("authorization"), Some(format!("Bearer {TOKEN}").as_str()));
    assert!(got[0].header("content-type").unwrap_or_default().starts_with("application/json"));
    let p = got[0].json();
    check_v4(&p, "ops hook", "firing", down.len());
    let mut vms: Vec<String> =
        p["alerts"].as_array().unwrap().iter().map(|a| string(&a["labels"], "vm")).collect();
    vms.sort();
    assert_eq!(vms, down.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>());
    assert!(p["alerts"].as_array().unwrap().iter().all(|a| a["status"] == "firing"));
    assert_eq!(p["commonLabels"]["alertname"], "VM stopped");
    assert_eq!(p["commonLabels"]["severity"], "critical");

    // Unchanged: not again before the repeat interval (1 h), again after it.
    let sent_at: i64 =
        sqlx::query_scalar("SELECT last_sent_at FROM alert_groups WHERE target_id = ?")
            .bind(target)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    evaluate(&app, sent_at + 59 * MINUTE).await;
    assert_eq!(deliveries(&app, target).await, 1, "nothing is repeated before the repeat interval");
    evaluate(&app, sent_at + 60 * MINUTE).await;
    assert_eq!(deliveries(&app, target).await, 2, "repeated once the repeat interval passed");
    let got = requests_eventually(&hook, 2).await;
    check_v4(&got[1].json(), "ops hook", "firing", down.len());

    // The rule goes: every alert resolves, in one "resolved" notification.
    rules::delete_rule(&app.pool, rule).await.unwrap();
    evaluate(&app, sent_at + 70 * MINUTE).await;
    let got = requests_eventually(&hook, 3).await;
    let p = got[2].json();
    check_v4(&p, "ops hook", "resolved", down.len());
    for a in p["alerts"].as_array().unwrap() {
        assert_eq!(a["status"], "resolved");
        assert!(string(a, "endsAt") > string(a, "startsAt"));
    }
    // Nothing more to say.
    evaluate(&app, sent_at + 300 * MINUTE).await;
    assert_eq!(deliveries(&app, target).await, 3);
}

#[tokio::test]
async fn a_group_that_changes_waits_for_the_group_interval() {
    let app = lab(vec![]).await;
    let hook = Receiver::start().await;
    let target = webhook(&app, "hook", &format!("{}/g", hook.base), "").await;
    let rule = vm_rule(&app, "Stopped", "br-shut*", "warning").await;
    evaluate(&app, now_ms() + MINUTE).await;
    let first = firing(&app, "Stopped").await.len();
    let got = requests_eventually(&hook, 1).await;
    assert_eq!(got[0].json()["alerts"].as_array().unwrap().len(), first);
    let sent_at: i64 =
        sqlx::query_scalar("SELECT last_sent_at FROM alert_groups WHERE target_id = ?")
            .bind(target)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    // More of the host's VMs trip the same rule: the same group, changed.
    let wider = RuleFields {
        name: "Stopped".into(),
        condition: "vm_state".into(),
        expected: "running".into(),
        scope: "pattern".into(),
        scope_value: "br-*".into(),
        severity: "warning".into(),
        ..RuleFields::default()
    }
    .parse()
    .unwrap();
    rules::update_rule(&app.pool, rule, &wider, now_ms()).await.unwrap();
    evaluate(&app, sent_at + 4 * MINUTE).await;
    let now_firing = firing(&app, "Stopped").await.len();
    assert!(now_firing > first, "the wider rule holds for more VMs");
    assert_eq!(deliveries(&app, target).await, 1, "a change waits for the group interval (5 min)");
    evaluate(&app, sent_at + 5 * MINUTE).await;
    assert_eq!(deliveries(&app, target).await, 2);
    let got = requests_eventually(&hook, 2).await;
    let p = got[1].json();
    check_v4(&p, "hook", "firing", now_firing);
    assert_eq!(p["groupKey"], got[0].json()["groupKey"], "the same group");
}

#[tokio::test]
async fn silenced_alerts_are_not_notified_and_acknowledged_ones_not_repeated() {
    let app = lab(vec![]).await;
    let hook = Receiver::start().await;
    let target = webhook(&app, "hook", &format!("{}/h", hook.base), "").await;
    vm_rule(&app, "Quiet", "br-shut*", "warning").await;
    let acked = vm_rule(&app, "Noisy", "br-crashed", "warning").await;
    sqlx::query(
        "INSERT INTO alert_silences (rule_name, host_name, comment, starts_at, ends_at, created_by, created_at)
         VALUES ('Quiet', 'lab', 'maintenance', 0, ?, 'admin', 0)",
    )
    .bind(now_ms() + 100 * 24 * 60 * MINUTE)
    .execute(&app.pool)
    .await
    .unwrap();
    let t0 = now_ms() + MINUTE;
    evaluate(&app, t0).await;
    assert!(!firing(&app, "Quiet").await.is_empty(), "silenced alerts still fire");
    let got = requests_eventually(&hook, 1).await;
    assert_eq!(deliveries(&app, target).await, 1, "only the group that is not silenced");
    let p = got[0].json();
    assert_eq!(p["groupLabels"]["alertname"], "Noisy");
    assert!(!got[0].body.contains("Quiet"));
    assert_eq!(got[0].header("authorization"), None, "no token, no Authorization header");

    // Acknowledged: no repeat; its resolution is still sent.
    sqlx::query("UPDATE alerts SET ack_at = ?, ack_by = 'op', ack_comment = 'on it' WHERE rule_name = 'Noisy'")
        .bind(t0)
        .execute(&app.pool)
        .await
        .unwrap();
    evaluate(&app, t0 + 120 * MINUTE).await;
    assert_eq!(deliveries(&app, target).await, 1, "acknowledged alerts are not repeated");
    rules::delete_rule(&app.pool, acked).await.unwrap();
    evaluate(&app, t0 + 130 * MINUTE).await;
    let got = requests_eventually(&hook, 2).await;
    assert_eq!(got[1].json()["status"], "resolved");
    assert_eq!(deliveries(&app, target).await, 2, "the silenced group stays quiet");
}

#[tokio::test]
async fn a_failing_webhook_is_retried_and_the_page_shows_failure_then_success() {
    let (_logs, log) = capture_logs();
    let app = lab(vec![]).await;
    let admin = app.session("admin").await;
    let hook = Receiver::start().await;
    hook.answer(Answer::Status(500));
    let target = webhook(&app, "flaky", &format!("{}/x", hook.base), TOKEN).await;
    vm_rule(&app, "Down", "br-shutoff", "critical").await;
    evaluate(&app, now_ms() + MINUTE).await;
    let html = eventually("the failure on the targets page", Duration::from_secs(15), async || {
        let (_, html) = admin.get("/alerts/targets").await;
        html.contains("1 failure in a row").then_some(html)
    })
    .await;
    assert!(html.contains("HTTP 500"), "the error in words: {html}");
    let (attempts, next): (i64, i64) = sqlx::query_as(
        "SELECT attempts, next_attempt_at - created_at FROM alert_deliveries WHERE target_id = ?",
    )
    .bind(target)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert!(attempts >= 1 && next >= 1000, "retried after the retry delay ({attempts}, {next} ms)");
    hook.answer(Answer::Status(200));
    let html = eventually("the success on the targets page", Duration::from_secs(20), async || {
        let (_, html) = admin.get("/alerts/targets").await;
        html.contains("delivery-sent").then_some(html)
    })
    .await;
    assert!(!html.contains("failure in a row"), "failures are reset by a success");
    assert!(hook.received().len() >= 2, "sent again after failing");
    let (state, attempts): (String, i64) =
        sqlx::query_as("SELECT state, attempts FROM alert_deliveries WHERE target_id = ?")
            .bind(target)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(state, "sent");
    assert!(attempts >= 2);
    // The server's log says what failed, never with the token.
    let log = logged(&log);
    // (Which lines a thread's own subscriber sees while other tests run is up to tracing's
    // callsite cache: some of the server's lines, not necessarily these.)
    assert!(log.contains("vmdeck::"), "the server's log is captured: {log}");
    assert!(!log.contains(TOKEN), "the token in the log:\n{log}");
    assert!(hook
        .received()
        .iter()
        .all(|r| r.header("authorization") == Some(&format!("Bearer {TOKEN}"))));
}

#[tokio::test]
async fn a_hanging_target_delays_neither_polls_nor_other_targets() {
    let app = lab(vec![]).await;
    let stuck = Receiver::start().await;
    stuck.answer(Answer::Hang);
    let fine = Receiver::start().await;
    webhook(&app, "a stuck one", &format!("{}/", stuck.base), "").await;
    webhook(&app, "b fine one", &format!("{}/", fine.base), "").await;
    vm_rule(&app, "Down", "br-shutoff", "critical").await;
    let started = Instant::now();
    evaluate(&app, now_ms() + MINUTE).await;
    eventually("the stuck target being asked", Duration::from_secs(5), async || {
        !stuck.received().is_empty()
    })
    .await;
    // Well within the stuck target's 10 s timeout.
    eventually("the other target's notification", Duration::from_secs(5), async || {
        !fine.received().is_empty()
    })
    .await;
    let poll = Instant::now();
    app.poll("lab").await;
    evaluate(&app, now_ms() + 2 * MINUTE).await;
    assert!(
        poll.elapsed() < Duration::from_secs(3),
        "a poll and an evaluation took {:?}",
        poll.elapsed()
    );
    assert!(started.elapsed() < Duration::from_secs(9));
}

/// Quoted-printable, as lettre may encode a body.
fn unquote(s: &str) -> String {
    let s = s.replace("=\r\n", "").replace("=\n", "");
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'=' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).to_string()
}

struct Smtp {
    child: Child,
    port: u16,
    maildir: tempfile::TempDir,
}

impl Drop for Smtp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Debian's aiosmtpd (scripts/setup.sh --test), delivering into a maildir.
async fn smtp_server() -> Smtp {
    let maildir = tempfile::tempdir().unwrap();
    let port = free_port();
    let child = Command::new("/usr/bin/python3")
        .args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}")])
        .args(["-c", "aiosmtpd.handlers.Mailbox"])
        .arg(maildir.path().join("box"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3-aiosmtpd is installed (scripts/setup.sh --test)");
    let smtp = Smtp { child, port, maildir };
    eventually("the SMTP server listening", Duration::from_secs(15), async || {
        tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok()
    })
    .await;
    smtp
}

#[tokio::test]
async fn an_email_arrives_at_a_real_smtp_server_with_subject_and_body() {
    let smtp = smtp_server().await;
    let app = lab(vec![]).await;
    let admin = app.session("admin").await;
    let port = smtp.port.to_string();
    let res = admin
        .post(
            "/alerts/targets",
            &[
                ("name", "ops mail"),
                ("enabled", "on"),
                ("kind", "email"),
                ("min_severity", "warning"),
                ("smtp_host", "127.0.0.1"),
                ("smtp_port", &port),
                ("tls", "none"),
                ("from", "vmdeck@lab.example"),
                ("to", "ops@lab.example\nlead@lab.example"),
            ],
        )
        .await;
    assert_eq!(res.status().as_u16(), 303, "{}", res.text().await.unwrap());
    vm_rule(&app, "VM not running", "br-sh*", "critical").await;
    vm_rule(&app, "Just info", "br-crashed", "info").await;
    evaluate(&app, now_ms() + MINUTE).await;
    let down = firing(&app, "VM not running").await;
    let new = smtp.maildir.path().join("box/new");
    let files = eventually("the e-mail in the maildir", Duration::from_secs(20), async || {
        let files: Vec<_> = std::fs::read_dir(&new).ok()?.filter_map(|e| e.ok()).collect();
        (!files.is_empty()).then_some(files)
    })
    .await;
    assert_eq!(files.len(), 1, "one e-mail: the info alert is below the target's least severity");
    let raw = std::fs::read_to_string(files[0].path()).unwrap();
    let (head, body) = raw.split_once("\n\n").expect("headers and body");
    let subject = format!("Subject: [FIRING:{}] VM not running on lab", down.len());
    assert!(head.contains(&subject), "{subject} in:\n{head}");
    assert!(head.contains("To: ops@lab.example, lead@lab.example"), "{head}");
    assert!(head.contains("From: vmdeck@lab.example"), "{head}");
    let body = unquote(body);
    for (name, uuid) in &down {
        assert!(body.contains(&format!("VM: {name} ({uuid})")), "{name} in:\n{body}");
        assert!(body.contains(&format!("/vms/lab/{uuid}")), "a link to {name} in:\n{body}");
    }
    assert!(body.contains("Host: lab") && body.contains("Since: "), "{body}");
    assert!(!body.contains("br-crashed"));
    let (_, page) = admin.get("/alerts/targets").await;
    assert!(page.contains("Last sent:") && !page.contains("failure in a row"));
}

#[tokio::test]
async fn secrets_are_never_shown_and_an_empty_field_keeps_them() {
    let (_logs, log) = capture_logs();
    let app = lab(vec![]).await;
    let admin = app.session("admin").await;
    let res = admin
        .post(
            "/alerts/targets",
            &[
                ("name", "am"),
                ("kind", "alertmanager"),
                ("url", "http://127.0.0.1:9/"),
                ("token", TOKEN),
            ],
        )
        .await;
    assert_eq!(res.status().as_u16(), 303);
    let res = admin
        .post(
            "/alerts/targets",
            &[
                ("name", "mail"),
                ("kind", "email"),
                ("smtp_host", "mail.example"),
                ("username", "vmdeck"),
                ("password", PASSWORD),
                ("from", "a@example.org"),
                ("to", "b@example.org"),
            ],
        )
        .await;
    assert_eq!(res.status().as_u16(), 303);
    let ids: Vec<i64> = sqlx::query_scalar("SELECT id FROM alert_targets ORDER BY name")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    // Edited with the secret fields left empty: the secrets stay.
    let res = admin
        .post(
            &format!("/alerts/targets/{}", ids[0]),
            &[
                ("name", "am"),
                ("kind", "alertmanager"),
                ("url", "http://127.0.0.1:9/v"),
                ("token", ""),
            ],
        )
        .await;
    assert_eq!(res.status().as_u16(), 303);
    let secrets: Vec<Option<String>> =
        sqlx::query_scalar("SELECT secret FROM alert_targets ORDER BY name")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(secrets, vec![Some(TOKEN.to_string()), Some(PASSWORD.to_string())]);
    let mut pages = vec![admin.get("/alerts/targets").await.1];
    for id in &ids {
        pages.push(admin.get(&format!("/alerts/targets/{id}")).await.1);
    }
    // A refused form shows what was typed, but never the secret.
    let res = admin
        .post(
            "/alerts/targets",
            &[("name", "bad"), ("kind", "webhook"), ("url", "ftp://x"), ("token", TOKEN)],
        )
        .await;
    assert_eq!(res.status().as_u16(), 400);
    let refused = res.text().await.unwrap();
    assert!(unescape(&refused).contains("url: only http:// and https:// URLs"), "{refused}");
    pages.push(refused);
    for html in &pages {
        assert!(!html.contains(TOKEN) && !html.contains(PASSWORD), "a secret on a page:\n{html}");
    }
    assert!(pages[0].contains(">set<"), "the list says the secret is set");
    let audit: Vec<(String, String)> = sqlx::query_as(
        "SELECT action, COALESCE(detail, '') FROM audit_log WHERE kind = 'alert' ORDER BY id",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    let actions: Vec<&str> = audit.iter().map(|(a, _)| a.as_str()).collect();
    assert_eq!(actions, ["target_added", "target_added", "target_changed"]);
    assert!(audit[2].1.contains("token set"), "{audit:?}");
    let everything: String = sqlx::query_scalar(
        "SELECT group_concat(COALESCE(detail, '') || COALESCE(error, '') || COALESCE(action, ''), ' ') FROM audit_log",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert!(!everything.contains(TOKEN) && !everything.contains(PASSWORD));
    let log = logged(&log);
    assert!(log.contains("vmdeck::"), "the server's log is captured: {log}");
    assert!(!log.contains(TOKEN) && !log.contains(PASSWORD), "a secret in the log:\n{log}");

    // Disable, then delete: audited, gone.
    let res = admin.post(&format!("/alerts/targets/{}/enabled", ids[1]), &[]).await;
    assert_eq!(res.status().as_u16(), 303);
    let enabled: bool = sqlx::query_scalar("SELECT enabled FROM alert_targets WHERE id = ?")
        .bind(ids[1])
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert!(!enabled);
    let res = admin.post(&format!("/alerts/targets/{}/delete", ids[1]), &[]).await;
    assert_eq!(res.status().as_u16(), 303);
    let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM alert_targets")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(left, 1);
    let removed: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM audit_log WHERE kind = 'alert' AND action = 'target_removed'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(removed, 1);
}

#[tokio::test]
async fn configuration_file_targets_are_read_only_and_invalid_ones_refuse_start() {
    let hook = Receiver::start().await;
    let app = lab(vec![(
        "alert_targets",
        json!([{ "name": "file hook", "kind": "webhook", "url": format!("{}/f", hook.base), "token": TOKEN, "min_severity": "critical" }]),
    )])
    .await;
    let admin = app.session("admin").await;
    let (_, html) = admin.get("/alerts/targets").await;
    assert!(
        html.contains("file hook")
            && html.contains("configuration file")
            && html.contains("read-only")
    );
    assert!(!html.contains(TOKEN));
    let id: i64 = sqlx::query_scalar("SELECT id FROM alert_targets WHERE source = 'file'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let res = admin
        .post(
            &format!("/alerts/targets/{id}"),
            &[("name", "x"), ("kind", "webhook"), ("url", "http://h/")],
        )
        .await;
    assert_eq!(res.status().as_u16(), 400);
    assert!(res.text().await.unwrap().contains("configuration file"));
    vm_rule(&app, "Down", "br-shutoff", "critical").await;
    evaluate(&app, now_ms() + MINUTE).await;
    let got = requests_eventually(&hook, 1).await;
    assert_eq!(got[0].header("authorization"), Some(format!("Bearer {TOKEN}").as_str()));
    drop(app);

    // A mistake in a table names it and its field, and vmdeck does not start.
    let dir = tempfile::tempdir().unwrap();
    let mut opts = AppOptions::breadth();
    opts.extra = vec![(
        "alert_targets",
        json!([{ "name": "ok", "kind": "webhook", "url": "http://h/" }, { "name": "bad", "kind": "webhook", "url": "gopher://h/" }]),
    )];
    let figment = crate::support::app::test_figment(dir.path(), &opts, free_port());
    let settings = vmdeck::config::Settings::from_figment(&figment).expect("the rest is valid");
    let err = vmdeck::alerts::notify::file_targets(&settings).expect_err("refused").to_string();
    assert!(err.starts_with("alert_targets[1].url:"), "{err}");
    let rocket = vmdeck::build(figment).expect("builds");
    let refused = rocket.ignite().await.expect_err("an invalid target refuses ignite");
    assert!(
        matches!(refused.kind(), rocket::error::ErrorKind::FailedFairings(f) if f.iter().any(|f| f.name == "Alert rules")),
        "{refused:?}"
    );
}

fn daemon_or_skip() -> Option<crate::support::libvirtd::LibvirtDaemon> {
    if let Err(why) = crate::support::libvirtd::real_vm_tests_enabled() {
        eprintln!("SKIPPED (explicitly): {why}");
        return None;
    }
    match crate::support::libvirtd::LibvirtDaemon::start() {
        Ok(d) => Some(d),
        Err(e) => panic!("the real-VM tests need a libvirt daemon and QEMU: {e}\n(set VMDECK_SKIP_REAL_VM=1 to skip them explicitly)"),
    }
}

/// Debian's Alertmanager, with its own configuration: one route to a webhook receiver in the
/// test, no clustering.
struct Alertmanager {
    child: Child,
    base: String,
    _dir: tempfile::TempDir,
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn alertmanager(forward_to: &str) -> Alertmanager {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("alertmanager.yml");
    std::fs::write(
        &config,
        format!(
            "route:\n  receiver: test\n  group_by: [alertname, host]\n  group_wait: 1s\n  group_interval: 1s\n  repeat_interval: 1h\n\
             receivers:\n  - name: test\n    webhook_configs:\n      - url: {forward_to}\n        send_resolved: true\n"
        ),
    )
    .unwrap();
    let port = free_port();
    let child = Command::new("/usr/bin/prometheus-alertmanager")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.path={}", dir.path().join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--cluster.listen-address=")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus-alertmanager is installed (scripts/setup.sh --test)");
    let am = Alertmanager { child, base: format!("http://127.0.0.1:{port}"), _dir: dir };
    let client = reqwest::Client::new();
    eventually("Alertmanager ready", Duration::from_secs(30), async || {
        client
            .get(format!("{}/-/ready", am.base))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    })
    .await;
    am
}

async fn am_alerts(am: &Alertmanager) -> Vec<Value> {
    reqwest::get(format!("{}/api/v2/alerts?active=true", am.base))
        .await
        .expect("Alertmanager answers")
        .json::<Vec<Value>>()
        .await
        .expect("a JSON array")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_alertmanager_gets_the_alert_of_a_real_vm_stopped_behind_vmdecks_back() {
    let Some(daemon) = daemon_or_skip() else {
        return;
    };
    let uuid = daemon.define_vm("vmdeck-notify", 1, 64, 64).expect("define vmdeck-notify");
    daemon.virsh(&["start", "vmdeck-notify"]).expect("start vmdeck-notify");
    let forwarded = Receiver::start().await;
    let am = alertmanager(&format!("{}/am", forwarded.base)).await;
    let mut opts = AppOptions::with_hosts(vec![libvirt_host("real", daemon.uri())]);
    opts.extra = vec![("alert_resend_secs", json!(10)), ("alert_retry_secs", json!(1))];
    let app = spawn_app(opts).await;
    let target = {
        let spec = TargetFields {
            name: "alertmanager".into(),
            kind: "alertmanager".into(),
            url: am.base.clone(),
            ..TargetFields::default()
        }
        .parse()
        .unwrap();
        targets::insert_target(&app.pool, &spec, Source::Page, "test", now_ms()).await.unwrap()
    };
    vm_rule(&app, "VM must run", "vmdeck-notify", "critical").await;
    app.poll("real").await;
    evaluate(&app, now_ms()).await;
    assert!(firing(&app, "VM must run").await.is_empty(), "the VM runs");

    daemon.virsh(&["destroy", "vmdeck-notify"]).expect("stop the VM behind vmdeck's back");
    app.poll("real").await;
    evaluate(&app, now_ms()).await;
    assert_eq!(firing(&app, "VM must run").await.len(), 1);
    let alert = eventually("the alert in Alertmanager", Duration::from_secs(30), async || {
        am_alerts(&am).await.into_iter().find(|a| a["labels"]["alertname"] == "VM must run")
    })
    .await;
    assert_eq!(alert["labels"]["vm"], "vmdeck-notify");
    assert_eq!(alert["labels"]["uuid"], uuid.as_str());
    assert_eq!(alert["labels"]["host"], "real");
    assert_eq!(alert["labels"]["severity"], "critical");
    assert_eq!(alert["status"]["state"], "active");
    assert!(string(&alert["annotations"], "summary").contains("vmdeck-notify"));
    assert!(string(&alert, "generatorURL").ends_with(&format!("/vms/real/{uuid}")));
    // What Alertmanager forwards (its own grouping, its webhook JSON).
    let fwd = eventually("Alertmanager's notification", Duration::from_secs(30), async || {
        forwarded.received().into_iter().find(|r| r.body.contains("\"firing\""))
    })
    .await;
    assert_eq!(fwd.json()["alerts"][0]["labels"]["vm"], "vmdeck-notify");

    daemon.virsh(&["start", "vmdeck-notify"]).expect("start the VM again");
    app.poll("real").await;
    evaluate(&app, now_ms()).await;
    assert!(firing(&app, "VM must run").await.is_empty(), "resolved in vmdeck");
    eventually("the alert resolved in Alertmanager", Duration::from_secs(30), async || {
        !am_alerts(&am).await.iter().any(|a| a["labels"]["alertname"] == "VM must run")
    })
    .await;
    eventually("Alertmanager's resolved notification", Duration::from_secs(30), async || {
        forwarded.received().iter().any(|r| r.json()["status"] == "resolved")
    })
    .await;
    let sent: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM alert_deliveries WHERE target_id = ? AND state = 'sent'",
    )
    .bind(target)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert!(sent >= 2, "the firing post and the resolving post ({sent})");
}

/// A webhook target (with a token) that failed once and then succeeded, for the role matrix
/// and the accessibility pages; nothing is queued, so nothing is sent.
pub async fn seeded_target(app: &TestApp, name: &str) -> i64 {
    let id = webhook(app, name, "http://127.0.0.1:9/hook", TOKEN).await;
    let now = now_ms();
    sqlx::query(
        "INSERT INTO alert_deliveries (target_id, group_key, created_at, status, alert_count,
             payload, state, attempts, next_attempt_at, sent_at, last_error)
         VALUES (?1, '{alertname=\"Down\",host=\"lab\"}', ?2, 'firing', 2, '{}', 'sent', 2, ?2, ?2,
                 'HTTP 503 Service Unavailable'),
                (?1, '{alertname=\"Down\",host=\"lab\"}', ?2, 'resolved', 2, '{}', 'given_up', 10, ?2, NULL,
                 'connection refused')",
    )
    .bind(id)
    .bind(now)
    .execute(&app.pool)
    .await
    .unwrap();
    sqlx::query(
        "UPDATE alert_targets SET last_ok_at = ?1, last_error_at = ?1, failures = 1,
             last_error = 'connection refused' WHERE id = ?2",
    )
    .bind(now)
    .bind(id)
    .execute(&app.pool)
    .await
    .unwrap();
    id
}

/// A throwaway CA and a server certificate it signed for 127.0.0.1 and localhost, made with
/// /usr/bin/openssl in a temp dir.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        // Arguments without spaces in them: one string each call.
        let openssl = |args: &str| {
            let out = Command::new("/usr/bin/openssl")
                .args(args.split_whitespace())
                .current_dir(dir.path())
                .output()
                .expect("/usr/bin/openssl runs");
            assert!(
                out.status.success(),
                "openssl {args}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
        openssl(&format!(
            "req -x509 {ec} -days 2 -subj /CN=vmdeck-test-CA -keyout ca.key -out ca.pem"
        ));
        openssl(&format!("req {ec} -subj /CN=localhost -keyout server.key -out server.csr"));
        std::fs::write(
            dir.path().join("ext.cnf"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        openssl(
            "x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
             -extfile ext.cnf -out server.pem",
        );
        Pki { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    /// The CA's certificate, the PEM file a target's `ca_file` names.
    fn ca(&self) -> String {
        self.path("ca.pem")
    }
}

/// The SMTP server for the TLS tests: aiosmtpd with SMTP AUTH (user "vmdeck", [`PASSWORD`]),
/// in one of three modes: "starttls" (offers and requires STARTTLS, AUTH only after it),
/// "tls" (TLS on the listener) or "plain" (no TLS at all, AUTH offered in plaintext: what a
/// client that falls back would use). It records each EHLO, AUTH, MAIL and DATA with whether
/// the connection was encrypted (events.jsonl) and each message (mail-N.eml).
const SMTPD_PY: &str = r#"
import json, os, ssl, sys, threading
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

mode, port, cert, key, out, user, password = sys.argv[1:8]

def record(kind, **data):
    with open(os.path.join(out, "events.jsonl"), "a") as f:
        f.write(json.dumps(dict(kind=kind, **data)) + "\n")

def tls(server):
    return server.transport.get_extra_info("ssl_object") is not None

class Handler:
    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        record("ehlo", tls=tls(server), offered=[r[4:] for r in responses])
        return responses

    async def handle_MAIL(self, server, session, envelope, address, options):
        record("mail", tls=tls(server), login=(session.auth_data or b"").decode())
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        n = len([f for f in os.listdir(out) if f.endswith(".eml")])
        with open(os.path.join(out, "mail.tmp"), "wb") as f:
            f.write(envelope.original_content)
        os.rename(os.path.join(out, "mail.tmp"), os.path.join(out, "mail-%d.eml" % n))
        record("data", tls=tls(server), rcpt=envelope.rcpt_tos)
        return "250 Message accepted for delivery"

def authenticator(server, session, envelope, mechanism, auth_data):
    ok = (isinstance(auth_data, LoginPassword)
          and auth_data.login.decode() == user and auth_data.password.decode() == password)
    login = auth_data.login.decode() if isinstance(auth_data, LoginPassword) else ""
    record("auth", mechanism=mechanism, login=login, ok=ok, tls=tls(server))
    return AuthResult(success=ok, auth_data=auth_data.login if ok else None)

ctx = None
if mode != "plain":
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
kwargs = dict(hostname="127.0.0.1", port=int(port), authenticator=authenticator)
if mode == "starttls":
    kwargs.update(tls_context=ctx, require_starttls=True, auth_required=True)
elif mode == "tls":
    kwargs.update(ssl_context=ctx, auth_require_tls=False)
else:
    kwargs.update(auth_require_tls=False)
controller = Controller(Handler(), **kwargs)
controller.start()
open(os.path.join(out, "ready"), "w").close()
threading.Event().wait()
"#;

struct TlsSmtp {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Drop for TlsSmtp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl TlsSmtp {
    async fn start(mode: &str, pki: &Pki) -> TlsSmtp {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("smtpd.py");
        std::fs::write(&script, SMTPD_PY).unwrap();
        let port = free_port();
        let stderr = std::fs::File::create(dir.path().join("stderr")).unwrap();
        // Debian's python3 (with python3-aiosmtpd), not whatever python3 is first on PATH.
        let child = Command::new("/usr/bin/python3")
            .arg(&script)
            .args([mode, &port.to_string(), &pki.path("server.pem"), &pki.path("server.key")])
            .arg(dir.path())
            .args(["vmdeck", PASSWORD])
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("/usr/bin/python3 runs");
        let smtp = TlsSmtp { child, port, dir };
        let ready = smtp.dir.path().join("ready");
        eventually(&format!("the {mode} SMTP server ready"), Duration::from_secs(15), async || {
            ready.exists()
        })
        .await;
        smtp
    }

    /// What the server recorded, in order.
    fn events(&self) -> Vec<Value> {
        std::fs::read_to_string(self.dir.path().join("events.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON line"))
            .collect()
    }

    fn kinds(&self) -> Vec<String> {
        self.events().iter().map(|e| string(e, "kind")).collect()
    }

    /// The messages received, in order.
    fn mails(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.ends_with(".eml"))
            .collect();
        names.sort();
        names.iter().map(|n| std::fs::read_to_string(self.dir.path().join(n)).unwrap()).collect()
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr")).unwrap_or_default()
    }
}

/// Adds an e-mail target through the page's form (303 expected).
async fn email_target(admin: &crate::support::app::Session, form: &[(&str, &str)]) {
    let mut fields = vec![
        ("name", "tls mail"),
        ("enabled", "on"),
        ("kind", "email"),
        ("from", "vmdeck@lab.example"),
        ("to", "ops@lab.example"),
    ];
    fields.extend_from_slice(form);
    let res = admin.post("/alerts/targets", &fields).await;
    assert_eq!(res.status().as_u16(), 303, "{}", res.text().await.unwrap());
}

/// Checks an e-mail notification of the stopped lab VMs `down` (subject and body).
fn check_mail(raw: &str, down: &[(String, String)]) {
    let raw = raw.replace("\r\n", "\n");
    let (head, body) = raw.split_once("\n\n").expect("headers and body");
    let subject = format!("Subject: [FIRING:{}] VM not running on lab", down.len());
    assert!(head.contains(&subject), "{subject} in:\n{head}");
    assert!(head.contains("To: ops@lab.example"), "{head}");
    assert!(head.contains("From: vmdeck@lab.example"), "{head}");
    let body = unquote(body);
    for (name, uuid) in down {
        assert!(body.contains(&format!("VM: {name} ({uuid})")), "{name} in:\n{body}");
        assert!(body.contains(&format!("/vms/lab/{uuid}")), "a link to {name} in:\n{body}");
    }
    assert!(body.contains("Host: lab") && body.contains("Since: "), "{body}");
}

/// The targets page once it shows a failure, and the failure's error (as shown, unescaped).
async fn failure_shown(admin: &crate::support::app::Session, what: &str) -> String {
    let html = eventually(what, Duration::from_secs(20), async || {
        let (_, html) = admin.get("/alerts/targets").await;
        (html.contains("failure in a row") || html.contains("delivery-sent")).then_some(html)
    })
    .await;
    assert!(!html.contains("delivery-sent"), "sent, but it should have failed:\n{html}");
    unescape(&html)
}

/// One TLS e-mail case: a real aiosmtpd in `server` mode ("starttls", "tls" or "plain"), the
/// breadth lab with an e-mail target made through the form (`tls`, at `host`, with the CA file
/// and a login when asked), and a critical rule that fires for the lab's stopped VMs, evaluated.
/// Bind every field but `ca` when destructuring: a field left to `..` is dropped at once, which
/// would stop the server or delete the CA file.
struct TlsCase {
    smtp: TlsSmtp,
    app: TestApp,
    admin: crate::support::app::Session,
    /// The CA file's path.
    ca: String,
    _pki: Pki,
}

async fn tls_case(server: &str, host: &str, tls: &str, with_ca: bool, login: bool) -> TlsCase {
    let pki = Pki::new();
    let smtp = TlsSmtp::start(server, &pki).await;
    let app = lab(vec![]).await;
    let admin = app.session("admin").await;
    let port = smtp.port.to_string();
    let ca = pki.ca();
    let mut form = vec![("smtp_host", host), ("smtp_port", &port), ("tls", tls)];
    if login {
        form.extend([("username", "vmdeck"), ("password", PASSWORD)]);
    }
    if with_ca {
        form.push(("ca_file", &ca));
    }
    email_target(&admin, &form).await;
    vm_rule(&app, "VM not running", "br-sh*", "critical").await;
    evaluate(&app, now_ms() + MINUTE).await;
    TlsCase { smtp, app, admin, ca, _pki: pki }
}

#[tokio::test]
async fn starttls_with_a_ca_file_and_smtp_auth_delivers_and_the_password_stays_hidden() {
    let (_logs, log) = capture_logs();
    let TlsCase { smtp, app, admin, ca, _pki } =
        tls_case("starttls", "127.0.0.1", "starttls", true, true).await;
    let down = firing(&app, "VM not running").await;
    let mails = eventually("the e-mail over STARTTLS", Duration::from_secs(20), async || {
        let m = smtp.mails();
        (!m.is_empty()).then_some(m)
    })
    .await;
    assert_eq!(mails.len(), 1, "one e-mail");
    check_mail(&mails[0], &down);
    // Upgraded first, then logged in (checked by the server) and sent, all encrypted.
    let events = smtp.events();
    let kinds = smtp.kinds();
    assert_eq!(kinds, ["ehlo", "ehlo", "auth", "mail", "data"], "{events:?}\n{}", smtp.stderr());
    assert_eq!(events[0]["tls"], false);
    assert!(events[0]["offered"].as_array().unwrap().iter().any(|o| o == "STARTTLS"));
    assert!(events[1..].iter().all(|e| e["tls"] == true), "{events:?}");
    assert_eq!(
        (events[2]["login"].as_str(), events[2]["ok"].as_bool()),
        (Some("vmdeck"), Some(true))
    );
    assert_eq!(events[3]["login"], "vmdeck", "the mail was sent logged in");

    let (_, list) = admin.get("/alerts/targets").await;
    assert!(list.contains("Last sent:") && !list.contains("failure in a row"), "{list}");
    assert!(unescape(&list).contains(&format!("CA file {ca}")), "{list}");
    let id: i64 =
        sqlx::query_scalar("SELECT id FROM alert_targets").fetch_one(&app.pool).await.unwrap();
    let (_, form) = admin.get(&format!("/alerts/targets/{id}")).await;
    assert!(unescape(&form).contains(&format!("name=\"ca_file\" value=\"{ca}\"")), "{form}");
    for html in [&list, &form] {
        assert!(!html.contains(PASSWORD), "the password on a page:\n{html}");
    }
    let log = logged(&log);
    assert!(log.contains("vmdeck::"), "the server's log is captured: {log}");
    assert!(!log.contains(PASSWORD), "the password in the log:\n{log}");
}

#[tokio::test]
async fn starttls_without_the_ca_file_fails_on_the_certificate_and_sends_nothing() {
    let TlsCase { smtp, app, admin, _pki, .. } =
        tls_case("starttls", "127.0.0.1", "starttls", false, true).await;
    let html = failure_shown(&admin, "the certificate failure on the targets page").await;
    assert!(html.contains("invalid peer certificate"), "the error in words:\n{html}");
    assert!(html.contains("give its CA in ca_file"), "what to do about it:\n{html}");
    assert!(!html.contains(PASSWORD));
    // It got as far as STARTTLS, and no further: no login, no mail.
    let kinds = smtp.kinds();
    assert_eq!(kinds.first().map(String::as_str), Some("ehlo"), "{kinds:?}");
    assert!(kinds.iter().all(|k| k == "ehlo"), "nothing after the failed handshake: {kinds:?}");
    assert!(smtp.mails().is_empty());
    let error: String = sqlx::query_scalar("SELECT last_error FROM alert_deliveries")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert!(error.contains("invalid peer certificate"), "{error}");
}

#[tokio::test]
async fn implicit_tls_with_a_ca_file_delivers() {
    // By name this time: the certificate's DNS name.
    let TlsCase { smtp, app, admin: _admin, _pki, .. } =
        tls_case("tls", "localhost", "tls", true, false).await;
    let down = firing(&app, "VM not running").await;
    let mails = eventually("the e-mail over TLS", Duration::from_secs(20), async || {
        let m = smtp.mails();
        (!m.is_empty()).then_some(m)
    })
    .await;
    check_mail(&mails[0], &down);
    let events = smtp.events();
    assert_eq!(smtp.kinds(), ["ehlo", "mail", "data"], "{events:?}\n{}", smtp.stderr());
    assert!(events.iter().all(|e| e["tls"] == true), "encrypted from the first byte: {events:?}");
}

#[tokio::test]
async fn a_server_without_starttls_gets_nothing_from_a_starttls_target() {
    let TlsCase { smtp, admin, app: _app, _pki, .. } =
        tls_case("plain", "127.0.0.1", "starttls", true, true).await;
    let html = failure_shown(&admin, "the missing STARTTLS on the targets page").await;
    assert!(html.contains("STARTTLS is not supported"), "the error in words:\n{html}");
    // The server offered AUTH in plaintext; vmdeck used neither it nor MAIL.
    let events = smtp.events();
    assert!(!events.is_empty(), "vmdeck did connect: {events:?}");
    assert!(events[0]["offered"]
        .as_array()
        .unwrap()
        .iter()
        .any(|o| o.as_str().is_some_and(|o| o.starts_with("AUTH"))));
    assert!(smtp.kinds().iter().all(|k| k == "ehlo"), "nothing sent in plaintext: {events:?}");
    assert!(smtp.mails().is_empty());
}

#[tokio::test]
async fn a_ca_file_is_checked_when_saved_and_at_start() {
    let pki = Pki::new();
    let app = lab(vec![]).await;
    let admin = app.session("admin").await;
    let not_pem = pki.path("ext.cnf");
    let missing = pki.path("missing.pem");
    for (ca_file, tls, says) in [
        (missing.as_str(), "starttls", "ca_file: cannot read the CA file"),
        (not_pem.as_str(), "tls", "ca_file: the CA file"),
        ("ca.pem", "starttls", "ca_file: give the CA file's absolute path"),
        (pki.path("ca.pem").as_str(), "none", "ca_file: a CA file needs tls = starttls or tls"),
    ] {
        let res = admin
            .post(
                "/alerts/targets",
                &[
                    ("name", "mail"),
                    ("kind", "email"),
                    ("smtp_host", "mail.internal"),
                    ("tls", tls),
                    ("from", "a@example.org"),
                    ("to", "b@example.org"),
                    ("ca_file", ca_file),
                ],
            )
            .await;
        assert_eq!(res.status().as_u16(), 400, "{ca_file}");
        let html = unescape(&res.text().await.unwrap());
        assert!(html.contains(says), "{says} in:\n{html}");
        assert!(html.contains(&format!("name=\"ca_file\" value=\"{ca_file}\"")), "kept as typed");
    }
    assert!(unescape(
        &admin
            .post(
                "/alerts/targets",
                &[
                    ("name", "x"),
                    ("kind", "email"),
                    ("smtp_host", "h"),
                    ("from", "a@example.org"),
                    ("to", "b@example.org"),
                    ("ca_file", &not_pem)
                ]
            )
            .await
            .text()
            .await
            .unwrap()
    )
    .contains("holds no PEM certificate"));
    let stored: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM alert_targets")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(stored, 0, "nothing saved");
    drop(app);

    // The configuration file: a good CA file is stored with the target, a bad one refuses start.
    let table = |ca_file: &str| {
        json!([{ "name": "file mail", "kind": "email", "smtp_host": "mail.internal", "tls": "tls",
                 "from": "a@example.org", "to": ["b@example.org"], "ca_file": ca_file }])
    };
    let app = lab(vec![("alert_targets", table(&pki.ca()))]).await;
    let settings: String = sqlx::query_scalar("SELECT settings FROM alert_targets")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(serde_json::from_str::<Value>(&settings).unwrap()["ca_file"], pki.ca().as_str());
    drop(app);
    let dir = tempfile::tempdir().unwrap();
    let mut opts = AppOptions::breadth();
    opts.extra = vec![("alert_targets", table(&missing))];
    let figment = crate::support::app::test_figment(dir.path(), &opts, free_port());
    let settings = vmdeck::config::Settings::from_figment(&figment).expect("the rest is valid");
    let err = vmdeck::alerts::notify::file_targets(&settings).expect_err("refused").to_string();
    assert!(err.starts_with("alert_targets[0].ca_file: cannot read the CA file"), "{err}");
}

#[tokio::test]
async fn planning_for_a_target_removed_meanwhile_queues_nothing_and_fails_nothing() {
    let app = lab(vec![]).await;
    let id = seeded_target(&app, "gone soon").await;
    sqlx::query("DELETE FROM alert_targets WHERE id = ?")
        .bind(id)
        .execute(&app.pool)
        .await
        .unwrap();
    // What planning read before the target was removed, written after.
    let queued = targets::Queued {
        target_id: id,
        group_key: "{alertname=\"x\",host=\"lab\"}".into(),
        firing: true,
        alert_count: 1,
        payload: "{}".into(),
        group_firing: vec!["0123456789abcdef".into()],
    };
    targets::queue(&app.pool, &queued, now_ms()).await.expect("no foreign key failure");
    let mut conn = app.pool.acquire().await.unwrap();
    targets::write_group(&mut conn, id, "k", &[], None).await.expect("no foreign key failure");
    let rows: (i64, i64) = sqlx::query_as(
        "SELECT (SELECT COUNT(*) FROM alert_deliveries), (SELECT COUNT(*) FROM alert_groups)",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(rows, (0, 0));
}
