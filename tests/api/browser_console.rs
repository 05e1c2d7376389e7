//! The console end to end: a real QEMU VM (SeaBIOS's text screen, no OS) under a private
//! libvirtd, vmdeck on its URI, and headless Chromium running the console page with the
//! vendored noVNC. An operator sees the screen (read back from the canvas's pixels, not the
//! DOM) and types into it: Escape opens SeaBIOS's boot menu, "send text" picks an entry;
//! a viewer sees the same screen but cannot type, even with its page turned interactive: the
//! server drops the keys and the audit log counts them. Ctrl+Alt+Del resets the VM; logging
//! out in another tab closes the console, and the page says why.
//!
//! Needs libvirtd + QEMU and chromium + chromedriver; `VMDECK_SKIP_REAL_VM=1` or
//! `VMDECK_SKIP_BROWSER=1` are the only ways to skip.

use std::time::{Duration, Instant};

use fantoccini::key::Key;
use fantoccini::Locator;
use serde_json::Value;

use crate::browser_a11y::{axe_violations, AXE_JS};
use crate::support::app::{add_user, app_with, libvirt_host, TestApp, PASSWORD};
use crate::support::browser::{browser_tests_enabled, output_dir, Browser, WINDOW_SIZE};
use crate::support::libvirtd::{real_vm_tests_enabled, Extras, LibvirtDaemon};
use crate::support::wait::{eventually, eventually_every, poll_until};

/// Page elements, logins, the WebSocket's handshake.
const SHOWN_WITHIN: Duration = Duration::from_secs(20);
/// SeaBIOS drawing its screen, or a key's effect, under TCG on a loaded machine.
const DRAWN_WITHIN: Duration = Duration::from_secs(90);
/// How long the boot menu's prompt waits for Escape (ms): longer than the test needs to
/// connect, short enough that a missed key shows as a failure, not a hang.
const BOOT_MENU_MS: u32 = 60_000;

/// Pixels that may differ between two reads of one screen: VGA text mode's blinking cursor
/// (one character cell, 9×16). A line of new text differs by far more.
const SAME_WITHIN: u64 = 200;

/// What the console's canvas shows: its size, and per row of pixels how many are not black.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Screen {
    width: u64,
    height: u64,
    rows: Vec<u64>,
}

impl Screen {
    fn lit(&self) -> u64 {
        self.rows.iter().sum()
    }

    /// How different two screens are (a lower bound on the pixels that changed).
    fn differs(&self, other: &Screen) -> u64 {
        if (self.width, self.height) != (other.width, other.height) {
            return u64::MAX;
        }
        self.rows.iter().zip(&other.rows).map(|(a, b)| a.abs_diff(*b)).sum()
    }
}

const READ_CANVAS: &str = "
    const c = document.querySelector('#console-screen canvas');
    if (!c || !c.width || !c.height) return null;
    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    const rows = [];
    for (let y = 0; y < c.height; y++) {
        let lit = 0;
        for (let i = y * c.width * 4; i < (y + 1) * c.width * 4; i += 4) {
            if (d[i] | d[i + 1] | d[i + 2]) lit++;
        }
        rows.push(lit);
    }
    return { width: c.width, height: c.height, rows };";

async fn screen(b: &Browser) -> Option<Screen> {
    let v: Value = b.client.execute(READ_CANVAS, vec![]).await.ok()?;
    Some(Screen {
        width: v["width"].as_u64()?,
        height: v["height"].as_u64()?,
        rows: v["rows"].as_array()?.iter().map(|r| r.as_u64().unwrap_or(0)).collect(),
    })
}

/// Waits until the canvas shows something (not all black) that stays the same for `steady`
/// reads a second apart and differs from `not`; returns it.
async fn settled_screen(b: &Browser, what: &str, not: Option<&Screen>, steady: usize) -> Screen {
    let mut seen: Vec<Screen> = Vec::new();
    eventually_every(what, DRAWN_WITHIN, Duration::from_secs(1), async || {
        let now = screen(b)
            .await
            .filter(|s| s.lit() > 0 && not.is_none_or(|n| s.differs(n) > SAME_WITHIN));
        let Some(now) = now else {
            seen.clear();
            return None;
        };
        if seen.last().is_some_and(|last| last.differs(&now) > SAME_WITHIN) {
            seen.clear();
        }
        seen.push(now.clone());
        (seen.len() >= steady).then_some(now)
    })
    .await
}

async fn find_shown(b: &Browser, css: &str) -> fantoccini::elements::Element {
    eventually(&format!("an element matching {css}"), SHOWN_WITHIN, async || {
        b.client.find(Locator::Css(css)).await.ok()
    })
    .await
}

async fn attr(b: &Browser, css: &str, name: &str) -> Option<String> {
    b.client.find(Locator::Css(css)).await.ok()?.attr(name).await.ok()?
}

/// Whether the element is displayed (not hidden by `hidden`, CSS, or absence).
async fn displayed(b: &Browser, css: &str) -> bool {
    match b.client.find(Locator::Css(css)).await {
        Ok(el) => el.is_displayed().await.unwrap_or(false),
        Err(_) => false,
    }
}

async fn log_in(app: &TestApp, b: &Browser, user: &str) {
    b.client.goto(&format!("{}/login", app.base)).await.unwrap();
    find_shown(b, "input[name=username]").await.send_keys(user).await.unwrap();
    find_shown(b, "input[name=password]").await.send_keys(PASSWORD).await.unwrap();
    find_shown(b, ".login button[type=submit]").await.click().await.unwrap();
    find_shown(b, "form.logout button").await;
}

/// Opens the console page and waits for noVNC's connect; returns the status line's text.
async fn open_console(app: &TestApp, b: &Browser, uuid: &str) -> String {
    b.client.goto(&format!("{}/vms/lab/{uuid}/console", app.base)).await.unwrap();
    let state = poll_until(SHOWN_WITHIN, Duration::from_millis(100), async || {
        attr(b, "#console-status", "data-state")
            .await
            .filter(|s| s == "connected" || s == "disconnected")
    })
    .await;
    let text = find_shown(b, "#console-status").await.text().await.unwrap();
    assert_eq!(state.as_deref(), Some("connected"), "the console connects; the page says: {text}");
    text
}

/// The newest console_close entry of `user` for the VM, once written: its detail.
async fn closed_entry(app: &TestApp, user: &str, uuid: &str) -> String {
    eventually(&format!("{user}'s console_close entry"), SHOWN_WITHIN, async || {
        sqlx::query_scalar::<_, String>(
            "SELECT detail FROM audit_log WHERE kind = 'console' AND action = 'console_close'
               AND user_name = ? AND vm_uuid = ? ORDER BY id DESC LIMIT 1",
        )
        .bind(user)
        .bind(uuid)
        .fetch_optional(&app.pool)
        .await
        .unwrap()
    })
    .await
}

/// The bytes the entry says went to the VM ("…, 1.2 KiB to the VM …").
fn to_vm(detail: &str) -> &str {
    let end = detail.find(" to the VM").unwrap_or_else(|| panic!("no bytes to the VM: {detail}"));
    let start = detail[..end].rfind(", ").map_or(0, |i| i + 2);
    &detail[start..end]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_types_into_a_real_vms_screen_and_a_viewer_only_watches() {
    if let Err(why) = browser_tests_enabled().and_then(|_| real_vm_tests_enabled()) {
        eprintln!("SKIPPED (explicitly): {why}");
        return;
    }
    let daemon = LibvirtDaemon::start().unwrap_or_else(|e| {
        panic!("the console test needs a libvirt daemon and QEMU: {e}\n(set VMDECK_SKIP_REAL_VM=1 to skip explicitly)")
    });
    let extras = Extras::vnc().with_boot_menu(BOOT_MENU_MS);
    let uuid = daemon.define_vm_with("vmdeck-screen", 1, 64, 16, &extras).expect("define the VM");
    let started = Instant::now();
    daemon.virsh(&["start", "vmdeck-screen"]).expect("start the VM");
    // Started before the app: its first poll records it running.
    let app = app_with(vec![libvirt_host("lab", daemon.uri())]).await;
    add_user(&app.pool, "olga", "operator").await;

    let op = Browser::start()
        .await
        .unwrap_or_else(|e| panic!("{e}\n(set VMDECK_SKIP_BROWSER=1 to skip explicitly)"));
    log_in(&app, &op, "olga").await;
    let status = open_console(&app, &op, &uuid).await;
    assert!(status.starts_with("Connected (interactive)"), "{status}");
    assert!(displayed(&op, "#console-cad").await, "an operator gets Ctrl+Alt+Del");
    assert!(displayed(&op, "#console-text").await, "an operator gets the send-text box");
    assert!(!displayed(&op, "#console-view-only").await);
    // The live page's controls pass the same accessibility scan as every other page
    // (browser_a11y sees only the breadth lab's "no screen" variant).
    let axe = std::fs::read_to_string(AXE_JS).unwrap_or_else(|e| panic!("{AXE_JS}: {e}"));
    let problems = axe_violations(&op, &axe).await;
    assert!(problems.is_empty(), "the console page, interactive:\n{}", problems.join("\n\n"));

    // SeaBIOS's prompt ("Press ESC for boot menu.", its last line before it waits): white text
    // on black, read from the canvas, unchanged for 3 s.
    let prompt = settled_screen(&op, "SeaBIOS's screen in the canvas", None, 4).await;
    assert!(prompt.width >= 320 && prompt.height >= 200, "a VGA screen: {prompt:?}");
    assert!(prompt.lit() > 500, "text is drawn, not a few stray pixels: {}", prompt.lit());
    op.screenshot(&output_dir(), "console-operator-prompt").await.unwrap();

    // The page fits a phone without sideways scroll.
    op.client.set_window_size(390, 844).await.unwrap();
    let fits: Value = eventually("the phone-sized window", SHOWN_WITHIN, async || {
        let v: Value = op
            .client
            .execute(
                "return { inner: window.innerWidth, scroll: document.documentElement.scrollWidth }",
                vec![],
            )
            .await
            .unwrap();
        (v["inner"].as_u64() == Some(390)).then_some(v)
    })
    .await;
    assert!(fits["scroll"].as_u64() <= fits["inner"].as_u64(), "no sideways scroll: {fits}");
    op.screenshot(&output_dir(), "console-operator-phone").await.unwrap();
    op.client.set_window_size(WINDOW_SIZE.0, WINDOW_SIZE.1).await.unwrap();

    // Escape, typed into the focused canvas, opens the boot menu ("Select boot device:"),
    // which then waits for a choice for ever.
    let canvas = find_shown(&op, "#console-screen canvas").await;
    canvas.click().await.unwrap();
    canvas.send_keys(&Key::Escape.to_string()).await.unwrap();
    let menu = settled_screen(&op, "the boot menu after Escape", Some(&prompt), 2).await;
    op.screenshot(&output_dir(), "console-operator-boot-menu").await.unwrap();
    // Without the key, the prompt would have changed the screen only when its time ran out.
    let by = started.elapsed();
    assert!(
        by < Duration::from_millis(BOOT_MENU_MS.into()),
        "the screen changed {by:?} after the VM started, when the boot menu's prompt may have \
         timed out by itself: this proves nothing about Escape (a very slow machine?)"
    );

    // A viewer opens the same running VM: view-only, the same screen, no input controls.
    let viewer = Browser::start().await.unwrap();
    log_in(&app, &viewer, "viewer").await;
    let status = open_console(&app, &viewer, &uuid).await;
    assert!(status.starts_with("Connected (view-only)"), "{status}");
    assert!(!displayed(&viewer, "#console-cad").await, "no Ctrl+Alt+Del for a viewer");
    assert!(!displayed(&viewer, "#console-text").await, "no send-text box for a viewer");
    let note = find_shown(&viewer, "#console-view-only").await.text().await.unwrap();
    assert_eq!(note, "view-only: your role (viewer) cannot type into the console");
    let problems = axe_violations(&viewer, &axe).await;
    assert!(problems.is_empty(), "the console page, view-only:\n{}", problems.join("\n\n"));
    let seen = settled_screen(&viewer, "the boot menu in the viewer's canvas", None, 2).await;
    assert!(seen.differs(&menu) <= SAME_WITHIN, "the viewer sees the operator's screen");
    viewer.screenshot(&output_dir(), "console-viewer").await.unwrap();

    // The viewer's page turned interactive (as a tampered page could): "1" would pick the
    // first boot entry, but the server drops it (and the clicks).
    viewer.client.execute("window.vmdeckConsole.viewOnly = false", vec![]).await.unwrap();
    let canvas = find_shown(&viewer, "#console-screen canvas").await;
    canvas.click().await.unwrap();
    canvas.send_keys("1").await.unwrap();
    // Leaving the page closes its console; the entry is written after the relay has read
    // everything the page sent.
    viewer.client.goto(&format!("{}/vms", app.base)).await.unwrap();
    let detail = closed_entry(&app, "viewer", &uuid).await;
    assert!(detail.starts_with("view-only console closed"), "{detail}");
    assert!(detail.contains("input message(s) dropped (view-only)"), "{detail}");
    let still = screen(&op).await.expect("the operator's canvas");
    assert!(still.differs(&menu) <= SAME_WITHIN, "the viewer's \"1\" did not reach the VM");

    // The operator types "1" through the send-text box: SeaBIOS leaves the menu and boots.
    find_shown(&op, "#console-text").await.send_keys("1").await.unwrap();
    find_shown(&op, "#console-send-text button[type=submit]").await.click().await.unwrap();
    let note = find_shown(&op, "#console-text-note").await.text().await.unwrap();
    assert_eq!(note, "Typed 1 character(s).");
    // ("Booting from Hard Disk…", "No bootable device.": then SeaBIOS halts, the screen stays.)
    let after = settled_screen(&op, "the boot menu leaving after send text", Some(&menu), 3).await;
    assert!(after.lit() > 0);
    op.screenshot(&output_dir(), "console-operator-after-text").await.unwrap();

    // Ctrl+Alt+Del: SeaBIOS resets the machine on it (the only thing that moves a halted
    // SeaBIOS), which redraws the screen from the top.
    find_shown(&op, "#console-cad").await.click().await.unwrap();
    settled_screen(&op, "the reset after Ctrl+Alt+Del", Some(&after), 2).await;
    op.screenshot(&output_dir(), "console-operator-after-ctrl-alt-del").await.unwrap();

    // Logging out in another tab closes the open console; the page says why and offers
    // Reconnect (which reloads: a new ticket needs a page load, here the login page).
    let console_tab = op.client.window().await.unwrap();
    let other = op.client.new_window(true).await.unwrap().handle;
    op.client.switch_to_window(other).await.unwrap();
    op.client.goto(&format!("{}/vms", app.base)).await.unwrap();
    find_shown(&op, "form.logout button").await.click().await.unwrap();
    find_shown(&op, "input[name=username]").await;
    op.client.switch_to_window(console_tab).await.unwrap();
    let state = poll_until(SHOWN_WITHIN, Duration::from_millis(200), async || {
        attr(&op, "#console-status", "data-state").await.filter(|s| s == "disconnected")
    })
    .await;
    let text = find_shown(&op, "#console-status").await.text().await.unwrap();
    assert!(state.is_some(), "the console closes on logout; the page says: {text}");
    assert_eq!(text, "Disconnected: the session ended (logged out or expired).");
    assert!(displayed(&op, "#console-reconnect").await, "Reconnect is offered");
    assert!(!find_shown(&op, "#console-cad").await.is_enabled().await.unwrap());
    op.screenshot(&output_dir(), "console-operator-logged-out").await.unwrap();
    find_shown(&op, "#console-reconnect").await.click().await.unwrap();
    find_shown(&op, "input[name=username]").await;
    let detail = closed_entry(&app, "olga", &uuid).await;
    assert!(detail.starts_with("interactive console closed"), "{detail}");
    assert!(detail.contains("the session ended"), "{detail}");
    assert_ne!(to_vm(&detail), "0 B", "{detail}");
    assert!(!detail.contains("dropped"), "{detail}");
    viewer.close().await;
    op.close().await;
    drop(daemon);
}
