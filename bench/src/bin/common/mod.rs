//! Helpers shared by the benchmark binaries.
// Each binary includes this module and uses a different subset of it.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};

/// A fresh random secret key: the release profile requires one.
pub fn secret_key() -> String {
    use base64::Engine;
    let mut bytes = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A scratch directory under the system's temp directory, removed at the end of the run.
pub struct Scratch(PathBuf);

impl Scratch {
    pub fn new(prefix: &str) -> Self {
        let p = std::env::temp_dir().join(format!("{prefix}-{}", std::process::id()));
        std::fs::create_dir_all(&p).expect("create scratch directory");
        Scratch(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

pub fn num_cpus() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

/// Median, p99 and maximum.
pub fn stats(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    let pick = |q: f64| v[((v.len() as f64 - 1.0) * q).round() as usize];
    (pick(0.5), pick(0.99), v[v.len() - 1])
}

/// One HTTP/1.1 GET over a fresh connection; returns (status, server-timing ms, body length).
pub fn http_get(
    port: u16,
    path: &str,
    cookies: &[(String, String)],
) -> std::io::Result<(u16, Option<f64>, usize)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    let jar: Vec<String> = cookies.iter().map(|(k, v)| format!("{k}={v}")).collect();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nCookie: {}\r\n\r\n",
        jar.join("; ")
    )?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let timing = head
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("server-timing:"))
        .and_then(|l| l.split("dur=").nth(1))
        .and_then(|v| v.trim().parse().ok());
    Ok((status, timing, body.len()))
}

/// A tiny HTTP/1.1 client with a cookie jar: enough to log in and post forms. (The bench is
/// part of the server crate, which has no HTTP client dependency of its own.)
pub struct Http {
    port: u16,
    pub cookies: Vec<(String, String)>,
}

pub struct Reply {
    pub status: u16,
    pub body: String,
}

impl Http {
    pub fn new(port: u16) -> Self {
        Http { port, cookies: Vec::new() }
    }

    pub fn send(
        &mut self,
        method: &str,
        path: &str,
        form: Option<&[(&str, &str)]>,
    ) -> std::io::Result<Reply> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port))?;
        let body = form
            .map(|f| url::form_urlencoded::Serializer::new(String::new()).extend_pairs(f).finish())
            .unwrap_or_default();
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n",
            self.port
        );
        if !self.cookies.is_empty() {
            let jar: Vec<String> = self.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect();
            req.push_str(&format!("Cookie: {}\r\n", jar.join("; ")));
        }
        if form.is_some() {
            req.push_str(&format!(
                "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n",
                body.len()
            ));
        }
        req.push_str("\r\n");
        req.push_str(&body);
        s.write_all(req.as_bytes())?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf)?;
        let text = String::from_utf8_lossy(&buf).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let status = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        for line in head.lines() {
            if let Some(v) =
                line.strip_prefix("set-cookie: ").or_else(|| line.strip_prefix("Set-Cookie: "))
            {
                if let Some((k, v)) = v.split(';').next().and_then(|kv| kv.split_once('=')) {
                    self.cookies.retain(|(name, _)| name != k);
                    if !v.is_empty() {
                        self.cookies.push((k.to_string(), v.to_string()));
                    }
                }
            }
        }
        Ok(Reply { status, body: body.to_string() })
    }
}

pub fn csrf_of(html: &str) -> String {
    let key = "name=\"csrf_token\" value=\"";
    html.find(key)
        .map(|i| &html[i + key.len()..])
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_default()
        .to_string()
}

pub fn login(port: u16, user: &str, password: &str) -> (Http, String) {
    let mut http = Http::new(port);
    let r = http
        .send("POST", "/login", Some(&[("username", user), ("password", password)]))
        .expect("login");
    assert_eq!(r.status, 303, "login as {user}");
    let page = http.send("GET", "/audit", None).expect("audit page");
    let csrf = csrf_of(&page.body);
    (http, csrf)
}

/// A field of `/proc/self/status` in KiB (`VmRSS`, `VmHWM`), 0 where unavailable.
pub fn proc_status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field) && l[field.len()..].starts_with(':'))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Resets the process's peak resident set (`VmHWM`) to its current size (Linux 4.0+), so the
/// peak of one request can be read afterwards.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// Open file descriptors of this process.
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map(|d| d.count()).unwrap_or(0)
}

/// Writes a test-driver node with `n` domains: 70 % running, the rest shut off, paused or
/// crashed; two disks and two NICs each.
pub fn write_node(path: &Path, n: usize) {
    let mut xml = String::from("<node xmlns:test='http://libvirt.org/schemas/domain/test/1.0'>\n");
    xml.push_str(
        "<network><name>default</name><bridge name='virbr0'/><forward/>\
         <ip address='192.168.122.1' netmask='255.255.255.0'><dhcp><range start='192.168.122.2' end='192.168.122.254'/></dhcp></ip></network>\n",
    );
    for i in 0..n {
        let state = match i % 10 {
            0..=6 => 1,
            7 | 8 => 5,
            _ => 3,
        };
        xml.push_str(&format!(
            "<domain type='test'><name>bench-{i:04}</name><uuid>00000000-0000-4000-8000-{i:012}</uuid>\
             <memory unit='MiB'>{mem}</memory><currentMemory unit='MiB'>{mem}</currentMemory><vcpu>{vcpu}</vcpu>\
             <os><type arch='x86_64'>hvm</type></os><devices>\
             <disk type='file' device='disk'><source file='/var/lib/libvirt/images/bench-{i:04}.qcow2'/><target dev='vda' bus='virtio'/></disk>\
             <disk type='file' device='disk'><source file='/var/lib/libvirt/images/bench-{i:04}-data.qcow2'/><target dev='vdb' bus='virtio'/></disk>\
             <interface type='network'><mac address='52:54:00:{a:02x}:{b:02x}:01'/><source network='default'/><model type='virtio'/></interface>\
             <interface type='bridge'><mac address='52:54:00:{a:02x}:{b:02x}:02'/><source bridge='br0'/><model type='virtio'/></interface>\
             </devices><test:runstate>{state}</test:runstate></domain>\n",
            mem = 512 << (i % 5),
            vcpu = 1 + i % 8,
            a = i / 256,
            b = i % 256,
        ));
    }
    xml.push_str("</node>\n");
    std::fs::write(path, xml).expect("write node definition");
}

/// The benchmarks' accounts' password.
pub const PASSWORD: &str = "staple horse battery 1";

/// Waits until the server on `port` answers (at most 10 s).
pub async fn wait_until_serving(port: u16) {
    for _ in 0..400 {
        if http_get(port, "/healthz", &[]).is_ok() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
}

/// The real application, as a server runs it: release profile, logs off, on a free loopback
/// port, its database `<dir>/<db_file>`, polling `hosts` (a JSON list of `[[hosts]]` tables)
/// every `poll_secs`. Returns once it answers.
pub async fn serve(dir: &Path, db_file: &str, poll_secs: u64, hosts: serde_json::Value) -> Served {
    use rocket::figment::Figment;
    let port = free_port();
    let figment = Figment::from(rocket::Config::release_default())
        .merge(("port", port))
        .merge(("log_level", "off"))
        .merge(("secret_key", secret_key()))
        .merge(("database_url", format!("sqlite://{}/{db_file}", dir.display())))
        .merge(("poll_interval_secs", poll_secs))
        .merge(("hosts", hosts));
    let rocket = vmdeck::build(figment).expect("config").ignite().await.expect("ignite");
    let pool = rocket.state::<vmdeck::db::Db>().unwrap().0.clone();
    let shutdown = rocket.shutdown();
    tokio::spawn(rocket.launch());
    wait_until_serving(port).await;
    Served { port, pool, shutdown }
}

/// A server started by [`serve`].
pub struct Served {
    pub port: u16,
    pub pool: sqlx::SqlitePool,
    pub shutdown: rocket::Shutdown,
}

/// Waits until the first polls have stored `n` VMs (at most a minute): before, their pages
/// are 404s and the list is short.
pub async fn wait_for_vms(pool: &sqlx::SqlitePool, n: usize) {
    for _ in 0..600 {
        let known: i64 =
            sqlx::query_scalar("SELECT count(*) FROM vms").fetch_one(pool).await.unwrap_or(0);
        if known as usize >= n {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Creates a viewer `name` and logs in; returns the session's cookies.
pub async fn viewer_cookies(
    pool: &sqlx::SqlitePool,
    port: u16,
    name: &str,
) -> Vec<(String, String)> {
    vmdeck::auth::users::add(pool, name, vmdeck::auth::Role::Viewer, PASSWORD.into(), false)
        .await
        .expect("bench user");
    let name = name.to_string();
    let (http, _) = tokio::task::spawn_blocking(move || login(port, &name, PASSWORD))
        .await
        .expect("login thread");
    http.cookies
}
