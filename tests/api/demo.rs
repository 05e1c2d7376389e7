//! The demo's month of generated history (src/demo/history.rs): what a newcomer sees on the VM
//! page, the reports and the audit log from the first minute, that it continues into the real
//! polls, that the audit chain stays intact, and that a restart generates nothing twice.

use std::time::Duration;

use sqlx::SqlitePool;

use crate::support::app::{spawn_app, spawn_app_in, strip_tags, uuid_of, AppOptions, TestApp};
use crate::support::wait::eventually;

const DAY: i64 = 86_400_000;

/// The demo with the default poll interval (10 s): the month is written at one poll per 5
/// minutes, weighted as 30 polls each, and the last hour every 10 s.
fn demo() -> AppOptions {
    AppOptions { poll_interval_secs: 10, ..AppOptions::default() }
}

/// A time as the pages print it (`2026-11-25 21:40:05 UTC`), in ms.
fn page_time(text: &str) -> i64 {
    let iso = text.trim().trim_end_matches(" UTC").replacen(' ', "T", 1);
    vmdeck::domain::time::parse_time(&iso, false).unwrap_or_else(|| panic!("a time: {text:?}"))
}

/// (generated from, generated until) as the demo database records them.
async fn generated(pool: &SqlitePool) -> Option<(i64, i64)> {
    sqlx::query_as("SELECT generated_from, generated_until FROM demo_history")
        .fetch_optional(pool)
        .await
        .unwrap()
}

async fn count(pool: &SqlitePool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

/// The availability report's CSV over the last 29 days: (VM name, uptime %, observed hours,
/// longest outage in seconds).
async fn availability(app: &TestApp) -> Vec<(String, f64, f64, i64)> {
    let from = vmdeck::web::format::absolute(vmdeck::db::now_ms() - 29 * DAY);
    let rows = app.viewer.csv(&format!("/reports/availability.csv?from={}", &from[..10])).await;
    let col = |name: &str| rows[0].iter().position(|h| h == name).expect(name);
    let (vm, up, hours) = (col("vm_name"), col("uptime_pct"), col("observed_hours"));
    let outage = col("longest_outage_s");
    rows[1..]
        .iter()
        .map(|r| {
            let number = |i: usize| r[i].parse::<f64>().unwrap();
            (r[vm].to_string(), number(up), number(hours), number(outage) as i64)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_starts_with_a_month_of_history_on_its_vm_pages_reports_and_audit_log() {
    let app = spawn_app(demo()).await;
    let now = vmdeck::db::now_ms();
    let (from, until) = generated(&app.pool).await.expect("the demo database was seeded");
    assert!(now - from >= 30 * DAY && now - from < 31 * DAY, "a month: from {from}, now {now}");

    // The VM page: a 30-day chart from 30 days ago to now, every poll of 10 s accounted for.
    let web = uuid_of(&app, "web-01").await;
    let rows = app.viewer.csv(&format!("/vms/demo/{web}.csv?range=30d")).await;
    assert!(rows.len() > 500, "a point every ~72 minutes: {} rows", rows.len());
    let first = page_time(&rows[1][0]);
    let last = page_time(&rows[rows.len() - 1][0]);
    assert!(first < now - 29 * DAY, "the 30-day chart starts 30 days ago: {}", &rows[1][0]);
    // (Each point covers 72 minutes and is stamped with its start.)
    assert!(last > now - 2 * 3_600_000, "and reaches now: {}", &rows[rows.len() - 1][0]);
    let samples: i64 = rows[1..].iter().map(|r| r[1].parse::<i64>().unwrap()).sum();
    assert!(samples > 30 * 8640 * 9 / 10, "weighted as 10-s polls: {samples} samples in 30 days");
    // A daily cycle: the busiest hour of the month is far above the quietest.
    let cpu = rows[0].iter().position(|h| h == "cpu_pct_avg").unwrap();
    let loads: Vec<f64> = rows[1..].iter().filter_map(|r| r[cpu].parse().ok()).collect();
    let (low, high) = loads.iter().fold((f64::MAX, 0f64), |(l, h), x| (l.min(*x), h.max(*x)));
    assert!(high > 40.0 && low < 10.0, "busy days, quiet nights: CPU {low:.1} % to {high:.1} %");
    let (status, page) = app.get(&format!("/vms/demo/{web}?range=24h")).await;
    assert_eq!(status, 200);
    let text = strip_tags(&page);
    assert!(text.contains("read from 5-minute rollups"), "24 hours from rollups: {text}");
    let marked =
        format!("history before {} is generated demo data", vmdeck::web::format::absolute(until));
    assert!(text.contains(&marked), "the page marks the generated history: {text}");

    // The IP change, in the address history of web-02.
    let ips = count(
        &app.pool,
        "SELECT count(*) FROM vm_addresses a JOIN vms v ON v.id = a.vm_id
         WHERE v.name = 'web-02' AND a.ended_at IS NOT NULL",
    )
    .await;
    assert_eq!(ips, 1, "web-02 had another address before");

    // Availability over the month: the crash and the days shut off count, every hour observed.
    let report = availability(&app).await;
    let of = |name: &str| {
        report
            .iter()
            .find(|r| r.0 == name)
            .cloned()
            .unwrap_or_else(|| panic!("{name} in {report:?}"))
    };
    let (_, monitoring, observed, outage) = of("monitoring");
    assert!(monitoring < 100.0 && monitoring > 99.0, "monitoring crashed for hours: {monitoring}");
    assert!((2 * 3600..3 * 3600).contains(&outage), "down from 03:12 to 05:47: {outage} s");
    assert!(observed > 29.0 * 24.0, "the whole period observed: {observed} h");
    assert_eq!(of("web-01").1, 100.0, "web-01 ran all month");
    let (_, ci, _, _) = of("ci-runner-1");
    assert!(ci > 50.0 && ci < 95.0, "ci-runner-1 was shut off for days: {ci}");

    // Capacity: db-primary's disk grew.
    let (status, capacity) = app.get("/reports/capacity").await;
    assert_eq!(status, 200);
    let grew = strip_tags(capacity.split("grew most").nth(1).expect("the grew-most table"));
    let db = grew.lines().skip_while(|l| !l.contains("db-primary")).take(6).collect::<String>();
    assert!(db.contains("GiB →"), "db-primary's disk grew over the month: {grew}");

    // The audit log: the demo user's power actions, marked as demo data.
    let (_, audit) = app.get("/audit").await;
    let audit = strip_tags(&audit);
    assert!(audit.matches("alice (demo)").count() >= 4, "the demo's power actions: {audit}");
    for vm in ["monitoring", "ci-runner-1", "build-cache"] {
        assert!(audit.contains(vm), "{vm}'s power action is in the log");
    }
    let demo_entries = count(
        &app.pool,
        "SELECT count(*) FROM audit_log WHERE user_name = 'alice (demo)' AND status = 'confirmed'
           AND detail LIKE 'demo data%' AND chain_seq IS NOT NULL",
    )
    .await;
    assert_eq!(demo_entries, 4, "settled, sealed and marked as demo data");

    // The first real poll continues the same VMs: nothing new, no configuration changed.
    eventually("a real poll after the generated ones", Duration::from_secs(30), async || {
        count(&app.pool, &format!("SELECT count(*) FROM polls WHERE started_at >= {until}")).await
            > 0
    })
    .await;
    assert_eq!(count(&app.pool, "SELECT count(*) FROM vms").await, 12, "the lab's 12 VMs");
    let after = format!(
        "SELECT count(*) FROM vm_configs WHERE valid_from >= {until}
         UNION ALL SELECT count(*) FROM vms WHERE gone_at IS NOT NULL OR first_seen >= {until}"
    );
    let changed: Vec<i64> = sqlx::query_scalar(&after).fetch_all(&app.pool).await.unwrap();
    assert_eq!(changed, vec![0, 0], "the real poll found the generated VMs as they were left");

    // `vmdeck audit verify` on the demo's database: the chain is intact.
    let config = app.dir.path().join("demo.toml");
    let url = format!("sqlite://{}/vmdeck.db", app.dir.path().display());
    std::fs::write(&config, format!("[default]\ndatabase_url = \"{url}\"\n")).unwrap();
    let (status, out) = tokio::task::spawn_blocking(move || {
        crate::support::binary::vmdeck(&config, &["audit", "verify"], "")
    })
    .await
    .unwrap();
    assert!(status.success() && out.contains("intact"), "{out}");
}

/// (name, snapshot count) of each VM on a list page, in order.
fn snapshot_counts(html: &str) -> Vec<(String, String)> {
    html.split("<tr class=\"vm")
        .skip(1)
        .map(|row| {
            let name = crate::support::app::vm_names(row).pop().unwrap_or_default();
            let cell = row.split("col-snapshots num\">").nth(1).unwrap_or("");
            let count = cell.split(['<', ' ']).next().unwrap_or("").to_string();
            (name, count)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_shows_snapshot_trees_of_several_ages() {
    let app = spawn_app(demo()).await;
    // Sorted by snapshot count (ties: the older oldest snapshot first): the three VMs the demo
    // gives trees come first.
    let (_, html) = app.get("/vms?sort=snapshots&dir=desc").await;
    let counts = snapshot_counts(&html);
    let top: Vec<(&str, &str)> =
        counts.iter().take(4).map(|(n, c)| (n.as_str(), c.as_str())).collect();
    assert_eq!(
        top,
        [("db-primary", "3"), ("web-01", "3"), ("win2022-ad", "1"), ("backup", "0")],
        "{counts:?}"
    );
    // The age filter: snapshots older than 30 days on three VMs, older than 50 on one.
    let (_, html) = app.get("/vms?snapshots_older_than=30").await;
    let mut older: Vec<String> = snapshot_counts(&html).into_iter().map(|(n, _)| n).collect();
    older.sort();
    assert_eq!(older, ["db-primary", "web-01", "win2022-ad"]);
    let (_, html) = app.get("/vms?snapshots_older_than=50").await;
    assert_eq!(snapshot_counts(&html).len(), 1, "only db-primary's 62-day-old one");

    // web-01's tree has a branch: two children of its golden image, the newest one current.
    let web = uuid_of(&app, "web-01").await;
    let (_, page) = app.get(&format!("/vms/demo/{web}")).await;
    let tree = strip_tags(page.split("id=\"snapshot-tree\"").nth(1).expect("a tree"));
    let tree = tree.split("Past snapshots").next().unwrap();
    for part in [
        "golden-image",
        "nginx-1.26 (child of golden-image)",
        "caddy-trial (child of golden-image) current",
        "40 d",
    ] {
        assert!(tree.contains(part), "{part:?} in {tree}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_demo_keeps_its_generated_history_and_generates_none_again() {
    let app = spawn_app(demo()).await;
    let seeded = generated(&app.pool).await.expect("seeded at the first start");
    let (_, until) = seeded;
    let hourly = format!(
        "SELECT count(*) FROM rollups WHERE res = 3600 AND bucket * 1000 < {until} - 7200000"
    );
    let before = (
        count(&app.pool, &hourly).await,
        count(&app.pool, "SELECT count(*) FROM audit_log WHERE user_name = 'alice (demo)'").await,
    );
    assert!(before.0 > 12 * 24 * 29 && before.1 == 4, "{before:?}");
    // Its example alert rules, and the crashed mail relay's alert from the first evaluation.
    let rules =
        count(&app.pool, "SELECT count(*) FROM alert_rules WHERE created_by = 'demo'").await;
    assert_eq!(rules, 4);
    crate::support::wait::eventually(
        "the demo's mail relay alert",
        std::time::Duration::from_secs(10),
        async || {
            count(&app.pool, "SELECT count(*) FROM alerts WHERE rule_name = 'mail must run' AND state = 'firing' AND vm_name = 'mail-relay'").await == 1
        },
    )
    .await;
    let dir = app.stop().await;

    let again = spawn_app_in(dir, demo()).await;
    assert_eq!(generated(&again.pool).await, Some(seeded), "seeded once, at the first start");
    let after = (
        count(&again.pool, &hourly).await,
        count(&again.pool, "SELECT count(*) FROM audit_log WHERE user_name = 'alice (demo)'").await,
    );
    assert_eq!(after, before, "nothing generated twice");
    assert_eq!(
        count(&again.pool, "SELECT count(*) FROM alert_rules").await,
        4,
        "the demo's rules are added once"
    );
    // The demo's snapshots are taken again on the fresh test driver: the same ones, not new
    // ones beside past copies.
    again.poll("demo").await;
    let snapshots = (
        count(&again.pool, "SELECT count(*) FROM vm_snapshots WHERE gone_at IS NULL").await,
        count(&again.pool, "SELECT count(*) FROM vm_snapshots WHERE gone_at IS NOT NULL").await,
    );
    assert_eq!(snapshots, (7, 0), "the demo's seven snapshots, none gone");
    let web = uuid_of(&again, "web-01").await;
    let (_, page) = again.get(&format!("/vms/demo/{web}?range=7d")).await;
    let marked =
        format!("history before {} is generated demo data", vmdeck::web::format::absolute(until));
    assert!(strip_tags(&page).contains(&marked), "still marked after the restart");
}
