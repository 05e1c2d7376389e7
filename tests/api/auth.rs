//! Who may do what: login, throttling, sessions and their cookie, CSRF, the address audited for
//! a request, and the route × role matrix, over HTTP against the breadth lab.

use crate::support::app::{add_user, breadth_app, login, uuid_of, Session, PASSWORD};
use crate::support::audit::{audit_count, power_entries};

#[tokio::test]
async fn every_route_answers_each_role_as_the_matrix_says() {
    let app = breadth_app().await;
    let running = uuid_of(&app, "br-running").await;
    let power = format!("/vms/lab/{running}/power");
    let confirm = format!("/vms/lab/{running}/power/confirm?action=power_off");
    add_user(&app.pool, "target", "viewer").await;
    let entry: i64 = sqlx::query_scalar("SELECT max(id) FROM audit_log")
        .fetch_one(&app.pool)
        .await
        .expect("logging in the test accounts wrote audit entries");
    // Snapshot forms on a VM with a power request in flight: every POST is answered (303) and
    // refused in words, so the matrix leaves the VM as it was for the next role.
    let busy = uuid_of(&app, "br-shutoff").await;
    let snap: i64 = sqlx::query_scalar(
        "INSERT INTO vm_snapshots (vm_id, snap_id, name, first_seen)
         SELECT id, 'kept', 'kept', 1 FROM vms WHERE uuid = ? RETURNING id",
    )
    .bind(&busy)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO audit_log (ts, kind, user_name, host_name, vm_uuid, vm_name, action, status)
         VALUES (1, 'power', 'op', 'lab', ?, 'br-shutoff', 'start', 'sent')",
    )
    .bind(&busy)
    .execute(&app.pool)
    .await
    .unwrap();
    let snapshots = format!("/vms/lab/{busy}/snapshots");

    let schedule = crate::schedules::seeded_schedule(&app, "matrix").await;
    let (sched, sched_delete, sched_run) = (
        format!("/schedules/{}", schedule.0),
        format!("/schedules/{}/delete", schedule.0),
        format!("/schedules/runs/{}", schedule.1),
    );

    let (rule, alert) = crate::alerts_pages::seeded_alert(&app, "matrix").await;
    let (alert_page, ack, rule_edit, rule_post, rule_delete, rule_enabled) = (
        format!("/alerts/{alert}"),
        format!("/alerts/{alert}/acknowledge"),
        format!("/alerts/rules/{rule}/edit"),
        format!("/alerts/rules/{rule}"),
        format!("/alerts/rules/{rule}/delete"),
        format!("/alerts/rules/{rule}/enabled"),
    );
    // A notification target (admins only: its page shows where alerts go).
    let target = crate::alert_notify::seeded_target(&app, "matrix hook").await;
    let (tgt, tgt_enabled, tgt_delete) = (
        format!("/alerts/targets/{target}"),
        format!("/alerts/targets/{target}/enabled"),
        format!("/alerts/targets/{target}/delete"),
    );

    // (method, route as Rocket lists it, concrete path, form, [anonymous, viewer, operator, admin])
    type Case<'a> = (&'a str, &'a str, String, Vec<(&'a str, &'a str)>, [u16; 4]);
    let cases: Vec<Case> = vec![
        ("GET", "/", "/".into(), vec![], [303, 303, 303, 303]),
        ("GET", "/vms?<query..>", "/vms".into(), vec![], [401, 200, 200, 200]),
        ("GET", "/vms/live?<query..>", "/vms/live".into(), vec![], [401, 200, 200, 200]),
        (
            "GET",
            "/vms/<host>/<uuid>/live",
            format!("/vms/lab/{running}/live"),
            vec![],
            [401, 200, 200, 200],
        ),
        // The console page of a VNC VM: every role (a viewer's console is view-only). The lab
        // is libvirt's test driver, so the page says there is no screen, issuing no ticket.
        (
            "GET",
            "/vms/<host>/<uuid>/console",
            format!("/vms/lab/{running}/console"),
            vec![],
            [401, 200, 200, 200],
        ),
        // Its WebSocket, asked without the upgrade headers: not a WebSocket request (400), for
        // every role, before anything else is looked at. (Upgrades without a session, ticket or
        // vmdeck's Origin are refused 401/403: `console_ws_upgrades_…` below.)
        (
            "GET",
            "/vms/<host>/<uuid>/console/ws?<ticket>",
            format!("/vms/lab/{running}/console/ws?ticket=x"),
            vec![],
            [400, 400, 400, 400],
        ),
        ("GET", "/healthz", "/healthz".into(), vec![], [200, 200, 200, 200]),
        // Off unless metrics_tokens / metrics_allow are set (tests/api/metrics.rs); never by role.
        ("GET", "/metrics", "/metrics".into(), vec![], [404, 404, 404, 404]),
        ("GET", "/login?<next>", "/login".into(), vec![], [200, 303, 303, 303]),
        (
            "POST",
            "/login",
            "/login".into(),
            vec![("username", "nobody"), ("password", "wrong-password")],
            [401, 401, 401, 401],
        ),
        ("GET", "/vms/<host>/<uuid>/power/confirm?<q..>", confirm, vec![], [401, 403, 200, 200]),
        (
            "POST",
            "/vms/<host>/<uuid>/power",
            power.clone(),
            vec![("action", "pause")],
            [401, 403, 303, 303],
        ),
        (
            "POST",
            "/vms/power",
            "/vms/power".into(),
            vec![("action", "resume"), ("vm", "lab/nope")],
            [401, 403, 303, 303],
        ),
        (
            "GET",
            "/vms/<host>/<uuid>/snapshots/new",
            format!("{snapshots}/new"),
            vec![],
            [401, 403, 200, 200],
        ),
        (
            "POST",
            "/vms/<host>/<uuid>/snapshots",
            snapshots.clone(),
            vec![("name", "matrix")],
            [401, 403, 303, 303],
        ),
        (
            "GET",
            "/vms/<host>/<uuid>/snapshots/<row>/revert",
            format!("{snapshots}/{snap}/revert"),
            vec![],
            [401, 403, 200, 200],
        ),
        (
            "POST",
            "/vms/<host>/<uuid>/snapshots/<row>/revert",
            format!("{snapshots}/{snap}/revert"),
            vec![("after", "running")],
            [401, 403, 303, 303],
        ),
        (
            "GET",
            "/vms/<host>/<uuid>/snapshots/<row>/delete",
            format!("{snapshots}/{snap}/delete"),
            vec![],
            [401, 403, 200, 200],
        ),
        (
            "POST",
            "/vms/<host>/<uuid>/snapshots/<row>/delete",
            format!("{snapshots}/{snap}/delete"),
            vec![],
            [401, 403, 303, 303],
        ),
        ("GET", "/audit?<query..>", "/audit".into(), vec![], [401, 200, 200, 200]),
        ("GET", "/audit.csv?<query..>", "/audit.csv".into(), vec![], [401, 200, 200, 200]),
        ("GET", "/audit/<id>", format!("/audit/{entry}"), vec![], [401, 200, 200, 200]),
        ("GET", "/users", "/users".into(), vec![], [401, 403, 403, 200]),
        ("GET", "/account", "/account".into(), vec![], [401, 200, 200, 200]),
        (
            "POST",
            "/account/password",
            "/account/password".into(),
            vec![("current", "wrong-password"), ("password", "x"), ("password_again", "x")],
            [401, 303, 303, 303],
        ),
        (
            "POST",
            "/users",
            "/users".into(),
            vec![
                ("name", "x"),
                ("role", "viewer"),
                ("password", "short"),
                ("password_again", "short"),
            ],
            [401, 403, 403, 303],
        ),
        (
            "POST",
            "/users/<name>/role",
            "/users/target/role".into(),
            vec![("role", "operator")],
            [401, 403, 403, 303],
        ),
        (
            "POST",
            "/users/<name>/password",
            "/users/target/password".into(),
            vec![("password", PASSWORD), ("password_again", PASSWORD)],
            [401, 403, 403, 303],
        ),
        (
            "GET",
            "/users/<name>/remove",
            "/users/target/remove".into(),
            vec![],
            [401, 403, 403, 200],
        ),
        (
            "POST",
            "/users/<name>/remove",
            "/users/nobody/remove".into(),
            vec![],
            [401, 403, 403, 303],
        ),
        ("GET", "/static/<path..>", "/static/vmdeck.css".into(), vec![], [200, 200, 200, 200]),
        (
            "GET",
            "/vms/<host>/<uuid>?<range..>",
            format!("/vms/lab/{running}"),
            vec![],
            [401, 200, 200, 200],
        ),
        (
            "GET",
            "/vms/<host>/<file>?<range..>",
            format!("/vms/lab/{running}.csv"),
            vec![],
            [401, 200, 200, 200],
        ),
        ("GET", "/reports", "/reports".into(), vec![], [401, 200, 200, 200]),
        (
            "GET",
            "/reports/fleet?<at>&<page>",
            "/reports/fleet".into(),
            vec![],
            [401, 200, 200, 200],
        ),
        (
            "GET",
            "/reports/fleet.csv?<at>",
            "/reports/fleet.csv".into(),
            vec![],
            [401, 200, 200, 200],
        ),
        (
            "GET",
            "/reports/availability?<sort>&<page>&<period..>",
            "/reports/availability".into(),
            vec![],
            [401, 200, 200, 200],
        ),
        (
            "GET",
            "/reports/availability.csv?<period..>",
            "/reports/availability.csv".into(),
            vec![],
            [401, 200, 200, 200],
        ),
        (
            "GET",
            "/reports/capacity?<period..>",
            "/reports/capacity".into(),
            vec![],
            [401, 200, 200, 200],
        ),
        (
            "GET",
            "/reports/capacity.csv?<period..>",
            "/reports/capacity.csv".into(),
            vec![],
            [401, 200, 200, 200],
        ),
        ("GET", "/schedules", "/schedules".into(), vec![], [401, 403, 403, 200]),
        ("GET", "/schedules/new", "/schedules/new".into(), vec![], [401, 403, 403, 200]),
        // An empty form: refused in words, nothing saved.
        ("POST", "/schedules", "/schedules".into(), vec![("name", "")], [401, 403, 403, 400]),
        ("GET", "/schedules/<id>", sched.clone(), vec![], [401, 403, 403, 200]),
        ("POST", "/schedules/<id>", sched, vec![("name", "")], [401, 403, 403, 400]),
        ("GET", "/schedules/<id>/delete", sched_delete, vec![], [401, 403, 403, 200]),
        (
            "POST",
            "/schedules/<id>/delete",
            "/schedules/999999/delete".into(),
            vec![],
            [401, 403, 403, 303],
        ),
        ("GET", "/schedules/runs/<run>", sched_run, vec![], [401, 403, 403, 200]),
        ("GET", "/alerts?<query..>", "/alerts".into(), vec![], [401, 200, 200, 200]),
        ("GET", "/alerts.csv?<query..>", "/alerts.csv".into(), vec![], [401, 200, 200, 200]),
        ("GET", "/alerts/<id>", alert_page, vec![], [401, 200, 200, 200]),
        // An empty comment: refused in words (400), nothing acknowledged.
        ("POST", "/alerts/<id>/acknowledge", ack, vec![("comment", "")], [401, 403, 400, 400]),
        ("GET", "/alerts/rules", "/alerts/rules".into(), vec![], [401, 200, 200, 200]),
        ("GET", "/alerts/rules/new", "/alerts/rules/new".into(), vec![], [401, 403, 403, 200]),
        ("POST", "/alerts/rules", "/alerts/rules".into(), vec![("name", "")], [401, 403, 403, 400]),
        ("GET", "/alerts/rules/<id>/edit", rule_edit, vec![], [401, 403, 403, 200]),
        ("POST", "/alerts/rules/<id>", rule_post, vec![("name", "")], [401, 403, 403, 400]),
        ("GET", "/alerts/rules/<id>/delete", rule_delete, vec![], [401, 403, 403, 200]),
        (
            "POST",
            "/alerts/rules/<id>/delete",
            "/alerts/rules/999999/delete".into(),
            vec![],
            [401, 403, 403, 303],
        ),
        // Enabling an enabled rule: answered, nothing changes.
        (
            "POST",
            "/alerts/rules/<id>/enabled",
            rule_enabled,
            vec![("enabled", "on")],
            [401, 403, 403, 303],
        ),
        ("GET", "/alerts/silences", "/alerts/silences".into(), vec![], [401, 200, 200, 200]),
        (
            "GET",
            "/alerts/silences/new?<prefill..>",
            "/alerts/silences/new".into(),
            vec![],
            [401, 403, 200, 200],
        ),
        // No matcher: refused in words, nothing saved.
        (
            "POST",
            "/alerts/silences",
            "/alerts/silences".into(),
            vec![("comment", "")],
            [401, 403, 400, 400],
        ),
        (
            "POST",
            "/alerts/silences/<id>/end",
            "/alerts/silences/999999/end".into(),
            vec![],
            [401, 403, 303, 303],
        ),
        ("GET", "/alerts/targets", "/alerts/targets".into(), vec![], [401, 403, 403, 200]),
        ("GET", "/alerts/targets/new", "/alerts/targets/new".into(), vec![], [401, 403, 403, 200]),
        // An empty form: refused in words, nothing saved.
        (
            "POST",
            "/alerts/targets",
            "/alerts/targets".into(),
            vec![("name", "")],
            [401, 403, 403, 400],
        ),
        ("GET", "/alerts/targets/<id>", tgt.clone(), vec![], [401, 403, 403, 200]),
        ("POST", "/alerts/targets/<id>", tgt, vec![("name", "")], [401, 403, 403, 400]),
        // Turned on again (no `enabled` field turns it off), so it stays for the next role.
        (
            "POST",
            "/alerts/targets/<id>/enabled",
            tgt_enabled,
            vec![("enabled", "on")],
            [401, 403, 403, 303],
        ),
        ("GET", "/alerts/targets/<id>/delete", tgt_delete, vec![], [401, 403, 403, 200]),
        (
            "POST",
            "/alerts/targets/<id>/delete",
            "/alerts/targets/999999/delete".into(),
            vec![],
            [401, 403, 403, 303],
        ),
        // Last: it ends the session it is sent with.
        ("POST", "/logout", "/logout".into(), vec![], [401, 303, 303, 303]),
    ];

    // A route nobody listed here fails the test: new routes must state who may use them.
    for route in &app.routes {
        assert!(
            cases.iter().any(|(m, r, ..)| format!("{m} {r}") == *route),
            "route {route} is missing from the role matrix"
        );
    }

    let anonymous = Session {
        client: crate::support::app::cookie_client(),
        csrf: String::new(),
        base: app.base.clone(),
    };
    let sessions = [
        anonymous,
        app.session("viewer").await,
        app.session("operator").await,
        app.session("admin").await,
    ];
    let roles = ["anonymous", "viewer", "operator", "admin"];
    for (method, route, path, form, expected) in &cases {
        for (i, session) in sessions.iter().enumerate() {
            let status = match *method {
                "GET" => session.get(path).await.0,
                _ => session.post(path, form).await.status().as_u16(),
            };
            assert_eq!(status, expected[i], "{method} {route} ({path}) as {}", roles[i]);
        }
    }
}

#[tokio::test]
async fn a_viewer_is_refused_and_the_attempt_is_audited() {
    let app = breadth_app().await;
    let uuid = uuid_of(&app, "br-running").await;
    let before = audit_count(&app, "access_denied").await;
    let res = app.viewer.post(&format!("/vms/lab/{uuid}/power"), &[("action", "shutdown")]).await;
    assert_eq!(res.status().as_u16(), 403);
    assert!(res.text().await.unwrap().contains("recorded in the audit log"));
    assert_eq!(audit_count(&app, "access_denied").await, before + 1);
    assert!(power_entries(&app, &uuid).await.is_empty(), "nothing was requested");
    let (_, html) = app.get("/vms").await;
    assert!(!html.contains("name=\"action\" value=\"shutdown\""), "viewers get no power buttons");
    // A huge path is audited cut short, not whole.
    let huge = "u".repeat(20_000);
    let res = app.viewer.post(&format!("/users/{huge}/role"), &[("role", "admin")]).await;
    assert_eq!(res.status().as_u16(), 403);
    let longest: i64 = sqlx::query_scalar("SELECT max(length(detail)) FROM audit_log")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert!((200..300).contains(&longest), "the audited path is bounded ({longest})");
}

#[tokio::test]
async fn missing_or_foreign_csrf_is_refused_with_403_and_audited() {
    let app = breadth_app().await;
    let op = app.session("operator").await;
    let uuid = uuid_of(&app, "br-running").await;
    let path = format!("/vms/lab/{uuid}/power");
    let url = format!("{}{path}", app.base);
    let no_token = op.client.post(&url).form(&[("action", "shutdown")]).send().await.unwrap();
    assert_eq!(no_token.status().as_u16(), 403);
    let wrong = op.post(&path, &[("action", "shutdown"), ("csrf_token", "forged")]).await;
    assert_eq!(wrong.status().as_u16(), 403);
    let foreign = op
        .client
        .post(&url)
        .header("Origin", "http://evil.example")
        .form(&[("action", "shutdown"), ("csrf_token", op.csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(foreign.status().as_u16(), 403, "a valid token from another origin is refused too");
    assert_eq!(audit_count(&app, "csrf_refused").await, 3);
    assert!(power_entries(&app, &uuid).await.is_empty(), "nothing was sent");
}

#[tokio::test]
async fn wrong_passwords_are_throttled_and_unknown_users_get_the_same_answer() {
    let app = breadth_app().await;
    let unknown = login(&app.base, "no-such-user", "whatever-password").await.err().unwrap();
    let wrong = login(&app.base, "viewer", "whatever-password").await.err().unwrap();
    assert_eq!(unknown.0, 401);
    assert_eq!(wrong.0, 401);
    let msg = |html: &str| {
        html.split("id=\"login-error\">")
            .nth(1)
            .and_then(|s| s.split('<').next())
            .unwrap_or("")
            .to_string()
    };
    assert_eq!(msg(&unknown.1), msg(&wrong.1), "no hint whether the user exists");
    assert_eq!(msg(&wrong.1), "Wrong user name or password.");
    let mut throttled = None;
    for _ in 0..6 {
        if let Err((status, html)) = login(&app.base, "viewer", "still-wrong-password").await {
            if status == 429 {
                throttled = Some(html);
                break;
            }
        }
    }
    let html = throttled.expect("repeated failures are throttled");
    assert!(msg(&html).starts_with("Too many failed attempts. Try again in"), "{}", msg(&html));
    let refused =
        login(&app.base, "viewer", PASSWORD).await.err().expect("even the right password waits");
    assert_eq!(refused.0, 429);
    assert!(audit_count(&app, "login_failed").await >= 5);
}

#[tokio::test]
async fn sessions_end_at_once_on_logout_idle_timeout_role_change_and_removal() {
    let app = breadth_app().await;
    let uuid = uuid_of(&app, "br-running").await;

    let s = app.session("operator").await;
    assert_eq!(s.post("/logout", &[]).await.status().as_u16(), 303);
    let (_, page) = s.get("/login").await;
    assert!(page.contains("You are logged out."), "said on the login page, where it happened");
    assert!(
        !s.get("/login").await.1.contains("logged out"),
        "and said once, not at the next login"
    );
    assert_eq!(s.get("/vms").await.0, 401, "logged out");

    let s = app.session("viewer").await;
    sqlx::query("UPDATE sessions SET last_seen = 0").execute(&app.pool).await.unwrap();
    assert_eq!(s.get("/vms").await.0, 401, "idle session expired");

    add_user(&app.pool, "demoted", "operator").await;
    let s = login(&app.base, "demoted", PASSWORD).await.unwrap();
    let admin = app.session("admin").await;
    assert_eq!(
        admin.post("/users/demoted/role", &[("role", "viewer")]).await.status().as_u16(),
        303
    );
    assert_eq!(
        s.post(&format!("/vms/lab/{uuid}/power"), &[("action", "pause")]).await.status().as_u16(),
        403,
        "the new role applies to the next request"
    );

    assert_eq!(admin.post("/users/demoted/remove", &[]).await.status().as_u16(), 303);
    assert_eq!(s.get("/vms").await.0, 401, "a removed user's session is gone");
    let sessions: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM sessions s JOIN users u ON u.id = s.user_id WHERE u.name = 'demoted'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(sessions, 0);
    let (_, html) = admin.get("/audit?action=role_changed").await;
    assert!(html.contains("demoted"), "user changes are audited");
}

#[tokio::test]
async fn each_login_gets_a_new_session_id_and_the_cookie_is_locked_down() {
    let app = breadth_app().await;
    let client = crate::support::app::cookie_client();
    let res = client
        .post(format!("{}/login", app.base))
        .form(&[("username", "viewer"), ("password", PASSWORD)])
        .send()
        .await
        .unwrap();
    let cookie = res.headers().get("set-cookie").unwrap().to_str().unwrap().to_string();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"), "{cookie}");
    assert!(cookie.starts_with("vmdeck_session=") && !cookie.contains("Secure"), "{cookie}");
    // The cookie lasts no longer than the session may (12 h by default), not Rocket's week.
    assert_eq!(max_age(&cookie), Some(12 * 3600), "{cookie}");
    assert!(res.headers().get("strict-transport-security").is_none(), "no HSTS over plain HTTP");
    let res2 = client
        .post(format!("{}/login", app.base))
        .form(&[("username", "viewer"), ("password", PASSWORD)])
        .send()
        .await
        .unwrap();
    let cookie2 = res2.headers().get("set-cookie").unwrap().to_str().unwrap().to_string();
    assert_ne!(cookie.split(';').next(), cookie2.split(';').next(), "no session fixation");
    let hashes: Vec<String> =
        sqlx::query_scalar("SELECT id_hash FROM sessions").fetch_all(&app.pool).await.unwrap();
    assert!(hashes.iter().all(|h| h.len() == 64), "only SHA-256 hashes are stored");

    let res = client.get(format!("{}/vms", app.base)).send().await.unwrap();
    let csp = res.headers().get("content-security-policy").unwrap().to_str().unwrap();
    assert!(
        csp.contains("frame-ancestors 'none'")
            && csp.contains("script-src 'self'")
            && !csp.contains("unsafe-inline")
    );
    assert!(res.headers().get("referrer-policy").is_some());
    assert_eq!(res.headers().get("x-frame-options").unwrap(), "DENY");
}

#[tokio::test]
async fn a_forged_x_real_ip_does_not_change_the_audited_address() {
    let app = breadth_app().await;
    let client = crate::support::app::cookie_client();
    let res = client
        .post(format!("{}/login", app.base))
        .header("X-Real-IP", "203.0.113.9")
        .header("X-Forwarded-For", "203.0.113.9")
        .form(&[("username", "viewer"), ("password", "wrong-password!")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 401);
    let addr: String = sqlx::query_scalar(
        "SELECT client_addr FROM audit_log WHERE kind = 'login_failed' ORDER BY id DESC LIMIT 1",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(addr, "127.0.0.1");
}

#[tokio::test]
async fn changing_ones_own_password_asks_for_the_current_one_and_refuses_common_ones() {
    let app = breadth_app().await;
    let admin = app.session("admin").await;
    let (_, users) = admin.get("/users").await;
    let name = users
        .split("<a class=\"who\" href=\"/account\" title=\"Your account\">")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .expect("the page names the logged-in user, linking to their account")
        .to_string();
    // Not through the Users page, which would not ask for the current password.
    let res = admin
        .post(
            &format!("/users/{name}/password"),
            &[("password", "a long new password"), ("password_again", "a long new password")],
        )
        .await;
    assert_eq!(res.headers()["location"], "/users");
    assert!(admin.flash_at("/users").await.contains("account page"));

    let new = "a long new password";
    for (current, password, again, why) in [
        ("not my password", new, new, "current password is wrong"),
        ("", new, new, "current password is wrong"),
        (PASSWORD, new, "another one", "differ"),
        (PASSWORD, "short", "short", "at least"),
        (PASSWORD, "Password123", "Password123", "most common"),
        (PASSWORD, "qwertyuiop", "qwertyuiop", "most common"),
    ] {
        let form = [("current", current), ("password", password), ("password_again", again)];
        let res = admin.post("/account/password", &form).await;
        assert_eq!(res.status().as_u16(), 303, "{why}");
        assert_eq!(res.headers()["location"], "/account", "{why}: back, not to /login");
        let flash = admin.flash_at("/account").await;
        assert!(flash.starts_with("Not changed:") && flash.contains(why), "{why}: {flash}");
    }
    let (status, _) = admin.get("/users").await;
    assert_eq!(status, 200, "still logged in: nothing was changed");
    let refused: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM audit_log WHERE kind = 'password_changed' AND status = 'refused'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(refused, 7, "each refused change is audited");
    assert!(login(&app.base, &name, PASSWORD).await.is_ok(), "the old password still works");

    // A viewer changes their own password: every session of theirs ends, the new one works.
    let viewer = &app.viewer;
    let (status, page) = viewer.get("/account").await;
    assert_eq!(status, 200);
    assert!(page.contains("name=\"current\""), "the form asks for the current password");
    let form = [("current", PASSWORD), ("password", new), ("password_again", new)];
    let res = viewer.post("/account/password", &form).await;
    assert_eq!(res.headers()["location"], "/login");
    assert_eq!(viewer.get("/vms").await.0, 401, "this session ended too");
    assert!(login(&app.base, "viewer", new).await.is_ok());
    assert!(login(&app.base, "viewer", PASSWORD).await.is_err());
}

#[tokio::test]
async fn failing_on_purpose_from_one_address_does_not_lock_the_account_out_for_another() {
    use crate::support::app::{cookie_client, spawn_app, AppOptions};
    // The test speaks as several clients through a trusted proxy (itself, on loopback).
    let app = spawn_app(AppOptions {
        trusted_proxies: vec!["127.0.0.1".into()],
        ..AppOptions::breadth()
    })
    .await;
    let attempt = |client: &'static str, password: &'static str| {
        let base = app.base.clone();
        async move {
            cookie_client()
                .post(format!("{base}/login"))
                .header("X-Forwarded-For", client)
                .form(&[("username", "viewer"), ("password", password)])
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    let attacker = "198.51.100.7";
    let mut throttled = false;
    for _ in 0..8 {
        if attempt(attacker, "wrong password!").await == 429 {
            throttled = true;
            break;
        }
    }
    assert!(throttled, "the attacker's address is throttled");
    assert_eq!(attempt(attacker, PASSWORD).await, 429, "even the right password waits there");
    assert_eq!(
        attempt("203.0.113.5", PASSWORD).await,
        303,
        "the account's owner, from an address that has not been failing, gets in"
    );
    assert_eq!(attempt("2001:db8:7::1", PASSWORD).await, 303, "and from an IPv6 address too");
}

#[tokio::test]
async fn a_huge_user_name_is_cut_before_anything_is_stored() {
    let app = breadth_app().await;
    let huge = "x".repeat(30 * 1024);
    for origin in ["http://evil.example", ""] {
        let mut req = app.client.post(format!("{}/login", app.base));
        if !origin.is_empty() {
            req = req.header("Origin", origin);
        }
        let res = req.form(&[("username", huge.as_str()), ("password", "whatever")]).send().await;
        let res = res.unwrap();
        assert!(res.status().is_client_error(), "{origin:?}: refused");
        let page = res.text().await.unwrap();
        assert!(
            page.len() < 20_000,
            "{origin:?}: the name is not echoed whole ({} bytes)",
            page.len()
        );
    }
    let longest: i64 =
        sqlx::query_scalar("SELECT COALESCE(MAX(length(user_name)), 0) FROM audit_log")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert!(
        longest <= 65,
        "an audited user name is at most 64 characters and an ellipsis ({longest})"
    );
}

#[tokio::test]
async fn a_loop_of_refused_logins_writes_one_audit_entry_per_client_not_one_per_request() {
    let app = breadth_app().await;
    let entries = async |kind: &str| audit_count(&app, kind).await;
    for _ in 0..30 {
        let res = app
            .client
            .post(format!("{}/login", app.base))
            .header("Origin", "http://evil.example")
            .form(&[("username", "admin"), ("password", "x")])
            .send()
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), 403);
    }
    assert_eq!(entries("csrf_refused").await, 1, "30 refused requests, one entry");
    let mut throttled = 0;
    for _ in 0..30 {
        if login(&app.base, "nobody", "wrong password!").await.err().unwrap().0 == 429 {
            throttled += 1;
        }
    }
    assert!(throttled >= 20, "most attempts were throttled ({throttled})");
    let throttled_entries: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM audit_log WHERE kind = 'login_failed' AND detail = 'throttled'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(throttled_entries, 0, "this client's one entry this minute was the refused origin");
    assert!(entries("login_failed").await <= 4, "only the attempts that were checked are recorded");
    // The real entries are still there, on the first page.
    let (_, html) = app.get("/audit").await;
    assert!(html.contains("csrf_refused"));
}

/// The `Max-Age` of a `Set-Cookie` header, in seconds.
fn max_age(cookie: &str) -> Option<u64> {
    cookie.split(';').find_map(|p| p.trim().strip_prefix("Max-Age=")).and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn behind_an_https_proxy_the_cookie_is_secure_and_host_bound_and_hsts_is_sent() {
    use crate::support::app::{spawn_app, AppOptions};
    let app = spawn_app(AppOptions {
        public_url: Some("https://vmdeck.example.com".into()),
        ..AppOptions::breadth()
    })
    .await;
    let res = app
        .client
        .post(format!("{}/login", app.base))
        .form(&[("username", "viewer"), ("password", PASSWORD)])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 303);
    let cookie = res.headers().get("set-cookie").unwrap().to_str().unwrap().to_string();
    // `__Host-`: browsers accept it only with Secure, Path=/ and no Domain.
    assert!(cookie.starts_with("__Host-vmdeck_session="), "{cookie}");
    assert!(cookie.contains("; Secure") && cookie.contains("Path=/"), "{cookie}");
    assert!(!cookie.contains("Domain"), "{cookie}");
    assert!(max_age(&cookie).is_some_and(|s| s <= 12 * 3600), "{cookie}");
    let hsts = res.headers().get("strict-transport-security").map(|v| v.to_str().unwrap());
    assert_eq!(hsts, Some("max-age=31536000"));
    // The cookie works under its new name (sent by hand: reqwest keeps Secure cookies for
    // https only, and the proxy in front would speak plain HTTP to vmdeck anyway).
    let pair = cookie.split(';').next().unwrap().to_string();
    let page =
        app.client.get(format!("{}/vms", app.base)).header("cookie", &pair).send().await.unwrap();
    assert_eq!(page.status().as_u16(), 200);
    assert!(page.headers().get("strict-transport-security").is_some(), "HSTS on every page");
    let plain = pair.replacen("__Host-", "", 1);
    let page =
        app.client.get(format!("{}/vms", app.base)).header("cookie", plain).send().await.unwrap();
    assert_eq!(page.status().as_u16(), 401, "the unprefixed name is not a session");
}

#[tokio::test]
async fn demo_accounts_cannot_log_in_outside_the_demo() {
    let app = breadth_app().await;
    // A database that once ran the demo still holds its generated admin.
    vmdeck::auth::users::add(
        &app.pool,
        "admin-demo",
        vmdeck::auth::Role::Admin,
        PASSWORD.to_string(),
        true,
    )
    .await
    .unwrap();
    let (status, html) = login(&app.base, "admin-demo", PASSWORD).await.err().unwrap();
    assert_eq!(status, 401);
    assert!(html.contains("Wrong user name or password"), "the same answer as an unknown name");
    // Once made a real account (as `vmdeck user passwd` does), it logs in; a session it holds
    // stops working the moment the account counts as a demo one again.
    sqlx::query("UPDATE users SET demo = 0 WHERE name = 'admin-demo'")
        .execute(&app.pool)
        .await
        .unwrap();
    let session = login(&app.base, "admin-demo", PASSWORD).await.unwrap();
    assert_eq!(session.get("/users").await.0, 200);
    sqlx::query("UPDATE users SET demo = 1 WHERE name = 'admin-demo'")
        .execute(&app.pool)
        .await
        .unwrap();
    assert_eq!(session.get("/users").await.0, 401);
}

#[tokio::test]
async fn a_next_page_that_is_not_a_uri_as_given_sends_the_user_to_the_vm_list() {
    let app = breadth_app().await;
    add_user(&app.pool, "walker", "viewer").await;
    let location = |res: &reqwest::Response| {
        res.headers().get("location").map(|l| l.to_str().unwrap().to_string())
    };
    for (next, expected) in [
        ("/audit?user=x", "/audit?user=x"),
        ("/vms x", "/vms"),
        ("/audit?user=é", "/vms"),
        ("/vms\u{202e}", "/vms"),
        ("/\t/evil.example", "/vms"),
    ] {
        // Logged in already: the login page sends the user on at once.
        let encoded: String = url::form_urlencoded::byte_serialize(next.as_bytes()).collect();
        let res = app.viewer.client.get(format!("{}/login?next={encoded}", app.base)).send();
        let res = res.await.unwrap();
        assert_eq!(res.status().as_u16(), 303, "GET /login?next={next:?} when logged in");
        assert_eq!(location(&res).as_deref(), Some(expected), "GET /login?next={next:?}");
        // Logging in.
        let res = app
            .client
            .post(format!("{}/login", app.base))
            .form(&[("username", "walker"), ("password", PASSWORD), ("next", next)])
            .send()
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), 303, "POST /login with next={next:?}");
        assert_eq!(location(&res).as_deref(), Some(expected), "POST /login with next={next:?}");
    }
}

/// A WebSocket upgrade request for `path`, as a browser sends it, from `origin`.
async fn upgrade(client: &reqwest::Client, base: &str, path: &str, origin: &str) -> u16 {
    client
        .get(format!("{base}{path}"))
        .header("Connection", "Upgrade")
        .header("Upgrade", "websocket")
        .header("Sec-WebSocket-Version", "13")
        .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
        .header("Origin", origin)
        .send()
        .await
        .expect("an answer")
        .status()
        .as_u16()
}

#[tokio::test]
async fn console_ws_upgrades_without_a_session_a_ticket_or_vmdecks_origin_are_refused() {
    let app = breadth_app().await;
    let running = uuid_of(&app, "br-running").await;
    let ws = format!("/vms/lab/{running}/console/ws");
    let base = app.base.clone();
    let anonymous = crate::support::app::cookie_client();
    assert_eq!(upgrade(&anonymous, &base, &format!("{ws}?ticket=x"), &base).await, 401);
    let before = audit_count(&app, "console").await;
    for role in ["viewer", "operator", "admin"] {
        let s = app.session(role).await;
        for (path, origin) in [
            (ws.clone(), base.as_str()),
            (format!("{ws}?ticket=not-a-ticket"), base.as_str()),
            (format!("{ws}?ticket=x"), "https://evil.example"),
        ] {
            let status = upgrade(&s.client, &base, &path, origin).await;
            assert_eq!(status, 403, "{role}: {path} from {origin}");
        }
    }
    assert_eq!(
        audit_count(&app, "console").await - before,
        9,
        "each refused upgrade of a logged-in user is audited"
    );
    assert_eq!(app.get("/healthz").await.0, 200, "the server keeps serving");
}
