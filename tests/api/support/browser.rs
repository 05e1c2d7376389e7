//! Test support: a headless Chromium driven over WebDriver.
//!
//! Each [`Browser`] owns its own chromedriver (on a free loopback port, in its own process
//! group) and its own fresh Chromium profile in a temporary directory, so tests in one process
//! may start browsers in parallel. Dropping a `Browser` — also while a test panics — ends the
//! WebDriver session, kills chromedriver and whatever is left of its process group (the
//! browser and its helpers), and removes the profile.
//!
//! Binaries: `$VMDECK_CHROMEDRIVER` or `chromedriver` on PATH (else /usr/bin/chromedriver);
//! `$VMDECK_CHROMIUM` or /usr/bin/chromium (else `chromium`/`chromium-browser` on PATH).
//! Browser tests are skipped only when `VMDECK_SKIP_BROWSER=1`; a missing browser is an error.
#![allow(dead_code)]

use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder};
use hyper_util::client::legacy::connect::HttpConnector;

const INSTALL_HINT: &str = "run scripts/setup.sh --test (apt-get install chromium chromium-driver)";
/// How long chromedriver may take to answer `/status` with `ready: true`.
const DRIVER_READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long creating the session (launching Chromium) may take; generous for a loaded CI box.
const SESSION_TIMEOUT: Duration = Duration::from_secs(60);
/// Width and height of the browser window (and of screenshots).
pub const WINDOW_SIZE: (u32, u32) = (1400, 900);

/// Ok(()) unless `VMDECK_SKIP_BROWSER=1` is set (the only way to skip browser tests), then
/// Err(reason).
pub fn browser_tests_enabled() -> Result<(), String> {
    match std::env::var("VMDECK_SKIP_BROWSER") {
        Ok(v) if v.trim() == "1" => {
            Err("browser tests skipped: VMDECK_SKIP_BROWSER=1 is set".to_string())
        }
        _ => Ok(()),
    }
}

/// Directory where tests save screenshots: `$VMDECK_TEST_OUTPUT`, or `target/test-output`
/// under the crate's manifest directory.
pub fn output_dir() -> PathBuf {
    match std::env::var_os("VMDECK_TEST_OUTPUT") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("target").join("test-output"),
    }
}

/// A headless Chromium driven over WebDriver (chromedriver on a free loopback port).
/// Dropping it closes the browser and kills chromedriver.
pub struct Browser {
    pub client: Client,
    // Declared after `client`: dropped last, so the cleanup below runs after the client.
    driver: Driver,
}

impl Browser {
    /// Starts chromedriver and a fresh headless Chromium session.
    ///
    /// Errors (never panics) with a message saying how to install what is missing.
    pub async fn start() -> Result<Browser, String> {
        Self::start_in_zone(None).await
    }

    /// [`Browser::start`], with the browser in the time zone `tz` (an IANA name such as
    /// `Asia/Kathmandu`, set as `TZ` for chromedriver and the browser it launches).
    pub async fn start_in_zone(tz: Option<&str>) -> Result<Browser, String> {
        let chromedriver =
            find_chromedriver().ok_or_else(|| format!("chromedriver not found: {INSTALL_HINT}"))?;
        let chromium =
            find_chromium().ok_or_else(|| format!("chromium not found: {INSTALL_HINT}"))?;

        let dir = tempfile::Builder::new()
            .prefix("vmdeck-browser-")
            .tempdir()
            .map_err(|e| format!("cannot create a temporary directory for the browser: {e}"))?;
        let profile = dir.path().join("profile");
        std::fs::create_dir(&profile)
            .map_err(|e| format!("cannot create {}: {e}", profile.display()))?;

        // A free port can be taken by someone else between our probe and chromedriver's bind;
        // try a few ports before giving up.
        let mut last_err = String::new();
        // chromedriver and Chromium put scratch dirs under $TMPDIR and crash reports under
        // $XDG_CONFIG_HOME: keep both inside `dir`, so nothing outlives the Browser.
        let scratch = dir.path().join("tmp");
        let config = dir.path().join("config");
        for d in [&scratch, &config] {
            std::fs::create_dir(d).map_err(|e| format!("cannot create {}: {e}", d.display()))?;
        }
        let zone = tz.map(PathBuf::from);
        let mut env = vec![("TMPDIR", &scratch), ("XDG_CONFIG_HOME", &config)];
        if let Some(zone) = &zone {
            env.push(("TZ", zone));
        }
        let mut driver = None;
        for attempt in 0..3 {
            let log = dir.path().join(format!("chromedriver-{attempt}.log"));
            match Driver::spawn(&chromedriver, &log, &env).await {
                Ok(d) => {
                    driver = Some(d);
                    break;
                }
                Err(SpawnError::PortTaken(e)) => last_err = e,
                Err(SpawnError::Fatal(e)) => return Err(e),
            }
        }
        let mut driver = driver.ok_or(last_err)?;
        driver.dir = Some(dir);

        let args = [
            "--headless".to_string(),
            "--no-sandbox".to_string(),
            "--disable-gpu".to_string(),
            "--disable-quic".to_string(),
            "--no-first-run".to_string(),
            "--no-default-browser-check".to_string(),
            "--disable-background-networking".to_string(),
            "--disable-component-update".to_string(),
            "--disable-sync".to_string(),
            "--disable-dev-shm-usage".to_string(),
            "--hide-scrollbars".to_string(),
            format!("--user-data-dir={}", profile.display()),
            format!("--window-size={},{}", WINDOW_SIZE.0, WINDOW_SIZE.1),
        ];
        let mut caps = serde_json::Map::new();
        caps.insert("browserName".into(), "chrome".into());
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({ "binary": chromium, "args": args }),
        );

        let url = format!("http://127.0.0.1:{}", driver.port);
        let mut builder = ClientBuilder::new(HttpConnector::new());
        builder.capabilities(caps);
        let connect = builder.connect(&url);
        let client = match tokio::time::timeout(SESSION_TIMEOUT, connect).await {
            Ok(Ok(client)) => client,
            Ok(Err(e)) => {
                return Err(format!(
                    "chromedriver could not start {} : {e}\n{}",
                    chromium.display(),
                    driver.log_tail()
                ))
            }
            Err(_) => {
                return Err(format!(
                    "chromedriver did not start {} within {}s\n{}",
                    chromium.display(),
                    SESSION_TIMEOUT.as_secs(),
                    driver.log_tail()
                ))
            }
        };
        driver.session_id = client.session_creation_response().map(|r| r.session_id().to_string());
        Ok(Browser { client, driver })
    }

    /// Saves a PNG screenshot of the viewport to `dir/name.png`, creating `dir`; returns the
    /// path.
    pub async fn screenshot(&self, dir: &Path, name: &str) -> Result<PathBuf, String> {
        let png = self
            .client
            .screenshot()
            .await
            .map_err(|e| format!("screenshot {name:?} failed: {e}"))?;
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let file = name.strip_suffix(".png").unwrap_or(name);
        let path = dir.join(format!("{file}.png"));
        std::fs::write(&path, png).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        Ok(path)
    }

    /// Closes the session (call at the end of a test; Drop still cleans up if it is not
    /// called).
    pub async fn close(mut self) {
        if tokio::time::timeout(Duration::from_secs(15), self.client.clone().close())
            .await
            .is_ok_and(|r| r.is_ok())
        {
            self.driver.session_id = None;
        }
        // Dropping `self` kills chromedriver and anything left in its process group.
    }
}

/// The chromedriver process and what must be cleaned up with it.
struct Driver {
    child: Child,
    port: u16,
    log: PathBuf,
    /// Set while a WebDriver session may still be open; Drop then ends it politely first.
    session_id: Option<String>,
    /// Holds the Chromium profile and the logs; removed after the processes are gone.
    dir: Option<tempfile::TempDir>,
    /// chromedriver was already waited for: its pid (the group id) may have been reused.
    reaped: bool,
}

enum SpawnError {
    /// chromedriver could not bind its port: worth retrying on another one.
    PortTaken(String),
    Fatal(String),
}

impl Driver {
    async fn spawn(
        chromedriver: &Path,
        log: &Path,
        env: &[(&str, &PathBuf)],
    ) -> Result<Driver, SpawnError> {
        let port = free_port().map_err(SpawnError::Fatal)?;
        let out = File::create(log)
            .map_err(|e| SpawnError::Fatal(format!("cannot create {}: {e}", log.display())))?;
        let err = out
            .try_clone()
            .map_err(|e| SpawnError::Fatal(format!("cannot open {}: {e}", log.display())))?;
        let child = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .envs(env.iter().map(|(k, v)| (k, v.as_os_str())))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            // Own process group: Drop can kill chromedriver and the browser it launched at once.
            .process_group(0)
            .spawn()
            .map_err(|e| {
                SpawnError::Fatal(format!(
                    "cannot run {}: {e}: {INSTALL_HINT}",
                    chromedriver.display()
                ))
            })?;
        let mut driver = Driver {
            child,
            port,
            log: log.to_path_buf(),
            session_id: None,
            dir: None,
            reaped: false,
        };
        driver.wait_ready().await?;
        Ok(driver)
    }

    /// Waits (bounded) until chromedriver answers `/status` with `ready: true`.
    async fn wait_ready(&mut self) -> Result<(), SpawnError> {
        let deadline = Instant::now() + DRIVER_READY_TIMEOUT;
        let started_line = format!("started successfully on port {}", self.port);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                self.reaped = true;
                let log = self.log_tail();
                let msg = format!("chromedriver exited early ({status})\n{log}");
                return Err(if log.contains("ddress already in use") || log.contains("bind") {
                    SpawnError::PortTaken(msg)
                } else {
                    SpawnError::Fatal(msg)
                });
            }
            // The log line proves that *our* chromedriver owns the port (and not some other
            // process that took it after our probe).
            let ours = std::fs::read_to_string(&self.log)
                .map(|l| l.contains(&started_line))
                .unwrap_or(false);
            if ours && status_ready(self.port).await {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(SpawnError::Fatal(format!(
                    "chromedriver did not become ready on port {} within {}s\n{}",
                    self.port,
                    DRIVER_READY_TIMEOUT.as_secs(),
                    self.log_tail()
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(20)..].join("\n");
        format!("chromedriver log ({}):\n{tail}", self.log.display())
    }

    /// Ends the WebDriver session with a blocking `DELETE /session/{id}` (Drop cannot await);
    /// chromedriver then quits the browser cleanly.
    fn delete_session(&self, id: &str) {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
            return;
        };
        let _ = stream.set_write_timeout(Some(Duration::from_secs(2)));
        let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
        let req = format!(
            "DELETE /session/{id} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
            self.port
        );
        if stream.write_all(req.as_bytes()).is_err() {
            return;
        }
        // chromedriver answers "Connection: close" but keeps the socket open: read up to the
        // end of the body instead of to EOF.
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        while http_body(&buf).is_none() {
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        if self.reaped {
            return;
        }
        if let Some(id) = self.session_id.take() {
            self.delete_session(&id);
        }
        // Kill the whole process group (chromedriver, Chromium and its helpers) while
        // chromedriver is still unreaped, so its pid — the group id — cannot have been reused.
        let pgid = self.child.id();
        let group_killed = Command::new("kill")
            .args(["-KILL", "--", &format!("-{pgid}")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !group_killed {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        // `dir` (profile + logs) is removed when the field drops, after this body.
    }
}

/// A port that was free on 127.0.0.1 a moment ago.
fn free_port() -> Result<u16, String> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .map_err(|e| format!("cannot bind a loopback port: {e}"))?;
    listener.local_addr().map(|a| a.port()).map_err(|e| format!("cannot read the bound port: {e}"))
}

/// One `GET /status` to chromedriver; true when it reports `ready: true`.
async fn status_ready(port: u16) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let probe = async {
        let mut stream = tokio::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port)).await.ok()?;
        let req =
            format!("GET /status HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
        stream.write_all(req.as_bytes()).await.ok()?;
        // chromedriver keeps the socket open despite "Connection: close": stop at the body's end.
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let body = loop {
            if let Some(body) = http_body(&buf) {
                break body;
            }
            let n = stream.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let json: serde_json::Value = serde_json::from_slice(body).ok()?;
        json.pointer("/value/ready").and_then(|v| v.as_bool())
    };
    matches!(tokio::time::timeout(Duration::from_secs(2), probe).await, Ok(Some(true)))
}

/// The body of a complete HTTP response in `buf` (per its Content-Length), or None while more
/// bytes are needed.
fn http_body(buf: &[u8]) -> Option<&[u8]> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = std::str::from_utf8(&buf[..end]).ok()?;
    let len = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    buf.get(end..end + len)
}

fn find_chromedriver() -> Option<PathBuf> {
    from_env("VMDECK_CHROMEDRIVER")
        .or_else(|| on_path("chromedriver"))
        .or_else(|| executable(Path::new("/usr/bin/chromedriver")))
}

fn find_chromium() -> Option<PathBuf> {
    from_env("VMDECK_CHROMIUM")
        .or_else(|| executable(Path::new("/usr/bin/chromium")))
        .or_else(|| on_path("chromium"))
        .or_else(|| on_path("chromium-browser"))
}

fn from_env(var: &str) -> Option<PathBuf> {
    let value = std::env::var_os(var).filter(|v| !v.is_empty())?;
    let path = PathBuf::from(value);
    if path.components().count() == 1 {
        on_path(path.to_str()?)
    } else {
        executable(&path)
    }
}

fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).find_map(|dir| executable(&dir.join(name)))
}

fn executable(path: &Path) -> Option<PathBuf> {
    let meta = std::fs::metadata(path).ok()?;
    (meta.is_file() && meta.permissions().mode() & 0o111 != 0).then(|| path.to_path_buf())
}
