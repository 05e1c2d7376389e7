//! Snapshot requests over HTTP against the breadth lab (libvirt's test driver, where snapshots
//! are taken, reverted to and deleted in memory at once): take, revert and delete through
//! their lifecycle to confirmed, with the snapshot rows credited and the hash chain verifying;
//! one request in flight per VM (snapshot or power); the hypervisor's refusal in words; bulk
//! take; the confirmation pages; bad input refused with nothing recorded; requests a crash
//! left pending. Who may act is in auth.rs.

use vmdeck::control::store::{self, SnapshotRecord};
use vmdeck::domain::{Actor, SnapshotAction, VmUuid};

use crate::support::app::{breadth_app, unescape, uuid_of, TestApp};
use crate::support::audit::{is_settled, SETTLE_TIMEOUT};
use crate::support::wait::{poll_until, EVERY};

fn location(res: &reqwest::Response) -> String {
    res.headers().get("location").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default()
}

/// A VM's snapshot entries, oldest first: (id, action, status, error, detail).
type Entry = (i64, String, String, Option<String>, Option<String>);

async fn snapshot_entries(app: &TestApp, uuid: &str) -> Vec<Entry> {
    sqlx::query_as(
        "SELECT id, action, status, error, detail FROM audit_log WHERE kind = 'snapshot' AND vm_uuid = ? ORDER BY id",
    )
    .bind(uuid)
    .fetch_all(&app.pool)
    .await
    .unwrap()
}

/// Waits until the VM's newest snapshot entry is settled and returns it.
async fn settled_snapshot(app: &TestApp, uuid: &str) -> Entry {
    let newest = async || {
        snapshot_entries(app, uuid).await.pop().filter(|(_, _, status, ..)| is_settled(status))
    };
    match poll_until(SETTLE_TIMEOUT, EVERY, newest).await {
        Some(e) => e,
        None => panic!(
            "the snapshot entry of {uuid} did not settle within {SETTLE_TIMEOUT:?}: {:?}",
            snapshot_entries(app, uuid).await
        ),
    }
}

/// The VM's snapshot rows that exist now: (row id, name, is_current, taken_by_audit_id).
async fn present(app: &TestApp, uuid: &str) -> Vec<(i64, String, bool, Option<i64>)> {
    sqlx::query_as(
        "SELECT s.id, s.name, s.is_current, s.taken_by_audit_id FROM vm_snapshots s
           JOIN vms v ON v.id = s.vm_id
          WHERE v.uuid = ? AND s.gone_at IS NULL ORDER BY s.id",
    )
    .bind(uuid)
    .fetch_all(&app.pool)
    .await
    .unwrap()
}

async fn row_id(app: &TestApp, uuid: &str, name: &str) -> i64 {
    present(app, uuid)
        .await
        .into_iter()
        .find(|r| r.1 == name)
        .unwrap_or_else(|| panic!("no snapshot {name:?} of {uuid} is recorded"))
        .0
}

/// Takes snapshot `name` of the VM as `op` and waits for the entry to settle.
async fn take(app: &TestApp, op: &crate::support::app::Session, uuid: &str, name: &str) -> Entry {
    let res = op
        .post(&format!("/vms/lab/{uuid}/snapshots"), &[("name", name), ("description", "")])
        .await;
    assert_eq!(res.status().as_u16(), 303, "take {name:?}");
    settled_snapshot(app, uuid).await
}

#[tokio::test]
async fn an_operator_takes_a_snapshot_and_the_entry_walks_the_lifecycle_to_confirmed() {
    let app = breadth_app().await;
    let op = app.session("operator").await;
    let uuid = uuid_of(&app, "br-running").await;

    let (status, form) = op.get(&format!("/vms/lab/{uuid}/snapshots/new")).await;
    assert_eq!(status, 200);
    assert!(form.contains("name=\"name\"") && form.contains("value=\"snap-"), "a suggested name");
    assert!(
        unescape(&form).contains("A running VM's snapshot includes its memory on this host"),
        "the form states what the snapshot holds"
    );

    let res = op
        .post(
            &format!("/vms/lab/{uuid}/snapshots"),
            &[("name", "before-upgrade"), ("description", "kernel 6.12 next")],
        )
        .await;
    assert_eq!(res.status().as_u16(), 303);
    assert_eq!(location(&res), format!("/vms/lab/{uuid}"), "back to the VM page");
    let flash = op.flash_at(&location(&res)).await;
    assert!(
        flash.starts_with("Take snapshot “before-upgrade” requested for br-running;"),
        "flash: {flash}"
    );

    let (id, action, status, error, detail) = settled_snapshot(&app, &uuid).await;
    assert_eq!((action.as_str(), status.as_str(), error), ("snapshot_take", "confirmed", None));
    assert_eq!(detail.as_deref(), Some("snapshot “before-upgrade”"), "the detail names it");
    let (sent, accepted): (Option<i64>, Option<i64>) =
        sqlx::query_as("SELECT sent_at, accepted_at FROM audit_log WHERE id = ?")
            .bind(id)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert!(sent.is_some() && accepted.is_some(), "it went through sent and accepted");

    let rows = present(&app, &uuid).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].1, "before-upgrade");
    assert_eq!(rows[0].3, Some(id), "the snapshot row credits the request");
    let (count, desc): (i64, String) = sqlx::query_as(
        "SELECT v.snapshot_count, s.description FROM vms v JOIN vm_snapshots s ON s.vm_id = v.id WHERE v.uuid = ?",
    )
    .bind(&uuid)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!((count, desc.as_str()), (1, "kernel 6.12 next"));
    let snap_id: Option<String> =
        sqlx::query_scalar("SELECT snap_id FROM snapshot_requests WHERE audit_id = ?")
            .bind(id)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(snap_id.as_deref(), Some("before-upgrade"), "the new snapshot's id is noted");

    // The audit log shows it in words, filters on it, and exports it.
    let (_, html) = op.get(&format!("/audit?vm={uuid}&action=snapshot")).await;
    let text = unescape(&html);
    assert!(text.contains("Take snapshot") && text.contains("snapshot “before-upgrade”"), "{text}");
    assert!(html.contains("<option value=\"snapshot\""), "the kind filter offers snapshot");
    let (status, entry) = op.get(&format!("/audit/{id}")).await;
    assert_eq!(status, 200);
    assert!(unescape(&entry).contains("Take snapshot") && entry.contains("snapshot_take"));
    let csv = op.csv(&format!("/audit.csv?vm={uuid}&action=snapshot_take")).await;
    assert_eq!(csv.len(), 2, "header and the one entry: {csv:?}");
    assert!(csv[1].iter().any(|f| f == "snapshot_take"), "{:?}", csv[1]);
}

#[tokio::test]
async fn revert_and_delete_go_through_their_confirmation_pages_and_the_chain_verifies() {
    let app = breadth_app().await;
    let op = app.session("operator").await;
    let uuid = uuid_of(&app, "br-running").await;
    assert_eq!(take(&app, &op, &uuid, "first").await.2, "confirmed");
    assert_eq!(take(&app, &op, &uuid, "second").await.2, "confirmed");
    let first = row_id(&app, &uuid, "first").await;
    let second = row_id(&app, &uuid, "second").await;

    // Revert: the page says what is lost, which snapshot, its age, and offers the state after.
    let page = format!("/vms/lab/{uuid}/snapshots/{first}/revert");
    let (status, html) = op.get(&page).await;
    assert_eq!(status, 200);
    let text = unescape(&html);
    assert!(text.contains("The VM's current state is lost"), "{text}");
    assert!(text.contains("first") && text.contains("taken "), "names it and its age: {text}");
    assert!(html.contains("name=\"after\" value=\"paused\""), "running/paused after revert");
    assert!(snapshot_entries(&app, &uuid).await.len() == 2, "a page records nothing");

    let res = op.post(&page, &[("after", "paused")]).await;
    assert_eq!(res.status().as_u16(), 303);
    let flash = op.flash_at(&location(&res)).await;
    assert!(flash.starts_with("Revert to snapshot “first” requested for br-running;"), "{flash}");
    let (_, action, status, _, detail) = settled_snapshot(&app, &uuid).await;
    assert_eq!((action.as_str(), status.as_str()), ("snapshot_revert", "confirmed"));
    assert_eq!(detail.as_deref(), Some("snapshot “first”"));
    let current: Vec<String> =
        present(&app, &uuid).await.into_iter().filter(|r| r.2).map(|r| r.1).collect();
    assert_eq!(current, ["first"], "the reverted-to snapshot is current");
    let state: String = sqlx::query_scalar("SELECT state FROM vms WHERE uuid = ?")
        .bind(&uuid)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(state, "paused", "left paused as asked, and stored at once");

    // Delete: "first" has a child ("second"), which the page says is kept.
    let page = format!("/vms/lab/{uuid}/snapshots/{first}/delete");
    let (status, html) = op.get(&page).await;
    assert_eq!(status, 200);
    let text = unescape(&html);
    assert!(text.contains("It has 1 child snapshot: it is kept"), "{text}");
    let res = op.post(&page, &[]).await;
    assert_eq!(res.status().as_u16(), 303);
    let (delete_id, action, status, _, detail) = settled_snapshot(&app, &uuid).await;
    assert_eq!((action.as_str(), status.as_str()), ("snapshot_delete", "confirmed"));
    assert_eq!(detail.as_deref(), Some("snapshot “first”"));
    let names: Vec<String> = present(&app, &uuid).await.into_iter().map(|r| r.1).collect();
    assert_eq!(names, ["second"], "the child is kept");
    let removed_by: Option<i64> =
        sqlx::query_scalar("SELECT removed_by_audit_id FROM vm_snapshots WHERE id = ?")
            .bind(first)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(removed_by, Some(delete_id), "the history credits the delete");
    assert_ne!(first, second);

    // The deleted snapshot's pages are a 404 in words; nothing is recorded.
    let before = snapshot_entries(&app, &uuid).await.len();
    let (status, html) = op.get(&format!("/vms/lab/{uuid}/snapshots/{first}/revert")).await;
    assert_eq!(status, 404);
    assert!(unescape(&html).contains("has no snapshot"), "{html}");
    let res = op.post(&format!("/vms/lab/{uuid}/snapshots/{first}/revert"), &[]).await;
    assert_eq!(res.status().as_u16(), 404);
    assert_eq!(snapshot_entries(&app, &uuid).await.len(), before);

    let summary = vmdeck::audit::chain::verify(&app.pool, None).await;
    assert!(summary.is_ok(), "the chain verifies: {summary:?}");
}

#[tokio::test]
async fn a_take_the_hypervisor_refuses_shows_failed_with_its_words() {
    let app = breadth_app().await;
    let op = app.session("operator").await;
    let uuid = uuid_of(&app, "br-shutoff").await;
    assert_eq!(take(&app, &op, &uuid, "nightly").await.2, "confirmed");
    let (_, _, status, error, detail) = take(&app, &op, &uuid, "nightly").await;
    assert_eq!(status, "failed");
    let error = error.unwrap_or_default();
    assert!(error.contains("already exists"), "the name is already used, in words: {error}");
    assert_eq!(detail.as_deref(), Some("snapshot “nightly”"));
    // The VM page's failure marker says so.
    let (_, html) = op.get(&format!("/vms/lab/{uuid}")).await;
    let text = unescape(&html);
    assert!(text.contains("Take snapshot “nightly” failed:"), "{text}");
}

/// Records a request in flight for the VM without sending it (as if its host were slow).
async fn pending_take(app: &TestApp, uuid: &str, name: &str) -> i64 {
    let actor = Actor { user: Some("alice".into()), addr: None };
    let uuid = VmUuid::parse(uuid).unwrap();
    let record = SnapshotRecord {
        actor: &actor,
        host: "lab",
        vm_uuid: &uuid,
        vm_name: "br-running",
        action: SnapshotAction::Take,
        snapshot_name: name,
        snap_id: None,
        description: "",
        with_memory: true,
        after: None,
        schedule_id: None,
    };
    store::snapshot_requested(&app.pool, &record).await.unwrap()
}

#[tokio::test]
async fn one_request_in_flight_per_vm_whether_power_or_snapshot() {
    let app = breadth_app().await;
    let op = app.session("operator").await;
    let uuid = uuid_of(&app, "br-running").await;
    pending_take(&app, &uuid, "slow-one").await;

    // The list and the VM page show it pending.
    let (_, list) = op.get("/vms").await;
    assert!(
        unescape(&list).contains("Take snapshot “slow-one” requested by alice, requested"),
        "the list's pending marker"
    );

    // Snapshot after snapshot.
    let res = op.post(&format!("/vms/lab/{uuid}/snapshots"), &[("name", "another")]).await;
    assert_eq!(res.status().as_u16(), 303);
    let flash = op.flash_at(&location(&res)).await;
    assert!(
        flash.contains("Take snapshot “slow-one” (requested by alice, requested) is still pending for br-running"),
        "{flash}"
    );
    // Power after snapshot.
    let res = op.post(&format!("/vms/lab/{uuid}/power"), &[("action", "shutdown")]).await;
    assert_eq!(res.status().as_u16(), 303);
    let flash = op.flash_at(&location(&res)).await;
    assert!(
        flash.contains("Take snapshot “slow-one” (requested by alice, requested) is still pending"),
        "{flash}"
    );
    let statuses: Vec<String> =
        snapshot_entries(&app, &uuid).await.into_iter().map(|e| e.2).collect();
    assert_eq!(statuses, ["requested", "refused"], "the refusal is recorded, nothing sent");

    // Snapshot after power.
    let other = uuid_of(&app, "br-paused").await;
    sqlx::query(
        "INSERT INTO audit_log (ts, kind, user_name, host_name, vm_uuid, vm_name, action, status) VALUES (1, 'power', 'bob', 'lab', ?, 'br-paused', 'resume', 'sent')",
    )
    .bind(&other)
    .execute(&app.pool)
    .await
    .unwrap();
    let res = op.post(&format!("/vms/lab/{other}/snapshots"), &[("name", "x")]).await;
    let flash = op.flash_at(&location(&res)).await;
    assert!(flash.contains("Resume (requested by bob, sent) is still pending"), "{flash}");
}

#[tokio::test]
async fn bad_input_is_refused_in_words_with_nothing_recorded() {
    let app = breadth_app().await;
    let op = app.session("operator").await;
    let uuid = uuid_of(&app, "br-running").await;
    let long = "n".repeat(65);
    let long_description = "d".repeat(257);
    let cases: [(&str, &str, &str); 7] = [
        ("", "", "Give the snapshot a name"),
        (&long, "", "at most 64 are allowed"),
        ("two\nlines", "", "control character"),
        ("../etc", "", "slash"),
        ("vmdeck-daily-2026-12-01T03:00Z", "", "reserved for scheduled snapshots"),
        (" padded", "", "starts or ends with a space"),
        ("fine", &long_description, "at most 256 are allowed"),
    ];
    for (name, description, words) in cases {
        let res = op
            .post(
                &format!("/vms/lab/{uuid}/snapshots"),
                &[("name", name), ("description", description)],
            )
            .await;
        assert_eq!(res.status().as_u16(), 422, "{name:?} is refused");
        let html = unescape(&res.text().await.unwrap());
        assert!(html.contains(words), "{name:?}: the form says {words:?}: {html}");
        assert!(html.contains("id=\"take-snapshot\""), "{name:?}: the form again, to correct");
    }
    // Unknown and other VMs' row ids.
    assert_eq!(take(&app, &op, &uuid, "mine").await.2, "confirmed");
    let mine = row_id(&app, &uuid, "mine").await;
    let other = uuid_of(&app, "br-paused").await;
    for path in [
        format!("/vms/lab/{other}/snapshots/{mine}/revert"),
        format!("/vms/lab/{other}/snapshots/{mine}/delete"),
        format!("/vms/lab/{uuid}/snapshots/99999/delete"),
        format!("/vms/lab/{uuid}/snapshots/abc/revert"),
    ] {
        let (status, html) = op.get(&path).await;
        assert_eq!(status, 404, "{path}");
        assert!(unescape(&html).contains("has no snapshot"), "{path}: {html}");
        let res = op.post(&path, &[]).await;
        assert_eq!(res.status().as_u16(), 404, "POST {path}");
    }
    let res = op
        .post(&format!("/vms/lab/{uuid}/snapshots/{mine}/revert"), &[("after", "sideways")])
        .await;
    assert_eq!(res.status().as_u16(), 400, "an unknown state after revert");
    let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit_log WHERE kind = 'snapshot'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(count, 1, "only the good take was recorded");
    let requests: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM snapshot_requests")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(requests, 1);
}

#[tokio::test]
async fn bulk_take_gives_each_selected_vm_its_own_request() {
    let app = breadth_app().await;
    let op = app.session("operator").await;
    let names = ["br-running", "br-shutoff", "br-paused"];
    let mut uuids = Vec::new();
    for n in names {
        uuids.push(uuid_of(&app, n).await);
    }
    let (_, list) = op.get("/vms").await;
    assert!(list.contains("<option value=\"snapshot_take\">Take snapshot</option>"), "offered");
    let vms: Vec<String> = uuids.iter().map(|u| format!("lab/{u}")).collect();
    let mut form = vec![("action", "snapshot_take"), ("snapshot_name", "before-upgrade")];
    form.extend(vms.iter().map(|v| ("vm", v.as_str())));
    let res = op.post("/vms/power", &form).await;
    assert_eq!(res.status().as_u16(), 303);
    let flash = op.flash_at("/vms").await;
    assert!(flash.starts_with("Take snapshot “before-upgrade”: 3 requested"), "{flash}");
    for u in &uuids {
        let (_, _, status, _, detail) = settled_snapshot(&app, u).await;
        assert_eq!(status, "confirmed", "{u}");
        assert_eq!(detail.as_deref(), Some("snapshot “before-upgrade”"));
        assert_eq!(present(&app, u).await.len(), 1);
    }

    // Again: the name is used now on those three, but a fourth VM is new; one name refused up
    // front records nothing.
    let res = op
        .post("/vms/power", &[("action", "snapshot_take"), ("snapshot_name", ""), ("vm", &vms[0])])
        .await;
    assert_eq!(res.status().as_u16(), 303);
    let flash = op.flash_at("/vms").await;
    assert!(flash.contains("Give the snapshot a name"), "{flash}");
    assert_eq!(snapshot_entries(&app, &uuids[0]).await.len(), 1, "nothing recorded");

    // Partly done: one VM busy with a pending request, one unknown.
    pending_take(&app, &uuids[0], "slow").await;
    let res = op
        .post(
            "/vms/power",
            &[
                ("action", "snapshot_take"),
                ("snapshot_name", "second-round"),
                ("vm", &vms[0]),
                ("vm", &vms[1]),
                ("vm", "lab/00000000-0000-0000-0000-000000000000"),
            ],
        )
        .await;
    assert_eq!(res.status().as_u16(), 303);
    let flash = op.flash_at("/vms").await;
    assert!(
        flash.starts_with("Take snapshot “second-round”: 1 requested (br-shutoff); 2 not done"),
        "{flash}"
    );
    assert_eq!(settled_snapshot(&app, &uuids[1]).await.2, "confirmed");
}

#[tokio::test]
async fn snapshot_requests_left_pending_by_a_crash_are_settled_at_the_next_start() {
    let app = breadth_app().await;
    let op = app.session("operator").await;
    let running = uuid_of(&app, "br-running").await;
    let paused = uuid_of(&app, "br-paused").await;
    // One taken but never confirmed (the server stopped while watching), one never sent.
    assert_eq!(take(&app, &op, &running, "kept").await.2, "confirmed");
    let sent = pending_take(&app, &running, "kept").await;
    assert!(store::sent(&app.pool, sent).await.unwrap());
    store::accepted(&app.pool, sent).await.unwrap();
    let never = pending_take(&app, &paused, "never-sent").await;
    vmdeck::control::settle_leftovers(&app.pool, &app.hosts).await;
    let status = async |id: i64| -> (String, Option<String>, Option<String>) {
        sqlx::query_as("SELECT status, error, detail FROM audit_log WHERE id = ?")
            .bind(id)
            .fetch_one(&app.pool)
            .await
            .unwrap()
    };
    let (s, _, detail) = status(sent).await;
    assert_eq!(s, "confirmed");
    assert!(detail.unwrap().starts_with("snapshot “kept”: confirmed after vmdeck restarted"));
    let (s, error, detail) = status(never).await;
    assert_eq!(s, "failed");
    assert_eq!(error.as_deref(), Some("vmdeck stopped before sending the request"));
    assert_eq!(detail.as_deref(), Some("snapshot “never-sent”"));
    assert!(vmdeck::audit::chain::verify(&app.pool, None).await.is_ok());
}

#[tokio::test]
async fn a_pending_snapshot_request_changes_the_live_tags_and_shows_on_the_vm_page() {
    let app = breadth_app().await;
    let uuid = uuid_of(&app, "br-running").await;
    let etag = async |path: &str| -> (String, String) {
        let res = app.viewer.client.get(format!("{}{path}", app.base)).send().await.unwrap();
        let tag = res.headers().get("etag").map(|v| v.to_str().unwrap().to_string());
        (tag.expect("an ETag"), unescape(&res.text().await.unwrap()))
    };
    let vm_live = format!("/vms/lab/{uuid}/live");
    let (list_before, _) = etag("/vms/live").await;
    let (vm_before, body) = etag(&vm_live).await;
    assert!(body.contains("data-pending=\"false\""), "{body}");

    pending_take(&app, &uuid, "slow-one").await;
    let (list_after, _) = etag("/vms/live").await;
    let (vm_after, body) = etag(&vm_live).await;
    assert_ne!(list_before, list_after, "the list's tag moves");
    assert_ne!(vm_before, vm_after, "the VM page's tag moves");
    assert!(
        body.contains("Take snapshot “slow-one” requested by alice, requested")
            && body.contains("data-pending=\"true\""),
        "{body}"
    );
    // While it is pending, the VM offers no power action to overrule it.
    let (_, page) = app.session("operator").await.get(&format!("/vms/lab/{uuid}")).await;
    assert!(!page.contains("name=\"action\" value=\"power_off\""), "nothing overrules it");
}

#[tokio::test]
async fn a_name_with_quotes_and_markup_works_and_a_deleted_snapshot_cannot_be_reverted_to() {
    let app = breadth_app().await;
    let op = app.session("operator").await;
    let uuid = uuid_of(&app, "br-running").await;
    let name = r#"it's "before" <b>& after"#;
    let (_, _, status, error, detail) = take(&app, &op, &uuid, name).await;
    assert_eq!(status, "confirmed", "{error:?}");
    // Between typographic quotes, as typed: quotes inside the name are not escaped.
    let quoted = vmdeck::domain::quoted(name);
    assert_eq!(quoted, "“it's \"before\" <b>& after”");
    assert!(detail.unwrap_or_default().contains(&quoted), "the settled entry names the snapshot");
    let row = row_id(&app, &uuid, name).await;
    let (status, html) = op.get(&format!("/vms/lab/{uuid}")).await;
    assert_eq!(status, 200);
    assert!(!html.contains("<b>& after"), "the name is escaped on the VM page");
    assert!(unescape(&html).contains(name), "the VM page shows the name as typed");

    let res = op.post(&format!("/vms/lab/{uuid}/snapshots/{row}/delete"), &[]).await;
    assert_eq!(res.status().as_u16(), 303);
    assert_eq!(settled_snapshot(&app, &uuid).await.2, "confirmed");
    let entries = snapshot_entries(&app, &uuid).await.len();
    // The row is history now: its revert and delete pages say so, and nothing is recorded.
    for action in ["revert", "delete"] {
        let path = format!("/vms/lab/{uuid}/snapshots/{row}/{action}");
        let (status, html) = op.get(&path).await;
        assert_eq!(status, 404, "{path}");
        assert!(unescape(&html).contains("has no snapshot"), "{path}: {html}");
        assert_eq!(op.post(&path, &[]).await.status().as_u16(), 404, "POST {path}");
    }
    assert_eq!(snapshot_entries(&app, &uuid).await.len(), entries, "nothing recorded");
}
