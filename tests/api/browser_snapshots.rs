//! Snapshots in a real headless Chromium, without JavaScript doing the work: an operator takes
//! a snapshot through the take form, comes back to the VM page with the flash, and reverts to
//! it through the confirmation page; a screenshot of each page for people to look at.
//!
//! Needs Debian's chromium and chromium-driver; `VMDECK_SKIP_BROWSER=1` is the only way to skip.

use std::time::Duration;

use fantoccini::Locator;

use crate::support::app::{add_user, breadth_app, uuid_of, TestApp, PASSWORD};
use crate::support::browser::{browser_tests_enabled, output_dir, Browser};
use crate::support::wait::{eventually, poll_until, EVERY};

const SHOWN_WITHIN: Duration = Duration::from_secs(5);

async fn find_shown(b: &Browser, css: &str) -> fantoccini::elements::Element {
    eventually(&format!("an element matching {css}"), SHOWN_WITHIN, async || {
        b.client.find(Locator::Css(css)).await.ok()
    })
    .await
}

/// The newest snapshot entry of the VM once settled: (action, status).
async fn settled(app: &TestApp, uuid: &str) -> (String, String) {
    let newest = async || {
        let row: Option<(String, String)> = sqlx::query_as(
            "SELECT action, status FROM audit_log WHERE kind = 'snapshot' AND vm_uuid = ?
              ORDER BY id DESC LIMIT 1",
        )
        .bind(uuid)
        .fetch_optional(&app.pool)
        .await
        .unwrap();
        row.filter(|(_, s)| !["requested", "sent", "accepted"].contains(&s.as_str()))
    };
    poll_until(Duration::from_secs(30), EVERY, newest).await.expect("the snapshot entry settles")
}

async fn flash(b: &Browser) -> String {
    find_shown(b, "#flash").await.text().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_takes_a_snapshot_and_reverts_to_it_in_a_real_browser() {
    if let Err(why) = browser_tests_enabled() {
        eprintln!("SKIPPED (explicitly): {why}");
        return;
    }
    let app = breadth_app().await;
    let b = Browser::start()
        .await
        .unwrap_or_else(|e| panic!("{e}\n(set VMDECK_SKIP_BROWSER=1 to skip explicitly)"));
    add_user(&app.pool, "olga", "operator").await;
    let uuid = uuid_of(&app, "br-running").await;

    b.client.goto(&format!("{}/login", app.base)).await.unwrap();
    find_shown(&b, "input[name=username]").await.send_keys("olga").await.unwrap();
    find_shown(&b, "input[name=password]").await.send_keys(PASSWORD).await.unwrap();
    find_shown(&b, ".login button[type=submit]").await.click().await.unwrap();
    find_shown(&b, "#vm-table").await;

    // From the VM page's Snapshots section to the take form: a suggested name, replaced by
    // the operator's own.
    b.client.goto(&format!("{}/vms/lab/{uuid}", app.base)).await.unwrap();
    find_shown(&b, "#snapshot-take").await.click().await.unwrap();
    let name = find_shown(&b, "#snapshot-name").await;
    assert!(name.prop("value").await.unwrap().unwrap_or_default().starts_with("snap-"));
    name.clear().await.unwrap();
    name.send_keys("before-upgrade").await.unwrap();
    find_shown(&b, "#snapshot-description").await.send_keys("browser test").await.unwrap();
    b.screenshot(&output_dir(), "snapshot-take").await.unwrap();
    find_shown(&b, "#take-button").await.click().await.unwrap();

    // Back on the VM page, with the flash; the request is confirmed.
    eventually("the VM page", SHOWN_WITHIN, async || {
        b.client.current_url().await.unwrap().path() == format!("/vms/lab/{uuid}")
    })
    .await;
    let text = flash(&b).await;
    assert!(text.starts_with("Take snapshot “before-upgrade” requested for br-running"), "{text}");
    assert_eq!(settled(&app, &uuid).await, ("snapshot_take".into(), "confirmed".into()));
    let row: i64 = sqlx::query_scalar("SELECT id FROM vm_snapshots WHERE name = 'before-upgrade'")
        .fetch_one(&app.pool)
        .await
        .unwrap();

    // Revert from the snapshot's row in the tree, through the confirmation page, choosing
    // paused.
    b.client.refresh().await.unwrap();
    let revert = format!("a[href$='/snapshots/{row}/revert']");
    find_shown(&b, &revert).await.click().await.unwrap();
    let warning = find_shown(&b, "#snapshot-warning").await.text().await.unwrap();
    assert!(warning.contains("The VM's current state is lost"), "{warning}");
    let facts = find_shown(&b, "#snapshot-facts").await.text().await.unwrap();
    assert!(facts.contains("before-upgrade") && facts.contains("taken "), "{facts}");
    find_shown(&b, "input[name=after][value=paused]").await.click().await.unwrap();
    b.screenshot(&output_dir(), "snapshot-revert").await.unwrap();
    find_shown(&b, "#confirm-button").await.click().await.unwrap();
    eventually("the VM page", SHOWN_WITHIN, async || {
        b.client.current_url().await.unwrap().path() == format!("/vms/lab/{uuid}")
    })
    .await;
    let text = flash(&b).await;
    assert!(text.starts_with("Revert to snapshot “before-upgrade” requested"), "{text}");
    assert_eq!(settled(&app, &uuid).await, ("snapshot_revert".into(), "confirmed".into()));
    let state: String = sqlx::query_scalar("SELECT state FROM vms WHERE uuid = ?")
        .bind(&uuid)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(state, "paused");
    b.close().await;
}
