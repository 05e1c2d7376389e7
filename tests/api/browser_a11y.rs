//! Every page in a real headless Chromium, at a desktop and at a phone's width: an axe-core scan
//! (WCAG 2.0/2.1 A and AA rules) with no serious or critical violation, no horizontal page
//! scroll on a phone, Log out within reach, and a screenshot of each page at both widths.
//!
//! axe-core is vendored under tests/vendor/axe-core (a test asset only; vmdeck never serves it)
//! and injected over WebDriver: chromedriver runs scripts through the DevTools protocol, which
//! the page's Content-Security-Policy (no inline or foreign script) does not apply to — the test
//! checks that the injection worked rather than assuming it.
//!
//! The pages are a list of paths ([`pages`]); a page added to vmdeck belongs there.

use std::time::Duration;

use fantoccini::key::Key;
use fantoccini::Locator;
use serde_json::Value;

use crate::support::app::{
    add_user, fixture, libvirt_host, spawn_app, uuid_of, AppOptions, TestApp, PASSWORD,
};
use crate::support::browser::{browser_tests_enabled, output_dir, Browser, WINDOW_SIZE};
use crate::support::wait::eventually;

/// How long the browser may take to show what the test waits for.
const SHOWN_WITHIN: Duration = Duration::from_secs(10);
/// A phone in portrait (an iPhone 12–15's CSS viewport).
const PHONE: (u32, u32) = (390, 844);
/// The rule sets the scan runs: WCAG 2.0 and 2.1, levels A and AA.
const AXE_TAGS: &[&str] = &["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"];
/// The vendored axe-core (see tests/vendor/axe-core/README.md).
pub(crate) const AXE_JS: &str =
    concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vendor/axe-core/axe.min.js");

/// Who looks at a page.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Who {
    Nobody,
    Admin,
    Viewer,
}

/// One page to check: its screenshot name, its path, who looks at it and the status expected.
struct Page {
    name: String,
    path: String,
    who: Who,
}

fn page(name: &str, path: &str, who: Who) -> Page {
    Page { name: name.to_string(), path: path.to_string(), who }
}

/// Every page of vmdeck, as an admin sees it (plus the login page and a viewer's 403). The
/// reports are read from the reports index, so a new report is covered without a change here.
async fn pages(app: &TestApp, b: &Browser) -> Vec<Page> {
    let uuid = uuid_of(app, "br-running").await;
    // A schedule with a run that failed for a VM: the list, its form and the run's page.
    let (sid, run) = crate::schedules::seeded_schedule(app, "nightly").await;
    // A snapshot row with a child, for the revert and delete confirmation pages.
    let snap: i64 = sqlx::query_scalar(
        "INSERT INTO vm_snapshots (vm_id, snap_id, name, description, created_at, vm_state,
             with_memory, first_seen)
         SELECT id, 'base', 'base', 'before the upgrade', 1764547200000, 'running', 1, 1764547200000
           FROM vms WHERE uuid = ? RETURNING id",
    )
    .bind(&uuid)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO vm_snapshots (vm_id, snap_id, name, parent_snap_id, first_seen, is_current)
         SELECT vm_id, 'child', 'child', 'base', 1764547300000, 1 FROM vm_snapshots WHERE id = ?",
    )
    .bind(snap)
    .execute(&app.pool)
    .await
    .unwrap();
    let with_snapshots = snapshot_tree(app, "br-shutoff").await;
    // A firing alert of a page rule, for the Alerts pages.
    let (rule, alert) = crate::alerts_pages::seeded_alert(app, "a11y").await;
    // A notification target with a failed delivery: the list with its status and deliveries.
    let target = crate::alert_notify::seeded_target(app, "seeded hook").await;
    let mut pages = vec![
        page("snapshot-take", &format!("/vms/lab/{uuid}/snapshots/new"), Who::Admin),
        page("snapshot-revert", &format!("/vms/lab/{uuid}/snapshots/{snap}/revert"), Who::Admin),
        page("snapshot-delete", &format!("/vms/lab/{uuid}/snapshots/{snap}/delete"), Who::Admin),
        page("login", "/login", Who::Nobody),
        page("list", "/vms", Who::Admin),
        page("vm", &format!("/vms/lab/{uuid}?range=1h"), Who::Admin),
        // Its Snapshots section with a tree, links and a past snapshot.
        page("vm-snapshots", &format!("/vms/lab/{with_snapshots}?range=1h"), Who::Admin),
        // The test driver has no screen: the page says so (the live console is checked in
        // browser_console.rs against a real VM).
        page("console", &format!("/vms/lab/{uuid}/console"), Who::Admin),
        page(
            "confirm",
            &format!("/vms/lab/{uuid}/power/confirm?action=power_off&back=/vms"),
            Who::Admin,
        ),
        page("audit", "/audit", Who::Admin),
        // The first entry (the login before these pages) on its own page.
        page("audit-entry", "/audit/1", Who::Admin),
        page("reports", "/reports", Who::Admin),
        page("users", "/users", Who::Admin),
        page("user-remove", "/users/viewer/remove", Who::Admin),
        page("account", "/account", Who::Admin),
        page("schedules-new", "/schedules/new", Who::Admin),
        page("schedules", "/schedules", Who::Admin),
        page("schedule-edit", &format!("/schedules/{sid}"), Who::Admin),
        page("schedule-delete", &format!("/schedules/{sid}/delete"), Who::Admin),
        page("schedule-run", &format!("/schedules/runs/{run}"), Who::Admin),
        page("alerts", "/alerts", Who::Admin),
        page("alert", &format!("/alerts/{alert}"), Who::Admin),
        page("alert-rules", "/alerts/rules", Who::Admin),
        page("alert-rule-new", "/alerts/rules/new", Who::Admin),
        page("alert-rule-edit", &format!("/alerts/rules/{rule}/edit"), Who::Admin),
        page("alert-rule-delete", &format!("/alerts/rules/{rule}/delete"), Who::Admin),
        page("alert-silences", "/alerts/silences", Who::Admin),
        page("alert-silence-new", "/alerts/silences/new?rule_name=a11y", Who::Admin),
        page("alert-targets", "/alerts/targets", Who::Admin),
        page("alert-target-new", "/alerts/targets/new", Who::Admin),
        page("alert-target-edit", &format!("/alerts/targets/{target}"), Who::Admin),
        page("alert-target-delete", &format!("/alerts/targets/{target}/delete"), Who::Admin),
        page("error-404", "/no-such-page", Who::Admin),
        // A 404 from a route (AppError) rather than from the catcher.
        page("error-404-vm", "/vms/lab/00000000-0000-4000-8000-000000000000", Who::Admin),
        page("error-403", "/users", Who::Viewer),
    ];
    // Each report linked from the index (the HTML pages, not their CSV downloads).
    b.client.goto(&format!("{}/reports", app.base)).await.unwrap();
    let links: Vec<String> = b
        .client
        .execute(
            "return [...document.querySelectorAll('main a[href^=\"/reports/\"]')]\
               .map(a => a.getAttribute('href')).filter(h => !h.includes('.csv'))",
            vec![],
        )
        .await
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect();
    let mut seen = std::collections::BTreeSet::new();
    for href in links {
        let name = href.trim_start_matches("/reports/").split(['?', '/']).next().unwrap_or("");
        if !name.is_empty() && seen.insert(name.to_string()) {
            pages.push(page(&format!("report-{name}"), &href, Who::Admin));
        }
    }
    assert!(seen.len() >= 3, "the reports index links its reports: {seen:?}");
    pages
}

/// Gives the VM `name` a snapshot tree on the host (root, two children, one deleted) and records
/// it as the poller would; returns its uuid.
async fn snapshot_tree(app: &TestApp, name: &str) -> String {
    use vmdeck::backend::SnapshotOp;
    let uuid = uuid_of(app, name).await;
    let backend = app.hosts.get("lab").unwrap().backend.clone();
    let take = |n: &str| SnapshotOp::Take {
        name: n.into(),
        description: format!("{n}: a description"),
        with_memory: false,
    };
    for op in [take("base"), take("child"), take("grandchild"), take("gone-soon")] {
        backend.snapshot(&uuid, &op).await.unwrap();
    }
    let vm_id: i64 = sqlx::query_scalar("SELECT id FROM vms WHERE uuid = ?")
        .bind(&uuid)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let record = async |at: i64| {
        let set = backend.snapshots(&uuid).await.unwrap();
        vmdeck::hosts::snapshots::record_snapshots(&app.pool, vm_id, &set, at, None, None)
            .await
            .unwrap();
    };
    record(vmdeck::db::now_ms()).await;
    backend.snapshot(&uuid, &SnapshotOp::Delete { id: "gone-soon".into() }).await.unwrap();
    record(vmdeck::db::now_ms()).await;
    uuid
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_passes_axe_and_fits_a_phone_screen() {
    if let Err(why) = browser_tests_enabled() {
        eprintln!("SKIPPED (explicitly): {why}");
        return;
    }
    // The breadth lab from a deep directory: a host's URI is one long word with nowhere to break
    // (no hyphen, no space), and its length depends on where the checkout lives (CI's is longer
    // than a developer's), so the pages are checked with a URI longer than any checkout's.
    let labs = tempfile::tempdir().unwrap();
    let deep =
        labs.path().join("srv_vmdeck_labs_in_a_directory_named_as_long_as_an_admin_may_choose");
    std::fs::create_dir_all(&deep).unwrap();
    let lab = deep.join("breadth_lab.xml");
    std::fs::copy(fixture("breadth.xml"), &lab).unwrap();
    let app = spawn_app(AppOptions::with_hosts(vec![libvirt_host(
        "lab",
        &format!("test://{}", lab.display()),
    )]))
    .await;
    add_user(&app.pool, "ada", "admin").await;
    // A few polls, so the VM page has history to chart.
    for _ in 0..3 {
        app.poll("lab").await;
    }
    let b = Browser::start()
        .await
        .unwrap_or_else(|e| panic!("{e}\n(set VMDECK_SKIP_BROWSER=1 to skip explicitly)"));
    let axe = std::fs::read_to_string(AXE_JS).unwrap_or_else(|e| panic!("{AXE_JS}: {e}"));

    log_in(&app, &b, "ada").await;
    let pages = pages(&app, &b).await;
    let mut failures = Vec::new();
    let mut logged_in_as = Who::Admin;
    for p in pages.iter() {
        if p.who != logged_in_as {
            if logged_in_as != Who::Nobody {
                log_out(&app, &b).await;
            }
            if p.who != Who::Nobody {
                log_in(&app, &b, if p.who == Who::Admin { "ada" } else { "viewer" }).await;
            }
            logged_in_as = p.who;
        }
        eprintln!("{} ({}, as {:?})", p.name, p.path, p.who);
        failures.extend(check_page(&app, &b, &axe, p).await);
    }
    b.close().await;
    assert!(
        failures.is_empty(),
        "{} problem(s) on {} pages (screenshots in {}):\n\n{}",
        failures.len(),
        pages.len(),
        output_dir().display(),
        failures.join("\n\n")
    );
}

/// Visits `p` at desktop and phone widths: screenshots, the axe scan, the phone layout checks.
/// Returns what is wrong, in words.
async fn check_page(app: &TestApp, b: &Browser, axe: &str, p: &Page) -> Vec<String> {
    let mut problems = Vec::new();
    b.client.set_window_size(WINDOW_SIZE.0, WINDOW_SIZE.1).await.unwrap();
    b.client.goto(&format!("{}{}", app.base, p.path)).await.unwrap();
    eventually(&format!("{} loaded", p.path), SHOWN_WITHIN, async || {
        b.client.find(Locator::Css("footer")).await.ok()
    })
    .await;
    if p.who != Who::Nobody {
        // A page shown to a logged-in user — error pages too — keeps the navigation.
        if b.client.find(Locator::Css("form.logout button")).await.is_err() {
            problems.push(format!("{}: no Log out button", p.name));
        }
    }
    b.screenshot(&output_dir(), &format!("{}-desktop", p.name)).await.unwrap();
    history_screenshot(b, &format!("{}-history-desktop", p.name)).await;
    let extra: Value = b.client.execute(EXTRA_CHECKS, vec![]).await.unwrap();
    for v in extra.as_array().unwrap() {
        problems.push(format!("{}: {}", p.name, v.as_str().unwrap_or_default()));
    }
    problems.extend(axe_violations(b, axe).await.into_iter().map(|v| format!("{}: {v}", p.name)));

    // axe scrolls elements into view to judge their contrast and may leave the page scrolled;
    // the phone checks below measure the top of the page as a phone user first sees it.
    b.client.execute("window.scrollTo(0, 0)", vec![]).await.unwrap();
    b.client.set_window_size(PHONE.0, PHONE.1).await.unwrap();
    let fit: Value = eventually("the phone-sized window", SHOWN_WITHIN, async || {
        let v = b
            .client
            .execute(
                "window.scrollTo(0, 0);\
                 const r = document.querySelector('form.logout button')?.getBoundingClientRect();\
                 return { inner: window.innerWidth, innerHeight: window.innerHeight,\
                   scroll: document.documentElement.scrollWidth,\
                   logout: r ? [r.left, r.top, r.right, r.bottom] : null }",
                vec![],
            )
            .await
            .unwrap();
        (v["inner"].as_u64() == Some(u64::from(PHONE.0))).then_some(v)
    })
    .await;
    b.screenshot(&output_dir(), &format!("{}-phone", p.name)).await.unwrap();
    history_screenshot(b, &format!("{}-history-phone", p.name)).await;
    let inner = fit["inner"].as_f64().unwrap();
    let scroll = fit["scroll"].as_f64().unwrap();
    if scroll > inner {
        problems.push(format!(
            "{}: at {} px wide the page is {scroll} px wide (scrolls sideways)",
            p.name, PHONE.0
        ));
    }
    let small: Value = b.client.execute(CHART_LABELS, vec![]).await.unwrap();
    for v in small.as_array().unwrap() {
        problems.push(format!("{}: at {} px wide {}", p.name, PHONE.0, v.as_str().unwrap_or("")));
    }
    if let Some(r) = fit["logout"].as_array() {
        let r: Vec<f64> = r.iter().filter_map(Value::as_f64).collect();
        let height = fit["innerHeight"].as_f64().unwrap();
        if r[0] < 0.0 || r[1] < 0.0 || r[2] > inner || r[3] > height {
            problems.push(format!(
                "{}: at {} px wide Log out is outside the viewport (at {r:?}, viewport {inner}×{height})",
                p.name, PHONE.0
            ));
        }
    }
    // Last: following the skip link scrolls the page. A fresh visit, not a reload: a reload
    // keeps the scroll position, and the first Tab is about a page seen from its top.
    b.client.goto(&format!("{}{}", app.base, p.path)).await.unwrap();
    b.client.execute("window.scrollTo(0, 0)", vec![]).await.unwrap();
    problems.extend(keyboard_start(b).await.map(|e| format!("{}: {e}", p.name)));
    problems
}

/// On a page with a history (the VM page), a second screenshot scrolled to its charts; then
/// back to the top.
async fn history_screenshot(b: &Browser, name: &str) {
    let scrolled = b
        .client
        .execute(
            "const t = document.getElementById('timeline');\
             if (t) t.closest('section').scrollIntoView(); return !!t",
            vec![],
        )
        .await
        .unwrap();
    if scrolled == Value::Bool(true) {
        b.screenshot(&output_dir(), name).await.unwrap();
        b.client.execute("window.scrollTo(0, 0)", vec![]).await.unwrap();
    }
}

/// The first Tab from a freshly loaded page lands on the skip link, which then shows, with a
/// visible focus outline; Enter on it moves to the content. None when all is well.
async fn keyboard_start(b: &Browser) -> Option<String> {
    // A page that starts on its main field (the login form) is meant to; Tab then leaves it.
    let autofocus = b.client.execute("return !!document.querySelector('[autofocus]')", vec![]);
    if autofocus.await.unwrap() == Value::Bool(true) {
        return None;
    }
    let body = b.client.find(Locator::Css("body")).await.unwrap();
    body.send_keys(&Key::Tab.to_string()).await.unwrap();
    let focus: Value = b
        .client
        .execute(
            "const e = document.activeElement, s = getComputedStyle(e), r = e.getBoundingClientRect();\
             return { href: e.getAttribute('href'), outline: s.outlineStyle,\
                      width: parseFloat(s.outlineWidth), top: r.top, h: r.height }",
            vec![],
        )
        .await
        .unwrap();
    let ok = focus["href"] == "#content"
        && focus["outline"] != "none"
        && focus["width"].as_f64().unwrap_or(0.0) >= 2.0
        && focus["top"].as_f64().unwrap_or(-1.0) >= 0.0
        && focus["h"].as_f64().unwrap_or(0.0) > 0.0;
    if !ok {
        return Some(format!(
            "the first Tab does not show a focused skip link to #content: {focus}"
        ));
    }
    let link = b.client.active_element().await.unwrap();
    link.send_keys(&Key::Enter.to_string()).await.unwrap();
    let on_content = b
        .client
        .execute(
            "return location.hash === '#content' && document.activeElement.id === 'content'",
            vec![],
        )
        .await
        .unwrap();
    (on_content != Value::Bool(true))
        .then(|| "Enter on the skip link does not move to the content".into())
}

/// What axe does not check, as a list of problems in words: the skip link is the first tab
/// stop and leads to the content; form fields' outlines have at least 3:1 contrast against what
/// is around them (WCAG 1.4.11).
const EXTRA_CHECKS: &str = r#"
  const problems = [];
  const first = document.querySelector('a[href], button, input:not([type=hidden]), select, textarea');
  if (!first || first.getAttribute('href') !== '#content' || !document.getElementById('content'))
    problems.push('the first tab stop is not a skip link to #content');
  const rgb = c => (c.match(/[\d.]+/g) || []).map(Number);
  const lum = ([r, g, b]) => [r, g, b].map(v => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; })
    .reduce((s, v, i) => s + v * [0.2126, 0.7152, 0.0722][i], 0);
  const background = el => { for (let e = el.parentElement; e; e = e.parentElement) {
      const c = rgb(getComputedStyle(e).backgroundColor); if (c.length < 4 || c[3] > 0) return c; }
    return [255, 255, 255]; };
  for (const f of document.querySelectorAll('input:not([type=hidden]):not([type=checkbox]), select, textarea')) {
    if (!f.offsetParent) continue;
    const s = getComputedStyle(f);
    if (parseFloat(s.borderTopWidth) === 0) continue;
    const [a, b] = [lum(rgb(s.borderTopColor)), lum(background(f))];
    const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
    if (ratio < 3) problems.push(`the outline of field ${f.name || f.id} has contrast ${ratio.toFixed(2)}:1 (WCAG asks 3:1)`);
  }
  return problems;
"#;

/// Chart labels smaller than 9 CSS px as drawn (an SVG's text scales with its drawing).
const CHART_LABELS: &str = r#"
  const problems = [];
  for (const svg of document.querySelectorAll('svg.chart')) {
    if (!svg.getClientRects().length) continue;
    const scale = svg.getBoundingClientRect().width / svg.viewBox.baseVal.width;
    for (const t of svg.querySelectorAll('text')) {
      const px = parseFloat(getComputedStyle(t).fontSize) * scale;
      if (px < 9) { problems.push(`the chart label "${t.textContent}" is drawn ${px.toFixed(1)} px high`); break; }
    }
  }
  return problems;
"#;

/// Injects axe-core into the current page and runs it; each serious or critical violation as
/// a readable paragraph. (Also used by browser_console.rs on the live console page.)
pub(crate) async fn axe_violations(b: &Browser, axe: &str) -> Vec<String> {
    b.client.execute(axe, vec![]).await.unwrap();
    let loaded = b.client.execute("return typeof window.axe", vec![]).await.unwrap();
    assert_eq!(loaded, "object", "axe-core could not be injected into the page");
    let result = b
        .client
        .execute_async(
            "const [tags, done] = arguments;\
             axe.run(document, { runOnly: { type: 'tag', values: tags } })\
               .then(r => done({ ok: r.violations.map(v => ({ id: v.id, impact: v.impact,\
                   help: v.help, url: v.helpUrl,\
                   nodes: v.nodes.map(n => ({ target: n.target.join(' '),\
                     summary: n.failureSummary, html: n.html.slice(0, 200) })) })) }))\
               .catch(e => done({ err: String(e) }))",
            vec![serde_json::json!(AXE_TAGS)],
        )
        .await
        .unwrap();
    if let Some(err) = result.get("err") {
        panic!("axe.run failed: {err}");
    }
    let mut out = Vec::new();
    for v in result["ok"].as_array().unwrap() {
        let impact = v["impact"].as_str().unwrap_or("");
        if impact != "serious" && impact != "critical" {
            // Not a failure, but worth knowing when reading the test's output.
            eprintln!(
                "  (axe, {impact}: {} on {} element(s))",
                v["id"],
                v["nodes"].as_array().map_or(0, Vec::len)
            );
            continue;
        }
        let mut text = format!(
            "{impact} {} — {} ({})",
            v["id"].as_str().unwrap_or(""),
            v["help"].as_str().unwrap_or(""),
            v["url"].as_str().unwrap_or("")
        );
        let nodes = v["nodes"].as_array().unwrap();
        for n in nodes.iter().take(5) {
            text.push_str(&format!(
                "\n    at {}: {}\n       {}",
                n["target"].as_str().unwrap_or(""),
                n["summary"].as_str().unwrap_or("").replace('\n', " "),
                n["html"].as_str().unwrap_or("")
            ));
        }
        if nodes.len() > 5 {
            text.push_str(&format!("\n    … and {} more", nodes.len() - 5));
        }
        out.push(text);
    }
    out
}

/// Logs in as `user` through the login page and waits for the list.
async fn log_in(app: &TestApp, b: &Browser, user: &str) {
    b.client.set_window_size(WINDOW_SIZE.0, WINDOW_SIZE.1).await.unwrap();
    b.client.goto(&format!("{}/login", app.base)).await.unwrap();
    for (field, value) in [("username", user), ("password", PASSWORD)] {
        let css = format!("input[name={field}]");
        b.client.find(Locator::Css(&css)).await.unwrap().send_keys(value).await.unwrap();
    }
    b.client.find(Locator::Css(".login button[type=submit]")).await.unwrap().click().await.unwrap();
    eventually(&format!("{user} logged in"), SHOWN_WITHIN, async || {
        b.client.find(Locator::Css("form.logout button")).await.ok()
    })
    .await;
}

/// Logs out through the Log out button (from the list, which every user may see).
async fn log_out(app: &TestApp, b: &Browser) {
    b.client.set_window_size(WINDOW_SIZE.0, WINDOW_SIZE.1).await.unwrap();
    b.client.goto(&format!("{}/vms", app.base)).await.unwrap();
    b.client.find(Locator::Css("form.logout button")).await.unwrap().click().await.unwrap();
    eventually("the login page after logging out", SHOWN_WITHIN, async || {
        b.client.find(Locator::Css("input[name=username]")).await.ok()
    })
    .await;
}
