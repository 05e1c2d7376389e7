//! `vmdeck-snapshot-bench`: what reading snapshot sets costs the poller (issue 12). libvirt's
//! test driver with N domains (default 1,000) gets 0, then 5, then 20 snapshots per domain;
//! at each count it measures the steady-state poll (nothing about any VM changed: no snapshot
//! set is read) and the poll right after every running VM changed state (each such VM's set is
//! read and recorded), beside the bare `Backend::snapshots` calls for the same VMs.
//!
//! Run: `cargo run --release -p vmdeck-bench --bin vmdeck-snapshot-bench -- [--domains 1000] [--polls 20]`

use std::sync::Arc;
use std::time::Instant;

mod common;

use clap::Parser;
use rocket::figment::Figment;
use vmdeck::backend::{PowerAction, SnapshotOp};
use vmdeck::db::Db;
use vmdeck::hosts::{HostEntry, Hosts, PollOutcome};

#[derive(Parser)]
#[command(about = "Measure the poll cost of reading snapshot sets against libvirt's test driver")]
struct Args {
    /// Domains in the generated test-driver node.
    #[arg(long, default_value_t = 1000)]
    domains: usize,
    /// Steady-state polls timed at each snapshot count.
    #[arg(long, default_value_t = 20)]
    polls: usize,
    /// Polls right after every running VM changed state, timed at each snapshot count.
    #[arg(long, default_value_t = 4)]
    flips: usize,
}

async fn poll_ms(host: &HostEntry, pool: &sqlx::SqlitePool, domains: usize) -> f64 {
    let t = Instant::now();
    match host.poll(pool).await {
        PollOutcome::Recorded(r) => assert_eq!(r.vms, domains),
        PollOutcome::Failed(e) => panic!("poll failed: {e}"),
    }
    t.elapsed().as_secs_f64() * 1000.0
}

#[rocket::main]
async fn main() {
    let args = Args::parse();
    let dir = common::Scratch::new("vmdeck-snapshot-bench");
    let node = dir.path().join("bench-node.xml");
    common::write_node(&node, args.domains);
    let uri = format!("test://{}", node.display());
    println!(
        "vmdeck-snapshot-bench: {} domains, {} steady polls and {} state flips per count",
        args.domains, args.polls, args.flips
    );
    println!("machine: {} cores, {}", common::num_cpus(), common::cpu_model());

    let figment = Figment::from(rocket::Config::release_default())
        .merge(("port", common::free_port()))
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
    let hosts = rocket.state::<Arc<Hosts>>().unwrap().clone();
    let shutdown = rocket.shutdown();
    tokio::spawn(rocket.launch());
    let host = hosts.get("bench").unwrap().clone();
    while host.runtime().polls == 0 {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let backend = host.backend.clone();
    let inventory = backend.inventory().await.expect("inventory");
    let running: Vec<String> =
        inventory.iter().filter(|r| r.raw_state == "running").map(|r| r.uuid.clone()).collect();
    let all: Vec<String> = inventory.iter().map(|r| r.uuid.clone()).collect();
    // The first polls read every VM's (empty) set once; after them nothing is due.
    for _ in 0..3 {
        poll_ms(&host, &pool, args.domains).await;
    }
    println!(
        "\n## Poll of {} VMs by snapshots per VM ({} running VMs change state for the 'all read' polls)",
        args.domains,
        running.len()
    );
    println!("| snapshots per VM | steady poll median (p99) | sets read in steady polls | poll after every running VM changed state, median (sets read per poll) | bare Backend::snapshots for those VMs |");
    println!("| --- | --- | --- | --- | --- |");
    let mut taken = 0;
    let mut paused = false;
    for per_vm in [0usize, 5, 20] {
        let t = Instant::now();
        while taken < per_vm {
            for uuid in &all {
                let op = SnapshotOp::Take {
                    name: format!("s{taken:02}"),
                    description: "bench".into(),
                    with_memory: false,
                };
                backend.snapshot(uuid, &op).await.expect("take");
            }
            taken += 1;
        }
        if per_vm > 0 {
            eprintln!("took snapshots up to {per_vm} per VM in {:.1} s", t.elapsed().as_secs_f64());
        }
        // Settle: snapshots taken behind the poller's back change nothing it looks at.
        poll_ms(&host, &pool, args.domains).await;
        let reads_before = host.runtime().snapshot_reads;
        let mut steady = Vec::new();
        for _ in 0..args.polls {
            steady.push(poll_ms(&host, &pool, args.domains).await);
        }
        let steady_reads = host.runtime().snapshot_reads - reads_before;
        let mut flipped = Vec::new();
        let mut flip_reads = Vec::new();
        for _ in 0..args.flips {
            let action = if paused { PowerAction::Resume } else { PowerAction::Pause };
            for uuid in &running {
                backend.power(uuid, action).await.expect("state change");
            }
            paused = !paused;
            let before = host.runtime().snapshot_reads;
            flipped.push(poll_ms(&host, &pool, args.domains).await);
            flip_reads.push(host.runtime().snapshot_reads - before);
        }
        let t = Instant::now();
        for uuid in &running {
            let n = backend.snapshots(uuid).await.expect("bare read").len();
            assert_eq!(n, per_vm);
        }
        let bare = t.elapsed().as_secs_f64() * 1000.0;
        // The reads were recorded: each VM that changed state lists them all.
        for uuid in running.iter().take(20) {
            let stored: i64 = sqlx::query_scalar("SELECT snapshot_count FROM vms WHERE uuid = ?")
                .bind(uuid)
                .fetch_one(&pool)
                .await
                .unwrap();
            assert_eq!(stored as usize, per_vm, "{uuid}");
        }
        let (s_med, s_p99, _) = common::stats(steady);
        let (f_med, _, _) = common::stats(flipped);
        println!(
            "| {per_vm} | {s_med:.1} ms ({s_p99:.1} ms) | {steady_reads} | {f_med:.1} ms ({:?}) | {bare:.1} ms |",
            flip_reads
        );
    }
    shutdown.notify();
}
