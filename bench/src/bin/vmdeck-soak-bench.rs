//! `vmdeck-soak-bench`: the server left running. 1,000 test-driver VMs polled every second by
//! the server's own poller (with its rollup and retention tickers) for an hour, while clients
//! request pages and CSV exports without pause. Every ten minutes it prints the resident set,
//! the open file descriptors, and the poll durations of that stretch (p50/p99, from the
//! `polls` table the poller writes); the goal is flat memory and descriptors after warm-up.
//!
//! Run: `cargo run --release -p vmdeck-bench --bin vmdeck-soak-bench -- [--domains 1000]
//! [--minutes 60] [--report-every 10] [--clients 2] [--pause-ms 250]`

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 1000)]
    domains: usize,
    /// How long the server runs.
    #[arg(long, default_value_t = 60)]
    minutes: u64,
    /// Minutes between two reports.
    #[arg(long, default_value_t = 10)]
    report_every: u64,
    /// Clients requesting pages and CSVs concurrently, each one request after the other.
    #[arg(long, default_value_t = 2)]
    clients: usize,
    /// Pause of each client between two requests, in milliseconds.
    #[arg(long, default_value_t = 250)]
    pause_ms: u64,
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * q).round() as usize]
}

#[rocket::main]
async fn main() {
    let args = Args::parse();
    let dir = common::Scratch::new("vmdeck-soak-bench");
    let node = dir.path().join("soak-node.xml");
    common::write_node(&node, args.domains);
    println!(
        "vmdeck-soak-bench: {} domains polled every 1 s for {} min, {} clients requesting pages ({} ms between requests)",
        args.domains, args.minutes, args.clients, args.pause_ms
    );
    println!("machine: {} cores, {}", common::num_cpus(), common::cpu_model());
    let hosts = serde_json::json!([{"name": "soak", "driver": "libvirt", "uri": format!("test://{}", node.display())}]);
    let common::Served { port, pool, shutdown } =
        common::serve(dir.path(), "soak.db", 1, hosts).await;
    // The clients start once the first poll is stored (before, the VM pages are 404s).
    common::wait_for_vms(&pool, args.domains).await;
    let cookies = common::viewer_cookies(&pool, port, "soak").await;

    let uuid = "00000000-0000-4000-8000-000000000007";
    let pages: Vec<String> = vec![
        "/vms".into(),
        "/vms?per_page=all".into(),
        format!("/vms/soak/{uuid}?range=1h"),
        format!("/vms/soak/{uuid}?range=24h"),
        format!("/vms/soak/{uuid}.csv?range=1h"),
        "/audit".into(),
        "/audit.csv".into(),
        "/reports/fleet".into(),
        "/reports/fleet.csv".into(),
        "/reports/availability".into(),
        "/reports/availability.csv".into(),
        "/reports/capacity".into(),
        "/healthz".into(),
    ];
    let (done, errors) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let end = Instant::now() + Duration::from_secs(args.minutes * 60);
    for c in 0..args.clients {
        let (pages, cookies) = (pages.clone(), cookies.clone());
        let (done, errors, pause_ms) = (done.clone(), errors.clone(), args.pause_ms);
        std::thread::spawn(move || {
            let mut i = c;
            while Instant::now() < end {
                match common::http_get(port, &pages[i % pages.len()], &cookies) {
                    Ok((200, _, _)) => done.fetch_add(1, Ordering::Relaxed),
                    _ => errors.fetch_add(1, Ordering::Relaxed),
                };
                i += 1;
                std::thread::sleep(Duration::from_millis(pause_ms));
            }
        });
    }

    println!(
        "\n| minute | resident set | open fds | polls | poll p50 | poll p99 | requests | failed |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
    let start = Instant::now();
    let mut window_start = vmdeck::db::now_ms();
    let mut last_done = 0;
    let report = |minute: u64, from: i64, served: u64| {
        let pool = pool.clone();
        let errors = errors.clone();
        async move {
            let mut ms: Vec<f64> = sqlx::query_scalar::<_, i64>(
                "SELECT finished_at - started_at FROM polls WHERE started_at >= ? AND ok = 1",
            )
            .bind(from)
            .fetch_all(&pool)
            .await
            .unwrap_or_default()
            .into_iter()
            .map(|d| d as f64)
            .collect();
            ms.sort_by(|a, b| a.total_cmp(b));
            println!(
                "| {minute} | {:.1} MiB | {} | {} | {:.0} ms | {:.0} ms | {served} | {} |",
                common::proc_status_kib("VmRSS") as f64 / 1024.0,
                common::open_fds(),
                ms.len(),
                percentile(&ms, 0.5),
                percentile(&ms, 0.99),
                errors.load(Ordering::Relaxed)
            );
        }
    };
    // The first line after one minute (warm-up), then every `report_every` minutes.
    let mut marks: Vec<u64> = vec![1];
    marks.extend((1..=args.minutes / args.report_every).map(|k| k * args.report_every));
    marks.dedup();
    for minute in marks {
        let at = start + Duration::from_secs(minute * 60);
        tokio::time::sleep_until(at.into()).await;
        let now_done = done.load(Ordering::Relaxed);
        report(minute, window_start, now_done - last_done).await;
        last_done = now_done;
        window_start = vmdeck::db::now_ms();
    }
    let polls: i64 = sqlx::query_scalar("SELECT count(*) FROM polls WHERE ok = 1")
        .fetch_one(&pool)
        .await
        .unwrap_or(0);
    let failed: i64 = sqlx::query_scalar("SELECT count(*) FROM polls WHERE ok = 0")
        .fetch_one(&pool)
        .await
        .unwrap_or(0);
    println!(
        "\n{polls} successful polls, {failed} failed; {} requests served, {} failed",
        done.load(Ordering::Relaxed),
        errors.load(Ordering::Relaxed)
    );
    shutdown.notify();
}
