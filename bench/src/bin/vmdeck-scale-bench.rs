//! `vmdeck-scale-bench`: one vmdeck with many hosts polling at once (issue 10's ceiling: ten
//! libvirt test-driver hosts of 1,000 VMs each, 10 s polls). It runs the real server with its
//! real poller for a while, then reads back from the database how long each host's polls took,
//! how much CPU the process used, its resident memory with and without the in-process test
//! drivers, and the server-side time (Server-Timing) of every page while the polls go on.
//!
//! Run: `cargo run --release -p vmdeck-bench --bin vmdeck-scale-bench -- [--hosts 10]
//! [--vms-per-host 1000] [--poll-secs 10] [--warmup-secs 60] [--window-secs 120] [--requests 30]`

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use clap::Parser;
use vmdeck::auth::Role;
use vmdeck::backend::libvirt::LibvirtSettings;
use vmdeck::backend::DriverConfig;
use vmdeck::config::HostUri;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 10)]
    hosts: usize,
    #[arg(long, default_value_t = 1000)]
    vms_per_host: usize,
    #[arg(long, default_value_t = 10)]
    poll_secs: u64,
    /// Polling before anything is measured (the first polls insert every VM).
    #[arg(long, default_value_t = 60)]
    warmup_secs: u64,
    /// Polling measured for poll times and CPU share.
    #[arg(long, default_value_t = 120)]
    window_secs: u64,
    /// Requests per page.
    #[arg(long, default_value_t = 30)]
    requests: usize,
    /// Internal: load these nodes into test drivers, print the resident set, exit.
    #[arg(long, hide = true, num_args = 1..)]
    drivers_only: Vec<PathBuf>,
}

/// User + system CPU time of this process, in seconds (USER_HZ is 100 on Linux).
fn cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = rest.split_whitespace().map(|v| v.parse().unwrap_or(0.0)).collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    (f.get(11).unwrap_or(&0.0) + f.get(12).unwrap_or(&0.0)) / 100.0
}

#[rocket::main]
async fn main() {
    let args = Args::parse();
    if !args.drivers_only.is_empty() {
        let mut held = Vec::new();
        for node in &args.drivers_only {
            let uri = HostUri::parse(&format!("test://{}", node.display())).expect("valid URI");
            let driver = DriverConfig::Libvirt(LibvirtSettings::new(uri));
            let backend = vmdeck::backend::connect(
                &driver,
                Duration::from_secs(60),
                Duration::from_secs(vmdeck::config::DEFAULT_SNAPSHOT_TIMEOUT_SECS),
            );
            backend.inventory().await.expect("inventory");
            held.push(backend);
        }
        println!("{}", common::proc_status_kib("VmRSS"));
        return;
    }
    let dir = common::Scratch::new("vmdeck-scale-bench");
    let total = args.hosts * args.vms_per_host;
    println!(
        "vmdeck-scale-bench: {} hosts x {} VMs = {total} VMs, polls every {} s",
        args.hosts, args.vms_per_host, args.poll_secs
    );
    println!("machine: {} cores, {}", common::num_cpus(), common::cpu_model());
    let mut nodes = Vec::new();
    let mut hosts = Vec::new();
    for h in 0..args.hosts {
        let node = dir.path().join(format!("node-{h:02}.xml"));
        common::write_node(&node, args.vms_per_host);
        hosts.push(serde_json::json!({"name": format!("h{h:02}"), "driver": "libvirt", "uri": format!("test://{}", node.display())}));
        nodes.push(node);
    }
    let common::Served { port, pool, shutdown } =
        common::serve(dir.path(), "scale.db", args.poll_secs, serde_json::Value::from(hosts)).await;

    tokio::time::sleep(Duration::from_secs(args.warmup_secs)).await;
    let known: i64 = sqlx::query_scalar("SELECT count(*) FROM vms").fetch_one(&pool).await.unwrap();
    assert_eq!(known as usize, total, "every VM stored during the warm-up");

    // Polling alone: per-host poll times with all hosts polling at once, CPU share.
    let (t0, cpu0, wall0) = (vmdeck::db::now_ms(), cpu_secs(), Instant::now());
    tokio::time::sleep(Duration::from_secs(args.window_secs)).await;
    let (cpu, wall) = (cpu_secs() - cpu0, wall0.elapsed().as_secs_f64());
    let polls: Vec<(String, i64, bool)> = sqlx::query_as(
        "SELECT h.name, p.finished_at - p.started_at, p.ok FROM polls p JOIN hosts h ON h.id = p.host_id
         WHERE p.started_at >= ? AND p.finished_at IS NOT NULL",
    )
    .bind(t0)
    .fetch_all(&pool)
    .await
    .unwrap();
    let failed = polls.iter().filter(|p| !p.2).count();
    let ms: Vec<f64> = polls.iter().filter(|p| p.2).map(|p| p.1 as f64).collect();
    println!("\n## Polling, {} s window after {} s of warm-up", args.window_secs, args.warmup_secs);
    if ms.is_empty() {
        println!("no poll finished in the window");
    } else {
        let (p50, p99, max) = common::stats(ms.clone());
        println!(
            "{} polls ({failed} failed), per-host poll time with all hosts polling at once: p50 {p50:.0} ms, p99 {p99:.0} ms, max {max:.0} ms",
            ms.len() + failed
        );
        let per_host = ms.len() as f64 / args.hosts as f64;
        let expected = args.window_secs as f64 / args.poll_secs as f64;
        println!(
            "polls per host in the window: {per_host:.1} (one every {} s would be {expected:.1})",
            args.poll_secs
        );
    }
    println!(
        "CPU: {cpu:.1} s in {wall:.0} s = {:.1} % of one core ({:.1} % of the machine's {} cores)",
        100.0 * cpu / wall,
        100.0 * cpu / wall / common::num_cpus() as f64,
        common::num_cpus()
    );
    let rss = common::proc_status_kib("VmRSS");
    let drivers = Command::new(std::env::current_exe().unwrap())
        .arg("--drivers-only")
        .args(&nodes)
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<u64>().ok());
    println!(
        "resident set: {:.1} MiB (server + poller + SQLite + {} in-process test drivers)",
        rss as f64 / 1024.0,
        args.hosts
    );
    if let Some(d) = drivers {
        println!(
            "  a process holding only the {} test drivers with one inventory each: {:.1} MiB; vmdeck's own share about {:.1} MiB",
            args.hosts,
            d as f64 / 1024.0,
            rss.saturating_sub(d) as f64 / 1024.0
        );
    }

    // Pages, while the polls go on.
    let viewer = common::viewer_cookies(&pool, port, "bench").await;
    // Operators' rows carry power buttons: the list is measured for both roles.
    vmdeck::auth::users::add(&pool, "bench-op", Role::Operator, common::PASSWORD.into(), false)
        .await
        .expect("operator");
    let operator =
        tokio::task::spawn_blocking(move || common::login(port, "bench-op", common::PASSWORD).0)
            .await
            .expect("login thread")
            .cookies;
    let vm = "00000000-0000-4000-8000-000000000007";
    let pages = [
        ("/vms (default page: 100 rows by name)", "/vms".to_string()),
        ("/vms sorted by CPU, descending", "/vms?sort=cpu&dir=desc".into()),
        ("/vms searched by name", "/vms?q=bench-05".into()),
        ("/vms one host, running only", "/vms?host=h03&state=running".into()),
        ("/vms 1,000 rows a page", "/vms?per_page=1000".into()),
        ("/vms?per_page=all", "/vms?per_page=all".into()),
        ("/vms?per_page=all as an operator (power buttons)", "/vms?per_page=all".into()),
        ("VM page (24 h)", format!("/vms/h00/{vm}")),
        ("/audit", "/audit".into()),
        ("/reports/fleet", "/reports/fleet".into()),
        ("/reports/availability (30 days)", "/reports/availability".into()),
        ("/reports/capacity (30 days)", "/reports/capacity".into()),
        ("/reports/fleet.csv", "/reports/fleet.csv".into()),
        ("/reports/availability.csv", "/reports/availability.csv".into()),
    ];
    println!("\n## Pages with {total} VMs while all hosts poll: server-side time (Server-Timing), {} requests each", args.requests);
    for (what, path) in pages {
        let cookies = if what.contains("operator") { &operator } else { &viewer };
        let (mut ms, mut size) = (Vec::new(), 0);
        for _ in 0..args.requests {
            let (jar, p) = (cookies.clone(), path.clone());
            let (status, timing, len) =
                tokio::task::spawn_blocking(move || common::http_get(port, &p, &jar))
                    .await
                    .unwrap()
                    .unwrap();
            assert_eq!(status, 200, "{path}");
            size = len;
            ms.push(timing.unwrap_or(f64::NAN));
        }
        let (med, p99, _) = common::stats(ms);
        println!("{what}: median {med:.1} ms, p99 {p99:.1} ms ({} KiB)", size / 1024);
    }
    shutdown.notify();
}
