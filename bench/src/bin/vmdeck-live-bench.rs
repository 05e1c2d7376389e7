//! `vmdeck-live-bench`: what keeping the VM list current costs (issue 11, "pages that stay
//! current"): N browsers polling the list's fragment `/vms/live` the way `static/live.js` does,
//! with `If-None-Match`, against the real server and its real poller over libvirt's test driver.
//!
//! The browsers run in a child process (this binary with `--clients`), so the CPU time read from
//! `/proc/self/stat` is the server's alone: the HTTP server, the poller writing every poll, SQLite.
//! Three runs after a baseline without clients: the browsers' pace (every `--every-ms`), then as
//! fast as they can with and without the ETag (every answer rendered: the upper bound).
//!
//! Run: `cargo run --release -p vmdeck-bench --bin vmdeck-live-bench -- [--vms 1000]
//! [--browsers 50] [--every-ms 3000] [--poll-secs 10] [--window-secs 30]`

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use clap::Parser;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 1000)]
    vms: usize,
    #[arg(long, default_value_t = 50)]
    browsers: usize,
    /// Each browser's pace in the first run (live.js: 3 s while a request settles).
    #[arg(long, default_value_t = 3000)]
    every_ms: u64,
    #[arg(long, default_value_t = 10)]
    poll_secs: u64,
    #[arg(long, default_value_t = 30)]
    window_secs: u64,
    /// The fragment's query (the default page: 100 rows by name).
    #[arg(long, default_value = "/vms/live")]
    path: String,
    /// Internal: be the browsers: `--clients PORT COOKIE EVERY_MS SECS ETAG(0/1)`.
    #[arg(long, hide = true, num_args = 5)]
    clients: Vec<String>,
}

/// User + system CPU seconds of this process (USER_HZ is 100 on Linux).
fn cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = rest.split_whitespace().map(|v| v.parse().unwrap_or(0.0)).collect();
    (f.get(11).unwrap_or(&0.0) + f.get(12).unwrap_or(&0.0)) / 100.0
}

/// One GET over a keep-alive-less connection, as the bench's other clients do: (status, ETag).
fn get(port: u16, path: &str, cookie: &str, etag: Option<&str>) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    let inm = etag.map(|t| format!("If-None-Match: {t}\r\n")).unwrap_or_default();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nCookie: {cookie}\r\n{inm}\r\n"
    )?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf);
    let head = text.split("\r\n\r\n").next().unwrap_or("");
    let status = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let tag = head
        .lines()
        .find_map(|l| l.strip_prefix("etag: ").or_else(|| l.strip_prefix("ETag: ")))
        .unwrap_or("")
        .to_string();
    Ok((status, tag))
}

/// The child: `browsers` threads, each polling `path` every `every_ms` (0: back to back) for
/// `secs`; prints one line: latencies in ms (p50 p99 max), then counts of 200, 304, other.
fn clients(args: &Args) {
    let [port, cookie, every, secs, etag] = &args.clients[..] else { unreachable!() };
    let (port, every, secs): (u16, u64, u64) =
        (port.parse().unwrap(), every.parse().unwrap(), secs.parse().unwrap());
    let use_etag = etag == "1";
    let end = Instant::now() + Duration::from_secs(secs);
    let threads: Vec<_> = (0..args.browsers)
        .map(|i| {
            let (cookie, path) = (cookie.clone(), args.path.clone());
            std::thread::spawn(move || {
                // Browsers do not start in step.
                std::thread::sleep(Duration::from_millis(every * i as u64 / 50));
                let (mut ms, mut counts, mut tag) = (Vec::new(), [0usize; 3], None::<String>);
                while Instant::now() < end {
                    let t = Instant::now();
                    let (status, new_tag) =
                        get(port, &path, &cookie, tag.as_deref()).unwrap_or((0, String::new()));
                    ms.push(t.elapsed().as_secs_f64() * 1000.0);
                    match status {
                        200 => counts[0] += 1,
                        304 => counts[1] += 1,
                        _ => counts[2] += 1,
                    }
                    if use_etag && !new_tag.is_empty() {
                        tag = Some(new_tag);
                    }
                    if let Some(rest) = Duration::from_millis(every).checked_sub(t.elapsed()) {
                        std::thread::sleep(rest);
                    }
                }
                (ms, counts)
            })
        })
        .collect();
    let (mut all, mut counts) = (Vec::new(), [0usize; 3]);
    for t in threads {
        let (ms, c) = t.join().unwrap();
        all.extend(ms);
        (0..3).for_each(|i| counts[i] += c[i]);
    }
    let (p50, p99, max) = common::stats(all);
    println!("{p50} {p99} {max} {} {} {}", counts[0], counts[1], counts[2]);
}

#[rocket::main]
async fn main() {
    let args = Args::parse();
    if !args.clients.is_empty() {
        return clients(&args);
    }
    let dir = common::Scratch::new("vmdeck-live-bench");
    println!(
        "vmdeck-live-bench: {} VMs on one libvirt test-driver host polled every {} s; {} browsers polling {}",
        args.vms, args.poll_secs, args.browsers, args.path
    );
    println!("machine: {} cores, {}", common::num_cpus(), common::cpu_model());
    let node = dir.path().join("node.xml");
    common::write_node(&node, args.vms);
    let hosts = serde_json::json!([{"name": "h00", "driver": "libvirt", "uri": format!("test://{}", node.display())}]);
    let common::Served { port, pool, shutdown } =
        common::serve(dir.path(), "live.db", args.poll_secs, hosts).await;
    common::wait_for_vms(&pool, args.vms).await;
    let cookies = common::viewer_cookies(&pool, port, "bench").await;
    let cookie: Vec<String> = cookies.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let cookie = cookie.join("; ");
    let (status, _) = get(port, &args.path, &cookie, None).unwrap();
    assert_eq!(status, 200, "the fragment answers");

    let window = args.window_secs;
    let (cpu0, wall0) = (cpu_secs(), Instant::now());
    tokio::time::sleep(Duration::from_secs(window)).await;
    let base = 100.0 * (cpu_secs() - cpu0) / wall0.elapsed().as_secs_f64();
    println!("\nbaseline, no browser (the poller alone): server CPU {base:.1} % of one core");

    let runs = [
        (
            format!(
                "{} browsers, one request every {} ms each, with ETag",
                args.browsers, args.every_ms
            ),
            args.every_ms,
            "1",
        ),
        (format!("{} browsers back to back, with ETag (mostly 304)", args.browsers), 0, "1"),
        (
            format!(
                "{} browsers back to back, without ETag (every answer rendered)",
                args.browsers
            ),
            0,
            "0",
        ),
    ];
    for (what, every, etag) in runs {
        let (cpu0, wall0) = (cpu_secs(), Instant::now());
        let out = Command::new(std::env::current_exe().unwrap())
            .args(["--browsers", &args.browsers.to_string(), "--path", &args.path, "--clients"])
            .args([&port.to_string(), &cookie, &every.to_string(), &window.to_string(), etag])
            .output()
            .expect("the browsers' process");
        let wall = wall0.elapsed().as_secs_f64();
        let cpu = 100.0 * (cpu_secs() - cpu0) / wall;
        let line = String::from_utf8_lossy(&out.stdout);
        let f: Vec<f64> = line.split_whitespace().map(|v| v.parse().unwrap_or(f64::NAN)).collect();
        let [p50, p99, max, ok, not_modified, other] = f[..] else {
            panic!("the browsers' process said {line:?} {}", String::from_utf8_lossy(&out.stderr))
        };
        let n = ok + not_modified + other;
        println!("\n## {what}, {window} s");
        println!(
            "{n:.0} requests = {:.1}/s: {ok:.0} × 200, {not_modified:.0} × 304, {other:.0} other",
            n / wall
        );
        println!("latency (client side, new connection each): p50 {p50:.2} ms, p99 {p99:.2} ms, max {max:.1} ms");
        println!(
            "server CPU {cpu:.1} % of one core ({:.1} % above the baseline; {:.0} µs of CPU a request)",
            cpu - base,
            ((cpu - base).max(0.0) / 100.0 * wall * 1e6) / n.max(1.0)
        );
    }
    shutdown.notify();
}
