//! `vmdeck-bench`: the figures BENCHMARKS.md records, measured on this machine.
//!
//! It loads libvirt's test driver with N generated domains (default 1,000) and measures, in one
//! run: a full poll + persist beside the bare libvirt calls it makes, server-side render time of
//! `/vms` (from the Server-Timing header) over a few hundred requests, resident memory after 100
//! polls, and Debian's prometheus-libvirt-exporter scraping the same definition.
//!
//! Run: `cargo run --release -p vmdeck-bench --bin vmdeck-bench -- [--domains 1000] [--polls 100] [--requests 300]`

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod common;

use clap::Parser;
use rocket::figment::Figment;
use vmdeck::backend::{libvirt::LibvirtSettings, DriverConfig};
use vmdeck::config::{HostConfig, HostName, HostUri};
use vmdeck::db::Db;
use vmdeck::hosts::{Hosts, PollOutcome};

#[derive(Parser)]
#[command(about = "Measure vmdeck's poll, render and memory figures against libvirt's test driver")]
struct Args {
    /// Domains in the generated test-driver node.
    #[arg(long, default_value_t = 1000)]
    domains: usize,
    /// Polls before memory is measured (the first 20 are also timed against the bare calls).
    #[arg(long, default_value_t = 100)]
    polls: usize,
    /// Requests to `/vms` for the render figures.
    #[arg(long, default_value_t = 300)]
    requests: usize,
    /// Scrapes of prometheus-libvirt-exporter (skipped when it is not installed).
    #[arg(long, default_value_t = 20)]
    scrapes: usize,
    /// Internal: only open a test-driver connection to this node, take one inventory and print
    /// the process's resident memory (the share of the test driver itself).
    #[arg(long, hide = true)]
    driver_only: Option<std::path::PathBuf>,
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

#[rocket::main]
async fn main() {
    let args = Args::parse();
    if let Some(node) = &args.driver_only {
        let backend = vmdeck::backend::connect(
            &libvirt_host("driver", &format!("test://{}", node.display())).driver,
            Duration::from_secs(60),
            Duration::from_secs(vmdeck::config::DEFAULT_SNAPSHOT_TIMEOUT_SECS),
        );
        let n = backend.inventory().await.expect("inventory").len();
        println!("{} {n}", rss_kib());
        return;
    }
    let dir = common::Scratch::new("vmdeck-bench");
    let node = dir.path().join("bench-node.xml");
    common::write_node(&node, args.domains);
    let uri = format!("test://{}", node.display());
    println!(
        "vmdeck-bench: {} domains, {} polls, {} requests",
        args.domains, args.polls, args.requests
    );
    println!("machine: {} cores, {}", common::num_cpus(), common::cpu_model());

    let port = common::free_port();
    let figment = Figment::from(rocket::Config::release_default())
        .merge(("port", port))
        .merge(("log_level", "off"))
        .merge(("secret_key", common::secret_key()))
        .merge(("database_url", format!("sqlite://{}/bench.db", dir.path().display())))
        .merge(("poll_interval_secs", 3600))
        .merge((
            "hosts",
            vec![serde_json::json!({"name": "bench", "driver": "libvirt", "uri": uri})],
        ));
    let rocket = vmdeck::build(figment).expect("config").ignite().await.expect("ignite");
    let pool = rocket.state::<Db>().unwrap().0.clone();
    let cap = rocket.state::<vmdeck::config::Settings>().unwrap().power_concurrency;
    let hosts = rocket.state::<Arc<Hosts>>().unwrap().clone();
    let shutdown = rocket.shutdown();
    tokio::spawn(rocket.launch());
    let host = hosts.get("bench").unwrap().clone();

    // Memory first, before the bench opens a second test-driver connection of its own (the test
    // driver keeps a full copy of the node per connection, which a real host does not).
    for _ in 0..args.polls {
        match host.poll(&pool).await {
            PollOutcome::Recorded(r) => assert_eq!(r.vms, args.domains),
            PollOutcome::Failed(e) => panic!("poll failed: {e}"),
        }
    }
    let rss = rss_kib();
    // The test driver runs inside vmdeck's process (a real host's libvirtd does not): measure
    // what a process holding only that driver and one inventory needs, for comparison.
    let driver_rss = Command::new(std::env::current_exe().unwrap())
        .arg("--driver-only")
        .arg(&node)
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse::<u64>().ok()));
    println!("\n## Memory after {} polls of {} VMs", args.polls, args.domains);
    println!(
        "resident set of the process (server + poller + SQLite + in-process test driver): {:.1} MiB (goal <= 80 MB)",
        rss as f64 / 1024.0
    );
    if let Some(d) = driver_rss {
        println!(
            "  of which a process with only the test driver and one inventory needs {:.1} MiB; vmdeck's own share is about {:.1} MiB",
            d as f64 / 1024.0,
            rss.saturating_sub(d) as f64 / 1024.0
        );
    }

    // The bare calls: the same backend code on its own connection, without persistence,
    // interleaved with full polls so both see the same machine state.
    let bare = vmdeck::backend::connect(
        &libvirt_host("bare", &uri).driver,
        Duration::from_secs(60),
        Duration::from_secs(vmdeck::config::DEFAULT_SNAPSHOT_TIMEOUT_SECS),
    );
    let _ = bare.inventory().await.expect("bare inventory");
    let mut bare_ms = Vec::new();
    let mut full_ms = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        let n = bare.inventory().await.expect("bare").len();
        bare_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(n, args.domains);
        let t = Instant::now();
        match host.poll(&pool).await {
            PollOutcome::Recorded(r) => assert_eq!(r.vms, args.domains),
            PollOutcome::Failed(e) => panic!("poll failed: {e}"),
        }
        full_ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    drop(bare);
    let (bare_med, bare_p99, _) = common::stats(bare_ms);
    let (full_med, full_p99, _) = common::stats(full_ms);
    println!("\n## Poll of {} VMs (20 rounds, interleaved)", args.domains);
    println!("bare libvirt calls : median {bare_med:.1} ms, p99 {bare_p99:.1} ms");
    println!(
        "full poll + persist: median {full_med:.1} ms, p99 {full_p99:.1} ms  (ratio {:.2}x; goal <= 1.5x and < 250 ms)",
        full_med / bare_med
    );

    use common::PASSWORD;
    vmdeck::auth::users::add(
        &pool,
        "bench-op",
        vmdeck::auth::Role::Operator,
        PASSWORD.into(),
        false,
    )
    .await
    .expect("bench user");
    let (viewer, _) =
        tokio::task::spawn_blocking(move || common::login(port, "bench-op", PASSWORD))
            .await
            .unwrap();
    let cookies = viewer.cookies.clone();
    for (path, what) in [
        ("/vms", "default page (first 100 rows, sorted by name)"),
        ("/vms?per_page=all", "every row on one page"),
    ] {
        let mut server_ms = Vec::new();
        let mut client_ms = Vec::new();
        let mut bytes = 0;
        for _ in 0..args.requests {
            let t = Instant::now();
            let (status, timing, len) = tokio::task::spawn_blocking({
                let jar = cookies.clone();
                move || common::http_get(port, path, &jar)
            })
            .await
            .unwrap()
            .expect("GET /vms");
            client_ms.push(t.elapsed().as_secs_f64() * 1000.0);
            assert_eq!(status, 200);
            server_ms.push(timing.expect("Server-Timing header"));
            bytes = len;
        }
        let (s_med, s_p99, s_max) = common::stats(server_ms);
        let (c_med, c_p99, _) = common::stats(client_ms);
        println!(
            "\n## GET {path} with {} VMs: {what} ({} requests, {} KiB page)",
            args.domains,
            args.requests,
            bytes / 1024
        );
        println!("server-side: median {s_med:.2} ms, p99 {s_p99:.2} ms, max {s_max:.2} ms (goal: median <= 15 ms)");
        println!(
            "client-side (loopback, new connection each): median {c_med:.2} ms, p99 {c_p99:.2} ms"
        );
    }
    let db_size = std::fs::metadata(dir.path().join("bench.db")).map(|m| m.len()).unwrap_or(0)
        + std::fs::metadata(dir.path().join("bench.db-wal")).map(|m| m.len()).unwrap_or(0);
    println!("database after {} polls: {:.1} MiB", args.polls, db_size as f64 / 1048576.0);

    control_figures(port, &pool, &uri, args.domains, cap).await;
    exporter(&uri, args.scrapes).await;
    shutdown.notify();
}

async fn exporter(uri: &str, scrapes: usize) {
    println!("\n## prometheus-libvirt-exporter, same definition");
    let port = common::free_port();
    let child = Command::new("prometheus-libvirt-exporter")
        .arg(format!("--libvirt.uri={uri}"))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let Ok(mut child) = child else {
        println!("not installed (apt-get install prometheus-libvirt-exporter); skipped");
        return;
    };
    let mut times = Vec::new();
    let mut ready = false;
    for _ in 0..100 {
        if common::http_get(port, "/", &[]).is_ok() {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if ready {
        let mut size = 0;
        for _ in 0..scrapes {
            let t = Instant::now();
            match tokio::task::spawn_blocking(move || common::http_get(port, "/metrics", &[]))
                .await
                .unwrap()
            {
                Ok((200, _, len)) => {
                    times.push(t.elapsed().as_secs_f64() * 1000.0);
                    size = len;
                }
                other => {
                    println!("scrape failed: {other:?}");
                    break;
                }
            }
        }
        if !times.is_empty() {
            let (med, p99, _) = common::stats(times);
            println!(
                "scrape /metrics: median {med:.1} ms, p99 {p99:.1} ms ({} KiB of metrics)",
                size / 1024
            );
        }
    } else {
        println!("exporter did not start");
    }
    let _ = child.kill();
    let _ = child.wait();
}

async fn control_figures(
    port: u16,
    pool: &sqlx::SqlitePool,
    uri: &str,
    domains: usize,
    cap: usize,
) {
    use common::PASSWORD; // created for the render figures
    let running: Vec<String> = sqlx::query_scalar(
        "SELECT uuid FROM vms WHERE state = 'running' AND gone_at IS NULL ORDER BY name",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    if running.len() < 100 {
        println!("\n## Power control: skipped (needs 100 running VMs, have {})", running.len());
        return;
    }
    let (single, bulk) = running.split_at(50);
    let bulk = &bulk[..50];

    // Request to accepted over HTTP (login, CSRF, audit rows, backend call, 303) against the
    // bare libvirt call, each on 50 distinct running VMs.
    let bare = vmdeck::backend::connect(
        &libvirt_host("bare", uri).driver,
        Duration::from_secs(60),
        Duration::from_secs(vmdeck::config::DEFAULT_SNAPSHOT_TIMEOUT_SECS),
    );
    let _ = bare.inventory().await;
    let mut bare_ms = Vec::new();
    for uuid in single {
        let t = Instant::now();
        bare.power(uuid, vmdeck::backend::PowerAction::Pause).await.expect("bare pause");
        bare_ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let (mut http, csrf) =
        tokio::task::spawn_blocking(move || common::login(port, "bench-op", PASSWORD))
            .await
            .unwrap();
    let mut http_ms = Vec::new();
    for uuid in single {
        let path = format!("/vms/bench/{uuid}/power");
        let csrf = csrf.clone();
        let t = Instant::now();
        let (h, r) = tokio::task::spawn_blocking(move || {
            let r = http.send("POST", &path, Some(&[("csrf_token", &csrf), ("action", "pause")]));
            (http, r)
        })
        .await
        .unwrap();
        http = h;
        http_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(r.expect("power").status, 303);
    }
    // The form is answered once the request is recorded; the send runs in the background, so
    // "request to accepted" is read from the audit entries (requested `ts` to `accepted_at`).
    let to_accepted = settled_spans(pool, "pause", single.len()).await;
    let accepted = to_accepted.len();
    let (b_med, b_p99, _) = common::stats(bare_ms.clone());
    let (h_med, h_p99, _) = common::stats(http_ms);
    let (a_med, a_p99, _) = common::stats(to_accepted);
    println!(
        "\n## Power action: request to accepted ({} VMs on the host, 50 pauses each way)",
        domains
    );
    println!("bare libvirt call (virDomainSuspend): median {b_med:.2} ms, p99 {b_p99:.2} ms");
    println!(
        "vmdeck POST /vms/<host>/<uuid>/power to 303 (answered once recorded): median {h_med:.2} ms, p99 {h_p99:.2} ms"
    );
    println!(
        "vmdeck request to accepted (audit entry, ms resolution): median {a_med:.2} ms, p99 {a_p99:.2} ms ({accepted} accepted) -> overhead {:.2} ms (goal <= 20 ms)",
        a_med - b_med
    );

    // Bulk power-off of 50 VMs in one request.
    let mut form: Vec<(String, String)> = vec![
        ("csrf_token".into(), csrf.clone()),
        ("action".into(), "power_off".into()),
        ("confirm".into(), "yes".into()),
    ];
    form.extend(bulk.iter().map(|u| ("vm".to_string(), format!("bench/{u}"))));
    let t = Instant::now();
    let (h, r) = tokio::task::spawn_blocking(move || {
        let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let r = http.send("POST", "/vms/power", Some(&pairs));
        (http, r)
    })
    .await
    .unwrap();
    let _ = h;
    let wall = t.elapsed().as_secs_f64() * 1000.0;
    assert_eq!(r.expect("bulk").status, 303);
    let to_accepted = settled_spans(pool, "power_off", bulk.len()).await;
    let last_accepted = to_accepted.iter().copied().fold(0.0, f64::max);
    let spans: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT sent_at, accepted_at FROM audit_log WHERE kind = 'power' AND action = 'power_off' AND accepted_at IS NOT NULL",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    // Most requests between sent and accepted at the same moment: the concurrency reached.
    let mut peak = 0;
    for (s, _) in &spans {
        let overlapping = spans.iter().filter(|(s2, a2)| s2 <= s && a2 > s).count();
        peak = peak.max(overlapping);
    }
    let busy_ms: i64 = spans.iter().map(|(s, a)| a - s).sum();
    println!("\n## Bulk power off of 50 VMs in one request");
    println!(
        "POST /vms/power to 303: {wall:.1} ms; all {} accepted {last_accepted:.0} ms after their request (goal: well under 1 s); peak concurrency {peak} (cap {} per host); sum of per-VM send-to-accept times {busy_ms} ms",
        spans.len(),
        cap
    );

    // /vms latency while 10 logins run (argon2 must not stall page loads).
    let page = |n: usize| {
        move || {
            let (mut http, _) = common::login(port, "bench-op", PASSWORD);
            let mut ms = Vec::new();
            for _ in 0..n {
                let t = Instant::now();
                let r = http.send("GET", "/vms", None).expect("GET /vms");
                assert_eq!(r.status, 200);
                ms.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            ms
        }
    };
    let quiet = tokio::task::spawn_blocking(page(50)).await.unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let logins = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..10 {
        let (stop, logins) = (stop.clone(), logins.clone());
        workers.push(std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let mut http = common::Http::new(port);
                if let Ok(r) = http.send(
                    "POST",
                    "/login",
                    Some(&[("username", "bench-op"), ("password", PASSWORD)]),
                ) {
                    if r.status == 303 {
                        logins.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t = Instant::now();
    let loaded = tokio::task::spawn_blocking(page(50)).await.unwrap();
    let secs = t.elapsed().as_secs_f64();
    let done = logins.load(std::sync::atomic::Ordering::Relaxed);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in workers {
        let _ = w.join();
    }
    let (q_med, q_p99, _) = common::stats(quiet);
    let (l_med, l_p99, _) = common::stats(loaded);
    println!("\n## GET /vms while 10 clients log in continuously (argon2id, 19 MiB, t=2)");
    println!("without logins: median {q_med:.2} ms, p99 {q_p99:.2} ms");
    println!(
        "with 10 concurrent login loops: median {l_med:.2} ms, p99 {l_p99:.2} ms ({done} logins done, about {:.0}/s)",
        done as f64 / (secs + 0.3)
    );
}

/// A libvirt host for the bench's own connections.
fn libvirt_host(name: &str, uri: &str) -> HostConfig {
    HostConfig::new(
        HostName::parse(name).expect("valid name"),
        DriverConfig::Libvirt(LibvirtSettings::new(HostUri::parse(uri).expect("valid URI"))),
    )
}

/// Once `count` power requests for `action` have settled past sending (accepted or failed;
/// they are sent in the background after the form's answer), each accepted one's time from
/// request to accepted, in ms. Waits at most a minute.
async fn settled_spans(pool: &sqlx::SqlitePool, action: &str, count: usize) -> Vec<f64> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let done: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM audit_log WHERE kind = 'power' AND action = ? \
             AND (accepted_at IS NOT NULL OR status = 'failed')",
        )
        .bind(action)
        .fetch_one(pool)
        .await
        .unwrap();
        if done as usize >= count || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let spans: Vec<i64> = sqlx::query_scalar(
        "SELECT accepted_at - ts FROM audit_log WHERE kind = 'power' AND action = ? \
         AND accepted_at IS NOT NULL",
    )
    .bind(action)
    .fetch_all(pool)
    .await
    .unwrap();
    spans.into_iter().map(|ms| ms as f64).collect()
}
