//! `vmdeck-vbox-bench`: the VirtualBox figures BENCHMARKS.md records, measured on this machine.
//!
//! It runs the VirtualBox backend against the stand-in VBoxManage (`examples/fake_vboxmanage`,
//! built here if missing) loaded with N VMs (default 100: 70 % running with Guest Additions,
//! two disks and two NICs each) and prints: the first poll's time and VBoxManage invocations
//! (cold caches), then the steady state's, both for the bare backend and for a full poll with
//! persistence; and the parser's throughput on the largest `showvminfo` capture.
//!
//! The stand-in answers in about a millisecond where a real VBoxManage takes tens (it talks
//! to VBoxSVC over IPC), so the invocation counts carry over to real hosts and the times do not.
//!
//! Run: `cargo run --release -p vmdeck-bench --bin vmdeck-vbox-bench -- [--vms 100] [--polls 20]`

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use rocket::figment::Figment;
use vmdeck::backend::virtualbox::parse;
use vmdeck::backend::{virtualbox::VirtualBoxSettings, DriverConfig};
use vmdeck::db::Db;
use vmdeck::hosts::{Hosts, PollOutcome};

/// The repository's root (this package lives in `bench/`): the captures and the stand-in's source.
const REPO_ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

#[derive(Parser)]
#[command(
    about = "Measure the VirtualBox backend's poll and parser figures against the stand-in VBoxManage"
)]
struct Args {
    /// VMs the stand-in reports.
    #[arg(long, default_value_t = 100)]
    vms: usize,
    /// Steady-state polls measured after the first.
    #[arg(long, default_value_t = 20)]
    polls: usize,
}

/// One stand-in installation: its directory holds `VBoxManage` (a link to the stand-in), its
/// state and its call log.
struct Stand {
    dir: PathBuf,
}

impl Stand {
    fn new(scratch: &Path, name: &str, fake: &Path, vms: usize) -> Self {
        let dir = scratch.join(name);
        std::fs::create_dir_all(&dir).expect("create stand-in directory");
        std::os::unix::fs::symlink(fake, dir.join("VBoxManage")).expect("link the stand-in");
        let status = Command::new(fake)
            .arg("fake-init")
            .arg(&dir)
            .args(["bench", "--vms", &vms.to_string()])
            .status()
            .expect("run the stand-in");
        assert!(status.success(), "fake-init failed");
        Stand { dir }
    }

    fn vboxmanage(&self) -> PathBuf {
        self.dir.join("VBoxManage")
    }

    fn calls(&self) -> usize {
        std::fs::read_to_string(self.dir.join("calls.log")).map(|s| s.lines().count()).unwrap_or(0)
    }
}

#[rocket::main]
async fn main() {
    let args = Args::parse();
    let scratch = common::Scratch::new("vmdeck-vbox-bench");
    let fake = fake_binary();
    println!(
        "vmdeck-vbox-bench: {} VirtualBox VMs through the stand-in VBoxManage, {} steady-state polls",
        args.vms, args.polls
    );
    println!("machine: {} cores, {}", common::num_cpus(), common::cpu_model());

    // The bare backend: the commands, their parsing and the report, without persistence.
    let bare_stand = Stand::new(scratch.path(), "bare", &fake, args.vms);
    let bare = vmdeck::backend::connect(
        &DriverConfig::Virtualbox(VirtualBoxSettings {
            vboxmanage: bare_stand.vboxmanage().display().to_string(),
            ..VirtualBoxSettings::default()
        }),
        Duration::from_secs(120),
        Duration::from_secs(vmdeck::config::DEFAULT_SNAPSHOT_TIMEOUT_SECS),
    );
    let t = Instant::now();
    let n = bare.inventory().await.expect("first inventory").len();
    let first_ms = t.elapsed().as_secs_f64() * 1000.0;
    let first_calls = bare_stand.calls();
    assert_eq!(n, args.vms);
    let mut bare_ms = Vec::new();
    let mut bare_calls = Vec::new();
    for _ in 0..args.polls {
        let before = bare_stand.calls();
        let t = Instant::now();
        bare.inventory().await.expect("inventory");
        bare_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        bare_calls.push(bare_stand.calls() - before);
    }

    // The full path: the poller's own poll, recorded in SQLite.
    let full_stand = Stand::new(scratch.path(), "full", &fake, args.vms);
    let figment = Figment::from(rocket::Config::release_default())
        .merge(("secret_key", common::secret_key()))
        .merge(("port", common::free_port()))
        .merge(("log_level", "off"))
        .merge(("database_url", format!("sqlite://{}/bench.db", scratch.path().display())))
        .merge(("poll_interval_secs", 3600))
        .merge(("call_timeout_secs", 120))
        .merge((
            "hosts",
            vec![serde_json::json!({
                "name": "vbox",
                "driver": "virtualbox",
                "vboxmanage": full_stand.vboxmanage(),
            })],
        ));
    let rocket = vmdeck::build(figment).expect("config").ignite().await.expect("ignite");
    let pool = rocket.state::<Db>().unwrap().0.clone();
    let hosts = rocket.state::<Arc<Hosts>>().unwrap().clone();
    let shutdown = rocket.shutdown();
    tokio::spawn(rocket.launch());
    let host = hosts.get("vbox").unwrap().clone();
    // The poller's first poll runs at liftoff; wait for it.
    while host.runtime().polls == 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut full_ms = Vec::new();
    let mut full_calls = Vec::new();
    for _ in 0..args.polls {
        let before = full_stand.calls();
        let t = Instant::now();
        match host.poll(&pool).await {
            PollOutcome::Recorded(r) => assert_eq!(r.vms, args.vms),
            PollOutcome::Failed(e) => panic!("poll failed: {e}"),
        }
        full_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        full_calls.push(full_stand.calls() - before);
    }
    shutdown.notify();

    let per_vm = |calls: usize| calls as f64 / args.vms as f64;
    let steady = *bare_calls.iter().max().unwrap_or(&0);
    assert!(
        bare_calls.iter().chain(&full_calls).all(|&c| c == steady),
        "the steady state runs the same commands every poll: {bare_calls:?} {full_calls:?}"
    );
    let (b_med, b_p99) = stats(bare_ms);
    let (f_med, f_p99) = stats(full_ms);
    println!("\n## Poll of {} VMs", args.vms);
    println!(
        "first poll (cold caches), backend only: {first_ms:.0} ms, {first_calls} VBoxManage invocations ({:.2} per VM)",
        per_vm(first_calls)
    );
    println!(
        "steady state, backend only:   median {b_med:.0} ms, p99 {b_p99:.0} ms; {steady} invocations per poll ({:.2} per VM; goal <= 2)",
        per_vm(steady)
    );
    println!("steady state, poll + persist: median {f_med:.0} ms, p99 {f_p99:.0} ms");

    println!("\n## Parser");
    let (name, text) = largest_showvminfo_capture();
    let mb_s = throughput(&text, |t| {
        std::hint::black_box(parse::vm_info(t));
    });
    println!(
        "showvminfo --machinereadable → VmInfo, largest capture ({name}, {} bytes): {mb_s:.0} MB/s",
        text.len()
    );
}

/// Parses `text` repeatedly for about a second; MB (10^6 bytes) per second.
fn throughput(text: &str, parse: impl Fn(&str)) -> f64 {
    let mut bytes = 0usize;
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(1) {
        for _ in 0..100 {
            parse(text);
        }
        bytes += text.len() * 100;
    }
    bytes as f64 / 1e6 / t.elapsed().as_secs_f64()
}

/// The largest `showvminfo` output among the real captures (transcripts excluded).
fn largest_showvminfo_capture() -> (String, String) {
    let dir = Path::new(REPO_ROOT).join("tests/fixtures/virtualbox");
    std::fs::read_dir(&dir)
        .expect("the captures")
        .filter_map(|e| {
            let path = e.ok()?.path();
            let name = path.file_name()?.to_str()?.to_string();
            (name.starts_with("showvminfo") && !name.contains("log-excerpt"))
                .then(|| (name, std::fs::read_to_string(&path).ok()))
        })
        .filter_map(|(name, text)| Some((name, text?)))
        .max_by_key(|(_, text)| text.len())
        .expect("a showvminfo capture")
}

/// The stand-in, next to this binary (`target/<profile>/examples/`); built if missing or
/// older than its source.
fn fake_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("own path");
    let profile_dir = exe.parent().expect("target/<profile>");
    let bin = profile_dir.join("examples/fake_vboxmanage");
    let source = Path::new(REPO_ROOT).join("examples/fake_vboxmanage.rs");
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    if modified(&bin) < modified(&source) {
        let release = profile_dir.ends_with("release");
        let mut cargo = Command::new(env!("CARGO"));
        cargo
            .args(["build", "-p", "vmdeck", "--example", "fake_vboxmanage"])
            .current_dir(REPO_ROOT);
        if release {
            cargo.arg("--release");
        }
        let status = cargo.status().expect("run cargo");
        assert!(status.success(), "building the stand-in failed");
    }
    bin
}

fn stats(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    let pick = |q: f64| v[((v.len() as f64 - 1.0) * q).round() as usize];
    (pick(0.5), pick(0.99))
}
