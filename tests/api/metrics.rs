//! `GET /metrics`: access (off by default, tokens, allow-list), what it exposes for the breadth
//! lab, label escaping, the Grafana dashboard's metric names, and a real Prometheus scraping a
//! real QEMU VM through it.
//!
//! The Prometheus test needs Debian's `prometheus` package (scripts/setup.sh --test) and a
//! libvirtd with QEMU; `VMDECK_SKIP_REAL_VM=1` is the only way to skip it.

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::json;

use crate::support::app::{free_port, libvirt_host, spawn_app, AppOptions, TestApp};
use crate::support::libvirtd::{real_vm_tests_enabled, LibvirtDaemon};
use crate::support::wait::eventually_every;

const TOKEN: &str = "scrape-token-0123456789";
const OLD_TOKEN: &str = "rotated-token-0123456789";

/// One sample line: metric name, labels, value.
#[derive(Debug, Clone)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Parses the Prometheus text format (the subset vmdeck writes: no timestamps), undoing the
/// label values' escapes; panics on anything malformed.
pub fn parse(body: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in body.lines().filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let (head, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("no value: {line}"));
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("bad value: {line}"));
        let (name, mut rest) = match head.find('{') {
            Some(i) => (&head[..i], &head[i + 1..]),
            None => (head, ""),
        };
        let mut labels = BTreeMap::new();
        while !rest.is_empty() && rest != "}" {
            let (key, after) = rest.split_once("=\"").unwrap_or_else(|| panic!("label: {line}"));
            let mut val = String::new();
            let mut chars = after.char_indices();
            let end = loop {
                match chars.next() {
                    Some((_, '\\')) => match chars.next() {
                        Some((_, 'n')) => val.push('\n'),
                        Some((_, c)) => val.push(c),
                        None => panic!("dangling escape: {line}"),
                    },
                    Some((i, '"')) => break i,
                    Some((_, c)) => {
                        assert!(c != '\n', "raw newline in a label value: {line}");
                        val.push(c)
                    }
                    None => panic!("unterminated label value: {line}"),
                }
            };
            labels.insert(key.trim_start_matches(',').to_string(), val);
            rest = &after[end + 1..];
            rest = rest.strip_prefix(',').unwrap_or(rest);
        }
        out.push(Sample { name: name.to_string(), labels, value });
    }
    out
}

/// The value of `name` whose labels include all of `want`, if exactly one.
fn value(samples: &[Sample], name: &str, want: &[(&str, &str)]) -> Option<f64> {
    let found: Vec<&Sample> = samples
        .iter()
        .filter(|s| {
            s.name == name
                && want.iter().all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .collect();
    assert!(found.len() <= 1, "{name} {want:?} matches {} series", found.len());
    found.first().map(|s| s.value)
}

async fn scrape(app: &TestApp, auth: Option<&str>) -> reqwest::Response {
    let mut req = app.client.get(format!("{}/metrics", app.base));
    if let Some(t) = auth {
        req = req.header("Authorization", format!("Bearer {t}"));
    }
    req.send().await.expect("GET /metrics")
}

/// A scrape with the right token, parsed.
pub async fn scraped(app: &TestApp) -> Vec<Sample> {
    let res = scrape(app, Some(TOKEN)).await;
    assert_eq!(res.status().as_u16(), 200);
    let ct = res.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
    parse(&res.text().await.unwrap())
}

fn with_tokens(opts: AppOptions) -> AppOptions {
    AppOptions { extra: vec![("metrics_tokens", json!([TOKEN, OLD_TOKEN]))], ..opts }
}

async fn audit_entries(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM audit_log").fetch_one(&app.pool).await.unwrap()
}

#[tokio::test]
async fn metrics_are_off_unless_configured() {
    let app = spawn_app(AppOptions::breadth()).await;
    for auth in [None, Some(TOKEN)] {
        let res = scrape(&app, auth).await;
        assert_eq!(res.status().as_u16(), 404, "{auth:?}");
        let text = res.text().await.unwrap();
        assert!(text.contains("metrics are off"), "{text}");
        assert!(text.contains("metrics_tokens") && text.contains("metrics_allow"), "{text}");
    }
    // A session is not a way in either.
    assert_eq!(app.get("/metrics").await.0, 404);
}

#[tokio::test]
async fn a_listed_bearer_token_is_required() {
    let app = spawn_app(with_tokens(AppOptions::breadth())).await;
    let before = audit_entries(&app).await;
    for (auth, want) in [
        (None, 401),
        (Some("wrong-token-0123456789"), 401),
        (Some(&TOKEN[..10]), 401),
        (Some(TOKEN), 200),
        (Some(OLD_TOKEN), 200),
    ] {
        let res = scrape(&app, auth).await;
        assert_eq!(res.status().as_u16(), want, "{auth:?}");
        if want == 401 {
            let challenge = res.headers()["www-authenticate"].to_str().unwrap();
            assert!(challenge.starts_with("Bearer"), "{challenge}");
            assert!(res.text().await.unwrap().contains("metrics_tokens"));
        }
    }
    // A logged-in user without the token is refused too (no session needed, none accepted).
    assert_eq!(app.get("/metrics").await.0, 401);
    assert_eq!(audit_entries(&app).await, before, "anonymous scrapes store nothing");
}

#[tokio::test]
async fn the_allow_list_admits_scrapers_by_address() {
    let allowed = AppOptions {
        extra: vec![("metrics_allow", json!(["127.0.0.0/8"]))],
        ..AppOptions::breadth()
    };
    let app = spawn_app(allowed).await;
    assert_eq!(scrape(&app, None).await.status().as_u16(), 200, "loopback is in 127.0.0.0/8");

    // Through a trusted proxy the forwarded address is the one checked.
    let proxied = AppOptions {
        trusted_proxies: vec!["127.0.0.1".into()],
        extra: vec![("metrics_allow", json!(["192.0.2.10", "10.1.0.0/16"]))],
        ..AppOptions::breadth()
    };
    let app = spawn_app(proxied).await;
    for (from, want) in
        [("192.0.2.10", 200), ("10.1.200.3", 200), ("192.0.2.11", 403), ("10.2.0.1", 403)]
    {
        let res = app
            .client
            .get(format!("{}/metrics", app.base))
            .header("X-Forwarded-For", from)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), want, "from {from}");
        if want == 403 {
            assert!(res.text().await.unwrap().contains("metrics_allow"));
        }
    }
}

async fn uuid_of(app: &TestApp, name: &str) -> String {
    sqlx::query_scalar("SELECT uuid FROM vms WHERE name = ?")
        .bind(name)
        .fetch_one(&app.pool)
        .await
        .unwrap_or_else(|e| panic!("no VM {name}: {e}"))
}

#[tokio::test]
async fn the_breadth_labs_vms_appear_with_their_state_vcpus_and_memory() {
    let app = spawn_app(with_tokens(AppOptions::breadth())).await;
    let samples = scraped(&app).await;
    let present: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM vms WHERE gone_at IS NULL")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(present, 21);
    let info = samples.iter().filter(|s| s.name == "vmdeck_vm_info").count() as i64;
    assert_eq!(info, present, "one vmdeck_vm_info per VM");
    assert_eq!(value(&samples, "vmdeck_host_vms", &[("host", "lab")]), Some(21.0));
    assert_eq!(value(&samples, "vmdeck_host_up", &[("host", "lab")]), Some(1.0));
    assert!(
        value(&samples, "vmdeck_host_last_success_timestamp_seconds", &[("host", "lab")]).unwrap()
            > 1.7e9
    );
    assert!(value(&samples, "vmdeck_host_poll_duration_seconds", &[("host", "lab")]).is_some());
    assert_eq!(value(&samples, "vmdeck_host_consecutive_failures", &[("host", "lab")]), Some(0.0));
    for (name, state, vcpus, mib) in [
        ("br-running", "running", 1.0, 1024.0),
        ("br-paused", "paused", 1.0, 1024.0),
        ("br-shutoff", "shut_off", 1.0, 1024.0),
        ("br-crashed", "crashed", 1.0, 1024.0),
        ("br-managedsave", "shut_off", 2.0, 2048.0),
    ] {
        let uuid = uuid_of(&app, name).await;
        let vm = [("host", "lab"), ("uuid", uuid.as_str())];
        let info: Vec<&crate::metrics::Sample> = samples
            .iter()
            .filter(|s| s.name == "vmdeck_vm_info" && s.labels["uuid"] == uuid)
            .collect();
        assert_eq!(info.len(), 1, "{name}");
        assert_eq!(info[0].labels["name"], name);
        assert_eq!(info[0].labels["driver"], "libvirt");
        assert_eq!(info[0].value, 1.0);
        // One series per state, 1 for the current one.
        let states: BTreeMap<&str, f64> = samples
            .iter()
            .filter(|s| s.name == "vmdeck_vm_state" && s.labels["uuid"] == uuid)
            .map(|s| (s.labels["state"].as_str(), s.value))
            .collect();
        assert_eq!(states.len(), 7, "{name}: {states:?}");
        assert_eq!(states[state], 1.0, "{name}: {states:?}");
        assert_eq!(states.values().sum::<f64>(), 1.0, "{name}: {states:?}");
        assert_eq!(value(&samples, "vmdeck_vm_vcpus", &vm), Some(vcpus), "{name}");
        assert_eq!(
            value(&samples, "vmdeck_vm_memory_assigned_bytes", &vm),
            Some(mib * 1024.0 * 1024.0),
            "{name}"
        );
    }
    // The running VM's counters, as the hypervisor reports them.
    let running = uuid_of(&app, "br-running").await;
    let vm = [("uuid", running.as_str())];
    assert!(value(&samples, "vmdeck_vm_cpu_seconds_total", &vm).is_some_and(|v| v > 0.0));
    // vmdeck itself.
    assert_eq!(value(&samples, "vmdeck_control_requests_pending", &[("kind", "power")]), Some(0.0));
    assert!(value(&samples, "vmdeck_audit_entries_total", &[("kind", "login")])
        .is_some_and(|v| v >= 1.0));
    assert_eq!(value(&samples, "vmdeck_login_failures_total", &[]), Some(0.0));
    assert_eq!(value(&samples, "vmdeck_consoles_open", &[]), Some(0.0));
    assert!(value(&samples, "vmdeck_build_info", &[]).is_some());
}

#[tokio::test]
async fn gone_vms_are_not_exported_and_counters_follow_the_log() {
    let app = spawn_app(with_tokens(AppOptions::breadth())).await;
    let crashed = uuid_of(&app, "br-crashed").await;
    assert!(scraped(&app).await.iter().any(|s| s.labels.get("uuid") == Some(&crashed)));
    sqlx::query("UPDATE vms SET gone_at = 1 WHERE uuid = ?")
        .bind(&crashed)
        .execute(&app.pool)
        .await
        .unwrap();
    // A failed login and a pending power request, written as vmdeck writes them.
    app.client
        .post(format!("{}/login", app.base))
        .form(&[("username", "viewer"), ("password", "wrong password")])
        .send()
        .await
        .unwrap();
    let shutoff = uuid_of(&app, "br-shutoff").await;
    sqlx::query(
        "INSERT INTO audit_log (ts, kind, user_name, host_name, vm_uuid, vm_name, action, status)
         VALUES (1, 'power', 'op', 'lab', ?, 'br-shutoff', 'start', 'sent')",
    )
    .bind(&shutoff)
    .execute(&app.pool)
    .await
    .unwrap();

    let samples = scraped(&app).await;
    assert!(
        !samples.iter().any(|s| s.labels.get("uuid") == Some(&crashed)),
        "a gone VM is not exported"
    );
    assert_eq!(value(&samples, "vmdeck_host_vms", &[("host", "lab")]), Some(20.0));
    assert_eq!(value(&samples, "vmdeck_control_requests_pending", &[("kind", "power")]), Some(1.0));
    assert_eq!(value(&samples, "vmdeck_login_failures_total", &[]), Some(1.0));
    assert_eq!(
        value(&samples, "vmdeck_audit_entries_total", &[("kind", "login_failed")]),
        Some(1.0)
    );
}

#[tokio::test]
async fn open_alerts_are_counted_by_state_and_severity() {
    let app = spawn_app(with_tokens(AppOptions::breadth())).await;
    let samples = scraped(&app).await;
    let alerts = |samples: &[Sample], state: &str, severity: &str| {
        value(samples, "vmdeck_alerts", &[("state", state), ("severity", severity)])
    };
    assert_eq!(alerts(&samples, "firing", "critical"), Some(0.0), "present before any alert");
    let t0 = vmdeck::db::now_ms() + 86_400_000;
    app.alerts.evaluate(t0).await.unwrap();
    for (name, for_, severity) in [("now", "0", "critical"), ("later", "1h", "info")] {
        let fields = vmdeck::alerts::rules::RuleFields {
            name: name.into(),
            condition: "vm_state".into(),
            expected: "running".into(),
            scope: "pattern".into(),
            scope_value: "br-shut*".into(),
            for_: for_.into(),
            severity: severity.into(),
            ..Default::default()
        };
        let spec = fields.parse().unwrap();
        vmdeck::alerts::store::insert_rule(
            &app.pool,
            &spec,
            vmdeck::alerts::store::Source::Page,
            "t",
            t0,
        )
        .await
        .unwrap();
    }
    app.alerts.evaluate(t0).await.unwrap();
    let samples = scraped(&app).await;
    // br-shutoff and br-shutdown, once per rule.
    assert_eq!(alerts(&samples, "firing", "critical"), Some(2.0));
    assert_eq!(alerts(&samples, "pending", "info"), Some(2.0));
    assert_eq!(alerts(&samples, "firing", "warning"), Some(0.0));
}

#[tokio::test]
async fn label_values_with_quotes_backslashes_and_newlines_are_escaped() {
    let app = spawn_app(with_tokens(AppOptions::breadth())).await;
    let uuid = uuid_of(&app, "br-running").await;
    let odd = "say \"hi\"\\there\nsecond line";
    sqlx::query("UPDATE vms SET name = ? WHERE uuid = ?")
        .bind(odd)
        .bind(&uuid)
        .execute(&app.pool)
        .await
        .unwrap();
    let res = scrape(&app, Some(TOKEN)).await;
    let body = res.text().await.unwrap();
    assert!(
        body.contains(r#"name="say \"hi\"\\there\nsecond line""#),
        "the name escaped as the text format requires"
    );
    let samples = parse(&body);
    let info =
        samples.iter().find(|s| s.name == "vmdeck_vm_info" && s.labels["uuid"] == uuid).unwrap();
    assert_eq!(info.labels["name"], odd, "parses back to the name");
}

/// Every metric name in the PromQL expressions of `monitoring/grafana/vmdeck-dashboard.json`.
fn dashboard_metric_names() -> BTreeSet<String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/monitoring/grafana/vmdeck-dashboard.json");
    let text = std::fs::read_to_string(path).expect("the Grafana dashboard");
    let dash: serde_json::Value = serde_json::from_str(&text).expect("the dashboard is valid JSON");
    let mut exprs = Vec::new();
    fn walk(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    match (k.as_str(), v) {
                        ("expr" | "query", serde_json::Value::String(s)) => out.push(s.clone()),
                        _ => walk(v, out),
                    }
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    walk(&dash, &mut exprs);
    assert!(exprs.len() >= 8, "the dashboard's panels have queries: {exprs:?}");
    let mut names = BTreeSet::new();
    for e in &exprs {
        // Label values and names inside braces are not metric names.
        let mut depth = 0;
        let mut cleaned = String::new();
        let mut in_str = false;
        for c in e.chars() {
            match c {
                '"' => in_str = !in_str,
                '{' if !in_str => depth += 1,
                '}' if !in_str => depth -= 1,
                _ if depth == 0 && !in_str => cleaned.push(c),
                _ => {}
            }
            if c == '{' || c == '}' || c == '"' {
                cleaned.push(' ');
            }
        }
        for word in cleaned.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':')) {
            if word.starts_with("vmdeck_") {
                names.insert(word.to_string());
            }
        }
    }
    assert!(names.len() >= 10, "{names:?}");
    names
}

#[tokio::test]
async fn the_grafana_dashboard_uses_only_exported_metrics() {
    let app = spawn_app(with_tokens(AppOptions::breadth())).await;
    let body = scrape(&app, Some(TOKEN)).await.text().await.unwrap();
    let exported = families(&body);
    assert!(exported.contains("vmdeck_vm_cpu_seconds_total"), "{exported:?}");
    for name in dashboard_metric_names() {
        assert!(
            exported.contains(&name),
            "the dashboard asks for {name}, which vmdeck does not export"
        );
    }
}

/// Every metric family a scrape declares (`# TYPE` lines), with or without series: the breadth
/// lab has no snapshots, but vmdeck exports the family all the same.
fn families(body: &str) -> BTreeSet<String> {
    body.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .map(str::to_string)
        .collect()
}

#[tokio::test]
async fn every_exported_family_is_documented_in_the_readme() {
    let app = spawn_app(with_tokens(AppOptions::breadth())).await;
    let body = scrape(&app, Some(TOKEN)).await.text().await.unwrap();
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    for name in families(&body) {
        assert!(readme.contains(&format!("| `{name}` |")), "README's metrics table lacks {name}");
    }
}

/// `/usr/bin/prometheus`, killed when dropped.
struct Prometheus {
    child: Child,
    port: u16,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    /// Prometheus scraping `target` every second with `token`, its data in `dir`.
    fn start(dir: &std::path::Path, target: &str, token: &str) -> Result<Prometheus, String> {
        let bin = "/usr/bin/prometheus";
        if !std::path::Path::new(bin).exists() {
            return Err(format!(
                "{bin} is missing: run scripts/setup.sh --test (apt-get install prometheus)"
            ));
        }
        let token_file = dir.join("token");
        std::fs::write(&token_file, token).map_err(|e| e.to_string())?;
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: vmdeck\n    scrape_interval: 1s\n    scrape_timeout: 1s\n\
                 \x20   authorization:\n      credentials_file: {}\n\
                 \x20   static_configs:\n      - targets: ['{target}']\n",
                token_file.display()
            ),
        )
        .map_err(|e| e.to_string())?;
        let port = free_port();
        let log = std::fs::File::create(dir.join("prometheus.log")).map_err(|e| e.to_string())?;
        let child = Command::new(bin)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("starting {bin}: {e}"))?;
        Ok(Prometheus { child, port })
    }

    /// An instant query's single value, if it has one.
    async fn query(&self, client: &reqwest::Client, promql: &str) -> Option<f64> {
        let res = client
            .get(format!("http://127.0.0.1:{}/api/v1/query", self.port))
            .query(&[("query", promql)])
            .send()
            .await
            .ok()?;
        let body: serde_json::Value = res.json().await.ok()?;
        let result = body["data"]["result"].as_array()?;
        result.first()?["value"][1].as_str()?.parse().ok()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_scrapes_a_real_vms_cpu_rate_and_state() {
    if let Err(why) = real_vm_tests_enabled() {
        eprintln!("SKIPPED (explicitly): {why}");
        return;
    }
    let daemon = LibvirtDaemon::start().unwrap_or_else(|e| {
        panic!("this test needs a libvirt daemon and QEMU: {e}\n(set VMDECK_SKIP_REAL_VM=1 to skip it explicitly)")
    });
    let uuid = daemon.define_vm("vmdeck-prom", 1, 64, 64).expect("define vmdeck-prom");
    daemon.virsh(&["start", "vmdeck-prom"]).expect("start vmdeck-prom");
    let app = spawn_app(with_tokens(AppOptions {
        poll_interval_secs: 1,
        ..AppOptions::with_hosts(vec![libvirt_host("lab", daemon.uri())])
    }))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let target = app.base.trim_start_matches("http://").to_string();
    let prometheus = Prometheus::start(dir.path(), &target, TOKEN)
        .unwrap_or_else(|e| panic!("{e}\n(set VMDECK_SKIP_REAL_VM=1 to skip it explicitly)"));
    let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();

    let rate = format!("rate(vmdeck_vm_cpu_seconds_total{{uuid=\"{uuid}\"}}[10s])");
    let state = format!("vmdeck_vm_state{{state=\"running\",uuid=\"{uuid}\"}}");
    let log = dir.path().join("prometheus.log");
    let found = crate::support::wait::poll_until(
        Duration::from_secs(120),
        Duration::from_millis(500),
        async || {
            let r = prometheus.query(&client, &rate).await?;
            let s = prometheus.query(&client, &state).await?;
            (r > 0.0 && s == 1.0).then_some((r, s))
        },
    )
    .await;
    let Some((r, _)) = found else {
        let up = prometheus.query(&client, "up{job=\"vmdeck\"}").await;
        panic!(
            "Prometheus never saw the VM's CPU rate and running state (up = {up:?}); its log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    };
    eprintln!("Prometheus: rate(cpu) = {r:.4} CPU-seconds per second");
    // vmdeck counted Prometheus's scrapes as good ones: its target is up.
    let up = eventually_every(
        "Prometheus's vmdeck target up",
        Duration::from_secs(10),
        Duration::from_millis(250),
        async || prometheus.query(&client, "up{job=\"vmdeck\"}").await.filter(|v| *v == 1.0),
    )
    .await;
    assert_eq!(up, 1.0);
}
