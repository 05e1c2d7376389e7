//! Login, roles, CSRF, power actions and the audit log over HTTP, against the breadth lab
//! (libvirt's test driver, where actions take effect at once). Real-VM power tests are in
//! real_vm.rs.

use std::time::Duration;

use crate::support::app::{
    add_user, breadth_uri, libvirt_host, login, spawn_app, uuid_of, vm_names, AppOptions, Session,
    TestApp, PASSWORD,
};

async fn breadth_app() -> TestApp {
    spawn_app(AppOptions { hosts: vec![libvirt_host("lab", &breadth_uri())], ..Default::default() })
        .await
}

/// The power entries of a VM, oldest first: (status, error, sent_at, accepted_at, settled_at).
async fn power_entries(
    app: &TestApp,
    uuid: &str,
) -> Vec<(String, Option<String>, Option<i64>, Option<i64>, Option<i64>)> {
    sqlx::query_as(
        "SELECT status, error, sent_at, accepted_at, settled_at FROM audit_log WHERE kind = 'power' AND vm_uuid = ? ORDER BY id",
    )
    .bind(uuid)
    .fetch_all(&app.pool)
    .await
    .unwrap()
}

/// Waits until the VM's newest power entry is settled and returns its status.
async fn settled(app: &TestApp, uuid: &str) -> String {
    for _ in 0..200 {
        let entries = power_entries(app, uuid).await;
        if let Some(last) = entries.last() {
            if !["requested", "sent", "accepted"].contains(&last.0.as_str()) {
                return last.0.clone();
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the power entry of {uuid} never settled: {:?}", power_entries(app, uuid).await);
}

async fn audit_count(app: &TestApp, kind: &str) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM audit_log WHERE kind = ?")
        .bind(kind)
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

fn location(res: &reqwest::Response) -> String {
    res.headers().get("location").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default()
}

#[tokio::test]
async fn every_route_answers_each_role_as_the_matrix_says() {
    let app = breadth_app().await;
    let running = uuid_of(&app, "br-running").await;
    let power = format!("/vms/lab/{running}/power");
    let confirm = format!("/vms/lab/{running}/power/confirm?action=power_off");
    add_user(&app.pool, "target", "viewer").await;

    // (method, route as Rocket lists it, concrete path, form, [anonymous, viewer, operator, admin])
    type Case<'a> = (&'a str, &'a str, String, Vec<(&'a str, &'a str)>, [u16; 4]);
    let cases: Vec<Case> = vec![
        ("GET", "/", "/".into(), vec![], [303, 303, 303, 303]),
        ("GET", "/vms?<query..>", "/vms".into(), vec![], [401, 200, 200, 200]),
        ("GET", "/healthz", "/healthz".into(), vec![], [200, 200, 200, 200]),
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
        ("GET", "/audit?<query..>", "/audit".into(), vec![], [401, 200, 200, 200]),
        ("GET", "/audit.csv?<query..>", "/audit.csv".into(), vec![], [401, 200, 200, 200]),
        ("GET", "/users", "/users".into(), vec![], [401, 403, 403, 200]),
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
        ("GET", "/reports/fleet?<at>", "/reports/fleet".into(), vec![], [401, 200, 200, 200]),
        (
            "GET",
            "/reports/fleet.csv?<at>",
            "/reports/fleet.csv".into(),
            vec![],
            [401, 200, 200, 200],
        ),
        (
            "GET",
            "/reports/availability?<sort>&<period..>",
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
async fn an_operator_stops_a_vm_and_the_audit_entry_walks_the_lifecycle_to_confirmed() {
    let app = breadth_app().await;
    let op = app.session("operator").await;
    let uuid = uuid_of(&app, "br-running").await;

    let res = op
        .post(
            &format!("/vms/lab/{uuid}/power"),
            &[("action", "shutdown"), ("back", "/vms?state=running")],
        )
        .await;
    assert_eq!(res.status().as_u16(), 303);
    assert_eq!(location(&res), "/vms?state=running", "back to the page the user came from");
    let flash = op.flash_at("/vms?state=running").await;
    assert!(flash.contains("accepted"), "flash: {flash}");

    assert_eq!(settled(&app, &uuid).await, "confirmed");
    let (_, error, sent, accepted, done) = power_entries(&app, &uuid).await.pop().unwrap();
    assert_eq!(error, None);
    let (sent, accepted, done) = (sent.unwrap(), accepted.unwrap(), done.unwrap());
    assert!(
        sent <= accepted && accepted <= done,
        "sent {sent} <= accepted {accepted} <= confirmed {done}"
    );
    // The confirmation re-polled the host: the list shows the VM shut off without a tick.
    let state: String = sqlx::query_scalar("SELECT state FROM vms WHERE uuid = ?")
        .bind(&uuid)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(state, "shut_off");

    let (_, html) = op.get(&format!("/audit?vm={uuid}")).await;
    assert!(
        html.contains("br-running") && html.contains("confirmed") && html.contains("shutdown"),
        "audit page shows it"
    );
    assert!(html.contains("127.0.0.1"), "with the client address");

    // Start it again.
    let res = op.post(&format!("/vms/lab/{uuid}/power"), &[("action", "start")]).await;
    assert_eq!(res.status().as_u16(), 303);
    assert_eq!(settled(&app, &uuid).await, "confirmed");
}

#[tokio::test]
async fn forced_actions_need_confirmation_which_works_without_javascript() {
    let app = breadth_app().await;
    let op = app.session("operator").await;
    let uuid = uuid_of(&app, "br-paused").await;
    let res = op.post(&format!("/vms/lab/{uuid}/power"), &[("action", "power_off")]).await;
    assert_eq!(res.status().as_u16(), 303);
    let confirm = location(&res);
    assert!(confirm.contains("/power/confirm?action=power_off"), "{confirm}");
    assert!(power_entries(&app, &uuid).await.is_empty(), "nothing is sent before confirmation");

    let (status, html) = op.get(&confirm).await;
    assert_eq!(status, 200);
    assert!(html.contains("cuts the power") && html.contains("name=\"confirm\" value=\"yes\""));
    let res = op
        .post(&format!("/vms/lab/{uuid}/power"), &[("action", "power_off"), ("confirm", "yes")])
        .await;
    assert_eq!(res.status().as_u16(), 303);
    assert_eq!(settled(&app, &uuid).await, "confirmed");
}

#[tokio::test]
async fn bulk_actions_write_one_audit_entry_per_vm() {
    let app = breadth_app().await;
    let op = app.session("operator").await;
    let names = ["br-running", "br-blocked", "name with spaces", "br-no-nics"];
    let mut form = vec![("action", "pause")];
    let keys: Vec<String> = {
        let mut k = Vec::new();
        for n in names {
            k.push(format!("lab/{}", uuid_of(&app, n).await));
        }
        k
    };
    for k in &keys {
        form.push(("vm", k.as_str()));
    }
    form.push(("vm", "lab/00000000-0000-0000-0000-000000000000"));
    let res = op.post("/vms/power", &form).await;
    assert_eq!(res.status().as_u16(), 303);
    let flash = op.flash_at("/vms").await;
    assert!(flash.contains("4 accepted") && flash.contains("no such VM"), "flash: {flash}");
    for k in &keys {
        let uuid = k.trim_start_matches("lab/");
        assert_eq!(settled(&app, uuid).await, "confirmed", "{k}");
        assert_eq!(power_entries(&app, uuid).await.len(), 1, "one entry for {k}");
    }
    let (_, html) = app.get("/vms?state=paused").await;
    let paused = vm_names(&html);
    for n in names {
        assert!(paused.contains(&n.to_string()), "{n} paused: {paused:?}");
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
async fn bad_input_gets_a_clear_answer_and_nothing_half_done() {
    let app = breadth_app().await;
    let op = app.session("operator").await;
    let uuid = uuid_of(&app, "br-running").await;
    // (path, form, expected status, expected text)
    type Case<'a> = (String, Vec<(&'a str, &'a str)>, u16, &'a str);
    let cases: Vec<Case> = vec![
        (format!("/vms/lab/{uuid}/power"), vec![("action", "explode")], 400, "Unknown action"),
        (format!("/vms/lab/{uuid}/power"), vec![], 400, "Unknown action"),
        (
            "/vms/lab/not-a-uuid/power".into(),
            vec![("action", "start")],
            404,
            "is not a VM identifier",
        ),
        (
            "/vms/lab/00000000-0000-0000-0000-000000000000/power".into(),
            vec![("action", "start")],
            404,
            "There is no VM",
        ),
        (format!("/vms/nowhere/{uuid}/power"), vec![("action", "start")], 404, "There is no VM"),
        ("/vms/power".into(), vec![("action", "explode"), ("vm", "lab/x")], 400, "Unknown action"),
    ];
    for (path, form, status, text) in cases {
        let res = op.post(&path, &form).await;
        assert_eq!(res.status().as_u16(), status, "{path} {form:?}");
        let body = res.text().await.unwrap();
        assert!(
            crate::support::app::unescape(&body).contains(text),
            "{path}: expected {text:?} in {body}"
        );
    }
    // Not applicable to the current state: refused, recorded as refused, nothing sent.
    let res = op.post(&format!("/vms/lab/{uuid}/power"), &[("action", "start")]).await;
    assert_eq!(res.status().as_u16(), 303);
    assert!(op.flash_at("/vms").await.contains("not possible while br-running is running"));
    let entries = power_entries(&app, &uuid).await;
    assert_eq!(entries.len(), 1);
    assert_eq!((entries[0].0.as_str(), entries[0].2), ("refused", None), "refused and never sent");

    // An oversized form is refused before any handler runs.
    let big = "x".repeat(100 * 1024);
    let res =
        op.post(&format!("/vms/lab/{uuid}/power"), &[("action", "shutdown"), ("back", &big)]).await;
    assert_eq!(res.status().as_u16(), 413);
    assert_eq!(power_entries(&app, &uuid).await.len(), 1);
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
async fn the_audit_log_filters_paginates_and_exports_csv() {
    let app = breadth_app().await;
    let op = app.session("operator").await;
    for name in ["br-running", "br-blocked"] {
        let uuid = uuid_of(&app, name).await;
        op.post(&format!("/vms/lab/{uuid}/power"), &[("action", "pause")]).await;
        settled(&app, &uuid).await;
    }
    let (_, html) = op.get("/audit?action=pause&outcome=confirmed").await;
    assert_eq!(html.matches("<tr data-id").count(), 2);
    let (_, html) = op.get("/audit?vm=br-blocked").await;
    assert_eq!(html.matches("<tr data-id").count(), 1);
    let (status, html) = op.get("/audit?from=2999-01-01&to=1999-01-01&action=bogus&page=x").await;
    assert_eq!(status, 200);
    for notice in ["reversed", "Unknown action", "no page"] {
        assert!(html.contains(notice), "notice {notice:?}");
    }
    let (status, html) = op.get("/audit?from=yesterday").await;
    assert_eq!(status, 200);
    assert!(html.contains("Cannot read the from time"));

    let res = op.client.get(format!("{}/audit.csv?action=pause", app.base)).send().await.unwrap();
    assert_eq!(res.status().as_u16(), 200);
    assert!(res.headers()["content-type"].to_str().unwrap().starts_with("text/csv"));
    let body = res.text().await.unwrap();
    let mut reader = csv::Reader::from_reader(body.as_bytes());
    let headers = reader.headers().unwrap().clone();
    assert!(headers.iter().any(|h| h == "request_to_confirmation_ms"), "units in column names");
    let rows: Vec<csv::StringRecord> = reader.records().map(|r| r.unwrap()).collect();
    assert_eq!(rows.len(), 2);
    assert!(rows.iter().all(|r| &r[9] == "confirmed"));
}

#[tokio::test]
async fn the_database_refuses_to_edit_or_delete_settled_audit_entries() {
    let app = breadth_app().await;
    let id: i64 = sqlx::query_scalar("SELECT id FROM audit_log WHERE kind = 'login' LIMIT 1")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let update = sqlx::query("UPDATE audit_log SET user_name = 'mallory' WHERE id = ?")
        .bind(id)
        .execute(&app.pool)
        .await;
    assert!(update.unwrap_err().to_string().contains("append-only"));
    let delete =
        sqlx::query("DELETE FROM audit_log WHERE id = ?").bind(id).execute(&app.pool).await;
    assert!(delete.unwrap_err().to_string().contains("append-only"));
    // Retention pruning is the one way out, and only for old entries.
    let removed = vmdeck::audit::store::prune(&app.pool, 1).await.unwrap();
    assert_eq!(removed, 0, "nothing is older than a day");
}

#[tokio::test]
async fn requests_left_pending_by_a_crash_are_settled_at_the_next_start() {
    let app = breadth_app().await;
    let running = uuid_of(&app, "br-running").await;
    let shutoff = uuid_of(&app, "br-shutoff").await;
    // What a killed server leaves behind: one request never sent, two sent but never confirmed.
    for (uuid, name, action, status) in [
        (&running, "br-running", "shutdown", "requested"),
        (&shutoff, "br-shutoff", "power_off", "accepted"),
        (&running, "br-running", "start", "sent"),
    ] {
        let _ = sqlx::query(
            "INSERT INTO audit_log (ts, kind, user_name, host_name, vm_uuid, vm_name, action, status) VALUES (1, 'power', 'op', 'lab', ?, ?, ?, ?)",
        )
        .bind(uuid)
        .bind(name)
        .bind(action)
        .bind(status)
        .execute(&app.pool)
        .await;
    }
    vmdeck::control::settle_leftovers(&app.pool, &app.hosts).await;
    let rows: Vec<(String, String, Option<String>, Option<String>)> = sqlx::query_as(
        "SELECT vm_name, status, error, detail FROM audit_log WHERE kind = 'power' ORDER BY id",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), 2, "one pending entry per VM: {rows:?}");
    assert_eq!(rows[0].1, "failed", "never sent: {rows:?}");
    assert!(rows[0].2.as_deref().unwrap().contains("before sending"));
    assert_eq!(rows[1].1, "confirmed", "power_off of a VM found shut off: {rows:?}");
}
