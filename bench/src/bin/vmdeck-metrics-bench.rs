//! `vmdeck-metrics-bench`: how long a Prometheus scrape of `GET /metrics` takes with 1,000 VMs
//! (issue 14's goal: under 50 ms). The real server polls one libvirt test-driver host of
//! `--vms` domains every `--poll-secs`; scrapes go one after another, each on a fresh
//! connection with a bearer token, while the polls go on, so some scrapes follow a poll and
//! re-read the VM rows (the p99 and maximum) and the others reuse them.
//!
//! Run: `cargo run --release -p vmdeck-bench --bin vmdeck-metrics-bench -- [--vms 1000]
//! [--scrapes 400] [--poll-secs 2]`

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use clap::Parser;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 1000)]
    vms: usize,
    #[arg(long, default_value_t = 400)]
    scrapes: usize,
    #[arg(long, default_value_t = 2)]
    poll_secs: u64,
}

const TOKEN: &str = "bench-metrics-token-0123456789";

/// One scrape: (status, wall time in ms as the client sees it, server-side ms, body bytes).
fn scrape(port: u16) -> std::io::Result<(u16, f64, Option<f64>, usize)> {
    let t = Instant::now();
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"
    )?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let wall = t.elapsed().as_secs_f64() * 1000.0;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let timing = head
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("server-timing:"))
        .and_then(|l| l.split("dur=").nth(1))
        .and_then(|v| v.trim().parse().ok());
    Ok((status, wall, timing, body.len()))
}

#[rocket::main]
async fn main() {
    use rocket::figment::Figment;
    let args = Args::parse();
    let dir = common::Scratch::new("vmdeck-metrics-bench");
    println!(
        "vmdeck-metrics-bench: one host of {} VMs, polls every {} s",
        args.vms, args.poll_secs
    );
    println!("machine: {} cores, {}", common::num_cpus(), common::cpu_model());
    let node = dir.path().join("node.xml");
    common::write_node(&node, args.vms);
    let port = common::free_port();
    let hosts = serde_json::json!([{"name": "h00", "driver": "libvirt", "uri": format!("test://{}", node.display())}]);
    let figment = Figment::from(rocket::Config::release_default())
        .merge(("port", port))
        .merge(("log_level", "off"))
        .merge(("secret_key", common::secret_key()))
        .merge(("database_url", format!("sqlite://{}/metrics.db", dir.path().display())))
        .merge(("poll_interval_secs", args.poll_secs))
        .merge(("metrics_tokens", vec![TOKEN]))
        .merge(("hosts", hosts));
    let rocket = vmdeck::build(figment).expect("config").ignite().await.expect("ignite");
    let pool = rocket.state::<vmdeck::db::Db>().unwrap().0.clone();
    let shutdown = rocket.shutdown();
    tokio::spawn(rocket.launch());
    common::wait_until_serving(port).await;
    common::wait_for_vms(&pool, args.vms).await;
    // Two polls more, so every VM has a sample with counters.
    tokio::time::sleep(Duration::from_secs(2 * args.poll_secs + 1)).await;

    let scrapes = args.scrapes;
    let results = tokio::task::spawn_blocking(move || {
        let mut out = Vec::with_capacity(scrapes);
        for _ in 0..scrapes {
            out.push(scrape(port).expect("scrape"));
            std::thread::sleep(Duration::from_millis(20));
        }
        out
    })
    .await
    .unwrap();
    assert!(results.iter().all(|r| r.0 == 200), "every scrape answered 200");
    let size = results.last().map_or(0, |r| r.3);
    let series = {
        // Counted once, from a fresh scrape's body.
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        write!(s, "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {TOKEN}\r\n\r\n").unwrap();
        let mut body = String::new();
        s.read_to_string(&mut body).unwrap();
        body.split_once("\r\n\r\n")
            .map_or(0, |(_, b)| b.lines().filter(|l| !l.starts_with('#')).count())
    };
    let (wm, wp, wmax) = common::stats(results.iter().map(|r| r.1).collect());
    let server: Vec<f64> = results.iter().filter_map(|r| r.2).collect();
    println!(
        "\n## GET /metrics, {} scrapes while the host polls every {} s",
        args.scrapes, args.poll_secs
    );
    println!("body: {:.0} KiB, {series} series", size as f64 / 1024.0);
    println!("client-side (connect, request, whole body): median {wm:.1} ms, p99 {wp:.1} ms, max {wmax:.1} ms");
    if !server.is_empty() {
        let (sm, sp, smax) = common::stats(server);
        println!(
            "server-side (Server-Timing): median {sm:.1} ms, p99 {sp:.1} ms, max {smax:.1} ms"
        );
    }
    shutdown.notify();
}
