//! `vmdeck-history-bench`: one year of history for 100 VMs, then the figures issue 4 asks for:
//! VM page render time per range, the fleet-as-of report, database size per VM with the default
//! retention, and rollup maintenance time per poll.
//!
//! History is written through the poller's storage path (`store::record_success`) and rolled up
//! and pruned by the same functions the server's ticker runs. The last two days (the raw
//! retention window) are polled every 10 s, as configured by default; the 363 days before are
//! generated at one poll per 5 minutes, which yields the same rollup rows per VM (one per
//! 5-minute bucket, then hourly and daily) in a few minutes instead of hours.
//!
//! Run: `cargo run --release -p vmdeck-bench --bin vmdeck-history-bench -- [--vms 100] [--days 365]`

mod common;

use std::sync::Arc;
use std::time::Instant;

use clap::Parser;
use rocket::figment::Figment;
use vmdeck::backend::{Counters, Disk, IpAddress, Nic, PowerState, VmConfig, VmReport};
use vmdeck::db::Db;
use vmdeck::history::rollup;
use vmdeck::hosts::store::{self, HostCache};
use vmdeck::hosts::Hosts;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 100)]
    vms: usize,
    #[arg(long, default_value_t = 365)]
    days: i64,
    /// Requests per measured page.
    #[arg(long, default_value_t = 30)]
    requests: usize,
}

fn report(i: usize, poll: i64, running: bool) -> VmReport {
    let t = poll as u64;
    VmReport {
        uuid: format!("00000000-0000-4000-9000-{i:012}"),
        name: format!("hist-{i:03}"),
        state: if running { PowerState::Running } else { PowerState::ShutOff },
        raw_state: if running { "running".into() } else { "shutoff".into() },
        state_reason: "booted".into(),
        config: VmConfig {
            vcpus: 2 + (i % 4) as u32,
            memory_max_kib: 4 << 20,
            memory_current_kib: 4 << 20,
            os_type: "hvm".into(),
            autostart: true,
            persistent: true,
            graphics: None,
            disks: vec![Disk {
                target: "vda".into(),
                device: "disk".into(),
                source: Some(format!("/var/lib/libvirt/images/hist-{i:03}.qcow2")),
                bus: Some("virtio".into()),
                capacity_bytes: Some(40 << 30),
            }],
            nics: vec![Nic {
                mac: format!("52:54:00:10:{:02x}:{:02x}", i / 256, i % 256),
                model: Some("virtio".into()),
                kind: "network".into(),
                source: Some("default".into()),
            }],
        },
        memory_used_kib: running.then_some(2_000_000 + (t * 7919 + i as u64 * 104_729) % 1_000_000),
        counters: Counters {
            cpu_time_ns: running.then_some(t * (1_000_000_000 + i as u64 * 10_000_000)),
            disk_read_bytes: running.then_some(t * (40_000 + i as u64 * 100)),
            disk_write_bytes: running.then_some(t * (90_000 + i as u64 * 50)),
            net_rx_bytes: running.then_some(t * (12_000 + (t % 97) * 100)),
            net_tx_bytes: running.then_some(t * (8_000 + (t % 89) * 100)),
        },
        disk_usage: vec![],
        addresses: if running {
            vec![IpAddress {
                mac: format!("52:54:00:10:{:02x}:{:02x}", i / 256, i % 256),
                addr: std::net::IpAddr::V4(std::net::Ipv4Addr::new(
                    10,
                    1,
                    (i / 250) as u8,
                    (i % 250 + 2) as u8,
                )),
                prefix: 24,
                source: vmdeck::backend::AddrSource::GuestAgent,
            }]
        } else {
            vec![]
        },
        snapshots: None,
    }
}

/// VM `i` is off for one hour in 24 (a nightly maintenance window), at its own hour.
fn running(i: usize, ts: i64) -> bool {
    (ts / 3_600_000) % 24 != (i % 24) as i64
}

#[rocket::main]
async fn main() {
    let args = Args::parse();
    let dir = common::Scratch::new("vmdeck-history-bench");
    let port = common::free_port();
    println!("vmdeck-history-bench: {} VMs, {} days", args.vms, args.days);
    println!("machine: {} cores, {}", common::num_cpus(), common::cpu_model());
    // A host the server cannot reach: its poller records failures and leaves the generated VMs alone.
    let figment = Figment::from(rocket::Config::release_default())
        .merge(("secret_key", common::secret_key()))
        .merge(("port", port))
        .merge(("log_level", "off"))
        .merge(("database_url", format!("sqlite://{}/hist.db", dir.path().display())))
        .merge(("poll_interval_secs", 10))
        .merge(("hosts", vec![serde_json::json!({"name": "gen", "driver": "libvirt", "uri": format!("qemu+unix:///system?socket={}/none.sock", dir.path().display())})]));
    let rocket = vmdeck::build(figment).expect("config").ignite().await.expect("ignite");
    let pool = rocket.state::<Db>().unwrap().0.clone();
    let hosts = rocket.state::<Arc<Hosts>>().unwrap().clone();
    let retention = rocket.state::<vmdeck::config::Settings>().unwrap().retention;
    let shutdown = rocket.shutdown();
    let host_id = hosts.get("gen").unwrap().id;

    let now = vmdeck::db::now_ms();
    let now = now - now % 10_000;
    let recent_from = now - 2 * 86_400_000;
    let start = now - args.days * 86_400_000;
    let mut cache = HostCache::default();
    let t = Instant::now();
    // The older history, one poll per 5 minutes, rolled up and pruned a day at a time.
    let mut ts = start;
    let mut day_end = start + 86_400_000;
    while ts < recent_from {
        let reports: Vec<VmReport> =
            (0..args.vms).map(|i| report(i, ts / 10_000, running(i, ts))).collect();
        store::record_success(&pool, &mut cache, host_id, ts, ts + 50, &reports)
            .await
            .expect("store");
        ts += 300_000;
        if ts >= day_end {
            rollup::maintain(&pool, ts).await.expect("maintain");
            rollup::prune(&pool, &retention, ts).await.expect("prune");
            day_end += 86_400_000;
        }
    }
    println!(
        "generated {} days of older history in {:.0} s",
        (recent_from - start) / 86_400_000,
        t.elapsed().as_secs_f64()
    );

    // The last two days at the real 10 s interval, maintenance every minute as the server does.
    let (mut persist_ms, mut maint_ms, mut polls) = (0.0f64, 0.0f64, 0u64);
    let mut ts = recent_from;
    while ts < now {
        let reports: Vec<VmReport> =
            (0..args.vms).map(|i| report(i, ts / 10_000, running(i, ts))).collect();
        let p = Instant::now();
        store::record_success(&pool, &mut cache, host_id, ts, ts + 50, &reports)
            .await
            .expect("store");
        persist_ms += p.elapsed().as_secs_f64() * 1000.0;
        polls += 1;
        ts += 10_000;
        if polls % 6 == 0 {
            let m = Instant::now();
            rollup::maintain(&pool, ts).await.expect("maintain");
            rollup::prune(&pool, &retention, ts).await.expect("prune");
            maint_ms += m.elapsed().as_secs_f64() * 1000.0;
        }
    }
    println!(
        "generated the last 2 days at 10 s: {polls} polls of {} VMs in {:.0} s total",
        args.vms,
        t.elapsed().as_secs_f64()
    );
    println!("\n## Per poll ({} VMs)", args.vms);
    println!("persist (record_success): mean {:.2} ms", persist_ms / polls as f64);
    println!(
        "rollup maintenance + pruning, run every 6 polls: mean {:.3} ms per poll",
        maint_ms / polls as f64
    );

    // The server starts only now: its own minute ticker would otherwise roll up "now" while the
    // past is still being generated.
    tokio::spawn(rocket.launch());
    common::wait_until_serving(port).await;

    // Size with the default retention.
    let _ = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)").execute(&pool).await;
    let used: i64 = sqlx::query_scalar("SELECT (page_count - freelist_count) * page_size FROM pragma_page_count, pragma_freelist_count, pragma_page_size")
        .fetch_one(&pool)
        .await
        .unwrap_or(0);
    let count = |sql: &'static str| {
        let pool = pool.clone();
        async move { sqlx::query_scalar::<_, i64>(sql).fetch_one(&pool).await.unwrap_or(0) }
    };
    let raw_rows = count("SELECT COUNT(*) FROM samples").await;
    let tiers = [
        count("SELECT COUNT(*) FROM rollups WHERE res = 300").await,
        count("SELECT COUNT(*) FROM rollups WHERE res = 3600").await,
        count("SELECT COUNT(*) FROM rollups WHERE res = 86400").await,
    ];
    let dbstat = |name: &'static str| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>("SELECT sum(pgsize) FROM dbstat WHERE name = ?")
                .bind(name)
                .fetch_one(&pool)
                .await
                .ok()
        }
    };
    println!("\n## Database with the default retention (raw 2 d, 5 min 60 d, 1 h 2 y, 1 d 10 y)");
    println!(
        "database in use: {:.1} MiB = {:.2} MB per VM ({} days of history; goal <= 5 MB per VM)",
        used as f64 / 1_048_576.0,
        used as f64 / 1e6 / args.vms as f64,
        args.days
    );
    println!(
        "rows: {raw_rows} raw samples, {} 5-minute, {} hourly, {} daily rollups",
        tiers[0], tiers[1], tiers[2]
    );
    match (dbstat("samples").await, dbstat("rollups").await) {
        (Some(s), Some(r)) => println!(
            "bytes per raw sample {:.1}, per rollup row {:.1} (sqlite dbstat)",
            s as f64 / raw_rows.max(1) as f64,
            r as f64 / tiers.iter().sum::<i64>().max(1) as f64
        ),
        _ => println!("bytes per row: dbstat not available in this SQLite build"),
    }
    // At full depth the hourly tier holds 2 years and the daily one 10: the rows still to come
    // per VM, at the measured size of a rollup row, give the steady-state size.
    let per_vm = used as f64 / args.vms as f64;
    let rollup_row = match (dbstat("rollups").await, tiers.iter().sum::<i64>()) {
        (Some(b), n) if n > 0 => b as f64 / n as f64,
        _ => 100.0,
    };
    let to_come = (730.0 * 24.0 - tiers[1] as f64 / args.vms as f64).max(0.0)
        + (3650.0 - tiers[2] as f64 / args.vms as f64).max(0.0);
    println!(
        "projected at full depth (hourly 2 y, daily 10 y): {:.2} MB per VM (+{:.0} rollup rows per VM)",
        (per_vm + to_come * rollup_row) / 1e6,
        to_come
    );

    // Page render times.
    let cookies = common::viewer_cookies(&pool, port, "bench").await;
    let uuid = "00000000-0000-4000-9000-000000000007";
    println!("\n## Server-side render time (Server-Timing, median of {} requests)", args.requests);
    let mut medians = Vec::new();
    let at = {
        let a = vmdeck::web::format::absolute(now - 30 * 86_400_000);
        format!("{}T{}", &a[0..10], &a[11..16])
    };
    let pages = [
        ("VM page, 1 hour", format!("/vms/gen/{uuid}?range=1h")),
        ("VM page, 24 hours", format!("/vms/gen/{uuid}?range=24h")),
        ("VM page, 30 days", format!("/vms/gen/{uuid}?range=30d")),
        ("VM page, 1 year", format!("/vms/gen/{uuid}?range=1y")),
        ("fleet as of 30 days ago", format!("/reports/fleet?at={at}")),
        ("fleet now", "/reports/fleet".to_string()),
    ];
    for (what, path) in pages {
        let mut ms = Vec::new();
        for _ in 0..args.requests {
            let (jar, p) = (cookies.clone(), path.clone());
            let (status, timing, _) =
                tokio::task::spawn_blocking(move || common::http_get(port, &p, &jar))
                    .await
                    .unwrap()
                    .unwrap();
            assert_eq!(status, 200, "{path}");
            ms.push(timing.unwrap_or(f64::NAN));
        }
        let (med, p99, _) = common::stats(ms);
        println!("{what}: median {med:.2} ms, p99 {p99:.2} ms");
        medians.push(med);
    }
    println!(
        "1-year page / 1-hour page: {:.2}x (goal <= 2x, and under 50 ms)",
        medians[3] / medians[0]
    );
    shutdown.notify();
}
