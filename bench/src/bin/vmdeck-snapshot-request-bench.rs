//! `vmdeck-snapshot-request-bench`: what a take-snapshot request costs over the bare call
//! (issue 12; goal: at most 20 ms). libvirt's test driver with N domains (default 1,000, as for
//! the power requests in `vmdeck-bench`); for each of `--takes` running VMs in turn:
//!
//! - the bare call: `Backend::snapshot(Take)` on a backend connected directly (a test-driver
//!   connection of its own: its domains are a private copy of the node), timed;
//! - through vmdeck: `POST /vms/bench/<uuid>/snapshots` as an operator over real HTTP to the
//!   real server, timed to its answer (303, once the request is recorded) and, by polling the
//!   audit log, to the entry's `confirmed`; the entry's own timestamps (ms) give the steps.
//!
//! The two are interleaved VM by VM, each VM's first snapshot both times, and each request is
//! confirmed before the next is sent (sequential). Medians and p95 are printed, and the
//! overhead: vmdeck's request-to-confirmed minus the bare call.
//!
//! Run: `cargo run --release -p vmdeck-bench --bin vmdeck-snapshot-request-bench -- [--domains 1000] [--takes 50]`

use std::time::{Duration, Instant};

mod common;

use clap::Parser;
use vmdeck::backend::{libvirt::LibvirtSettings, DriverConfig, SnapshotOp};
use vmdeck::config::HostUri;

#[derive(Parser)]
#[command(about = "Measure a take-snapshot request's overhead over the bare libvirt call")]
struct Args {
    /// Domains in the generated test-driver node.
    #[arg(long, default_value_t = 1000)]
    domains: usize,
    /// Takes measured each way (one per running VM, sequential).
    #[arg(long, default_value_t = 50)]
    takes: usize,
    /// Takes each way before the measured ones (other VMs), not counted.
    #[arg(long, default_value_t = 3)]
    warmup: usize,
}

/// Median and p95 (nearest rank).
fn med_p95(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    let pick = |q: f64| v[((v.len() as f64 - 1.0) * q).round() as usize];
    (pick(0.5), pick(0.95))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// An audit entry's status, error and lifecycle times.
type Audit = (String, Option<String>, i64, Option<i64>, Option<i64>, Option<i64>);

/// One request's figures through vmdeck, in ms.
struct Through {
    /// POST sent to its 303 answer (client side).
    answer: f64,
    /// POST sent to the audit entry seen `confirmed` (client side, polled every 1 ms).
    confirmed: f64,
    /// The audit entry's own spans: requested to sent, sent to accepted, accepted to settled,
    /// requested to settled (ms resolution).
    to_sent: f64,
    sent_to_accepted: f64,
    accepted_to_settled: f64,
    to_settled: f64,
}

#[rocket::main]
async fn main() {
    let args = Args::parse();
    let dir = common::Scratch::new("vmdeck-snapshot-request-bench");
    let node = dir.path().join("bench-node.xml");
    common::write_node(&node, args.domains);
    let uri = format!("test://{}", node.display());
    println!(
        "vmdeck-snapshot-request-bench: {} domains, {} takes each way (+{} warm-up)",
        args.domains, args.takes, args.warmup
    );
    println!("machine: {} cores, {}", common::num_cpus(), common::cpu_model());

    let served = common::serve(
        dir.path(),
        "bench.db",
        3600,
        serde_json::json!([{"name": "bench", "driver": "libvirt", "uri": uri}]),
    )
    .await;
    let (port, pool) = (served.port, served.pool.clone());
    common::wait_for_vms(&pool, args.domains).await;
    let running: Vec<String> = sqlx::query_scalar(
        "SELECT uuid FROM vms WHERE state = 'running' AND gone_at IS NULL ORDER BY name",
    )
    .fetch_all(&pool)
    .await
    .expect("running VMs");
    let needed = args.takes + args.warmup;
    assert!(running.len() >= needed, "needs {needed} running VMs, have {}", running.len());

    let bare = vmdeck::backend::connect(
        &DriverConfig::Libvirt(LibvirtSettings::new(HostUri::parse(&uri).expect("valid URI"))),
        Duration::from_secs(60),
        Duration::from_secs(vmdeck::config::DEFAULT_SNAPSHOT_TIMEOUT_SECS),
    );
    let _ = bare.inventory().await.expect("bare inventory");
    // What the take form sends to libvirt: a running VM's snapshot includes its memory there.
    let with_memory = bare.snapshot_caps().running_with_memory;

    vmdeck::auth::users::add(
        &pool,
        "bench-op",
        vmdeck::auth::Role::Operator,
        common::PASSWORD.into(),
        false,
    )
    .await
    .expect("bench user");
    let (mut http, csrf) =
        tokio::task::spawn_blocking(move || common::login(port, "bench-op", common::PASSWORD))
            .await
            .expect("login thread");

    let mut bare_ms = Vec::new();
    let mut through = Vec::new();
    for (i, uuid) in running.iter().take(needed).enumerate() {
        let warm = i < args.warmup;
        // The bare call.
        let op = SnapshotOp::Take {
            name: format!("bare-{i:03}"),
            description: "bench".into(),
            with_memory,
        };
        let t = Instant::now();
        bare.snapshot(uuid, &op).await.expect("bare take");
        let b = ms(t.elapsed());
        // Through vmdeck.
        let path = format!("/vms/bench/{uuid}/snapshots");
        let name = format!("req-{i:03}");
        let csrf2 = csrf.clone();
        let t = Instant::now();
        let (h, r) = tokio::task::spawn_blocking(move || {
            let r = http.send(
                "POST",
                &path,
                Some(&[("csrf_token", &csrf2), ("name", &name), ("description", "bench")]),
            );
            (http, r)
        })
        .await
        .expect("request thread");
        http = h;
        let answer = ms(t.elapsed());
        let r = r.expect("POST take");
        assert_eq!(r.status, 303, "take on {uuid}: {}", r.body);
        let deadline = Instant::now() + Duration::from_secs(30);
        let row = loop {
            let row: Option<Audit> = sqlx::query_as(
                "SELECT status, error, ts, sent_at, accepted_at, settled_at FROM audit_log \
                 WHERE kind = 'snapshot' AND vm_uuid = ? AND settled_at IS NOT NULL",
            )
            .bind(uuid)
            .fetch_optional(&pool)
            .await
            .expect("audit read");
            if let Some(row) = row {
                break row;
            }
            assert!(Instant::now() < deadline, "take on {uuid} did not settle within 30 s");
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        let confirmed = ms(t.elapsed());
        let (status, error, ts, sent, accepted, settled) = row;
        assert_eq!(status, "confirmed", "take on {uuid}: {error:?}");
        let (Some(sent), Some(accepted), Some(settled)) = (sent, accepted, settled) else {
            panic!("take on {uuid}: confirmed without its lifecycle times");
        };
        if warm {
            continue;
        }
        bare_ms.push(b);
        through.push(Through {
            answer,
            confirmed,
            to_sent: (sent - ts) as f64,
            sent_to_accepted: (accepted - sent) as f64,
            accepted_to_settled: (settled - accepted) as f64,
            to_settled: (settled - ts) as f64,
        });
    }
    // Each take shows in the VM's stored set (recorded by the confirming read).
    let stored: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM vms WHERE snapshot_count = 1 AND gone_at IS NULL")
            .fetch_one(&pool)
            .await
            .expect("stored counts");
    assert_eq!(stored as usize, needed, "VMs with their one snapshot recorded");

    let col = |f: fn(&Through) -> f64| med_p95(through.iter().map(f).collect());
    let (b_med, b_p95) = med_p95(bare_ms);
    let (a_med, a_p95) = col(|t| t.answer);
    let (c_med, c_p95) = col(|t| t.confirmed);
    let (s_med, s_p95) = col(|t| t.to_settled);
    let (rs_med, rs_p95) = col(|t| t.to_sent);
    let (sa_med, sa_p95) = col(|t| t.sent_to_accepted);
    let (as_med, as_p95) = col(|t| t.accepted_to_settled);
    println!(
        "\n## Take-snapshot request ({} VMs on the host, {} takes each way, sequential, each VM's first snapshot)",
        args.domains, args.takes
    );
    println!("| measurement | median | p95 |");
    println!("| --- | --- | --- |");
    println!("| bare Backend::snapshot(Take) (virDomainSnapshotCreateXML) | {b_med:.2} ms | {b_p95:.2} ms |");
    println!("| vmdeck POST /vms/<host>/<uuid>/snapshots to 303 (answered once recorded) | {a_med:.2} ms | {a_p95:.2} ms |");
    println!("| vmdeck POST to audit entry seen confirmed (client, 1 ms polling) | {c_med:.2} ms | {c_p95:.2} ms |");
    println!(
        "| audit entry requested to settled (ms resolution) | {s_med:.0} ms | {s_p95:.0} ms |"
    );
    println!(
        "|   of which requested to sent (slot, `sent` update) | {rs_med:.0} ms | {rs_p95:.0} ms |"
    );
    println!(
        "|   of which sent to accepted (read before, the call) | {sa_med:.0} ms | {sa_p95:.0} ms |"
    );
    println!("|   of which accepted to confirmed (read back, record, settle) | {as_med:.0} ms | {as_p95:.0} ms |");
    println!(
        "overhead, median: POST-to-confirmed minus bare call {:.2} ms (goal <= 20 ms); audit requested-to-settled minus bare call {:.2} ms",
        c_med - b_med,
        s_med - b_med
    );
    served.shutdown.notify();
}
