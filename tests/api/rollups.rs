//! Rollups against brute-force aggregation of the raw samples, on history generated through the
//! poller's own storage path: state changes, counter resets, gaps, VMs appearing and vanishing.

use std::collections::BTreeMap;

use sqlx::SqlitePool;
use vmdeck::backend::{libvirt::LibvirtSettings, DriverConfig};
use vmdeck::backend::{Counters, PowerState, VmConfig, VmReport};
use vmdeck::config::{HostConfig, HostName, HostUri};
use vmdeck::history::rollup::{self, RESOLUTIONS};
use vmdeck::hosts::store::{self, HostCache};

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
        snapshots: None,
    }
}

/// Two days of polls every 60 s starting just before a UTC midnight, for three VMs.
async fn generate(pool: &SqlitePool) -> i64 {
    let host = HostConfig::new(
        HostName::parse("gen").unwrap(),
        DriverConfig::Libvirt(LibvirtSettings::new(HostUri::parse("test:///default").unwrap())),
    );
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
    let app = spawn_app(AppOptions { poll_interval_secs: 60, ..AppOptions::breadth() }).await;
    let host_id = app.host_id("lab").await;
    let now = vmdeck::db::now_ms();
    let mut cache = HostCache::default();
    let start = now - 3 * 86_400_000;
    for i in 0..(3 * 24 * 12) {
        let ts = start + i * 300_000;
        let r = report(
            "10000000-0000-4000-8000-00000000abcd",
            PowerState::Running,
            (i as u64) * 30_000_000_000,
            (i as u64) * 1_000_000,
        );
        store::record_success(&app.pool, &mut cache, host_id, ts, ts + 5, &[r]).await.unwrap();
    }
    rollup::maintain(&app.pool, now).await.unwrap();
    let uuid = "10000000-0000-4000-8000-00000000abcd";
    let (status, html) = app.get(&format!("/vms/lab/{uuid}?range=30d")).await;
    assert_eq!(status, 200);
    assert!(html.contains("read from hourly rollups"), "30 days come from the hourly tier");
    // Hourly rows, then 5-minute rows, then raw samples for the newest minutes: every sample
    // counted exactly once.
    assert!(
        html.contains(">Times in UTC. 864 samples in this range"),
        "no bucket counted twice or missed"
    );
    assert!(html.contains("<title>CPU "), "with points");
    assert!(html.contains("uptime 100.00 %"));
    let (_, html) = app.get(&format!("/vms/lab/{uuid}?range=24h")).await;
    assert!(html.contains("read from 5-minute rollups"));
    assert!(
        html.contains(">Times in UTC. 288 samples in this range")
            || html.contains(">Times in UTC. 289 samples in this range"),
        "one day of 5-minute polls"
    );
    let (_, html) = app.get(&format!("/vms/lab/{uuid}?range=1h")).await;
    assert!(html.contains("read from raw samples"));
}

#[tokio::test]
async fn pruning_keeps_each_resolution_for_its_retention_and_never_ahead_of_the_next() {
    let dir = tempfile::tempdir().unwrap();
    let pool =
        vmdeck::db::connect(&format!("sqlite://{}/p.db", dir.path().display())).await.unwrap();
    let end = generate(&pool).await;
    let now = end + 2 * 86_400_000;
    rollup::maintain(&pool, now).await.unwrap();
    let count = |sql: &'static str| {
        let pool = pool.clone();
        async move { sqlx::query_scalar::<_, i64>(sql).fetch_one(&pool).await.unwrap() }
    };
    let hourly_before = count("SELECT COUNT(*) FROM rollups WHERE res = 3600").await;
    let daily_before = count("SELECT COUNT(*) FROM rollups WHERE res = 86400").await;
    let day = std::time::Duration::from_secs(86_400);
    let retention = vmdeck::config::Retention {
        raw: day,
        rollup_5m: 2 * day,
        rollup_1h: 3 * day,
        rollup_1d: 10 * day,
    };
    let pruned = rollup::prune(&pool, &retention, now).await.unwrap();
    assert!(pruned.samples > 0 && pruned.polls > 0, "{pruned:?}");
    assert_eq!(
        count("SELECT COUNT(*) FROM samples").await,
        0,
        "every raw sample is older than a day"
    );
    assert!(count("SELECT COUNT(*) FROM polls").await <= 2, "only the polls hosts point at remain");
    assert_eq!(count("SELECT COUNT(*) FROM rollups WHERE res = 300").await, 0);
    let hourly_after = count("SELECT COUNT(*) FROM rollups WHERE res = 3600").await;
    assert!(hourly_after > 0 && hourly_after < hourly_before, "{hourly_before} -> {hourly_after}");
    let oldest_hour: i64 = count("SELECT min(bucket) FROM rollups WHERE res = 3600").await;
    assert!(oldest_hour * 1000 >= now - 3 * 86_400_000, "hourly rows older than 3 days are gone");
    assert_eq!(
        count("SELECT COUNT(*) FROM rollups WHERE res = 86400").await,
        daily_before,
        "daily rows kept"
    );
    // Maintenance after pruning finds nothing to redo.
    assert_eq!(rollup::maintain(&pool, now).await.unwrap().rows, [0, 0, 0]);
}

#[tokio::test]
async fn reports_read_rollups_once_raw_samples_are_pruned() {
    use crate::support::app::{spawn_app, AppOptions};
    let app = spawn_app(AppOptions { poll_interval_secs: 60, ..AppOptions::breadth() }).await;
    let host_id = app.host_id("lab").await;
    let now = vmdeck::db::now_ms();
    let start = now - 4 * 86_400_000;
    let mut cache = HostCache::default();
    // Running two hours out of three, every 60 s, for four days.
    for i in 0..(4 * 24 * 60) {
        let ts = start + i * 60_000;
        let state = if (i / 60) % 3 == 2 { PowerState::ShutOff } else { PowerState::Running };
        store::record_success(
            &app.pool,
            &mut cache,
            host_id,
            ts,
            ts + 5,
            &[report("old-vm", state, i as u64, i as u64)],
        )
        .await
        .unwrap();
    }
    rollup::maintain(&app.pool, now).await.unwrap();
    let settings_retention = vmdeck::config::Retention {
        raw: std::time::Duration::from_secs(2 * 86_400),
        rollup_5m: std::time::Duration::from_secs(60 * 86_400),
        rollup_1h: std::time::Duration::from_secs(730 * 86_400),
        rollup_1d: std::time::Duration::from_secs(3650 * 86_400),
    };
    rollup::prune(&app.pool, &settings_retention, now).await.unwrap();
    let oldest_raw: i64 =
        sqlx::query_scalar("SELECT min(ts) FROM samples").fetch_one(&app.pool).await.unwrap();
    assert!(
        oldest_raw >= now - 2 * 86_400_000 - 60_000,
        "raw samples older than two days are gone"
    );

    // Availability over all four days: two thirds, from rollups for the pruned part.
    let from = crate::support::app::unescape(
        &vmdeck::web::format::absolute(start + 3_600_000)[..16].replace(' ', "T"),
    );
    let (status, html) = app.get(&format!("/reports/availability?from={from}&sort=name")).await;
    assert_eq!(status, 200);
    let row = html.split("old-vm").nth(2).unwrap_or_else(|| panic!("no row for old-vm in {html}"));
    let pct: f64 = row
        .split("class=\"num\">")
        .nth(1)
        .and_then(|c| c.split(' ').next())
        .and_then(|v| v.parse().ok())
        .expect("an uptime figure");
    assert!((pct - 66.67).abs() < 1.5, "uptime {pct} % (expected about two thirds)");
    let res = app
        .viewer
        .client
        .get(format!("{}/reports/availability.csv?from={from}", app.base))
        .send()
        .await
        .unwrap();
    let body = res.text().await.unwrap();
    let line = body.lines().find(|l| l.contains(",old-vm,")).expect("old-vm in the CSV");
    let outage: i64 = line.split(',').nth(7).unwrap().parse().unwrap();
    // Hour-long outages, seen through 5-minute buckets (not aligned to them) and raw samples.
    assert!((3000..=3660).contains(&outage), "longest outage {outage} s: {line}");

    // The fleet three days ago: the state comes from the rollup bucket of that moment.
    let at_ms = start + 24 * 3_600_000 + 30 * 60_000; // hour 24: running
    let at = vmdeck::web::format::absolute(at_ms)[..16].replace(' ', "T");
    let (_, html) = app.get(&format!("/reports/fleet?at={at}")).await;
    let row = html.split(">old-vm<").nth(1).expect("old-vm existed then");
    assert!(row.split("</tr>").next().unwrap().contains("<td>running</td>"), "{row}");
}

/// The brute-force availability of one VM over `[from, to)` from its raw samples, each
/// standing for one poll interval (cut at `to`): (ms running, ms known, longest outage ms,
/// its first sample, number of outages). An outage is the time observed down between two
/// running samples; samples in no known state neither break nor extend one.
fn brute_availability(samples: &[(i64, String)], from: i64, to: i64, interval: i64) -> BruteAvail {
    let mut b = BruteAvail::default();
    let mut current: Option<(i64, i64)> = None;
    for (ts, state) in samples.iter().filter(|s| s.0 >= from && s.0 < to) {
        let span = interval.min(to - ts);
        let known = ["running", "paused", "suspended", "in_transition", "shut_off", "crashed"]
            .contains(&state.as_str());
        if !known {
            continue;
        }
        b.known += span;
        if state == "running" {
            b.up += span;
            current = None;
            continue;
        }
        if current.is_none() {
            b.outages += 1;
        }
        let (start, down) = current.get_or_insert((*ts, 0));
        *down += span;
        if *down > b.longest {
            b.longest = *down;
            b.longest_start = Some(*start);
        }
    }
    b
}

#[derive(Debug, Default)]
struct BruteAvail {
    up: i64,
    known: i64,
    longest: i64,
    longest_start: Option<i64>,
    outages: u32,
}

#[tokio::test]
async fn availability_equals_brute_force_on_generated_histories() {
    use crate::support::app::{spawn_app, unescape, AppOptions};
    use vmdeck::web::format::absolute;
    let app = spawn_app(AppOptions { poll_interval_secs: 60, ..AppOptions::breadth() }).await;
    let pool = &app.pool;
    let host = HostConfig::new(
        HostName::parse("gen").unwrap(),
        DriverConfig::Libvirt(LibvirtSettings::new(HostUri::parse("test:///default").unwrap())),
    );
    let host_id = store::upsert_hosts(pool, &[host], false).await.unwrap()[0];
    let mut cache = HostCache::default();
    let now = vmdeck::db::now_ms();
    // Polls on the minute for a day and a half, ending an hour ago.
    let end = now - 3_600_000 - now.rem_euclid(300_000);
    let start = end - 36 * 3_600_000;
    let mut seed = 0x1234_5678_9abc_def1_u64;
    let mut rand = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    const VMS: usize = 12;
    // Each VM's life (first and last minute it is reported, unaligned to buckets) and its
    // state per 5-minute block (constant within a block, as a bucket sees it whole).
    let minutes = 36 * 60;
    let lives: Vec<(i64, i64)> = (0..VMS)
        .map(|vm| {
            let first = if vm < 3 { 0 } else { rand(minutes as u64 / 2) as i64 };
            let last = if vm % 4 == 1 { first + 3 + rand(minutes as u64) as i64 } else { minutes };
            // The case: a VM first seen two minutes into a 5-minute block, observed
            // down for three minutes, then gone.
            if vm == VMS - 1 {
                return (5 * 37 + 2, 5 * 37 + 4);
            }
            (first, last.min(minutes))
        })
        .collect();
    let states = [
        PowerState::Running,
        PowerState::Running,
        PowerState::ShutOff,
        PowerState::Paused,
        PowerState::Crashed,
        PowerState::Unknown,
    ];
    let blocks: Vec<Vec<PowerState>> = (0..VMS)
        .map(|vm| {
            // VM 3 is never running; the others switch every few blocks.
            let mut s = states[rand(6) as usize];
            (0..minutes / 5 + 1)
                .map(|_| {
                    if rand(4) == 0 {
                        s = states[rand(6) as usize];
                    }
                    if vm == VMS - 1 || (vm == 3 && s == PowerState::Running) {
                        PowerState::ShutOff
                    } else {
                        s
                    }
                })
                .collect()
        })
        .collect();
    let (mut gap_left, mut cpu) = (0, 0u64);
    for i in 0..minutes {
        // Gaps without any poll (vmdeck down), of a few minutes to an hour.
        if gap_left > 0 {
            gap_left -= 1;
            continue;
        }
        if rand(300) == 0 {
            gap_left = 2 + rand(60) as i64;
        }
        let ts = start + i * 60_000;
        let mut reports = Vec::new();
        for vm in 0..VMS {
            let (first, last) = lives[vm];
            // Now and then a VM is missing from a poll (gone, then back).
            if i < first || i > last || (rand(97) == 0 && vm != VMS - 1) {
                continue;
            }
            cpu += 1_000_000_000;
            reports.push(report(&format!("avail-{vm:02}"), blocks[vm][i as usize / 5], cpu, cpu));
        }
        store::record_success(pool, &mut cache, host_id, ts, ts + 5, &reports).await.unwrap();
    }
    rollup::maintain(pool, now).await.unwrap();

    let samples: Vec<(String, i64, String)> = sqlx::query_as(
        "SELECT v.uuid, s.ts, s.state FROM samples s JOIN vms v ON v.id = s.vm_id
         WHERE v.host_id = ? ORDER BY v.uuid, s.ts",
    )
    .bind(host_id)
    .fetch_all(pool)
    .await
    .unwrap();
    let first_seen: BTreeMap<String, i64> =
        sqlx::query_as("SELECT uuid, first_seen FROM vms WHERE host_id = ?")
            .bind(host_id)
            .fetch_all(pool)
            .await
            .unwrap()
            .into_iter()
            .collect();
    let minute = |ms: i64| unescape(&absolute(ms)[..16].replace(' ', "T"));
    // Periods: the whole history, one starting and ending off the buckets' edges, a short one.
    let periods = [
        (start - 3_600_000, end + 600_000),
        (start + 7 * 3_600_000 + 13 * 60_000, end - 5 * 3_600_000 - 7 * 60_000),
        (start + 20 * 3_600_000 + 3 * 60_000, start + 21 * 3_600_000 + 10 * 60_000),
    ];
    let mut outages_seen = 0;
    for (from, to) in periods {
        let path = format!("/reports/availability.csv?from={}&to={}", minute(from), minute(to));
        let csv = app.viewer.csv(&path).await;
        let header: Vec<&str> = csv[0].iter().collect();
        let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
        for vm in 0..VMS {
            let uuid = format!("avail-{vm:02}");
            let mine: Vec<(i64, String)> =
                samples.iter().filter(|s| s.0 == uuid).map(|s| (s.1, s.2.clone())).collect();
            let want = brute_availability(&mine, from, to, 60_000);
            let row = csv.iter().find(|r| r.iter().any(|c| c == uuid));
            let Some(row) = row else {
                assert_eq!(want.known + want.up, 0, "{uuid} in {path}: observed, so listed");
                continue;
            };
            let what = format!("{uuid} in {path}: want {want:?}, got {row:?}");
            let pct = if want.known > 0 {
                format!("{:.3}", want.up as f64 / want.known as f64 * 100.0)
            } else {
                String::new()
            };
            assert_eq!(&row[col("uptime_pct")], pct, "uptime: {what}");
            assert_eq!(
                &row[col("observed_hours")],
                format!("{:.2}", want.known as f64 / 3_600_000.0),
                "observed: {what}"
            );
            assert_eq!(&row[col("longest_outage_s")], (want.longest / 1000).to_string(), "{what}");
            assert_eq!(&row[col("outages")], want.outages.to_string(), "outage count: {what}");
            let known = mine.iter().filter(|s| s.0 >= from && s.0 < to && s.1 != "unknown");
            assert!(want.longest <= known.count() as i64 * 60_000, "brute force itself: {what}");
            if let Some(began) = want.longest_start {
                // A bucket's outage starts at the bucket's start: no earlier than the VM was
                // first seen nor than five minutes before its first down sample.
                let shown = &row[col("longest_outage_start_utc")];
                let earliest = absolute((began - 300_000).max(first_seen[&uuid]).max(from));
                assert!(
                    shown >= earliest.as_str() && shown <= absolute(began).as_str(),
                    "outage start {shown} not in [{earliest}, {}]: {what}",
                    absolute(began)
                );
                outages_seen += 1;
            }
        }
    }
    // The VM, observed for three minutes, down (unless a gap hid it): its outage is
    // no longer than that.
    let csv = app.viewer.csv(&format!("/reports/availability.csv?from={}", minute(start))).await;
    let short = csv.iter().find(|r| r.iter().any(|c| c == "avail-11")).expect("avail-11 listed");
    let observed: f64 = short[6].parse().unwrap();
    let outage: f64 = short[7].parse().unwrap();
    assert!(observed > 0.0 && outage <= observed * 3600.0, "{short:?}");
    assert!(outages_seen > 10, "the histories have outages to check ({outages_seen})");
}
