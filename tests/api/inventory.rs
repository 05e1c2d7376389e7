//! The VM list and health endpoint over HTTP, against the breadth lab (libvirt's test driver).

use crate::support::app::{breadth_app, spawn_app, vm_names, AppOptions};

#[tokio::test]
async fn root_redirects_to_the_vm_list() {
    let app = breadth_app().await;
    let res = app.client.get(format!("{}/", app.base)).send().await.unwrap();
    assert_eq!(res.status().as_u16(), 303);
    assert_eq!(res.headers()["location"], "/vms");
}

#[tokio::test]
async fn every_breadth_domain_is_listed_with_its_normalized_state() {
    let app = breadth_app().await;
    let (status, html) = app.get("/vms").await;
    assert_eq!(status, 200);
    let names = vm_names(&html);
    assert_eq!(names.len(), 21, "the breadth lab defines 21 domains: {names:?}");
    for odd in [
        "name with spaces",
        "café-ünïcode ✓",
        "it's a \"quoted\" name",
        "R&D <lab> build",
        "a-very-long-domain-name-for-testing-column-truncation-and-wrapping-0123456789",
    ] {
        assert!(names.iter().any(|n| n == odd), "{odd:?} missing from {names:?}");
    }
    assert!(!html.contains("<lab>"), "names must be HTML-escaped");

    // State per domain, as stored from libvirt's state codes.
    let expected = [
        ("br-running", "running"),
        ("br-blocked", "running"),
        ("br-paused", "paused"),
        ("br-shutdown", "in_transition"),
        ("br-shutoff", "shut_off"),
        ("br-crashed", "crashed"),
        ("br-pmsuspended", "suspended"),
        ("br-nostate", "unknown"),
        ("br-managedsave", "shut_off"),
        ("br-transient-paused", "paused"),
    ];
    for (name, state) in expected {
        let (stored, raw): (String, String) =
            sqlx::query_as("SELECT state, raw_state FROM vms WHERE name = ?")
                .bind(name)
                .fetch_one(&app.pool)
                .await
                .unwrap();
        assert_eq!(stored, state, "{name} (libvirt says {raw})");
    }
    let (blocked_raw,): (String,) =
        sqlx::query_as("SELECT raw_state FROM vms WHERE name = 'br-blocked'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(blocked_raw, "blocked", "the raw backend state is kept beside the normalized one");
}

#[tokio::test]
async fn vms_without_disks_or_nics_are_stored_and_shown() {
    let app = breadth_app().await;
    let rows: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT v.name, c.body, c.disk_capacity_bytes FROM vms v JOIN vm_configs c ON c.id = v.config_id
         WHERE v.name IN ('br-no-disks', 'br-no-nics', 'br-bare', 'br-big') ORDER BY v.name",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), 4);
    let cfg = |name: &str| -> serde_json::Value {
        serde_json::from_str(&rows.iter().find(|r| r.0 == name).unwrap().1).unwrap()
    };
    assert_eq!(cfg("br-bare")["disks"].as_array().unwrap().len(), 0);
    assert_eq!(cfg("br-bare")["nics"].as_array().unwrap().len(), 0);
    assert_eq!(cfg("br-no-disks")["disks"].as_array().unwrap().len(), 0);
    assert!(!cfg("br-no-disks")["nics"].as_array().unwrap().is_empty());
    assert_eq!(cfg("br-no-nics")["nics"].as_array().unwrap().len(), 0);
    let big = cfg("br-big");
    assert!(big["disks"].as_array().unwrap().len() >= 6, "br-big has many disks: {big}");
    assert!(big["nics"].as_array().unwrap().len() >= 4, "br-big has many NICs: {big}");
    assert_eq!(big["vcpus"], 16);
    assert_eq!(big["memory_max_kib"], 64 * 1024 * 1024);
    let (_, html) = app.get("/vms?q=br-bare").await;
    assert_eq!(vm_names(&html), vec!["br-bare"]);
}

#[tokio::test]
async fn running_vms_show_their_ip_addresses_ipv4_first() {
    let app = breadth_app().await;
    let (addresses,): (String,) =
        sqlx::query_as("SELECT addresses FROM vms WHERE name = 'br-running'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    let addrs: Vec<serde_json::Value> = serde_json::from_str(&addresses).unwrap();
    assert!(!addrs.is_empty(), "the test driver reports addresses for running domains");
    let first = addrs[0]["addr"].as_str().unwrap().to_string();
    assert_eq!(addrs[0]["source"], "guest_agent", "the agent is asked first");
    let (_, html) = app.get(&format!("/vms?q={first}")).await;
    assert!(vm_names(&html).contains(&"br-running".to_string()), "filtering by IP finds the VM");
    let (shutoff,): (String,) =
        sqlx::query_as("SELECT addresses FROM vms WHERE name = 'br-shutoff'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(shutoff, "[]", "a shut-off VM has no addresses");
}

#[tokio::test]
async fn the_list_sorts_by_every_column_and_filters_by_state_host_and_text() {
    let app = breadth_app().await;
    for col in ["name", "host", "state", "ip", "vcpus", "memory", "disk", "cpu"] {
        for dir in ["asc", "desc"] {
            let (status, html) = app.get(&format!("/vms?sort={col}&dir={dir}")).await;
            assert_eq!(status, 200, "sort={col} dir={dir}");
            assert_eq!(vm_names(&html).len(), 21, "sort={col} dir={dir} keeps every row");
            assert!(html.contains("aria-sort"), "the sorted column is marked");
        }
    }
    let (_, html) = app.get("/vms?sort=vcpus&dir=desc").await;
    assert_eq!(vm_names(&html)[0], "br-big", "br-big has the most vCPUs");
    let (_, asc) = app.get("/vms?sort=name").await;
    let (_, desc) = app.get("/vms?sort=name&dir=desc").await;
    let mut reversed = vm_names(&desc);
    reversed.reverse();
    assert_eq!(vm_names(&asc), reversed);

    let (_, html) = app.get("/vms?state=paused").await;
    let mut paused = vm_names(&html);
    paused.sort();
    assert_eq!(paused, vec!["br-paused", "br-transient-paused"]);
    let (_, html) = app.get("/vms?q=CAF%C3%89").await;
    assert_eq!(vm_names(&html), vec!["café-ünïcode ✓"], "text filter ignores case");
    let (_, html) = app.get("/vms?host=lab&state=crashed").await;
    assert_eq!(vm_names(&html), vec!["br-crashed"]);
    let (_, html) = app.get("/vms?q=no-such-vm").await;
    assert!(vm_names(&html).is_empty());
    assert!(html.contains("No VM matches these filters"), "empty result explains itself");
}

#[tokio::test]
async fn bad_query_parameters_get_a_visible_message_never_an_error() {
    let app = breadth_app().await;
    let cases = [
        ("/vms?sort=bogus", "Cannot sort by"),
        ("/vms?dir=sideways", "Unknown sort direction"),
        ("/vms?state=exploded", "Unknown state"),
        ("/vms?host=nowhere", "There is no host named"),
        ("/vms?q=%3Cscript%3Ealert(1)%3C/script%3E", "No VM matches"),
        ("/vms?unknown=1&sort=", "vm-table"),
        ("/vms?q=%FF%FE", "vm"),
    ];
    for (path, expect) in cases {
        let (status, html) = app.get(path).await;
        assert_eq!(status, 200, "{path} must not fail");
        assert!(html.contains(expect), "{path}: expected {expect:?} in the page");
        assert!(!html.contains("<script>alert"), "{path}: user text must be escaped");
    }
    let long = "x".repeat(500);
    let (status, html) = app.get(&format!("/vms?q={long}")).await;
    assert_eq!(status, 200);
    assert!(html.contains("cut to 200 characters"));
}

#[tokio::test]
async fn healthz_reports_each_hosts_poll_state() {
    let token = "monitoring-token-0123456789";
    let app =
        spawn_app(AppOptions { healthz_tokens: vec![token.into()], ..AppOptions::breadth() }).await;
    // A logged-in user and a monitoring system with a token get the details.
    let with_token = app
        .client
        .get(format!("{}/healthz", app.base))
        .header("Authorization", format!("Bearer {token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(with_token.status().as_u16(), 200);
    for body in [app.health().await, with_token.json().await.unwrap()] {
        assert_eq!(body["status"], "ok");
        let host = &body["hosts"][0];
        assert_eq!(host["name"], "lab");
        assert_eq!(host["status"], "ok");
        assert_eq!(host["vm_count"], 21);
        assert!(host["last_success_ms"].as_i64().unwrap() > 0);
    }
    // Anyone else gets the overall and per-host status only.
    for auth in [None, Some("Bearer wrong-token-0123456789")] {
        let mut req = app.client.get(format!("{}/healthz", app.base));
        if let Some(a) = auth {
            req = req.header("Authorization", a);
        }
        let body = req.send().await.unwrap().text().await.unwrap();
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(json["status"], "ok", "{auth:?}");
        assert_eq!(json["hosts"][0]["status"], "ok", "{auth:?}");
        for secret in ["lab", "test://", "breadth.xml", "vm_count"] {
            assert!(!body.contains(secret), "{auth:?}: {secret:?} is not for anyone: {body}");
        }
    }
}

#[tokio::test]
async fn unknown_pages_get_an_html_404_and_static_files_are_served() {
    let app = breadth_app().await;
    let (status, html) = app.get("/no/such/page").await;
    assert_eq!(status, 404);
    assert!(crate::support::app::unescape(&html).contains("There is no page at /no/such/page"));
    let (status, css) = app.get("/static/vmdeck.css").await;
    assert_eq!(status, 200);
    assert!(css.contains(".badge"));
    let res = app.client.get(format!("{}/vms", app.base)).send().await.unwrap();
    assert!(res.headers().get("server-timing").is_some(), "responses carry Server-Timing");
}

#[tokio::test]
async fn the_demo_lab_runs_when_no_hosts_are_configured() {
    let app = spawn_app(AppOptions::default()).await;
    let (status, html) = app.get("/vms").await;
    assert_eq!(status, 200);
    assert!(html.contains("DEMO"), "the demo is clearly marked");
    let names = vm_names(&html);
    assert_eq!(names.len(), 12, "{names:?}");
    assert!(names.contains(&"db-primary".to_string()));
    let states: Vec<(String,)> =
        sqlx::query_as("SELECT DISTINCT state FROM vms").fetch_all(&app.pool).await.unwrap();
    assert!(states.len() >= 4, "the demo mixes states: {states:?}");
}

#[tokio::test]
async fn pages_ignore_query_parameters_they_do_not_know_as_bookmarks_carry_them() {
    // Query strings are typed structs now; a link with a tracking or stale parameter must still
    // open the page with the parameters it does know applied.
    let app = breadth_app().await;
    let uuid = crate::support::app::uuid_of(&app, "br-running").await;
    let (status, html) = app.get("/vms?utm_source=mail&state=running&q=br-running").await;
    assert_eq!(status, 200, "/vms with an unknown parameter");
    assert_eq!(vm_names(&html), vec!["br-running"], "the known parameters still apply");
    for path in [
        format!("/vms/lab/{uuid}?range=1h&old=1"),
        format!("/vms/lab/{uuid}.csv?range=1h&old=1"),
        "/audit?old=1&outcome=ok".to_string(),
        "/audit.csv?old=1".to_string(),
        "/reports/availability?old=1&sort=name".to_string(),
        "/reports/capacity?old=1".to_string(),
        "/reports/fleet?old=1".to_string(),
    ] {
        let (status, _) = app.get(&path).await;
        assert_eq!(status, 200, "{path}");
    }
}

#[tokio::test]
async fn the_list_follows_every_stored_change_and_carries_the_csrf_token_once() {
    let app = breadth_app().await;
    let op = app.session("operator").await;
    let (_, before) = op.get("/vms").await;
    assert!(vm_names(&before).iter().any(|n| n == "br-running"));
    // The rows are held in memory between changes; any writer moves the inventory version,
    // here plain SQL as a restore or a second process would write.
    sqlx::query("UPDATE vms SET name = 'renamed outside vmdeck' WHERE name = 'br-running'")
        .execute(&app.pool)
        .await
        .unwrap();
    let (_, after) = op.get("/vms").await;
    let names = vm_names(&after);
    assert!(names.iter().any(|n| n == "renamed outside vmdeck"), "{names:?}");
    assert!(!names.iter().any(|n| n == "br-running"), "{names:?}");

    // Rows do not repeat the session's token: the page's three forms carry it (log out, the
    // rows' actions, bulk), not each of the 21 rows.
    let csrf = crate::support::app::csrf_in(&after).unwrap();
    assert_eq!(after.matches(&csrf).count(), 3, "one token per form, none per row");
    assert!(after.contains("form=\"row-action\""), "rows submit the shared form");
}
