//! `vmdeck-alerts-bench`: what alert evaluation costs next to the poll it follows (issue 14:
//! "far less than the poll itself", 1,000 VMs × 10 rules). The real server with one libvirt
//! test-driver host of `--vms` domains (70 % running); ten rules of every kind, several of
//! which hold for hundreds of VMs. Polls are driven one at a time through the poller's own
//! code path, each followed by an evaluation at the real time, and both are timed; the first
//! evaluation after the rules are added (which starts every alert at once) is reported apart.
//!
//! Run: `cargo run --release -p vmdeck-bench --bin vmdeck-alerts-bench -- [--vms 1000]
//! [--rounds 30]`

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use vmdeck::alerts::rules::RuleFields;
use vmdeck::alerts::store::{self, Source};
use vmdeck::alerts::AlertEngine;
use vmdeck::hosts::Hosts;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 1000)]
    vms: usize,
    #[arg(long, default_value_t = 30)]
    rounds: usize,
}

fn rule(name: &str, condition: &str, f: impl FnOnce(&mut RuleFields)) -> RuleFields {
    let mut r =
        RuleFields { name: name.into(), condition: condition.into(), ..RuleFields::default() };
    f(&mut r);
    r
}

/// Ten rules, every condition kind at least once.
fn rules() -> Vec<RuleFields> {
    vec![
        rule("autostart VMs down", "vm_state", |_| {}),
        rule("bench-00 should run", "vm_state", |r| {
            r.expected = "running".into();
            r.scope = "pattern".into();
            r.scope_value = "bench-00*".into();
        }),
        rule("every VM should run (5m)", "vm_state", |r| {
            r.expected = "running".into();
            r.scope = "host".into();
            r.scope_value = "h00".into();
            r.for_ = "5m".into();
        }),
        rule("host down", "host_unreachable", |r| r.severity = "critical".into()),
        rule("CPU above 90 %", "cpu_above", |r| r.threshold = "90".into()),
        rule("CPU above 0 % on bench-1*", "cpu_above", |r| {
            r.threshold = "0".into();
            r.scope = "pattern".into();
            r.scope_value = "bench-1*".into();
        }),
        rule("memory above 80 %", "memory_above", |r| r.threshold = "80".into()),
        rule("disk growth", "disk_growth", |r| {
            r.threshold = "10 GiB".into();
            r.period = "1d".into();
        }),
        rule("failed requests", "request_failed", |r| r.period = "1h".into()),
        rule("old snapshots", "snapshot_age", |r| r.threshold = "14".into()),
    ]
}

#[rocket::main]
async fn main() {
    use rocket::figment::Figment;
    let args = Args::parse();
    let dir = common::Scratch::new("vmdeck-alerts-bench");
    println!("vmdeck-alerts-bench: one host of {} VMs, 10 rules, {} rounds", args.vms, args.rounds);
    println!("machine: {} cores, {}", common::num_cpus(), common::cpu_model());
    let node = dir.path().join("node.xml");
    common::write_node(&node, args.vms);
    let port = common::free_port();
    let hosts = serde_json::json!([{"name": "h00", "driver": "libvirt", "uri": format!("test://{}", node.display())}]);
    let figment = Figment::from(rocket::Config::release_default())
        .merge(("port", port))
        .merge(("log_level", "off"))
        .merge(("secret_key", common::secret_key()))
        .merge(("database_url", format!("sqlite://{}/alerts.db", dir.path().display())))
        // Polls are driven below, one at a time.
        .merge(("poll_interval_secs", 3600))
        .merge(("hosts", hosts));
    let rocket = vmdeck::build(figment).expect("config").ignite().await.expect("ignite");
    let pool = rocket.state::<vmdeck::db::Db>().unwrap().0.clone();
    let hosts = rocket.state::<Arc<Hosts>>().unwrap().clone();
    let engine = rocket.state::<Arc<AlertEngine>>().unwrap().clone();
    let shutdown = rocket.shutdown();
    tokio::spawn(rocket.launch());
    common::wait_until_serving(port).await;
    common::wait_for_vms(&pool, args.vms).await;
    let host = hosts.get("h00").unwrap().clone();
    // A second poll, so every running VM has CPU and memory figures.
    host.poll(&pool).await;

    let now = vmdeck::db::now_ms();
    for r in rules() {
        let spec = r.parse().expect("a valid rule");
        store::insert_rule(&pool, &spec, Source::Page, "bench", now).await.expect("insert rule");
    }
    let first = engine.evaluate(vmdeck::db::now_ms()).await.expect("evaluate");
    println!(
        "\n## first evaluation after adding the rules\n{} rules × {} VMs: {} conditions hold, {} alerts started ({} firing at once); read {:.1} ms, judged {:.2} ms, written {:.1} ms, notifier {:.2} ms",
        first.rules,
        first.vms,
        first.hits,
        first.applied.started,
        first.applied.fired,
        ms(first.read),
        ms(first.judged),
        ms(first.written),
        ms(first.notified)
    );

    let mut polls = Vec::new();
    let mut evals = Vec::new();
    let mut parts = [Vec::new(), Vec::new(), Vec::new(), Vec::new()];
    // The read, taken apart: rules, facts, open alerts (each timed on its own, after the round).
    let mut reads = [Vec::new(), Vec::new(), Vec::new()];
    let mut last = first;
    for _ in 0..args.rounds {
        let t = Instant::now();
        host.poll(&pool).await;
        polls.push(ms(t.elapsed()));
        // The poll woke the server's own evaluation; let it finish, so the one timed here is
        // not queued behind it.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let t = Instant::now();
        last = engine.evaluate(vmdeck::db::now_ms()).await.expect("evaluate");
        evals.push(ms(t.elapsed()));
        for (v, d) in parts.iter_mut().zip([last.read, last.judged, last.written, last.notified]) {
            v.push(ms(d));
        }
        let t = Instant::now();
        let stored = store::rules(&pool).await.unwrap();
        reads[0].push(ms(t.elapsed()));
        let rules = store::eval_rules(&stored);
        let t = Instant::now();
        store::facts(&pool, &rules, &["h00"], vmdeck::db::now_ms()).await.unwrap();
        reads[1].push(ms(t.elapsed()));
        let t = Instant::now();
        store::open_alerts(&pool).await.unwrap();
        reads[2].push(ms(t.elapsed()));
    }
    let open: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM alerts WHERE state IN ('pending', 'firing')")
            .fetch_one(&pool)
            .await
            .unwrap();
    let (pm, pp, pmax) = common::stats(polls);
    let (em, ep, emax) = common::stats(evals);
    println!("\n## steady state: {} polls, each followed by an evaluation", args.rounds);
    println!(
        "open alerts: {open}; the last evaluation: {} conditions held, {} transitions",
        last.hits,
        last.applied.transitions()
    );
    println!("poll (inventory + store): median {pm:.1} ms, p99 {pp:.1} ms, max {pmax:.1} ms");
    println!("evaluation (10 rules):    median {em:.2} ms, p99 {ep:.2} ms, max {emax:.2} ms");
    let names =
        ["read rules, facts and open alerts", "judge (pure)", "write transitions", "notifier"];
    for (name, v) in names.iter().zip(parts) {
        let (m, p, _) = common::stats(v);
        println!("  {name}: median {m:.2} ms, p99 {p:.2} ms");
    }
    for (name, v) in ["rules", "facts", "open alerts"].iter().zip(reads) {
        let (m, p, _) = common::stats(v);
        println!("    read {name} alone: median {m:.2} ms, p99 {p:.2} ms");
    }
    println!("evaluation / poll (medians): {:.1} %", em / pm * 100.0);
    shutdown.notify();
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
