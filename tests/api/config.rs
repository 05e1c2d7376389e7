//! Configuration errors stop the real binary at startup with one message naming the key, and
//! credentials in URIs never reach logs or pages.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::app::{free_port, login, PASSWORD};
use crate::support::binary::vmdeck_user;
use crate::support::wait::eventually_every;

/// Runs `vmdeck` with `toml` as its configuration file; returns (exit success, stderr+stdout).
fn run_with_config(dir: &Path, toml: &str) -> (bool, String) {
    let file = dir.join("Rocket.toml");
    std::fs::write(&file, toml).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_vmdeck"))
        .current_dir(dir)
        .env("ROCKET_CONFIG", &file)
        .env("ROCKET_PORT", free_port().to_string())
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut out = String::new();
    child.stderr.take().unwrap().read_to_string(&mut out).unwrap();
    child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    (status.is_some_and(|s| s.success()), out)
}

#[test]
fn bad_configuration_stops_startup_with_a_message_naming_the_key() {
    let cases: &[(&str, &str, &str)] = &[
        ("unknown driver", "[[default.hosts]]\nname='a'\ndriver='xen'\nuri='xen:///'\n", "hosts[0].driver"),
        (
            "duplicate host",
            "[[default.hosts]]\nname='a'\ndriver='libvirt'\nuri='test:///default'\n[[default.hosts]]\nname='a'\ndriver='libvirt'\nuri='test:///default'\n",
            "hosts[1].name",
        ),
        ("host name not URL-safe", "[[default.hosts]]\nname='a/b'\ndriver='libvirt'\nuri='test:///default'\n", "hosts[0].name"),
        ("malformed URI", "[[default.hosts]]\nname='a'\ndriver='libvirt'\nuri='not a uri'\n", "hosts[0].uri"),
        ("missing URI", "[[default.hosts]]\nname='a'\ndriver='libvirt'\n", "hosts[0].uri"),
        ("zero interval", "[default]\npoll_interval_secs = 0\n", "poll_interval_secs"),
        ("absurd interval", "[default]\npoll_interval_secs = 99999999\n", "poll_interval_secs"),
        ("interval of the wrong type", "[default]\npoll_interval_secs = 'often'\n", "poll_interval_secs"),
        ("not a sqlite URL", "[default]\ndatabase_url = 'postgres://x/y'\n", "database_url"),
        ("unopenable database", "[default]\ndatabase_url = 'sqlite:///proc/vmdeck/x.db'\n", "database_url"),
        ("malformed TOML", "[default\npoll_interval_secs = 1\n", "Rocket.toml"),
    ];
    for (what, toml, key) in cases {
        let dir = tempfile::tempdir().unwrap();
        let (ok, out) = run_with_config(dir.path(), toml);
        assert!(!ok, "{what}: vmdeck should refuse to start; output:\n{out}");
        assert!(out.contains(key), "{what}: the message should name {key:?}; output:\n{out}");
        assert!(
            out.contains("configuration error") || out.contains("Rocket.toml"),
            "{what}: {out}"
        );
    }
}

#[test]
fn an_unreadable_config_file_is_an_error_not_silently_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_vmdeck"))
        .current_dir(dir.path())
        .env("ROCKET_CONFIG", dir.path().join("missing.toml"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("ROCKET_CONFIG") && text.contains("missing.toml"), "{text}");
}

#[test]
fn credentials_in_a_host_uri_never_reach_logs_or_pages() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    // Port 1 on loopback refuses the connection at once: the poll fails and says so.
    let toml = "[default]\npoll_interval_secs = 1\n[[default.hosts]]\nname='secret'\ndriver='libvirt'\nuri='qemu+tcp://admin:hunter2@127.0.0.1:1/system?password=alsosecret'\n";
    std::fs::write(dir.path().join("Rocket.toml"), toml).unwrap();
    // The list needs a login: create a user with the CLI, password on stdin.
    let config = dir.path().join("Rocket.toml");
    let add = ["add", "watcher", "--role", "viewer"];
    let (added, out) = vmdeck_user(&config, &add, &format!("{PASSWORD}\n"));
    assert!(added, "{out}");
    let mut child = Command::new(env!("CARGO_BIN_EXE_vmdeck"))
        .current_dir(dir.path())
        .env("ROCKET_CONFIG", dir.path().join("Rocket.toml"))
        .env("ROCKET_PORT", port.to_string())
        .env("RUST_LOG", "debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (health, page) = rt.block_on(async {
        let base = format!("http://127.0.0.1:{port}");
        let every = Duration::from_millis(100);
        let client = reqwest::Client::new();
        let up = async || client.get(format!("{base}/healthz")).send().await.is_ok();
        eventually_every("the server answering", Duration::from_secs(20), every, up).await;
        let session = login(&base, "watcher", PASSWORD).await.expect("login");
        // /healthz's details (URIs, errors) are for logged-in users.
        let failing = async || {
            let body = session.get("/healthz").await.1;
            body.contains("\"failing\"").then_some(body)
        };
        let what = "the failing host showing up in /healthz";
        let body = eventually_every(what, Duration::from_secs(20), every, failing).await;
        let page = session.get("/vms").await.1;
        (body, page)
    });
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    let logs =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    for (what, text) in [("/healthz", &health), ("/vms", &page), ("logs", &logs)] {
        assert!(!text.contains("hunter2"), "{what} leaks the password:\n{text}");
        assert!(!text.contains("alsosecret"), "{what} leaks the query secret:\n{text}");
    }
    assert!(page.contains("unreachable"), "the page shows the failing host");
    assert!(page.contains("admin:***@127.0.0.1"), "the redacted URI is shown: {page}");
}

#[test]
fn the_demo_shows_a_one_time_admin_password_on_the_terminal_and_keeps_its_own_database() {
    use std::io::{BufRead, Read};
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    std::fs::write(dir.path().join("Rocket.toml"), "[default]\npoll_interval_secs = 60\n").unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_vmdeck"))
        .current_dir(dir.path())
        .env("ROCKET_CONFIG", dir.path().join("Rocket.toml"))
        .env("ROCKET_PORT", port.to_string())
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let logs = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("has password `").nth(1) {
                let _ = tx.send(rest.split('`').next().unwrap_or_default().to_string());
            }
        }
    });
    // The password is printed at liftoff, after the demo has generated its month of history
    // (a few seconds in release, longer in a debug build on a busy machine).
    let password =
        rx.recv_timeout(Duration::from_secs(120)).expect("the demo prints the admin password");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let page = rt.block_on(async {
        let base = format!("http://127.0.0.1:{port}");
        let logged_in = async || login(&base, "admin", &password).await.ok();
        let every = Duration::from_millis(100);
        let what = "a login with the printed password";
        let session = eventually_every(what, Duration::from_secs(10), every, logged_in).await;
        // Pages and styles come from the binary: this directory has no templates/ or static/.
        let css = session.client.get(format!("{base}/static/vmdeck.css")).send().await.unwrap();
        assert_eq!(css.status().as_u16(), 200);
        assert_eq!(css.headers()["content-type"], "text/css; charset=utf-8");
        assert!(css.text().await.unwrap().contains(".topbar"));
        let missing = session.client.get(format!("{base}/static/nope.css")).send().await.unwrap();
        assert_eq!(missing.status().as_u16(), 404);
        session.get("/vms").await.1
    });
    let _ = child.kill();
    let _ = child.wait();
    assert!(page.contains("DEMO") && page.contains("db-primary"), "the demo lab is shown");
    assert!(page.contains("<!DOCTYPE html>") || page.contains("<!doctype html>"), "{page}");
    assert!(
        dir.path().join("data/templates/base.html.tera").exists(),
        "the built-in templates were unpacked into the data directory"
    );
    let logs = logs.join().unwrap();
    assert!(logs.contains("INFO"), "the log stream was captured: {logs}");
    assert!(!logs.contains(&password), "the password stays out of the log stream");
    // The demo's database is its own file; the production one is never created by it.
    assert!(dir.path().join("data/vmdeck-demo.db").exists());
    assert!(!dir.path().join("data/vmdeck.db").exists());
}

#[test]
fn snapshot_timeout_secs_defaults_to_ten_minutes_and_is_refused_out_of_range_naming_the_key() {
    use rocket::figment::Figment;
    use vmdeck::config::Settings;
    let read = |value: Option<serde_json::Value>| {
        let mut figment = Figment::from(rocket::Config::debug_default());
        if let Some(v) = value {
            figment = figment.merge(("snapshot_timeout_secs", v));
        }
        Settings::from_figment(&figment)
    };
    let secs = |s: Settings| s.snapshot_timeout.as_secs();
    assert_eq!(read(None).map(secs).ok(), Some(600), "the default");
    assert_eq!(read(Some(10.into())).map(secs).ok(), Some(10), "the shortest allowed");
    assert_eq!(read(Some(3600.into())).map(secs).ok(), Some(3600), "the longest allowed");
    for (what, value, words) in [
        ("too short", serde_json::json!(9), "9 is out of range: use 10 to 3600 seconds"),
        ("too long", serde_json::json!(3601), "3601 is out of range: use 10 to 3600 seconds"),
        ("zero", serde_json::json!(0), "0 is out of range"),
        ("not a number", serde_json::json!("long"), ""),
    ] {
        match read(Some(value)) {
            Ok(s) => panic!("{what}: accepted as {:?}", s.snapshot_timeout),
            Err(e) => {
                assert_eq!(e.key, "snapshot_timeout_secs", "{what}: {e}");
                assert!(e.message.contains(words), "{what}: {e}");
            }
        }
    }
}
