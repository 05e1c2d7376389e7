//! The VM page: configuration, charts, timeline, histories, for live, gone and unknown VMs, and
//! bad ranges answered with a message.

use vmdeck::hosts::PollOutcome;

use crate::support::app::{breadth_app, uuid_of};

#[tokio::test]
async fn a_vm_page_shows_configuration_charts_timeline_and_links() {
    let app = breadth_app().await;
    for _ in 0..3 {
        assert!(matches!(app.poll("lab").await, PollOutcome::Recorded(_)));
        tokio::time::sleep(std::time::Duration::from_millis(30)).await;
    }
    let uuid = uuid_of(&app, "br-big").await;
    let (status, html) = app.get(&format!("/vms/lab/{uuid}?range=1h")).await;
    assert_eq!(status, 200);
    assert!(html.contains("<h1>br-big"), "the name heads the page");
    assert!(html.contains("<dt>vCPUs</dt><dd>16</dd>"));
    assert!(html.contains("64 GiB"));
    assert_eq!(
        html.matches("<svg class=\"chart\"").count(),
        4,
        "CPU, memory, disk, network charts"
    );
    assert!(html.contains("<title>CPU "), "CPU points carry tooltips");
    assert!(html.contains("class=\"state-running\""), "the timeline shows the running span");
    assert!(html.contains("uptime 100.00 %"));
    assert!(crate::support::app::unescape(&html).contains(&format!("/audit?vm={uuid}")));
    // The same history as CSV, with units in the column names.
    // Answered 200 as text/csv (checked by `csv`).
    let csv = app.viewer.csv(&format!("/vms/lab/{uuid}.csv?range=1h")).await;
    let (headers, records) = (&csv[0], &csv[1..]);
    assert!(
        headers.iter().any(|h| h == "cpu_pct_avg")
            && headers.iter().any(|h| h == "memory_used_bytes_max")
    );
    let samples: u32 = records.iter().map(|r| r[1].parse::<u32>().unwrap()).sum();
    assert!(samples >= 3, "every sample of the range is in the CSV's rows ({samples})");
    let (status, _) = app.get("/vms/lab/00000000-0000-0000-0000-000000000000.csv").await;
    assert_eq!(status, 404);
    let (_, list) = app.get("/vms?q=br-big").await;
    assert!(list.contains(&format!("href=\"/vms/lab/{uuid}\"")), "the list links to the page");
}

#[tokio::test]
async fn every_range_and_an_empty_history_render() {
    let app = breadth_app().await;
    let uuid = uuid_of(&app, "br-shutoff").await;
    for range in ["1h", "24h", "7d", "30d", "1y"] {
        let (status, html) = app.get(&format!("/vms/lab/{uuid}?range={range}")).await;
        assert_eq!(status, 200, "{range}");
        assert!(html.contains("<svg class=\"chart\""), "{range}");
    }
    let (_, html) =
        app.get(&format!("/vms/lab/{uuid}?range=custom&from=2001-01-01&to=2001-01-02")).await;
    assert!(html.contains("no data in this range"), "a range without samples says so");
    assert!(html.contains("No samples in this range"));
}

#[tokio::test]
async fn bad_ranges_and_unknown_vms_get_a_clear_answer_never_a_500() {
    let app = breadth_app().await;
    let uuid = uuid_of(&app, "br-running").await;
    let cases = [
        ("?range=forever", "Unknown range"),
        ("?range=custom&from=2026-02-01&to=2026-01-01", "ends before it starts"),
        ("?range=custom&from=1900-01-01", "starts before 1970"),
        ("?range=custom&from=yesterday", "Cannot read the custom range"),
        ("?range=custom&from=2000-01-01&to=2099-01-01", "longer than ten years"),
    ];
    for (query, text) in cases {
        let (status, html) = app.get(&format!("/vms/lab/{uuid}{query}")).await;
        assert_eq!(status, 200, "{query}");
        assert!(html.contains(text), "{query}: expected {text:?}");
    }
    for path in
        ["/vms/lab/00000000-0000-0000-0000-000000000000", "/vms/nowhere/x", "/vms/lab/%3Cscript%3E"]
    {
        let (status, html) = app.get(path).await;
        assert_eq!(status, 404, "{path}");
        assert!(html.contains("has never seen a VM"), "{path}");
        assert!(!html.contains("<script>"));
    }
}

#[tokio::test]
async fn a_gone_vm_keeps_its_page_and_configuration_changes_are_listed() {
    let app = breadth_app().await;
    let uuid = uuid_of(&app, "br-running").await;
    let vm_id: i64 = sqlx::query_scalar("SELECT id FROM vms WHERE uuid = ?")
        .bind(&uuid)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    // A newer configuration with more memory, as the store writes it when the VM changes.
    let body: String = sqlx::query_scalar("SELECT body FROM vm_configs WHERE vm_id = ?")
        .bind(vm_id)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let mut cfg: serde_json::Value = serde_json::from_str(&body).unwrap();
    cfg["memory_max_kib"] = serde_json::json!(cfg["memory_max_kib"].as_u64().unwrap() * 2);
    sqlx::query(
        "INSERT INTO vm_configs (vm_id, valid_from, vcpus, memory_max_kib, memory_current_kib, os_type, autostart, persistent, disk_capacity_bytes, body)
         SELECT vm_id, valid_from + 1000, vcpus, memory_max_kib * 2, memory_current_kib, os_type, autostart, persistent, disk_capacity_bytes, ? FROM vm_configs WHERE vm_id = ?",
    )
    .bind(cfg.to_string())
    .bind(vm_id)
    .execute(&app.pool)
    .await
    .unwrap();
    sqlx::query("UPDATE vms SET gone_at = 5000 WHERE id = ?")
        .bind(vm_id)
        .execute(&app.pool)
        .await
        .unwrap();
    let (status, html) = app.get(&format!("/vms/lab/{uuid}")).await;
    assert_eq!(status, 200);
    assert!(html.contains("id=\"gone-note\""), "marked gone");
    assert!(html.contains("memory 1 GiB → 2 GiB"), "the change is described");
    assert!(html.contains("192.168."), "IP history is listed");
}
