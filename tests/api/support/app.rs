//! `spawn_app`: the real application on a real HTTP port with its own SQLite file, built through
//! `vmdeck::build` exactly as `main` does, with a figment that ignores the developer's Rocket.toml.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rocket::figment::Figment;
use serde::Serialize;
use sqlx::SqlitePool;
use vmdeck::db::Db;
use vmdeck::hosts::{Hosts, PollOutcome};

use crate::support::wait::{eventually, eventually_every};

/// One `[[hosts]]` table as a configuration file holds it: `name`, `driver`, and the driver's
/// own keys. Each backend has a helper that fills them (`libvirt_host`, `virtualbox_host`); a new
/// backend adds a helper, not fields.
#[derive(Serialize, Clone, Debug)]
pub struct HostSpec {
    pub name: String,
    pub driver: String,
    #[serde(flatten)]
    pub keys: serde_json::Map<String, serde_json::Value>,
}

impl HostSpec {
    pub fn new(name: &str, driver: &str) -> Self {
        HostSpec { name: name.into(), driver: driver.into(), keys: serde_json::Map::new() }
    }

    /// Sets one of the driver's keys (`command_timeout_secs`, `uri`...).
    pub fn set(&mut self, key: &str, value: impl Serialize) {
        let value = serde_json::to_value(value).expect("a configuration value");
        self.keys.insert(key.into(), value);
    }

    pub fn with(mut self, key: &str, value: impl Serialize) -> Self {
        self.set(key, value);
        self
    }
}

pub fn libvirt_host(name: &str, uri: &str) -> HostSpec {
    HostSpec::new(name, "libvirt").with("uri", uri)
}

/// A VirtualBox host whose `vboxmanage` is `vboxmanage` (the stand-in, in tests).
pub fn virtualbox_host(name: &str, vboxmanage: &Path) -> HostSpec {
    HostSpec::new(name, "virtualbox").with("vboxmanage", vboxmanage.display().to_string())
}

/// The breadth lab: libvirt's test driver loaded with `tests/fixtures/breadth.xml`.
pub fn breadth_uri() -> String {
    format!("test://{}", fixture("breadth.xml").display())
}

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

pub struct TestApp {
    pub base: String,
    pub pool: SqlitePool,
    pub hosts: Arc<Hosts>,
    /// An anonymous client (no cookies, no redirects followed).
    pub client: reqwest::Client,
    /// A logged-in viewer, used by `get`.
    pub viewer: Session,
    /// Every mounted route as `METHOD /uri`, for the route × role matrix.
    pub routes: Vec<String>,
    pub dir: tempfile::TempDir,
    /// The snapshot scheduler, for tests that drive its clock (`tick(now)`).
    pub scheduler: Arc<vmdeck::schedules::Scheduler>,
    /// The alert evaluator, for tests that drive its clock (`evaluate(now)`).
    pub alerts: Arc<vmdeck::alerts::AlertEngine>,
    shutdown: rocket::Shutdown,
}

/// The password every test user gets.
pub const PASSWORD: &str = "correct horse battery";

/// A logged-in client: its cookie jar holds the session, `csrf` is the session's form token.
#[derive(Clone)]
pub struct Session {
    pub client: reqwest::Client,
    pub csrf: String,
    pub base: String,
}

impl Session {
    pub async fn get(&self, path: &str) -> (u16, String) {
        let res = self.client.get(format!("{}{}", self.base, path)).send().await.expect("request");
        (res.status().as_u16(), res.text().await.unwrap_or_default())
    }

    /// POSTs a form; the CSRF token is added unless the form has one already.
    pub async fn post(&self, path: &str, form: &[(&str, &str)]) -> reqwest::Response {
        let mut fields: Vec<(&str, &str)> = form.to_vec();
        if !fields.iter().any(|(k, _)| *k == "csrf_token") {
            fields.push(("csrf_token", &self.csrf));
        }
        self.client
            .post(format!("{}{}", self.base, path))
            .form(&fields)
            .send()
            .await
            .expect("request")
    }

    /// A CSV download: answered 200 as `text/csv`; the header row first, then the records.
    pub async fn csv(&self, path: &str) -> Vec<csv::StringRecord> {
        let res = self.client.get(format!("{}{path}", self.base)).send().await.expect("request");
        assert_eq!(res.status().as_u16(), 200, "{path}");
        assert!(res.headers()["content-type"].to_str().unwrap().starts_with("text/csv"));
        let body = res.text().await.unwrap();
        let mut r = csv::Reader::from_reader(body.as_bytes());
        let mut rows = vec![r.headers().unwrap().clone()];
        rows.extend(r.records().map(|x| x.unwrap()));
        rows
    }

    /// The flash message shown after following a redirect to `location`.
    pub async fn flash_at(&self, location: &str) -> String {
        let (_, html) = self.get(location).await;
        html.split("id=\"flash\">")
            .nth(1)
            .and_then(|s| s.split("</p>").next())
            .map(unescape)
            .unwrap_or_default()
    }
}

/// A client with a cookie jar that does not follow redirects.
pub fn cookie_client() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

/// The CSRF token in a page's forms.
pub fn csrf_in(html: &str) -> Option<String> {
    let start = html.find("name=\"csrf_token\" value=\"")? + "name=\"csrf_token\" value=\"".len();
    let end = html[start..].find('"')? + start;
    Some(html[start..end].to_string())
}

/// Creates a user directly in the database (the CLI and the Users page do the same).
pub async fn add_user(pool: &SqlitePool, name: &str, role: &str) {
    let role = vmdeck::auth::Role::parse(role).expect("role");
    vmdeck::auth::users::add(pool, name, role, PASSWORD.to_string(), false)
        .await
        .expect("add user");
}

/// Logs in through the real login form.
pub async fn login(base: &str, name: &str, password: &str) -> Result<Session, (u16, String)> {
    let client = cookie_client();
    let res = client
        .post(format!("{base}/login"))
        .form(&[("username", name), ("password", password)])
        .send()
        .await
        .expect("login request");
    if res.status().as_u16() != 303 {
        let status = res.status().as_u16();
        return Err((status, res.text().await.unwrap_or_default()));
    }
    let html = client.get(format!("{base}/audit")).send().await.unwrap().text().await.unwrap();
    let csrf = csrf_in(&html).expect("a logged-in page carries a CSRF token");
    Ok(Session { client, csrf, base: base.to_string() })
}

pub struct AppOptions {
    pub hosts: Vec<HostSpec>,
    pub poll_interval_secs: u64,
    pub call_timeout_secs: u64,
    /// Proxies whose `X-Forwarded-For` is believed: lets a test speak as several clients.
    pub trusted_proxies: Vec<String>,
    /// Bearer tokens for `/healthz`'s details.
    pub healthz_tokens: Vec<String>,
    /// The address users reach vmdeck at (`https://…`: behind a TLS-terminating proxy).
    pub public_url: Option<String>,
    /// Any other configuration keys, as a configuration file would give them, e.g.
    /// `("raw_retention_days", json!(365))`.
    pub extra: Vec<(&'static str, serde_json::Value)>,
}

impl Default for AppOptions {
    fn default() -> Self {
        // A long interval: the first poll runs at liftoff, tests drive the rest with `poll`.
        AppOptions {
            hosts: Vec::new(),
            poll_interval_secs: 3600,
            call_timeout_secs: 10,
            trusted_proxies: Vec::new(),
            healthz_tokens: Vec::new(),
            public_url: None,
            extra: Vec::new(),
        }
    }
}

impl AppOptions {
    /// The given hosts, everything else as by default.
    pub fn with_hosts(hosts: Vec<HostSpec>) -> Self {
        AppOptions { hosts, ..AppOptions::default() }
    }

    /// One libvirt host "lab": the breadth lab.
    pub fn breadth() -> Self {
        AppOptions::with_hosts(vec![libvirt_host("lab", &breadth_uri())])
    }
}

/// The app with these hosts and default settings.
pub async fn app_with(hosts: Vec<HostSpec>) -> TestApp {
    spawn_app(AppOptions::with_hosts(hosts)).await
}

/// The app most tests use: one libvirt host "lab", the breadth lab, default settings.
pub async fn breadth_app() -> TestApp {
    spawn_app(AppOptions::breadth()).await
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The figment tests use: Rocket's defaults plus the given values, no Rocket.toml, no env.
pub fn test_figment(dir: &Path, opts: &AppOptions, port: u16) -> Figment {
    let figment = Figment::from(rocket::Config::debug_default())
        .merge(("port", port))
        .merge(("address", "127.0.0.1"))
        .merge(("log_level", "off"))
        .merge(("cli_colors", false))
        .merge(("database_url", format!("sqlite://{}/vmdeck.db", dir.display())))
        .merge(("poll_interval_secs", opts.poll_interval_secs))
        .merge(("call_timeout_secs", opts.call_timeout_secs))
        .merge(("hosts", opts.hosts.clone()))
        .merge(("trusted_proxies", opts.trusted_proxies.clone()))
        .merge(("healthz_tokens", opts.healthz_tokens.clone()))
        .merge(("public_url", opts.public_url.clone()));
    opts.extra.iter().fold(figment, |f, (key, value)| f.merge((*key, value.clone())))
}

pub async fn spawn_app(opts: AppOptions) -> TestApp {
    spawn_app_in(tempfile::tempdir().unwrap(), opts).await
}

/// The app on the database `vmdeck.db` in `dir` (which may hold one already: a restore).
pub async fn spawn_app_in(dir: tempfile::TempDir, opts: AppOptions) -> TestApp {
    let port = free_port();
    let rocket =
        vmdeck::build(test_figment(dir.path(), &opts, port)).expect("valid test configuration");
    let rocket = rocket.ignite().await.expect("ignite");
    let routes = rocket.routes().map(|r| format!("{} {}", r.method, r.uri)).collect();
    let pool = rocket.state::<Db>().expect("db state").0.clone();
    let hosts = rocket.state::<Arc<Hosts>>().expect("hosts state").clone();
    let scheduler =
        rocket.state::<Arc<vmdeck::schedules::Scheduler>>().expect("scheduler state").clone();
    let alerts =
        rocket.state::<Arc<vmdeck::alerts::AlertEngine>>().expect("alert engine state").clone();
    let shutdown = rocket.shutdown();
    tokio::spawn(rocket.launch());
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    eventually_every(
        "the test server answering /healthz",
        Duration::from_secs(5),
        Duration::from_millis(25),
        async || client.get(format!("{base}/healthz")).send().await.is_ok(),
    )
    .await;
    // A restored database already has its viewer.
    if vmdeck::auth::users::credentials(&pool, "viewer", false).await.unwrap().is_none() {
        add_user(&pool, "viewer", "viewer").await;
    }
    let viewer =
        login(&base, "viewer", PASSWORD).await.unwrap_or_else(|e| panic!("viewer login: {e:?}"));
    let app =
        TestApp { base, pool, hosts, client, viewer, routes, dir, scheduler, alerts, shutdown };
    app.wait_for_first_polls().await;
    app
}

impl TestApp {
    /// GET a path as the logged-in viewer; returns status and body.
    pub async fn get(&self, path: &str) -> (u16, String) {
        self.viewer.get(path).await
    }

    /// `/healthz` with its details, as the logged-in viewer sees it.
    pub async fn health(&self) -> serde_json::Value {
        let res = self.viewer.client.get(format!("{}/healthz", self.base)).send().await.unwrap();
        assert_eq!(res.status().as_u16(), 200, "/healthz");
        res.json().await.unwrap()
    }

    /// Creates a user with `role` (named after it unless taken) and logs in as it.
    pub async fn session(&self, role: &str) -> Session {
        let name = format!("{role}-{}", vmdeck::auth::new_token()[..6].to_lowercase());
        add_user(&self.pool, &name, role).await;
        login(&self.base, &name, PASSWORD)
            .await
            .unwrap_or_else(|e| panic!("login as {name}: {e:?}"))
    }

    /// The database id of the configured host `name`.
    pub async fn host_id(&self, name: &str) -> i64 {
        sqlx::query_scalar("SELECT id FROM hosts WHERE name = ?")
            .bind(name)
            .fetch_one(&self.pool)
            .await
            .unwrap_or_else(|e| panic!("no host {name} in the database: {e}"))
    }

    /// Polls one host now, through the poller's own code path.
    pub async fn poll(&self, host: &str) -> PollOutcome {
        let entry = self.hosts.get(host).unwrap_or_else(|| panic!("no host {host}"));
        entry.poll(&self.pool).await
    }

    /// Waits until every host has recorded at least one poll (the one run at liftoff).
    pub async fn wait_for_first_polls(&self) {
        eventually("the first poll of every host", Duration::from_secs(30), async || {
            let n: i64 =
                sqlx::query_scalar("SELECT COUNT(*) FROM hosts WHERE last_poll_id IS NOT NULL")
                    .fetch_one(&self.pool)
                    .await
                    .unwrap();
            n as usize >= self.hosts.0.len()
        })
        .await;
    }
}

impl TestApp {
    /// Stops the server and gives its directory back, to start another on the same database.
    pub async fn stop(mut self) -> tempfile::TempDir {
        self.shutdown.clone().notify();
        self.pool.close().await;
        std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap())
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.clone().notify();
    }
}

/// The text of every `<td class="col-name">` in a page, in order.
pub fn vm_names(html: &str) -> Vec<String> {
    html.split("<td class=\"col-name\"")
        .skip(1)
        .filter_map(|s| {
            let start = s.find('>')? + 1;
            let end = s.find("</td>")?;
            Some(unescape(&strip_tags(&s[start..end])))
        })
        .collect()
}

/// Undoes Tera's HTML escaping.
pub fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#x27;", "'")
        .replace("&#x2F;", "/")
        .replace("&amp;", "&")
}

/// The text of an HTML fragment without its tags.
pub fn strip_tags(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' => in_tag = false,
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    out
}

/// The uuid of the VM named `name` (the test labs use unique names).
pub async fn uuid_of(app: &TestApp, name: &str) -> String {
    sqlx::query_scalar("SELECT uuid FROM vms WHERE name = ?")
        .bind(name)
        .fetch_one(&app.pool)
        .await
        .unwrap()
}
