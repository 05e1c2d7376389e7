//! The browser console end to end, at the WebSocket: a real QEMU VM under the private libvirtd
//! (SeaBIOS draws "Press ESC for boot menu." on its VGA screen), vmdeck's real server, and a
//! small VNC client (support::rfb) speaking through the console's WebSocket as noVNC would.
//!
//! Needs libvirtd and QEMU like tests/api/real_vm.rs (`VMDECK_SKIP_REAL_VM=1` skips).

use std::sync::Arc;
use std::time::Duration;

use reqwest::cookie::CookieStore;

use crate::support::app::{
    add_user, csrf_in, libvirt_host, spawn_app, unescape, AppOptions, Session, TestApp, PASSWORD,
};
use crate::support::libvirtd::{real_vm_tests_enabled, Extras, LibvirtDaemon};
use crate::support::rfb::{self, blank, differing, Ended, Rfb, Ws, ESCAPE};
use crate::support::wait::poll_until;

/// More pixels than these differing is a change of what the screen says (a text cursor's blink
/// is at most one 9×16 cell).
const CHANGED: usize = 300;

fn daemon_or_skip() -> Option<LibvirtDaemon> {
    if let Err(why) = real_vm_tests_enabled() {
        eprintln!("SKIPPED (explicitly): {why}");
        return None;
    }
    match LibvirtDaemon::start() {
        Ok(d) => Some(d),
        Err(e) => panic!(
            "the console tests need a libvirt daemon and QEMU: {e}\n(set VMDECK_SKIP_REAL_VM=1 \
             to skip them explicitly)"
        ),
    }
}

/// A logged-in user whose session cookie the test can put on a WebSocket upgrade.
struct User {
    name: String,
    session: Session,
    cookie: String,
}

async fn user(app: &TestApp, role: &str) -> User {
    let name = format!("{role}-{}", vmdeck::auth::new_token()[..6].to_lowercase());
    add_user(&app.pool, &name, role).await;
    let jar = Arc::new(reqwest::cookie::Jar::default());
    let client = reqwest::Client::builder()
        .cookie_provider(jar.clone())
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let res = client
        .post(format!("{}/login", app.base))
        .form(&[("username", name.as_str()), ("password", PASSWORD)])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 303, "login as {name}");
    let html = client.get(format!("{}/audit", app.base)).send().await.unwrap().text().await;
    let csrf = csrf_in(&html.unwrap()).expect("a CSRF token");
    let url = reqwest::Url::parse(&app.base).unwrap();
    let cookie = jar.cookies(&url).expect("a session cookie").to_str().unwrap().to_string();
    User { name, session: Session { client, csrf, base: app.base.clone() }, cookie }
}

/// The console page of `uuid` on host `host` as `user` sees it: its WebSocket path (with a
/// fresh ticket) when it offers a console, and the page.
async fn page(user: &User, host: &str, uuid: &str) -> (Option<String>, String) {
    let (status, html) = user.session.get(&format!("/vms/{host}/{uuid}/console")).await;
    assert_eq!(status, 200, "the console page of {uuid}: {html}");
    let path = html
        .split("data-ws-path=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .map(unescape)
        .filter(|p| !p.is_empty());
    (path, html)
}

async fn ws_path(user: &User, uuid: &str) -> String {
    let (path, html) = page(user, "lab", uuid).await;
    path.unwrap_or_else(|| panic!("the console page offers no console:\n{html}"))
}

/// Opens a console as `user` the way the page's script does; returns the preamble and socket.
async fn connect(app: &TestApp, user: &User, uuid: &str) -> (serde_json::Value, Ws) {
    let path = ws_path(user, uuid).await;
    let mut ws = rfb::open(&app.base, &path, Some(&user.cookie), Some(&app.base))
        .await
        .unwrap_or_else(|status| panic!("the upgrade was refused: HTTP {status}"));
    (rfb::preamble(&mut ws).await, ws)
}

/// A console past its preamble (which must say `mode`) and RFB handshake.
async fn console(app: &TestApp, user: &User, uuid: &str, mode: &str) -> Rfb {
    let (hello, ws) = connect(app, user, uuid).await;
    assert_eq!(hello, serde_json::json!({ "ok": true, "mode": mode }), "the preamble");
    Rfb::handshake(ws).await.expect("the RFB handshake through the console")
}

/// Refreshes until the screen is not blank and has not changed for three refreshes in a row
/// (SeaBIOS has printed its prompt and waits); returns that screen.
async fn settled_screen(rfb: &mut Rfb) -> Vec<u32> {
    let mut prev: Vec<u32> = Vec::new();
    let mut same = 0;
    for _ in 0..120 {
        rfb.refresh().await.expect("a screen update");
        let now = rfb.fb.clone();
        if !blank(&now) && differing(&prev, &now) < CHANGED {
            same += 1;
            if same >= 3 {
                return now;
            }
        } else {
            same = 0;
        }
        prev = now;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("the VM's screen did not settle within a minute");
}

/// Every console audit entry, oldest first: (user, action, status, detail, vm uuid).
async fn all_entries(app: &TestApp) -> Vec<(String, String, String, String, String)> {
    sqlx::query_as(
        "SELECT COALESCE(user_name, ''), COALESCE(action, ''), status, COALESCE(detail, ''),
                COALESCE(vm_uuid, '')
         FROM audit_log WHERE kind = 'console' ORDER BY id",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap()
}

/// Waits for the console entry of `who` about `uuid` with `action` whose detail contains
/// `words`; returns the detail.
async fn entry(app: &TestApp, uuid: &str, who: &str, action: &str, words: &str) -> String {
    let found = poll_until(Duration::from_secs(10), Duration::from_millis(100), async || {
        all_entries(app).await.into_iter().rev().find_map(|(user, a, _, detail, vm)| {
            (vm == uuid && user == who && a == action && detail.contains(words)).then_some(detail)
        })
    })
    .await;
    match found {
        Some(detail) => detail,
        None => panic!(
            "no {action} entry of {who} saying {words:?}; entries: {:#?}",
            all_entries(app).await
        ),
    }
}

/// Refreshes until the screen shows something (the VM may have just started).
async fn not_blank(rfb: &mut Rfb) {
    let shown = poll_until(Duration::from_secs(30), Duration::from_millis(500), async || {
        rfb.refresh().await.ok()?;
        (!blank(&rfb.fb)).then_some(())
    })
    .await;
    assert!(shown.is_some(), "the VM's screen stayed blank");
}

fn app_options(
    daemon: &LibvirtDaemon,
    extra: Vec<(&'static str, serde_json::Value)>,
) -> AppOptions {
    AppOptions { extra, ..AppOptions::with_hosts(vec![libvirt_host("lab", daemon.uri())]) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_types_into_a_real_vm_and_a_viewer_only_watches() {
    let Some(daemon) = daemon_or_skip() else { return };
    let extras = Extras::vnc().with_boot_menu(60000);
    let uuid = daemon.define_vm_with("vmdeck-con", 1, 64, 64, &extras).expect("define");
    daemon.virsh(&["start", "vmdeck-con"]).expect("start");
    let app = spawn_app(app_options(&daemon, vec![])).await;
    let viewer = user(&app, "viewer").await;
    let operator = user(&app, "operator").await;

    // The viewer watches: the screen arrives, but keys and the pointer never reach the VM.
    let mut view = console(&app, &viewer, &uuid, "view-only").await;
    let prompt = settled_screen(&mut view).await;
    assert!(!blank(&prompt), "SeaBIOS's screen is not blank");
    for _ in 0..2 {
        view.key(ESCAPE).await.unwrap();
    }
    view.pointer(1, 10, 10).await.unwrap();
    view.pointer(0, 10, 10).await.unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    view.refresh().await.expect("the viewer's screen still updates");
    let d = differing(&prompt, &view.fb);
    assert!(d < CHANGED, "a viewer's keys changed the screen ({d} pixels): they reached the VM");
    view.close().await;
    let closed = entry(&app, &uuid, &viewer.name, "console_close", "view-only console").await;
    assert!(closed.contains("6 input message(s) dropped"), "{closed}");
    entry(&app, &uuid, &viewer.name, "console_open", "view-only console opened").await;

    // The viewer watches on in another console while the operator joins: consoles are shared
    // (the client asks for exclusive access; the server forces shared, or QEMU would drop the
    // viewer when the operator connects).
    let mut watcher = console(&app, &viewer, &uuid, "view-only").await;
    watcher.refresh().await.unwrap();

    // The operator sees the same screen, and Escape opens SeaBIOS's boot menu.
    let mut op = console(&app, &operator, &uuid, "interactive").await;
    op.refresh().await.unwrap();
    let before = op.fb.clone();
    assert!(
        differing(&prompt, &before) < CHANGED,
        "the operator sees the screen the viewer saw (the viewer's keys did nothing)"
    );
    op.key(ESCAPE).await.unwrap();
    let changed = poll_until(Duration::from_secs(15), Duration::from_millis(300), async || {
        op.refresh().await.ok()?;
        (differing(&before, &op.fb) >= CHANGED).then_some(())
    })
    .await;
    assert!(changed.is_some(), "Escape from an operator's console did not change the screen");
    assert!(op.received > 0);
    watcher.refresh().await.expect("the viewer's console stays open beside the operator's");
    let d = differing(&prompt, &watcher.fb);
    assert!(d >= CHANGED, "the viewer sees the boot menu the operator opened ({d} pixels)");
    watcher.close().await;
    op.close().await;
    entry(&app, &uuid, &operator.name, "console_open", "interactive console opened").await;
    let closed = entry(&app, &uuid, &operator.name, "console_close", "closed by the browser").await;
    assert!(
        !closed.contains("; 0 B to the browser") && !closed.contains(", 0 B to the VM"),
        "bytes relayed both ways: {closed}"
    );
    assert!(!closed.contains("dropped"), "{closed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consoles_need_a_fresh_ticket_of_ones_own_and_close_at_logout_and_demotion() {
    let Some(daemon) = daemon_or_skip() else { return };
    let uuid = daemon.define_vm_with("vmdeck-t", 1, 64, 64, &Extras::vnc()).expect("define");
    let other = daemon.define_vm("vmdeck-t2", 1, 64, 64).expect("define");
    daemon.virsh(&["start", "vmdeck-t"]).expect("start");
    let app = spawn_app(app_options(&daemon, vec![("console_ticket_secs", 5.into())])).await;
    let op = user(&app, "operator").await;
    let other_op = user(&app, "operator").await;
    let origin = Some(app.base.as_str());

    // No ticket at all; anonymous (with a good ticket).
    let bare = format!("/vms/lab/{uuid}/console/ws");
    assert_eq!(rfb::open(&app.base, &bare, Some(&op.cookie), origin).await.err(), Some(403));
    let path = ws_path(&op, &uuid).await;
    assert_eq!(rfb::open(&app.base, &path, None, origin).await.err(), Some(401));
    // That ticket was not spent by the anonymous attempt: the refusal came first.
    let mut ws = rfb::open(&app.base, &path, Some(&op.cookie), origin).await.expect("upgrade");
    assert_eq!(rfb::preamble(&mut ws).await["ok"], true);
    drop(ws);
    // Its second use.
    assert_eq!(rfb::open(&app.base, &path, Some(&op.cookie), origin).await.err(), Some(403));
    // Another user's ticket.
    let theirs = ws_path(&other_op, &uuid).await;
    assert_eq!(rfb::open(&app.base, &theirs, Some(&op.cookie), origin).await.err(), Some(403));
    // A ticket for another VM.
    let path = ws_path(&op, &uuid).await;
    let elsewhere = path.replace(&uuid, &other);
    assert_eq!(rfb::open(&app.base, &elsewhere, Some(&op.cookie), origin).await.err(), Some(403));
    // A foreign Origin, and none.
    for bad in [Some("http://evil.example"), None] {
        let path = ws_path(&op, &uuid).await;
        assert_eq!(rfb::open(&app.base, &path, Some(&op.cookie), bad).await.err(), Some(403));
    }
    // An expired ticket.
    let path = ws_path(&op, &uuid).await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(rfb::open(&app.base, &path, Some(&op.cookie), origin).await.err(), Some(403));

    let why: Vec<String> = all_entries(&app)
        .await
        .into_iter()
        .filter(|(u, a, s, _, _)| *u == op.name && a == "console_open" && s == "refused")
        .map(|e| e.3)
        .collect();
    for words in [
        "no console ticket presented",
        "unknown or already used console ticket",
        "issued to another session",
        "issued for another VM",
        "Origin \"http://evil.example\" is not vmdeck's own",
        "no Origin header",
        "expired console ticket",
    ] {
        assert!(why.iter().any(|w| w.contains(words)), "no refusal saying {words:?}: {why:#?}");
    }
    assert_eq!(why.len(), 7, "one audited refusal each: {why:#?}");

    // Logging out closes an open console.
    let mut open = console(&app, &op, &uuid, "interactive").await;
    open.refresh().await.unwrap();
    let res = op.session.post("/logout", &[]).await;
    assert_eq!(res.status().as_u16(), 303);
    match open.wait_closed(Duration::from_secs(8)).await {
        Ended::Closed(4000, reason) => assert!(reason.contains("session"), "{reason}"),
        other => panic!("logging out did not close the console: {other:?}"),
    }
    entry(&app, &uuid, &op.name, "console_close", "the session ended").await;

    // Demoting an operator to viewer closes its interactive console.
    let mut open = console(&app, &other_op, &uuid, "interactive").await;
    open.refresh().await.unwrap();
    vmdeck::auth::users::set_role(&app.pool, &other_op.name, vmdeck::auth::Role::Viewer)
        .await
        .unwrap();
    match open.wait_closed(Duration::from_secs(8)).await {
        Ended::Closed(4000, reason) => assert!(reason.contains("role"), "{reason}"),
        other => panic!("demotion did not close the interactive console: {other:?}"),
    }
    entry(&app, &uuid, &other_op.name, "console_close", "role changed").await;
    // As a viewer now, the same user gets a view-only console.
    let view = console(&app, &other_op, &uuid, "view-only").await;
    view.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consoles_are_capped_per_user_and_close_when_idle() {
    let Some(daemon) = daemon_or_skip() else { return };
    let extras = Extras::vnc().with_boot_menu(60000);
    let uuid = daemon.define_vm_with("vmdeck-lim", 1, 64, 64, &extras).expect("define");
    daemon.virsh(&["start", "vmdeck-lim"]).expect("start");
    let limits = vec![("console_max_per_user", 1.into()), ("console_idle_secs", 10.into())];
    let app = spawn_app(app_options(&daemon, limits)).await;
    let op = user(&app, "operator").await;

    let mut first = console(&app, &op, &uuid, "interactive").await;
    settled_screen(&mut first).await;
    let (hello, mut ws) = connect(&app, &op, &uuid).await;
    assert_eq!(hello["ok"], false, "{hello}");
    let error = hello["error"].as_str().unwrap_or_default();
    assert!(error.contains("console_max_per_user"), "{error}");
    match rfb::after_refusal(&mut ws).await {
        Ended::Closed(4000, reason) => assert!(reason.contains("console_max_per_user"), "{reason}"),
        other => panic!("a refusing preamble is followed by a close frame, not {other:?}"),
    }
    entry(&app, &uuid, &op.name, "console_open", "console_max_per_user").await;
    first.refresh().await.expect("the first console keeps working");
    assert!(!blank(&first.fb));

    // Left alone on SeaBIOS's still prompt, it closes after the idle time.
    let started = std::time::Instant::now();
    match first.wait_closed(Duration::from_secs(20)).await {
        Ended::Closed(4000, reason) => assert!(reason.contains("idle for 10 s"), "{reason}"),
        other => panic!("an idle console did not close: {other:?}"),
    }
    assert!(started.elapsed() >= Duration::from_secs(8), "closed early: {:?}", started.elapsed());
    entry(&app, &uuid, &op.name, "console_close", "idle for 10 s").await;
    // Its place is free again.
    let again = console(&app, &op, &uuid, "interactive").await;
    again.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consoles_say_why_not_and_survive_the_daemon_dying() {
    let Some(mut daemon) = daemon_or_skip() else { return };
    let off = daemon.define_vm_with("vmdeck-off", 1, 64, 64, &Extras::vnc()).expect("define");
    let plain = daemon.define_vm("vmdeck-plain", 1, 64, 64).expect("define");
    let uuid = daemon.define_vm_with("vmdeck-on", 1, 64, 64, &Extras::vnc()).expect("define");
    daemon.virsh(&["start", "vmdeck-plain"]).expect("start");
    daemon.virsh(&["start", "vmdeck-on"]).expect("start");
    let app = spawn_app(app_options(&daemon, vec![])).await;
    let op = user(&app, "operator").await;

    // A shut-off VM's page says so and offers no console.
    let (path, html) = page(&op, "lab", &off).await;
    assert_eq!(path, None, "a shut-off VM's page offers no WebSocket");
    assert!(html.contains("shut off") && html.contains("only while it runs"), "{html}");
    // A running VM without graphics: its page says so from the stored inventory, with no
    // ticket issued.
    let (path, html) = page(&op, "lab", &plain).await;
    assert_eq!(path, None, "a VM without VNC offers no WebSocket");
    assert!(html.contains("no VNC display"), "{html}");
    // Stored data can be behind the host (a display removed since the last poll): the host's
    // answer then says so in the preamble.
    sqlx::query("UPDATE vms SET graphics = 'vnc' WHERE uuid = ?")
        .bind(&plain)
        .execute(&app.pool)
        .await
        .unwrap();
    let (hello, mut ws) = connect(&app, &op, &plain).await;
    assert_eq!(hello["ok"], false);
    assert!(hello["error"].as_str().unwrap_or_default().contains("no VNC display"), "{hello}");
    assert!(matches!(rfb::after_refusal(&mut ws).await, Ended::Closed(4000, _)));
    entry(&app, &plain, &op.name, "console_open", "no VNC display").await;

    // The same VM's screen over 127.0.0.1:port with `console = "direct"`.
    let direct_host = libvirt_host("lab", daemon.uri()).with("console", "direct");
    let direct = spawn_app(AppOptions::with_hosts(vec![direct_host])).await;
    let dop = user(&direct, "operator").await;
    let mut via_tcp = console(&direct, &dop, &uuid, "interactive").await;
    not_blank(&mut via_tcp).await;
    via_tcp.close().await;
    let opened = entry(&direct, &uuid, &dop.name, "console_open", "opened").await;
    assert!(opened.contains("via 127.0.0.1:"), "{opened}");
    let opened_here = {
        let mut c = console(&app, &op, &uuid, "interactive").await;
        not_blank(&mut c).await;
        c
    };
    let handed = entry(&app, &uuid, &op.name, "console_open", "interactive console opened").await;
    assert!(handed.contains("handed over by libvirt"), "{handed}");

    // The daemon dies with a console open.
    let mut open = opened_here;
    daemon.kill();
    tokio::time::sleep(Duration::from_secs(3)).await;
    // QEMU outlives its daemon, and so does the socket libvirt handed over: the console goes on.
    open.refresh().await.expect("the open console keeps working after the daemon died");
    open.key(ESCAPE).await.expect("and still takes keys");
    open.refresh().await.expect("and still shows the screen");
    // A new one cannot be opened, and says why (twice: the first attempt finds the broken
    // connection, the next one a daemon that is not there).
    for attempt in 1..=2 {
        let (hello, mut ws) = connect(&app, &op, &uuid).await;
        eprintln!("console attempt {attempt} after the daemon died: {hello}");
        assert_eq!(hello["ok"], false, "{hello}");
        let error = hello["error"].as_str().unwrap_or_default();
        assert!(
            error.starts_with("vmdeck could not get the VM's display from its host: "),
            "{error}"
        );
        assert!(matches!(rfb::after_refusal(&mut ws).await, Ended::Closed(4000, _)));
    }
    let (status, _) = op.session.get("/vms").await;
    assert_eq!(status, 200, "the server keeps answering pages");
    let (status, _) = op.session.get(&format!("/vms/lab/{uuid}")).await;
    assert_eq!(status, 200);
    open.close().await;
}
