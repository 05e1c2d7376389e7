//! Rollups against brute-force aggregation of the raw samples, on history generated through the
//! poller's own storage path: state changes, counter resets, gaps, VMs appearing and vanishing.

use std::collections::BTreeMap;

use sqlx::SqlitePool;
use vmdeck::backend::{Counters, PowerState, VmConfig, VmReport};
use vmdeck::config::{Driver, HostConfig, HostName, HostUri};
use vmdeck::history::rollup::{self, RESOLUTIONS};
use vmdeck::inventory::store::{self, HostCache};

fn report(uuid: &str, state: PowerState, cpu_ns: u64, disk: u64) -> VmReport {
    VmReport {
        uuid: uuid.into(),
        name: uuid.into(),
        state,
        raw_state: state.as_str().into(),
        state_reason: "test".into(),
        config: VmConfig {
            vcpus: 2,
            memory_max_kib: 1 << 20,
            memory_current_kib: 1 << 20,
            ..VmConfig::default()
        },
        memory_used_kib: (state == PowerState::Running).then_some(400_000 + cpu_ns % 1000),
        counters: Counters {
            cpu_time_ns: Some(cpu_ns),
            disk_read_bytes: Some(disk),
            disk_write_bytes: Some(disk / 2),
            net_rx_bytes: Some(disk / 3),
            net_tx_bytes: None,
        },
        disk_usage: vec![],
        addresses: vec![],
    }
}

/// Two days of polls every 60 s starting just before a UTC midnight, for three VMs.
async fn generate(pool: &SqlitePool) -> i64 {
    let host = HostConfig {
        name: HostName::parse("gen").unwrap(),
        driver: Driver::Libvirt,
        uri: HostUri::parse("test:///default").unwrap(),
        virtualbox: None,
    };
    let host_id = store::upsert_hosts(pool, &[host], false).await.unwrap()[0];
    let mut cache = HostCache::default();
    // 2026-03-28 23:00 UTC: the night Europe moves its clocks, which UTC buckets ignore.
    let start = 1_774_738_800_000i64;
    let mut seed = 7u64;
    let mut rand = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let (mut cpu, mut disk) = ([0u64; 3], [0u64; 3]);
    for i in 0..(2 * 24 * 60) {
        let ts = start + i * 60_000;
        // An hour with no polls at all (vmdeck down): a gap.
        if (600..660).contains(&i) {
            continue;
        }
        let mut reports = Vec::new();
        for vm in 0..3 {
            // VM 2 exists only in the middle of the period.
            if vm == 2 && !(300..2000).contains(&i) {
                continue;
            }
            let state = match (i / 97 + vm as i64) % 5 {
                0 => PowerState::ShutOff,
                1 => PowerState::Paused,
                _ => PowerState::Running,
            };
            if state == PowerState::Running {
                cpu[vm] += rand() % 60_000_000_000;
                disk[vm] += rand() % 50_000_000;
            } else if rand() % 3 == 0 {
                // Counters restart from zero after the VM stops: a reset.
                cpu[vm] = 0;
                disk[vm] = 0;
            }
            reports.push(report(&format!("vm-{vm}"), state, cpu[vm], disk[vm]));
        }
        store::record_success(pool, &mut cache, host_id, ts, ts + 5, &reports).await.unwrap();
    }
    start + 2 * 86_400_000
}

/// One metric's aggregate: (count, min, sum, max).
type Metric = (i64, Option<i64>, Option<i64>, Option<i64>);

/// One raw sample: vm, ts, state, cpu %, memory KiB, disk r/w, net rx/tx rates.
type RawSample = (
    i64,
    i64,
    String,
    Option<f64>,
    Option<i64>,
    Option<f64>,
    Option<f64>,
    Option<f64>,
    Option<f64>,
);

#[derive(Debug, Default, Clone, PartialEq)]
struct Agg {
    n: i64,
    up: i64,
    paused: i64,
    off: i64,
    /// Per metric: (count, min, sum, max).
    m: [Metric; 6],
}

fn add(a: &mut Agg, v: [Option<i64>; 6]) {
    for (slot, value) in a.m.iter_mut().zip(v) {
        if let Some(x) = value {
            slot.0 += 1;
            slot.1 = Some(slot.1.map_or(x, |m| m.min(x)));
            slot.2 = Some(slot.2.unwrap_or(0) + x);
            slot.3 = Some(slot.3.map_or(x, |m| m.max(x)));
        }
    }
}

#[tokio::test]
async fn rollups_equal_brute_force_aggregation_at_every_resolution() {
    let dir = tempfile::tempdir().unwrap();
    let pool =
        vmdeck::db::connect(&format!("sqlite://{}/r.db", dir.path().display())).await.unwrap();
    let end = generate(&pool).await;
    // Maintenance in several steps, as the minute ticker would run it, then once more at the end.
    for step in [end - 86_400_000, end - 3_600_000, end + 2 * 86_400_000] {
        rollup::maintain(&pool, step).await.unwrap();
    }
    let again = rollup::maintain(&pool, end + 2 * 86_400_000).await.unwrap();
    assert_eq!(again.rows, [0, 0, 0], "a second run finds nothing new: no rescans, no duplicates");

    // Brute force straight from the raw samples.
    let raw: Vec<RawSample> = sqlx::query_as(
        "SELECT vm_id, ts, state, cpu_pct, memory_used_kib, disk_read_bps, disk_write_bps, net_rx_bps, net_tx_bps FROM samples",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(
        raw.iter().any(|r| r.5.is_none() && r.2 == "running"),
        "the data has counter resets (rates missing)"
    );
    for res in RESOLUTIONS {
        let mut expected: BTreeMap<(i64, i64), Agg> = BTreeMap::new();
        for r in &raw {
            let bucket = (r.1 / 1000) / res * res;
            let a = expected.entry((r.0, bucket)).or_default();
            a.n += 1;
            match r.2.as_str() {
                "running" => a.up += 1,
                "paused" | "suspended" | "in_transition" => a.paused += 1,
                "shut_off" | "crashed" => a.off += 1,
                _ => {}
            }
            let round = |v: Option<f64>| v.map(|x| x.round() as i64);
            add(
                a,
                [
                    r.3.map(|c| (c * 100.0).round() as i64),
                    r.4,
                    round(r.5),
                    round(r.6),
                    round(r.7),
                    round(r.8),
                ],
            );
        }
        let rows: Vec<(i64, i64, rollup::Row)> = {
            let ids: Vec<i64> =
                sqlx::query_scalar("SELECT id FROM vms").fetch_all(&pool).await.unwrap();
            let mut all = Vec::new();
            for id in ids {
                for row in rollup::rows(&pool, res, id, 0, i64::MAX / 2).await.unwrap() {
                    all.push((id, row.bucket, row));
                }
            }
            all
        };
        let got: BTreeMap<(i64, i64), Agg> = rows
            .into_iter()
            .map(|(id, bucket, r)| {
                let agg = Agg {
                    n: r.n,
                    up: r.up,
                    paused: r.paused,
                    off: r.off,
                    m: [
                        (r.cpu_n, r.cpu_min, r.cpu_sum, r.cpu_max),
                        (r.mem_n, r.mem_min, r.mem_sum, r.mem_max),
                        (r.rd_n, r.rd_min, r.rd_sum, r.rd_max),
                        (r.wr_n, r.wr_min, r.wr_sum, r.wr_max),
                        (r.rx_n, r.rx_min, r.rx_sum, r.rx_max),
                        (r.tx_n, r.tx_min, r.tx_sum, r.tx_max),
                    ],
                };
                ((id, bucket), agg)
            })
            .collect();
        assert_eq!(got.len(), expected.len(), "{res}-second buckets: same set of buckets");
        for (key, want) in &expected {
            assert_eq!(got.get(key), Some(want), "{res}-second bucket {key:?}");
        }
        assert!(got.keys().all(|(_, b)| b % res == 0), "buckets aligned to UTC");
    }
    // A day bucket runs from 00:00 to 24:00 UTC across the DST change.
    let days: Vec<i64> =
        sqlx::query_scalar("SELECT DISTINCT bucket FROM rollups WHERE res = 86400 ORDER BY bucket")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(days, vec![1_774_656_000, 1_774_742_400, 1_774_828_800], "three UTC days touched");
}

#[tokio::test]
async fn long_ranges_on_the_vm_page_read_rollups_with_raw_samples_for_the_newest_minutes() {
    use crate::support::app::{spawn_app, AppOptions};
    // The app's own database, filled through the storage path for a host the app polls too.
    let app = spawn_app(AppOptions {
        hosts: vec![crate::support::app::libvirt_host("lab", &crate::support::app::breadth_uri())],
        poll_interval_secs: 60,
        ..Default::default()
    })
    .await;
    let host_id: i64 = sqlx::query_scalar("SELECT id FROM hosts WHERE name = 'lab'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let now = vmdeck::db::now_ms();
    let mut cache = HostCache::default();
    let start = now - 3 * 86_400_000;
    for i in 0..(3 * 24 * 12) {
        let ts = start + i * 300_000;
        let r = report(
            "long-history-vm",
            PowerState::Running,
            (i as u64) * 30_000_000_000,
            (i as u64) * 1_000_000,
        );
        store::record_success(&app.pool, &mut cache, host_id, ts, ts + 5, &[r]).await.unwrap();
    }
    rollup::maintain(&app.pool, now).await.unwrap();
    let uuid = "long-history-vm";
    let (status, html) = app.get(&format!("/vms/lab/{uuid}?range=30d")).await;
    assert_eq!(status, 200);
    assert!(html.contains("read from hourly rollups"), "30 days come from the hourly tier");
    assert!(html.contains("<title>CPU "), "with points");
    assert!(html.contains("uptime 100.00 %"));
    let (_, html) = app.get(&format!("/vms/lab/{uuid}?range=24h")).await;
    assert!(html.contains("read from 5-minute rollups"));
    let (_, html) = app.get(&format!("/vms/lab/{uuid}?range=1h")).await;
    assert!(html.contains("read from raw samples"));
}
