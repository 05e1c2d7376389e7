//! Historical reports over HTTP: the fleet as of a moment, availability, capacity, and their
//! CSV downloads, with bad parameters answered by a message.

use vmdeck::hosts::PollOutcome;

use crate::support::app::{breadth_app, unescape, TestApp};

/// A table row's cells as text, separated by single spaces.
fn cells(html: &str) -> String {
    let mut out = String::new();
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => {
                in_tag = true;
                out.push(' ');
            }
            '>' => in_tag = false,
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    unescape(&out.split_whitespace().collect::<Vec<_>>().join(" "))
}

/// The breadth lab with two more polls recorded.
async fn app() -> TestApp {
    let app = breadth_app().await;
    for _ in 0..2 {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(matches!(app.poll("lab").await, PollOutcome::Recorded(_)));
    }
    app
}

fn table_rows(html: &str) -> Vec<String> {
    let Some(body) = html.split("id=\"report-table\"").nth(1) else { return Vec::new() };
    body.split("<tr>").skip(2).map(cells).collect()
}

#[tokio::test]
async fn the_fleet_as_of_now_and_before_vmdeck_existed() {
    let app = app().await;
    let (status, html) = app.get("/reports/fleet").await;
    assert_eq!(status, 200);
    let rows = table_rows(&html);
    assert_eq!(rows.len(), 21, "{rows:?}");
    let big = rows.iter().find(|r| r.contains("br-big")).unwrap_or_else(|| panic!("{rows:#?}"));
    assert!(big.contains("running") && big.contains("16") && big.contains("65536"), "{big}");
    let (_, old) = app.get("/reports/fleet?at=2001-01-01").await;
    assert!(old.contains("No VM known to vmdeck existed"));
    let csv = app.viewer.csv("/reports/fleet.csv").await;
    assert_eq!(&csv[0][0], "as_of_utc");
    assert!(
        csv[0].iter().any(|h| h == "memory_mib") && csv[0].iter().any(|h| h == "disk_gib"),
        "units in names"
    );
    assert_eq!(csv.len(), 22);
    for (q, text) in
        [("?at=yesterday", "Cannot read the report time"), ("?at=2999-01-01", "in the future")]
    {
        let (status, html) = app.get(&format!("/reports/fleet{q}")).await;
        assert_eq!(status, 200);
        assert!(html.contains(text), "{q}");
    }
}

#[tokio::test]
async fn availability_counts_running_time_and_the_longest_outage() {
    let app = app().await;
    let (status, html) = app.get("/reports/availability?sort=name").await;
    assert_eq!(status, 200);
    let rows = table_rows(&html);
    let running =
        rows.iter().find(|r| r.contains("br-running ")).unwrap_or_else(|| panic!("{rows:#?}"));
    assert!(running.contains(" 100 % ") && running.ends_with("none"), "{running}");
    let off = rows.iter().find(|r| r.contains("br-shutoff")).unwrap();
    assert!(off.contains(" 0 % "), "{off}");
    let (_, html) =
        app.get("/reports/availability?sort=sideways&from=2030-01-01&to=2020-01-01").await;
    assert!(html.contains("Cannot sort by") && html.contains("reversed"));
    let csv = app.viewer.csv("/reports/availability.csv").await;
    assert!(
        csv[0].iter().any(|h| h == "uptime_pct") && csv[0].iter().any(|h| h == "longest_outage_s")
    );
    assert_eq!(csv.len(), 22);
    // Lowest uptime first by default.
    assert_eq!(&csv[1][5], "0.000");
}

#[tokio::test]
async fn capacity_over_time_totals_each_host_per_day() {
    let app = app().await;
    let (status, html) = app.get("/reports/capacity").await;
    assert_eq!(status, 200);
    assert_eq!(html.matches("<svg class=\"chart\"").count(), 3);
    let csv = app.viewer.csv("/reports/capacity.csv").await;
    assert_eq!(
        csv[0].iter().collect::<Vec<_>>(),
        vec!["day_utc", "host", "vms", "vcpus", "memory_gib", "disk_gib"]
    );
    let today = csv.last().unwrap();
    assert_eq!((&today[1], &today[2]), ("lab", "21"));
    let vcpus: u64 = sqlx::query_scalar(
        "SELECT SUM(c.vcpus) FROM vms v JOIN vm_configs c ON c.id = v.config_id",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(today[3].parse::<u64>().unwrap(), vcpus);
    assert!(html.contains("id=\"no-growth\""), "nothing grew yet");
    // br-big gets twice the memory: it tops the growth list.
    sqlx::query(
        "INSERT INTO vm_configs (vm_id, valid_from, vcpus, memory_max_kib, memory_current_kib, os_type, autostart, persistent, disk_capacity_bytes, body)
         SELECT vm_id, valid_from + 1, vcpus, memory_max_kib * 2, memory_current_kib, os_type, autostart, persistent, disk_capacity_bytes, body
         FROM vm_configs WHERE vm_id = (SELECT id FROM vms WHERE name = 'br-big')",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    let (_, html) = app.get("/reports/capacity").await;
    let growth = html.split("id=\"growth-table\"").nth(1).expect("a growth table");
    assert!(cells(growth).contains("br-big 16 64 GiB → 128 GiB"), "{}", cells(growth));
    let (_, empty) = app.get("/reports/capacity?from=2001-01-01&to=2001-01-03").await;
    assert!(empty.contains("No VM known to vmdeck in this period"));
}

/// A VM the hypervisor reports under `name`, running, with counters that grow with `i`.
fn named_report(uuid: &str, name: &str, i: u64) -> vmdeck::backend::VmReport {
    use vmdeck::backend::{Counters, PowerState, VmConfig, VmReport};
    VmReport {
        uuid: uuid.into(),
        name: name.into(),
        state: PowerState::Running,
        raw_state: "running".into(),
        state_reason: "booted".into(),
        config: VmConfig { vcpus: 1, memory_max_kib: 1 << 20, ..VmConfig::default() },
        memory_used_kib: Some(1000),
        counters: Counters { cpu_time_ns: Some(i * 1_000_000_000), ..Counters::default() },
        disk_usage: vec![],
        addresses: vec![],
        snapshots: None,
    }
}

#[tokio::test]
async fn every_csv_export_keeps_hostile_names_as_text_not_formulas() {
    let app = breadth_app().await;
    // A VM named like a formula on the hypervisor, recorded through the poller's own store.
    let hostile_vm = "=HYPERLINK(\"http://example.invalid/x\",\"open\")";
    let uuid = "20000000-0000-4000-8000-00000000beef";
    let host_id = app.host_id("lab").await;
    let mut cache = vmdeck::hosts::store::HostCache::default();
    let now = vmdeck::db::now_ms();
    for i in 0..3u64 {
        let ts = now - 30_000 + i as i64 * 10_000;
        let r = named_report(uuid, hostile_vm, i);
        vmdeck::hosts::store::record_success(&app.pool, &mut cache, host_id, ts, ts + 5, &[r])
            .await
            .unwrap();
    }
    // A user name typed at the login form, which the audit log records.
    let hostile_user = "@SUM(1+1)*cmd";
    assert!(crate::support::app::login(&app.base, hostile_user, "not the password").await.is_err());

    let exports = [
        ("/audit.csv".to_string(), Some(format!("'{hostile_user}"))),
        ("/reports/fleet.csv".to_string(), Some(format!("'{hostile_vm}"))),
        ("/reports/availability.csv".to_string(), Some(format!("'{hostile_vm}"))),
        ("/reports/capacity.csv".to_string(), None),
        (format!("/vms/lab/{uuid}.csv?range=1h"), None),
    ];
    for (path, expected) in exports {
        let rows = app.viewer.csv(&path).await;
        for cell in rows.iter().flat_map(|r| r.iter()) {
            let risky = cell.starts_with(['=', '+', '@', '\t', '\r'])
                || (cell.starts_with('-') && cell.parse::<f64>().is_err());
            assert!(!risky, "{path}: the cell {cell:?} would run as a formula");
        }
        if let Some(expected) = expected {
            assert!(
                rows.iter().flat_map(|r| r.iter()).any(|c| c == expected),
                "{path}: the hostile name is kept, as text ({expected:?})"
            );
        }
    }
}

/// A libvirt test-driver node of `n` running domains `big-0000…`, each with two addresses in the
/// driver's DHCP range, written into `dir`; returns its `test://` URI.
fn big_lab(dir: &std::path::Path, n: usize) -> String {
    let mut xml = String::from("<node>\n");
    for i in 0..n {
        xml.push_str(&format!(
            "<domain type='test'><name>big-{i:04}</name><uuid>00000000-0000-4000-8000-{i:012}</uuid>\
             <memory unit='MiB'>512</memory><vcpu>1</vcpu><os><type arch='x86_64'>hvm</type></os>\
             <devices><interface type='network'><mac address='52:54:00:00:{a:02x}:{b:02x}'/>\
             <source network='default'/></interface></devices></domain>\n",
            a = i / 256,
            b = i % 256,
        ));
    }
    xml.push_str("</node>\n");
    let path = dir.join("big-lab.xml");
    std::fs::write(&path, xml).unwrap();
    format!("test://{}", path.display())
}

#[tokio::test]
async fn reports_of_a_large_fleet_are_paged_and_their_csv_has_every_row() {
    use crate::support::app::{libvirt_host, spawn_app, AppOptions};
    let dir = tempfile::tempdir().unwrap();
    let uri = big_lab(dir.path(), 1_100);
    let app = spawn_app(AppOptions::with_hosts(vec![libvirt_host("big", &uri)])).await;
    app.wait_for_first_polls().await;
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    assert!(matches!(app.poll("big").await, PollOutcome::Recorded(r) if r.vms == 1_100));

    for report in ["/reports/fleet", "/reports/availability"] {
        let (status, first) = app.get(report).await;
        assert_eq!(status, 200);
        assert_eq!(table_rows(&first).len(), 200, "{report}: 200 rows a page");
        assert!(first.contains("1–200 of 1100 VMs"), "{report}");
        assert!(first.contains("rel=\"next\""), "{report}: a link to the next page");
        let sep = if report.contains('?') { '&' } else { '?' };
        let (_, last) = app.get(&format!("{report}{sep}page=6")).await;
        assert_eq!(table_rows(&last).len(), 100, "{report}: the last page has the rest");
        assert!(last.contains("1001–1100 of 1100 VMs"), "{report}");
        let (_, beyond) = app.get(&format!("{report}{sep}page=9")).await;
        assert!(unescape(&beyond).contains("There are only 6 page(s)"), "{report}");
        let csv = app.viewer.csv(&format!("{report}.csv")).await;
        assert_eq!(csv.len(), 1_101, "{report}: the CSV has every VM and a header");
    }
}

#[tokio::test]
async fn csv_file_names_carry_the_report_and_its_period() {
    let app = breadth_app().await;
    for (path, name) in [
        (
            "/reports/availability.csv?from=2026-11-01T00:00&to=2026-11-30T00:00",
            "vmdeck-availability-2026-11-01_2026-11-30.csv",
        ),
        (
            "/reports/capacity.csv?from=2026-10-01T00:00&to=2026-10-31T00:00",
            "vmdeck-capacity-2026-10-01_2026-10-31.csv",
        ),
        ("/reports/fleet.csv?at=2026-11-30T12:00", "vmdeck-fleet-2026-11-30T1200Z.csv"),
    ] {
        let res = app.viewer.client.get(format!("{}{path}", app.base)).send().await.unwrap();
        assert_eq!(res.status().as_u16(), 200, "{path}");
        let disposition = res.headers()["content-disposition"].to_str().unwrap().to_string();
        assert_eq!(disposition, format!("attachment; filename=\"{name}\""), "{path}");
    }
}

/// One generated poll of the "long" host: (started at, per VM: uuid, vcpus, memory KiB, disk
/// bytes).
type LongPoll = (i64, Vec<(String, u32, u64, u64)>);

/// 520 days of daily polls of a host "long", through the poller's storage path: VMs that
/// appear, vanish and change their allocation. Returns what each poll reported.
async fn long_history(pool: &sqlx::SqlitePool, now: i64) -> Vec<LongPoll> {
    use vmdeck::backend::{libvirt::LibvirtSettings, Disk, DriverConfig, VmConfig, VmReport};
    use vmdeck::config::{HostConfig, HostName, HostUri};
    use vmdeck::domain::PowerState;
    let host = HostConfig::new(
        HostName::parse("long").unwrap(),
        DriverConfig::Libvirt(LibvirtSettings::new(HostUri::parse("test:///default").unwrap())),
    );
    let host_id = vmdeck::hosts::store::upsert_hosts(pool, &[host], false).await.unwrap()[0];
    let mut cache = vmdeck::hosts::store::HostCache::default();
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    let mut rand = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let mut polls = Vec::new();
    for day in 0..520i64 {
        let ts = now - (520 - day) * 86_400_000 + rand(80_000_000) as i64;
        let mut vms = Vec::new();
        for (vm, alive) in [(0, 0..520), (1, 37..451), (2, 200..260), (3, 480..520)] {
            if !alive.contains(&day) {
                continue;
            }
            // The allocation changes every so often (by day, so repeated polls agree).
            let phase = (day / (40 + vm as i64 * 17)) as u32;
            let vcpus = 1 + (phase * 7 + vm) % 8;
            let memory = (1u64 << 20) * u64::from(1 + (phase + vm) % 5);
            let disk = (10u64 << 30) * u64::from(1 + (phase * 3 + vm) % 4);
            vms.push((format!("30000000-0000-4000-8000-{vm:012}"), vcpus, memory, disk));
        }
        let reports: Vec<VmReport> = vms
            .iter()
            .map(|(uuid, vcpus, memory, disk)| VmReport {
                uuid: uuid.clone(),
                name: format!("long-{}", &uuid[uuid.len() - 1..]),
                state: PowerState::Running,
                raw_state: "running".into(),
                state_reason: "booted".into(),
                config: VmConfig {
                    vcpus: *vcpus,
                    memory_max_kib: *memory,
                    memory_current_kib: *memory,
                    disks: vec![Disk {
                        target: "vda".into(),
                        device: "disk".into(),
                        source: None,
                        bus: None,
                        capacity_bytes: Some(*disk),
                    }],
                    ..VmConfig::default()
                },
                memory_used_kib: None,
                counters: Default::default(),
                disk_usage: vec![],
                addresses: vec![],
                snapshots: None,
            })
            .collect();
        vmdeck::hosts::store::record_success(pool, &mut cache, host_id, ts, ts + 5, &reports)
            .await
            .unwrap();
        polls.push((ts, vms));
    }
    polls
}

#[tokio::test]
async fn capacity_covers_a_period_starting_years_back_week_by_week() {
    use time::{OffsetDateTime, Weekday};
    let app = breadth_app().await;
    let now = vmdeck::db::now_ms();
    let polls = long_history(&app.pool, now).await;
    let from = vmdeck::web::format::absolute(now - 900 * 86_400_000)[..10].to_string();

    let (status, html) = app.get(&format!("/reports/capacity?from={from}")).await;
    assert_eq!(status, 200);
    assert!(!html.contains("No VM known to vmdeck in this period"), "the VMs are shown");
    assert!(html.contains("Figures by week for this period"), "the page says how it steps");
    let csv = app.viewer.csv(&format!("/reports/capacity.csv?from={from}")).await;
    let got: Vec<Vec<String>> = csv
        .iter()
        .skip(1)
        .filter(|r| &r[1] == "long")
        .map(|r| r.iter().map(str::to_string).collect())
        .collect();

    // Brute force from what the polls reported: on every Sunday (the last day of a UTC week)
    // and on the period's last day, the VMs of the host's last poll by the end of that day.
    let day_of = |ms: i64| vmdeck::web::format::absolute(ms)[..10].to_string();
    let first_day = polls[0].0 - polls[0].0.rem_euclid(86_400_000);
    let mut want = Vec::new();
    let mut day = first_day;
    while day < now {
        let weekday =
            OffsetDateTime::from_unix_timestamp(day / 1000).unwrap().weekday() == Weekday::Sunday;
        let at = (day + 86_400_000 - 1).min(now);
        if weekday || day + 86_400_000 > now {
            let last = polls.iter().rev().find(|p| p.0 <= at);
            if let Some((_, vms)) = last.filter(|p| !p.1.is_empty()) {
                let vcpus: u64 = vms.iter().map(|v| u64::from(v.1)).sum();
                let memory: f64 = vms.iter().map(|v| v.2 as f64 / 1_048_576.0).sum();
                let disk: f64 = vms.iter().map(|v| v.3 as f64 / 1_073_741_824.0).sum();
                want.push(vec![
                    day_of(day),
                    "long".to_string(),
                    vms.len().to_string(),
                    vcpus.to_string(),
                    format!("{memory:.2}"),
                    format!("{disk:.1}"),
                ]);
            }
        }
        day += 86_400_000;
    }
    assert!(want.len() > 70, "more than 400 days of weeks: {}", want.len());
    assert_eq!(got.len(), want.len(), "one row per week the host had VMs");
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g, w, "capacity at the end of {}", w[0]);
    }
}

/// The preset links of a page: (label, href unescaped).
fn presets(html: &str) -> Vec<(String, String)> {
    let Some(p) = html.split("id=\"presets\"").nth(1) else { return Vec::new() };
    let p = p.split("</p>").next().unwrap_or("");
    p.split("<a href=\"")
        .skip(1)
        .filter_map(|a| {
            let (href, rest) = a.split_once("\">")?;
            let label = rest.split("</a>").next()?;
            Some((label.to_string(), unescape(href)))
        })
        .collect()
}

#[tokio::test]
async fn reports_and_the_vm_page_offer_today_the_last_7_days_and_last_month_as_links() {
    use time::OffsetDateTime;
    let app = app().await;
    let now = OffsetDateTime::now_utc();
    let today = format!("{}T00:00", now.date());
    let this_month = now.date().replace_day(1).unwrap();
    let last_month = this_month.previous_day().unwrap().replace_day(1).unwrap();
    let uuid = crate::support::app::uuid_of(&app, "br-running").await;
    for page in ["/reports/availability", "/reports/capacity", &format!("/vms/lab/{uuid}")] {
        let (status, html) = app.get(page).await;
        assert_eq!(status, 200);
        let links = presets(&html);
        let labels: Vec<&str> = links.iter().map(|l| l.0.as_str()).collect();
        assert_eq!(labels, ["Today", "Last 7 days", "Last month"], "{page}");
        for (label, href) in &links {
            let (status, html) = app.get(href).await;
            assert_eq!(status, 200, "{page}: {label} ({href})");
            assert!(!html.contains("Cannot read"), "{page}: {label} is read: {href}");
            let (from, to) = match label.as_str() {
                "Today" => (today.clone(), None),
                "Last month" => {
                    (format!("{last_month}T00:00"), Some(format!("{this_month}T00:00")))
                }
                _ => continue,
            };
            // The form shows the period the link asked for, in its date-time inputs.
            let input = |name: &str| {
                html.split(&format!("type=\"datetime-local\" name=\"{name}\" value=\""))
                    .nth(1)
                    .and_then(|v| v.split('"').next())
                    .unwrap_or_else(|| panic!("{page}: a {name} input after {label}"))
                    .to_string()
            };
            assert_eq!(input("from"), from, "{page}: {label}");
            if let Some(to) = to {
                assert_eq!(input("to"), to, "{page}: {label}");
            }
        }
    }
    // The last month's availability CSV is named after that month.
    let (_, html) = app.get("/reports/availability").await;
    let href = &presets(&html)[2].1;
    let res = app
        .viewer
        .client
        .get(format!(
            "{}{}",
            app.base,
            href.replace("/reports/availability", "/reports/availability.csv")
        ))
        .send()
        .await
        .unwrap();
    let disposition = res.headers()["content-disposition"].to_str().unwrap().to_string();
    assert!(
        disposition.contains(&format!("vmdeck-availability-{last_month}_{this_month}")),
        "{disposition}"
    );
}
