//! Pages that stay current: the fragments `static/live.js` refreshes the VM list and the VM page
//! from (`/vms/live?…`, `/vms/<host>/<uuid>/live`), over HTTP. The browser side is in
//! `browser_list.rs`.

use std::time::Duration;

use crate::support::app::{breadth_app, cookie_client, unescape, uuid_of, Session, TestApp};
use crate::support::wait::eventually;

/// A GET with an optional `If-None-Match`: (status, ETag, body).
async fn fetch(s: &Session, path: &str, etag: Option<&str>) -> (u16, Option<String>, String) {
    let mut req = s.client.get(format!("{}{}", s.base, path));
    if let Some(tag) = etag {
        req = req.header("If-None-Match", tag);
    }
    let res = req.send().await.expect("request");
    let status = res.status().as_u16();
    let tag = res.headers().get("etag").map(|v| v.to_str().unwrap().to_string());
    let cache = res.headers().get("cache-control").map(|v| v.to_str().unwrap().to_string());
    assert_eq!(cache.as_deref(), Some("no-store"), "{path}: never cached ({status})");
    (status, tag, res.text().await.unwrap())
}

/// The `<tr>` of the VM `uuid` in a fragment or page.
fn row_of<'h>(html: &'h str, uuid: &str) -> &'h str {
    let start = html
        .find(&format!("data-uuid=\"{uuid}\""))
        .unwrap_or_else(|| panic!("no row for {uuid} in:\n{html}"));
    let end = html[start..].find("</tr>").map_or(html.len(), |e| start + e);
    &html[start..end]
}

/// Records a power request in flight for `uuid`, as the power path writes it before sending.
async fn pending_request(app: &TestApp, uuid: &str, name: &str) {
    sqlx::query(
        "INSERT INTO audit_log (ts, kind, user_name, host_name, vm_uuid, vm_name, action, status)
         VALUES (1, 'power', 'olivia', 'lab', ?, ?, 'shutdown', 'accepted')",
    )
    .bind(uuid)
    .bind(name)
    .execute(&app.pool)
    .await
    .unwrap();
}

#[tokio::test]
async fn the_list_fragment_follows_a_power_action_and_costs_a_304_while_nothing_changed() {
    let app = breadth_app().await;
    let uuid = uuid_of(&app, "br-running").await;
    let path = "/vms/live?sort=state&per_page=50";
    let (status, tag, body) = fetch(&app.viewer, path, None).await;
    assert_eq!(status, 200, "{body}");
    assert!(row_of(&body, &uuid).contains("badge state-running"), "{}", row_of(&body, &uuid));
    assert!(body.contains("id=\"host-banners\"") && body.contains("data-host=\"lab\""), "{body}");
    assert!(body.contains("id=\"vm-count\"") && body.contains("of 21"), "{body}");
    assert!(!body.contains("<html"), "a fragment, not a page");
    let tag = tag.expect("an ETag");

    // Unchanged: 304, no body, same tag.
    let (status, again, body) = fetch(&app.viewer, path, Some(&tag)).await;
    assert_eq!((status, again.as_deref(), body.as_str()), (304, Some(tag.as_str()), ""));

    // An operator pauses it from another session; the viewer's next fragment shows it paused.
    let op = app.session("operator").await;
    let res = op.post(&format!("/vms/lab/{uuid}/power"), &[("action", "pause")]).await;
    assert_eq!(res.status().as_u16(), 303);
    let body =
        eventually("the fragment showing br-running paused", Duration::from_secs(5), async || {
            let (status, new_tag, body) = fetch(&app.viewer, path, Some(&tag)).await;
            (status == 200 && row_of(&body, &uuid).contains("badge state-paused"))
                .then_some((new_tag, body))
        })
        .await;
    assert_ne!(body.0.as_deref(), Some(tag.as_str()), "a new tag with new content");
}

#[tokio::test]
async fn the_list_hurries_only_while_a_request_on_a_vm_it_shows_settles() {
    let app = breadth_app().await;
    let running = uuid_of(&app, "br-running").await;
    // The list page has no meta refresh, but the script and a Refresh link.
    let page = unescape(&app.get("/vms").await.1);
    assert!(!page.contains("http-equiv=\"refresh\""), "no full reload");
    assert!(page.contains("src=\"/static/live.js\"") && page.contains("id=\"refresh\""));
    assert!(page.contains("data-href=\"/vms/live\""), "the fragment of this page's query");
    assert!(page.contains("data-pending=\"false\""), "nothing settles yet");
    let filtered = unescape(&app.get("/vms?state=paused&sort=name&dir=desc").await.1);
    let want = "data-href=\"/vms/live?state=paused&sort=name&dir=desc\"";
    assert!(filtered.contains(want), "{filtered}");

    pending_request(&app, &running, "br-running").await;
    // Shown on the page: hurry, and the row carries the marker.
    let (_, body) = app.get("/vms/live").await;
    assert!(body.contains("data-pending=\"true\""), "{body}");
    assert!(row_of(&body, &running).contains("Shut down requested by olivia"));
    // Not shown (filtered out): no reason to hurry.
    let (_, body) = app.get("/vms/live?state=paused").await;
    assert!(body.contains("data-pending=\"false\""), "{body}");
    // The tag moved with the request, so a browser holding the old one gets the marker.
    let (_, fresh, _) = fetch(&app.viewer, "/vms/live?state=paused", None).await;
    // Settled as a restart settles what it finds in flight.
    vmdeck::control::settle_leftovers(&app.pool, &app.hosts).await;
    let (status, _, _) = fetch(&app.viewer, "/vms/live?state=paused", fresh.as_deref()).await;
    assert_eq!(status, 200, "a settled request changes the tag");
}

#[tokio::test]
async fn the_fragments_need_a_login_and_refuse_a_query_they_cannot_use() {
    let app = breadth_app().await;
    let uuid = uuid_of(&app, "br-running").await;
    let anonymous =
        Session { client: cookie_client(), csrf: String::new(), base: app.base.clone() };
    for path in ["/vms/live".to_string(), format!("/vms/lab/{uuid}/live")] {
        let (status, _, body) = fetch(&anonymous, &path, None).await;
        assert_eq!(status, 401, "{path}: {body}");
        assert!(!body.contains("br-running"), "{path} shows nothing before a login");
    }
    let long = format!("/vms/live?q={}", "a".repeat(201));
    // (query, words the answer must contain)
    let cases = [
        ("/vms/live?state=bogus", "Unknown state"),
        ("/vms/live?host=nowhere", "no host named"),
        ("/vms/live?sort=colour", "Cannot sort by"),
        ("/vms/live?dir=sideways", "sort direction"),
        ("/vms/live?per_page=7", "rows per page"),
        (long.as_str(), "cut to 200 characters"),
    ];
    for (path, words) in cases {
        let (status, _, body) = fetch(&app.viewer, path, None).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert!(body.contains(words), "{path} says {words:?}: {body}");
    }
    let (status, _, body) =
        fetch(&app.viewer, "/vms/lab/00000000-0000-0000-0000-000000000000/live", None).await;
    assert_eq!(status, 404, "{body}");
    let (status, _, _) = fetch(&app.viewer, "/vms/lab/not-a-uuid/live", None).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn the_vm_page_fragment_follows_its_state_and_pending_request() {
    let app = breadth_app().await;
    let uuid = uuid_of(&app, "br-running").await;
    let path = format!("/vms/lab/{uuid}/live");
    let page = unescape(&app.get(&format!("/vms/lab/{uuid}")).await.1);
    assert!(page.contains(&format!("data-href=\"/vms/lab/{uuid}/live\"")), "{page}");
    assert!(page.contains("id=\"vm-live-head\"") && page.contains("src=\"/static/live.js\""));

    let (status, tag, body) = fetch(&app.viewer, &path, None).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("badge state-running") && body.contains("id=\"vm-figures\""), "{body}");
    assert!(body.contains("data-pending=\"false\""), "{body}");
    let tag = tag.unwrap();
    assert_eq!(fetch(&app.viewer, &path, Some(&tag)).await.0, 304);

    pending_request(&app, &uuid, "br-running").await;
    let (status, tag, body) = fetch(&app.viewer, &path, Some(&tag)).await;
    assert_eq!(status, 200);
    assert!(
        body.contains("Shut down requested by olivia") && body.contains("data-pending=\"true\"")
    );
    // Settled as a restart settles what it finds in flight.
    vmdeck::control::settle_leftovers(&app.pool, &app.hosts).await;

    let op = app.session("operator").await;
    let res = op.post(&format!("/vms/lab/{uuid}/power"), &[("action", "pause")]).await;
    assert_eq!(res.status().as_u16(), 303);
    let tag = tag.unwrap();
    eventually("the VM page fragment showing it paused", Duration::from_secs(5), async || {
        let (status, _, body) = fetch(&app.viewer, &path, Some(&tag)).await;
        (status == 200 && body.contains("badge state-paused")).then_some(())
    })
    .await;
}
