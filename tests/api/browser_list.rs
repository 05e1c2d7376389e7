//! The VM list in a real headless Chromium: sorting by clicking headers, filtering through the
//! form, refreshing in place (static/live.js) without losing what the user did, and screenshots
//! for people to look at.
//!
//! Needs Debian's chromium and chromium-driver; without them the test fails saying how to install
//! them. `VMDECK_SKIP_BROWSER=1` is the only way to skip it.

use std::time::Duration;

use fantoccini::Locator;

use crate::support::app::{
    add_user, breadth_app, spawn_app, uuid_of, AppOptions, TestApp, PASSWORD,
};
use crate::support::browser::{browser_tests_enabled, output_dir, Browser};
use crate::support::wait::{eventually, eventually_every, poll_until, EVERY};

/// How long the browser may take to show what a test waits for.
const SHOWN_WITHIN: Duration = Duration::from_secs(5);

async fn try_names(b: &Browser) -> Result<Vec<String>, fantoccini::error::CmdError> {
    let mut out = Vec::new();
    for el in b.client.find_all(Locator::Css("#vm-table tbody td.col-name")).await? {
        out.push(el.text().await?);
    }
    Ok(out)
}

/// The VM names shown once the page satisfies `ready` (clicks navigate asynchronously, so the
/// old page may still be there for a moment); on a timeout, the names shown then, for the
/// caller's assertion to report.
async fn names_when(b: &Browser, ready: impl Fn(&[String]) -> bool) -> Vec<String> {
    let shown = async || try_names(b).await.ok().filter(|n| ready(n));
    match poll_until(SHOWN_WITHIN, EVERY, shown).await {
        Some(names) => names,
        None => try_names(b).await.unwrap_or_default(),
    }
}

async fn wait_for_query(b: &Browser, needle: &str) {
    eventually(&format!("a URL with {needle:?}"), SHOWN_WITHIN, async || {
        b.client.current_url().await.unwrap().query().unwrap_or_default().contains(needle)
    })
    .await;
}

/// The breadth lab and a browser, or `None` when browser tests are skipped explicitly.
async fn lab_and_browser() -> Option<(TestApp, Browser)> {
    if let Err(why) = browser_tests_enabled() {
        eprintln!("SKIPPED (explicitly): {why}");
        return None;
    }
    let app = breadth_app().await;
    let b = Browser::start()
        .await
        .unwrap_or_else(|e| panic!("{e}\n(set VMDECK_SKIP_BROWSER=1 to skip explicitly)"));
    Some((app, b))
}

/// Creates the operator `name`, logs in as them through the login page and waits for the list.
async fn log_in_as_new_operator(app: &TestApp, b: &Browser, name: &str) {
    add_user(&app.pool, name, "operator").await;
    b.client.goto(&format!("{}/login", app.base)).await.unwrap();
    log_in(b, name).await;
    names_when(b, |n| n.len() == 21).await;
}

/// The element matching `css`, once the page shows it.
async fn find_shown(b: &Browser, css: &str) -> fantoccini::elements::Element {
    eventually(&format!("an element matching {css}"), SHOWN_WITHIN, async || {
        b.client.find(Locator::Css(css)).await.ok()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_vm_list_sorts_and_filters_in_a_real_browser() {
    let Some((app, b)) = lab_and_browser().await else { return };

    // Not logged in: / leads to the list, which asks for a login first.
    b.client.goto(&format!("{}/", app.base)).await.unwrap();
    assert_eq!(b.client.current_url().await.unwrap().path(), "/vms", "/ redirects to the list");
    log_in(&b, "viewer").await;
    let all = names_when(&b, |n| n.len() == 21).await;
    assert_eq!(all.len(), 21);

    // Sort by vCPUs, twice for descending.
    b.client.find(Locator::Css("th.col-vcpus a")).await.unwrap().click().await.unwrap();
    wait_for_query(&b, "sort=vcpus").await;
    b.client.find(Locator::Css("th.col-vcpus a")).await.unwrap().click().await.unwrap();
    wait_for_query(&b, "dir=desc").await;
    let sorted = names_when(&b, |n| n.first().map(String::as_str) == Some("br-big")).await;
    assert_eq!(sorted.first().map(String::as_str), Some("br-big"), "{sorted:?}");

    // Filter by state and text through the form.
    let state = b.client.find(Locator::Css("select[name=state]")).await.unwrap();
    state.select_by_value("paused").await.unwrap();
    let q = b.client.find(Locator::Css("input[name=q]")).await.unwrap();
    q.send_keys("transient").await.unwrap();
    b.client
        .find(Locator::Css("form.filters button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for_query(&b, "state=paused").await;
    assert_eq!(names_when(&b, |n| n.len() == 1).await, vec!["br-transient-paused"]);
    let shot_filtered = b.screenshot(&output_dir(), "vms-filtered").await.unwrap();

    // Back to everything; the screenshot of the full list is kept for people to look at.
    b.client.find(Locator::LinkText("Clear filters")).await.unwrap().click().await.unwrap();
    assert_eq!(names_when(&b, |n| n.len() == 21).await.len(), 21);
    let shot = b.screenshot(&output_dir(), "vms-list").await.unwrap();
    assert!(std::fs::metadata(&shot).unwrap().len() > 10_000, "a real screenshot was written");
    assert!(shot_filtered.exists());
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_stops_a_vm_from_the_list_through_its_confirmation_page() {
    let Some((app, b)) = lab_and_browser().await else { return };
    log_in_as_new_operator(&app, &b, "olivia").await;

    // Power off br-running: the row's button leads to a confirmation page, a plain form.
    let uuid = uuid_of(&app, "br-running").await;
    open_menu(&b, &uuid).await;
    let link = format!("tr[data-uuid='{uuid}'] .menu button[value=power_off]");
    b.client.find(Locator::Css(&link)).await.unwrap().click().await.unwrap();
    let button = find_shown(&b, "#confirm-button").await;
    assert!(b.client.source().await.unwrap().contains("cuts the power"));
    b.screenshot(&output_dir(), "confirm-power-off").await.unwrap();
    button.click().await.unwrap();

    let flash = find_shown(&b, "#flash").await.text().await.unwrap();
    assert!(flash.contains("Power off requested for br-running"), "{flash}");
    b.screenshot(&output_dir(), "vms-after-power-off").await.unwrap();

    b.client.goto(&format!("{}/audit?vm={uuid}", app.base)).await.unwrap();
    let confirmed = async || {
        let outcome = find_shown(&b, "#audit-table td.col-outcome").await.text().await.unwrap();
        if outcome != "confirmed" {
            b.client.refresh().await.unwrap();
        }
        (outcome == "confirmed").then_some(outcome)
    };
    let outcome = eventually_every(
        "the audit entry shown as confirmed",
        SHOWN_WITHIN,
        Duration::from_millis(100),
        confirmed,
    )
    .await;
    assert_eq!(outcome, "confirmed");
    b.screenshot(&output_dir(), "audit-log").await.unwrap();

    // The VM's own page, from the audit entry's link: charts and the power-state timeline.
    for _ in 0..3 {
        app.poll("lab").await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    b.client.goto(&format!("{}/vms/lab/{uuid}?range=1h", app.base)).await.unwrap();
    find_shown(&b, "#timeline svg").await;
    assert!(b.client.source().await.unwrap().contains("class=\"chart\""));
    b.screenshot(&output_dir(), "vm-page").await.unwrap();
    b.client.execute("document.getElementById('timeline').scrollIntoView()", vec![]).await.unwrap();
    b.screenshot(&output_dir(), "vm-page-history").await.unwrap();

    // A report, as people see it.
    b.client.goto(&format!("{}/reports/availability?sort=name", app.base)).await.unwrap();
    find_shown(&b, "#report-table").await;
    b.screenshot(&output_dir(), "report-availability").await.unwrap();
    b.client.goto(&format!("{}/reports/capacity", app.base)).await.unwrap();
    find_shown(&b, ".chart").await;
    b.screenshot(&output_dir(), "report-capacity").await.unwrap();
    b.close().await;
}

/// Opens the "More" menu of the VM's row (a `<details>`: no script involved).
async fn open_menu(b: &Browser, uuid: &str) {
    let summary = format!("tr[data-uuid='{uuid}'] details.actions > summary");
    b.client.find(Locator::Css(&summary)).await.unwrap().click().await.unwrap();
    let open = format!("tr[data-uuid='{uuid}'] details.actions[open] .menu");
    find_shown(b, &open).await;
}

/// The flash message once it mentions `needle` (the page before a click may still show).
async fn flash_with(b: &Browser, needle: &str) -> String {
    eventually(&format!("a message about {needle:?}"), SHOWN_WITHIN, async || {
        let flash = b.client.find(Locator::Css("#flash")).await.ok()?;
        flash.text().await.ok().filter(|t| t.contains(needle))
    })
    .await
}

/// The row's primary action, once the list shows it (re-loading the list until then: the
/// action settles in the background).
async fn primary_when(b: &Browser, app: &TestApp, uuid: &str, action: &str) {
    let css = format!("tr[data-uuid='{uuid}'] button.primary[value={action}]");
    eventually_every(&format!("{action} as the primary action"), SHOWN_WITHIN, EVERY, async || {
        if b.client.find(Locator::Css(&css)).await.is_ok() {
            return Some(());
        }
        b.client.goto(&format!("{}/vms", app.base)).await.unwrap();
        None
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_pauses_a_vm_from_its_menu_and_resumes_it_with_the_primary_button() {
    let Some((app, b)) = lab_and_browser().await else { return };
    log_in_as_new_operator(&app, &b, "pia").await;
    let uuid = uuid_of(&app, "br-running").await;
    primary_when(&b, &app, &uuid, "shutdown").await;

    // The menu opens in place; the actions the VM's state rules out are shown disabled.
    open_menu(&b, &uuid).await;
    let start = b
        .client
        .find(Locator::Css(&format!("tr[data-uuid='{uuid}'] .menu button[value=start]")))
        .await
        .unwrap();
    assert_eq!(start.attr("disabled").await.unwrap().as_deref(), Some("true"));
    assert_eq!(
        start.attr("title").await.unwrap().as_deref(),
        Some("Not possible while the VM is running.")
    );
    let size = b
        .client
        .execute(
            "const r = arguments[0].getBoundingClientRect(); return [r.width, r.height];",
            vec![serde_json::to_value(
                b.client
                    .find(Locator::Css(&format!("tr[data-uuid='{uuid}'] button.primary")))
                    .await
                    .unwrap(),
            )
            .unwrap()],
        )
        .await
        .unwrap();
    let (w, h) = (size[0].as_f64().unwrap(), size[1].as_f64().unwrap());
    assert!(w >= 24.0 && h >= 24.0, "the primary button is a 24 px target at least: {w}×{h}");
    b.client
        .execute(
            "document.querySelector(arguments[0]).scrollIntoView({block: 'center'})",
            vec![format!("tr[data-uuid='{uuid}']").into()],
        )
        .await
        .unwrap();
    b.screenshot(&output_dir(), "vms-row-menu-open").await.unwrap();

    let pause = format!("tr[data-uuid='{uuid}'] .menu button[value=pause]");
    b.client.find(Locator::Css(&pause)).await.unwrap().click().await.unwrap();
    flash_with(&b, "Pause requested for br-running").await;

    // Paused: Resume is now the row's first button.
    primary_when(&b, &app, &uuid, "resume").await;
    let resume = format!("tr[data-uuid='{uuid}'] button.primary[value=resume]");
    b.client.find(Locator::Css(&resume)).await.unwrap().click().await.unwrap();
    flash_with(&b, "Resume requested for br-running").await;
    primary_when(&b, &app, &uuid, "shutdown").await;
    b.screenshot(&output_dir(), "vms-after-resume").await.unwrap();
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn select_all_checks_every_row_for_a_bulk_action() {
    let Some((app, b)) = lab_and_browser().await else { return };
    log_in_as_new_operator(&app, &b, "olga").await;
    find_shown(&b, "#select-all").await.click().await.unwrap();
    let checked = b
        .client
        .execute(
            "return document.querySelectorAll('input[name=vm][form=bulk]:checked').length",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(checked.as_u64(), Some(21), "every row is selected");
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_list_updates_in_place_and_keeps_ticked_boxes_typed_text_and_the_chosen_action() {
    if let Err(why) = browser_tests_enabled() {
        eprintln!("SKIPPED (explicitly): {why}");
        return;
    }
    // Polled every second, so the list's script asks every second too.
    let app = spawn_app(AppOptions { poll_interval_secs: 1, ..AppOptions::breadth() }).await;
    let b = Browser::start()
        .await
        .unwrap_or_else(|e| panic!("{e}\n(set VMDECK_SKIP_BROWSER=1 to skip explicitly)"));
    log_in_as_new_operator(&app, &b, "lena").await;
    assert!(
        !b.client.source().await.unwrap().contains("http-equiv=\"refresh\""),
        "no meta refresh: it reloads the page and drops what the user did"
    );
    let running = uuid_of(&app, "br-running").await;
    let blocked = uuid_of(&app, "br-blocked").await;
    let state_of = format!("tr[data-uuid='{running}'] td.col-state .badge");
    assert_eq!(find_shown(&b, &state_of).await.text().await.unwrap(), "running");

    // What the user is in the middle of: two ticked rows, a search typed but not submitted, a
    // chosen bulk action; and a mark that a full reload would wipe.
    for uuid in [&running, &blocked] {
        // A row replaced between finding its box and clicking it is clicked again.
        let box_ = format!("tr[data-uuid='{uuid}'] input[name=vm]");
        eventually(&format!("{box_} ticked"), SHOWN_WITHIN, async || {
            let el = b.client.find(Locator::Css(&box_)).await.ok()?;
            if el.prop("checked").await.ok()?.as_deref() != Some("true") {
                el.click().await.ok()?;
            }
            (el.prop("checked").await.ok()?.as_deref() == Some("true")).then_some(())
        })
        .await;
    }
    let q = b.client.find(Locator::Css("input[name=q]")).await.unwrap();
    q.send_keys("br-").await.unwrap();
    b.client
        .find(Locator::Css("#bulk-action"))
        .await
        .unwrap()
        .select_by_value("pause")
        .await
        .unwrap();
    b.client.execute("window.notReloaded = true", vec![]).await.unwrap();

    // Behind the page's back, another operator pauses br-running.
    let other = app.session("operator").await;
    let res = other.post(&format!("/vms/lab/{running}/power"), &[("action", "pause")]).await;
    assert_eq!(res.status().as_u16(), 303);

    eventually("br-running shown paused without a reload", Duration::from_secs(10), async || {
        let text = b.client.find(Locator::Css(&state_of)).await.ok()?.text().await.ok()?;
        (text == "paused").then_some(())
    })
    .await;
    let kept = b
        .client
        .execute(
            "return [window.notReloaded === true,
                     [...document.querySelectorAll('input[name=vm]:checked')].map(b => b.value).sort(),
                     document.querySelector('input[name=q]').value,
                     document.getElementById('bulk-action').value,
                     document.getElementById('live-stamp').textContent]",
            vec![],
        )
        .await
        .unwrap();
    let mut ticked = vec![format!("lab/{running}"), format!("lab/{blocked}")];
    ticked.sort();
    assert_eq!(kept[0], true, "the page was not reloaded: {kept}");
    assert_eq!(kept[1], serde_json::json!(ticked), "both boxes stay ticked: {kept}");
    assert_eq!(kept[2], "br-", "the typed search stays: {kept}");
    assert_eq!(kept[3], "pause", "the chosen bulk action stays: {kept}");
    assert!(kept[4].as_str().unwrap().starts_with("Updated"), "the stamp says when: {kept}");
    b.screenshot(&output_dir(), "vms-live-update").await.unwrap();
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_vm_page_shows_a_state_change_in_place() {
    if let Err(why) = browser_tests_enabled() {
        eprintln!("SKIPPED (explicitly): {why}");
        return;
    }
    let app = spawn_app(AppOptions { poll_interval_secs: 1, ..AppOptions::breadth() }).await;
    let b = Browser::start()
        .await
        .unwrap_or_else(|e| panic!("{e}\n(set VMDECK_SKIP_BROWSER=1 to skip explicitly)"));
    log_in_as_new_operator(&app, &b, "vera").await;
    let uuid = uuid_of(&app, "br-running").await;
    b.client.goto(&format!("{}/vms/lab/{uuid}?range=1h", app.base)).await.unwrap();
    let badge = "#vm-live-head h1 .badge";
    assert_eq!(find_shown(&b, badge).await.text().await.unwrap(), "running");
    b.client.execute("window.notReloaded = true", vec![]).await.unwrap();

    let other = app.session("operator").await;
    let res = other.post(&format!("/vms/lab/{uuid}/power"), &[("action", "pause")]).await;
    assert_eq!(res.status().as_u16(), 303);
    eventually(
        "the VM page showing paused without a reload",
        Duration::from_secs(10),
        async || {
            let text = b.client.find(Locator::Css(badge)).await.ok()?.text().await.ok()?;
            (text == "paused").then_some(())
        },
    )
    .await;
    let kept = b.client.execute("return window.notReloaded === true", vec![]).await.unwrap();
    assert_eq!(kept, true, "updated in place, not reloaded");
    // The buttons follow the state: a paused VM offers Resume.
    find_shown(&b, "#vm-live-head [value=resume]").await;
    b.screenshot(&output_dir(), "vm-page-live-update").await.unwrap();
    b.close().await;
}

/// Fills in and submits the login form shown on the current page.
async fn log_in(b: &Browser, user: &str) {
    b.client
        .find(Locator::Css("input[name=username]"))
        .await
        .unwrap()
        .send_keys(user)
        .await
        .unwrap();
    b.client
        .find(Locator::Css("input[name=password]"))
        .await
        .unwrap()
        .send_keys(PASSWORD)
        .await
        .unwrap();
    b.client.find(Locator::Css(".login button[type=submit]")).await.unwrap().click().await.unwrap();
}
