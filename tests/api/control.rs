//! Power actions over HTTP against the breadth lab (libvirt's test driver, where actions take
//! effect at once): single and bulk, confirmation of forced actions, bad input, and requests a
//! crash left pending. Real-VM power tests are in real_vm.rs; who may act is in auth.rs.

use crate::support::app::{breadth_app, unescape, uuid_of, vm_names};
use crate::support::audit::{power_entries, settled_power};

fn location(res: &reqwest::Response) -> String {
    res.headers().get("location").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default()
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
    assert!(flash.starts_with("Shut down requested for br-running;"), "flash: {flash}");
    assert!(!flash.contains(".."), "one full stop: {flash}");

    assert_eq!(settled_power(&app, &uuid).await.0, "confirmed");
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
    assert_eq!(settled_power(&app, &uuid).await.0, "confirmed");
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
    assert_eq!(settled_power(&app, &uuid).await.0, "confirmed");
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
    // Already paused: refused in words that end their own sentence.
    let already_paused = format!("lab/{}", uuid_of(&app, "br-paused").await);
    form.push(("vm", already_paused.as_str()));
    let res = op.post("/vms/power", &form).await;
    assert_eq!(res.status().as_u16(), 303);
    let (_, page) = op.get("/vms").await;
    assert!(
        page.contains("class=\"flash flash-warning\""),
        "partly done is a warning, not an error"
    );
    let flash =
        unescape(page.split("id=\"flash\">").nth(1).and_then(|s| s.split("</p>").next()).unwrap());
    assert!(flash.contains("4 requested") && flash.contains("no such VM"), "flash: {flash}");
    assert!(flash.contains("br-paused: Pause is not possible"), "flash: {flash}");
    assert!(!flash.contains("..") && !flash.contains(".;"), "one full stop: {flash}");
    for k in &keys {
        let uuid = k.trim_start_matches("lab/");
        assert_eq!(settled_power(&app, uuid).await.0, "confirmed", "{k}");
        assert_eq!(power_entries(&app, uuid).await.len(), 1, "one entry for {k}");
    }
    let (_, html) = app.get("/vms?state=paused").await;
    let paused = vm_names(&html);
    for n in names {
        assert!(paused.contains(&n.to_string()), "{n} paused: {paused:?}");
    }
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

#[tokio::test]
async fn a_page_to_come_back_to_that_is_not_a_uri_as_given_comes_back_to_the_vm_list() {
    let app = breadth_app().await;
    let op = app.session("operator").await;
    let uuid = uuid_of(&app, "br-running").await;
    for back in ["/vms?q=<script>", "/vms?q=a b", "/audit\u{202e}"] {
        // Refused before anything is sent (no VM chosen), and after an action on one VM.
        let res = op.post("/vms/power", &[("action", ""), ("back", back)]).await;
        assert_eq!((res.status().as_u16(), location(&res)), (303, "/vms".into()), "bulk, {back:?}");
        let one = format!("/vms/lab/{uuid}/power");
        let res = op.post(&one, &[("action", "pause"), ("back", back)]).await;
        assert_eq!((res.status().as_u16(), location(&res)), (303, "/vms".into()), "one, {back:?}");
    }
}

#[tokio::test]
async fn only_a_forced_action_overrules_a_pending_graceful_one() {
    use vmdeck::control::store::{self, PowerRequest, RequestError};
    use vmdeck::domain::{Actor, PowerAction, VmUuid};
    use PowerAction::*;

    let app = breadth_app().await;
    let uuid = VmUuid::parse(&uuid_of(&app, "br-running").await).unwrap();
    let actor = Actor { user: Some("op".into()), addr: None };
    let ask = |action| PowerRequest {
        actor: &actor,
        host: "lab",
        vm_uuid: &uuid,
        vm_name: "br-running",
        action,
    };
    let pending_id = async |action| match store::requested(&app.pool, &ask(action)).await {
        Err(RequestError::Pending(Some(p))) => p.id,
        other => panic!("{action:?} while another is pending: {other:?}"),
    };

    let reboot = store::requested(&app.pool, &ask(Reboot)).await.unwrap();
    assert!(reboot.superseded.is_none());
    for graceful in [Reboot, Shutdown, Pause] {
        assert_eq!(pending_id(graceful).await, reboot.id, "{graceful:?} waits for the reboot");
    }
    let reset = store::requested(&app.pool, &ask(Reset)).await.expect("reset overrules reboot");
    assert_eq!(reset.superseded.map(|p| (p.id, p.action)), Some((reboot.id, Reboot.into())));
    for any in [PowerOff, Reset, Shutdown] {
        assert_eq!(pending_id(any).await, reset.id, "{any:?} waits for the pending reset");
    }

    let statuses: Vec<String> =
        power_entries(&app, uuid.as_str()).await.into_iter().map(|e| e.0).collect();
    assert_eq!(statuses, ["superseded", "requested"]);
    let summary = vmdeck::audit::chain::verify(&app.pool, None).await;
    assert!(summary.is_ok(), "the superseded entry is sealed into the chain: {summary:?}");
}
