//! Times and long values in a real headless Chromium: `static/time.js` shows server-rendered
//! UTC times in the browser's zone with the UTC value on hover, and the audit log stays as
//! wide as the window whatever it holds.

use std::time::Duration;

use fantoccini::Locator;
use vmdeck::domain::{Actor, AuditKind, AuditOutcome};

use crate::support::app::{breadth_app, TestApp, PASSWORD};
use crate::support::browser::{browser_tests_enabled, output_dir, Browser};
use crate::support::wait::eventually;

const SHOWN_WITHIN: Duration = Duration::from_secs(5);

/// The breadth lab and a browser in `tz`, logged in as the viewer; `None` when browser tests
/// are skipped explicitly.
async fn logged_in(tz: Option<&str>) -> Option<(TestApp, Browser)> {
    if let Err(why) = browser_tests_enabled() {
        eprintln!("SKIPPED (explicitly): {why}");
        return None;
    }
    let app = breadth_app().await;
    let b = Browser::start_in_zone(tz)
        .await
        .unwrap_or_else(|e| panic!("{e}\n(set VMDECK_SKIP_BROWSER=1 to skip explicitly)"));
    b.client.goto(&format!("{}/login", app.base)).await.unwrap();
    for (field, value) in [("username", "viewer"), ("password", PASSWORD)] {
        let input = b.client.find(Locator::Css(&format!("input[name={field}]"))).await.unwrap();
        input.send_keys(value).await.unwrap();
    }
    b.client.find(Locator::Css(".login button[type=submit]")).await.unwrap().click().await.unwrap();
    eventually("the login to land on the list", SHOWN_WITHIN, async || {
        b.client.current_url().await.is_ok_and(|u| u.path() == "/vms")
    })
    .await;
    Some((app, b))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn times_show_in_the_browsers_zone_with_utc_on_hover() {
    // Kathmandu: UTC+05:45 all year, so the local text differs from UTC in hours and minutes.
    let Some((app, b)) = logged_in(Some("Asia/Kathmandu")).await else { return };
    // Without JavaScript (plain HTTP), the server's UTC text inside a <time> element.
    let (_, html) = app.get("/audit").await;
    let server = html.split("<time datetime=\"").nth(1).expect("a <time> element on /audit");
    let (iso, rest) = server.split_once("\">").unwrap();
    let utc_text = rest.split("</time>").next().unwrap().to_string();
    assert!(iso.ends_with('Z') && utc_text.ends_with(" UTC"), "{iso} / {utc_text}");

    b.client.goto(&format!("{}/audit", app.base)).await.unwrap();
    let css = format!("time[datetime=\"{iso}\"]");
    let el = eventually("time.js to convert the time", SHOWN_WITHIN, async || {
        let el = b.client.find(Locator::Css(&css)).await.ok()?;
        el.attr("data-local").await.ok().flatten().map(|_| el)
    })
    .await;
    let shown = el.text().await.unwrap();
    let title = el.attr("title").await.unwrap().unwrap_or_default();
    assert_eq!(title, utc_text, "the UTC value on hover");
    // The same moment in Kathmandu, computed here.
    let t = time::PrimitiveDateTime::parse(
        &iso[..19],
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]"),
    )
    .unwrap()
    .assume_utc()
        + time::Duration::minutes(5 * 60 + 45);
    let local = format!("{} {:02}:{:02}:{:02}", t.date(), t.hour(), t.minute(), t.second());
    assert!(shown.starts_with(&local), "shown {shown:?}, expected Kathmandu time {local}");
    assert_ne!(shown, utc_text);
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_log_with_a_30000_character_user_name_is_no_wider_than_the_window() {
    let Some((app, b)) = logged_in(None).await else { return };
    let long: String = "x".repeat(30_000);
    let actor = Actor { user: Some(long.clone()), addr: Some("192.0.2.9".into()) };
    let id = vmdeck::events::record(
        &app.pool,
        AuditKind::LoginFailed,
        &actor,
        AuditOutcome::Refused,
        None,
        Some(&"y".repeat(30_000)),
    )
    .await
    .unwrap();
    for page in ["/audit".to_string(), format!("/audit/{id}")] {
        b.client.goto(&format!("{}{page}", app.base)).await.unwrap();
        eventually("the page", SHOWN_WITHIN, async || {
            b.client.find(Locator::Css("h1")).await.is_ok()
        })
        .await;
        let widths = b
            .client
            .execute("return [document.documentElement.scrollWidth, window.innerWidth]", vec![])
            .await
            .unwrap();
        let (scroll, window) = (widths[0].as_u64().unwrap(), widths[1].as_u64().unwrap());
        assert!(scroll <= window, "{page} is {scroll} px wide in a {window} px window");
        let name = page.replace('/', "_");
        b.screenshot(&output_dir(), &format!("audit-long-value{name}")).await.unwrap();
    }
    // The entry's page holds the whole name, wrapped.
    let text = b.client.find(Locator::Id("entry-user")).await.unwrap().text().await.unwrap();
    assert_eq!(text.chars().filter(|c| *c == 'x').count(), 30_000);
    b.close().await;
}
