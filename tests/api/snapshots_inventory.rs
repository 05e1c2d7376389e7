//! Snapshots in the inventory (issue 12): the poller records each VM's snapshot set from
//! libvirt's test driver only when the VM's state or configuration changed (never in a steady
//! poll), the list shows a sortable Snapshots column and filters by snapshot age, and the VM
//! page shows the tree and the snapshots that are gone.

use std::sync::Arc;

use vmdeck::backend::{AfterRevert, Backend, PowerAction, SnapshotOp};

use crate::support::app::{breadth_app, strip_tags, unescape, uuid_of, vm_names, TestApp};

const DAY_MS: i64 = 86_400_000;

fn lab(app: &TestApp) -> Arc<dyn Backend> {
    app.hosts.get("lab").expect("the lab host").backend.clone()
}

/// Takes a snapshot of `uuid` directly on the host, as another tool would.
async fn take(app: &TestApp, uuid: &str, name: &str, description: &str) {
    let op =
        SnapshotOp::Take { name: name.into(), description: description.into(), with_memory: false };
    lab(app).snapshot(uuid, &op).await.unwrap_or_else(|e| panic!("taking {name}: {e}"));
}

async fn on_host(app: &TestApp, uuid: &str, op: SnapshotOp) {
    lab(app).snapshot(uuid, &op).await.unwrap_or_else(|e| panic!("{op:?}: {e}"));
}

async fn power(app: &TestApp, uuid: &str, action: PowerAction) {
    lab(app).power(uuid, action).await.unwrap_or_else(|e| panic!("{action:?}: {e}"));
}

/// (snapshot_count, snapshot_oldest, snapshots_read_at) of the VM named `name`.
async fn stored(app: &TestApp, name: &str) -> (i64, Option<i64>, Option<i64>) {
    sqlx::query_as(
        "SELECT snapshot_count, snapshot_oldest, snapshots_read_at FROM vms WHERE name = ?",
    )
    .bind(name)
    .fetch_one(&app.pool)
    .await
    .unwrap()
}

fn reads(app: &TestApp) -> u64 {
    app.hosts.get("lab").unwrap().runtime().snapshot_reads
}

/// The text of the Snapshots cell of the row of the VM named `name` on a list page.
fn snapshot_cell(html: &str, name: &str) -> String {
    let row = html
        .split("<tr class=\"vm")
        .skip(1)
        .find(|row| vm_names(row).first().is_some_and(|n| n == name))
        .unwrap_or_else(|| panic!("no row for {name}"));
    let cell = row.split("<td class=\"col-snapshots num\"").nth(1).expect("a Snapshots cell");
    let (start, end) = (cell.find('>').unwrap() + 1, cell.find("</td>").unwrap());
    unescape(&strip_tags(&cell[start..end]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steady_polls_read_no_snapshots_and_a_state_change_reads_that_vm_only() {
    let app = breadth_app().await;
    let running = uuid_of(&app, "br-running").await;
    // The liftoff poll read every VM's set once (none has snapshots).
    let (count, _, read_at) = stored(&app, "br-running").await;
    assert_eq!(count, 0);
    let first_read = read_at.expect("read at the first poll");
    let all_read: i64 =
        sqlx::query_scalar("SELECT count(*) FROM vms WHERE snapshots_read_at IS NULL")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(all_read, 0, "a small host has every VM read at its first poll");

    // Taken behind vmdeck's back: nothing about the VM changes, so steady polls do not look.
    take(&app, &running, "outside", "").await;
    let before = reads(&app);
    for _ in 0..3 {
        app.poll("lab").await;
    }
    assert_eq!(reads(&app), before, "three steady polls asked the host for no snapshot list");
    let (count, _, read_at) = stored(&app, "br-running").await;
    assert_eq!((count, read_at), (0, Some(first_read)), "not read again while nothing changed");

    // A state change is a reason to look: that VM's set is read, and only that one.
    power(&app, &running, PowerAction::Pause).await;
    app.poll("lab").await;
    assert_eq!(reads(&app), before + 1, "one read, for the VM whose state changed");
    let (count, oldest, read_at) = stored(&app, "br-running").await;
    assert_eq!(count, 1, "the snapshot taken outside vmdeck is seen");
    assert!(oldest.is_some() && read_at > Some(first_read));
    app.poll("lab").await;
    assert_eq!(reads(&app), before + 1, "and the next steady poll reads nothing again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_list_counts_sorts_and_filters_vms_by_their_snapshots() {
    let app = breadth_app().await;
    let (a, b) = (uuid_of(&app, "br-running").await, uuid_of(&app, "br-shutoff").await);
    for name in ["one", "two", "three"] {
        take(&app, &a, name, "").await;
    }
    take(&app, &b, "only", "").await;
    power(&app, &a, PowerAction::Pause).await;
    power(&app, &b, PowerAction::Start).await;
    app.poll("lab").await;
    assert_eq!(stored(&app, "br-running").await.0, 3);
    assert_eq!(stored(&app, "br-shutoff").await.0, 1);

    // The column, with the oldest one's age.
    let (_, html) = app.get("/vms").await;
    assert!(html.contains(">Snapshots"), "a Snapshots column header");
    let cell = snapshot_cell(&html, "br-running");
    assert!(cell.starts_with('3') && cell.contains("oldest"), "count and age: {cell:?}");
    assert_eq!(snapshot_cell(&html, "br-paused"), "0");
    // A VM whose set was never read says so rather than "0".
    sqlx::query("UPDATE vms SET snapshots_read_at = NULL WHERE name = 'br-crashed'")
        .execute(&app.pool)
        .await
        .unwrap();
    let (_, html) = app.get("/vms").await;
    assert_eq!(snapshot_cell(&html, "br-crashed"), "–", "not read yet");

    // Sorted by it, most first.
    let (_, html) = app.get("/vms?sort=snapshots&dir=desc").await;
    let names = vm_names(&html);
    assert_eq!(&names[..2], ["br-running", "br-shutoff"], "most snapshots first: {names:?}");
    assert!(
        unescape(&html)
            .contains("aria-sort=\"descending\"><a href=\"/vms?sort=snapshots\">Snapshots ▼"),
        "the header says how the list is sorted and flips it"
    );

    // Older than N days: make br-running's first snapshot 40 days old, as stored, and let a
    // state change have the poller read (and recompute) it.
    let now = vmdeck::db::now_ms();
    sqlx::query(
        "UPDATE vm_snapshots SET created_at = ?, first_seen = ? WHERE name = 'one' AND gone_at IS NULL",
    )
    .bind(now - 40 * DAY_MS)
    .bind(now - 40 * DAY_MS)
    .execute(&app.pool)
    .await
    .unwrap();
    power(&app, &a, PowerAction::Resume).await;
    app.poll("lab").await;
    let (_, oldest, _) = stored(&app, "br-running").await;
    assert_eq!(oldest, Some(now - 40 * DAY_MS), "the oldest snapshot's time, for the filter");

    let (status, html) = app.get("/vms?snapshots_older_than=30").await;
    assert_eq!(status, 200);
    assert_eq!(vm_names(&html), ["br-running"], "only the VM with a 40-day-old snapshot");
    assert!(snapshot_cell(&html, "br-running").contains("oldest 40 d"));
    assert!(html.contains("name=\"snapshots_older_than\" value=\"30\""), "the field keeps it");
    // Kept through sorting, paging and the live refresh.
    let plain = unescape(&html);
    assert!(plain.contains("href=\"/vms?snapshots_older_than=30&sort=host\""), "sorting keeps it");
    assert!(plain.contains("/vms/live?snapshots_older_than=30"), "the live refresh URL keeps it");
    let (status, live) = app.get("/vms/live?snapshots_older_than=30").await;
    assert_eq!(status, 200);
    assert_eq!(vm_names(&live), ["br-running"]);
    let (_, html) = app.get("/vms?snapshots_older_than=30&per_page=50&page=1").await;
    assert_eq!(vm_names(&html), ["br-running"]);

    // Nothing that old: the empty state says why.
    let (_, html) = app.get("/vms?snapshots_older_than=41").await;
    assert!(vm_names(&html).is_empty());
    assert!(
        strip_tags(&html).contains("none has a snapshot older than 41 days"),
        "the empty state names the filter"
    );

    // Bad values: a clear message, the filter off, never an error page.
    for bad in ["abc", "0", "-3", "1.5", "99999999999", "36501"] {
        let (status, html) = app.get(&format!("/vms?snapshots_older_than={bad}")).await;
        assert_eq!(status, 200, "{bad}");
        let text = unescape(&strip_tags(&html));
        assert!(
            text.contains("takes a whole number of days from 1 to 36500")
                && text.contains(&format!("not \"{bad}\"")),
            "{bad}: a message naming the value: {text}"
        );
        assert_eq!(vm_names(&html).len(), 21, "{bad}: the filter is off");
        let (status, _) = app.get(&format!("/vms/live?snapshots_older_than={bad}")).await;
        assert_eq!(status, 400, "{bad}: the live fragment refuses what the page never sends");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_vm_page_shows_the_tree_and_the_snapshots_that_are_gone() {
    let app = breadth_app().await;
    let uuid = uuid_of(&app, "br-shutoff").await;
    take(&app, &uuid, "base", "clean install\nsecond line").await;
    take(&app, &uuid, "child-a", "").await;
    on_host(&app, &uuid, SnapshotOp::Revert { id: "base".into(), after: AfterRevert::AsTaken })
        .await;
    take(&app, &uuid, "child-b", "the current one").await;
    take(&app, &uuid, "doomed", "").await;
    power(&app, &uuid, PowerAction::Start).await;
    app.poll("lab").await;

    // "doomed" was taken by an operator through vmdeck: its row credits the request.
    let vm_id: i64 = sqlx::query_scalar("SELECT id FROM vms WHERE uuid = ?")
        .bind(&uuid)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let audit_id: i64 = sqlx::query_scalar(
        "INSERT INTO audit_log (ts, kind, user_name, host_name, vm_uuid, vm_name, action, status)
         VALUES (?, 'snapshot', 'olivia', 'lab', ?, 'br-shutoff', 'snapshot_take', 'requested')
         RETURNING id",
    )
    .bind(vmdeck::db::now_ms())
    .bind(&uuid)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    sqlx::query("UPDATE vm_snapshots SET taken_by_audit_id = ? WHERE name = 'doomed'")
        .bind(audit_id)
        .execute(&app.pool)
        .await
        .unwrap();

    let page = format!("/vms/lab/{uuid}");
    let (status, html) = app.get(&page).await;
    assert_eq!(status, 200);
    let section = html.split("id=\"snapshots\"").nth(1).expect("a Snapshots section");
    let tree = section
        .split("id=\"snapshot-tree\"")
        .nth(1)
        .expect("the tree")
        .split("</table>")
        .next()
        .unwrap();
    let rows: Vec<(String, String)> = tree
        .split("<tr class=\"snapshot ")
        .skip(1)
        .map(|r| {
            let depth = r.split("data-depth=\"").nth(1).unwrap().split('"').next().unwrap();
            let name = strip_tags(
                r.split("<td class=\"snap-name\">").nth(1).unwrap().split("</td>").next().unwrap(),
            );
            (depth.to_string(), unescape(&name))
        })
        .collect();
    let expected = [
        ("0", "base"),
        ("1", "└ child-a (child of base)"),
        ("1", "└ child-b (child of base)"),
        ("2", "└ doomed (child of child-b) current"),
    ];
    let got: Vec<(&str, &str)> = rows.iter().map(|(d, n)| (d.as_str(), n.trim())).collect();
    assert_eq!(got, expected, "children under their parent, the current one said in words");
    let text = unescape(&strip_tags(section));
    assert!(text.contains("clean install\nsecond line"), "the description, as written");
    assert!(text.contains("taken by olivia"), "who took it through vmdeck");
    assert!(section.contains("<time datetime="), "creation times through utc_time");
    assert!(text.contains("disk only (shutoff)"), "what it captured: {text}");
    // A viewer gets no links to the snapshot forms.
    let plain = unescape(section);
    assert!(plain.contains(&format!("/vms/lab/{uuid}")), "links would be seen here");
    assert!(!plain.contains("/snapshots/new") && !plain.contains("/revert\""), "{plain}");
    assert!(text.contains("Past snapshots") && section.contains("past-snapshots-empty"));

    // An operator does, by row id.
    let ids: Vec<(i64, String)> = sqlx::query_as(
        "SELECT id, name FROM vm_snapshots WHERE vm_id = ? AND gone_at IS NULL ORDER BY id",
    )
    .bind(vm_id)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    let operator = app.session("operator").await;
    let (_, html) = operator.get(&page).await;
    let html = unescape(&html);
    assert!(html.contains(&format!("href=\"/vms/lab/{uuid}/snapshots/new\"")), "Take snapshot");
    for (id, name) in &ids {
        for what in ["revert", "delete"] {
            let href = format!("href=\"/vms/lab/{uuid}/snapshots/{id}/{what}\"");
            assert!(html.contains(&href), "{name}: {href}");
        }
    }

    // Deleted on the host: after the next read it is a past snapshot, removed by whoever it
    // was (not vmdeck), and the tree no longer has it.
    on_host(&app, &uuid, SnapshotOp::Delete { id: "doomed".into() }).await;
    power(&app, &uuid, PowerAction::Pause).await;
    app.poll("lab").await;
    let (_, html) = app.get(&page).await;
    let section = html.split("id=\"snapshots\"").nth(1).unwrap();
    let tree =
        section.split("id=\"snapshot-tree\"").nth(1).unwrap().split("</table>").next().unwrap();
    assert!(!tree.contains("doomed"), "gone from the tree");
    let past = section.split("id=\"past-snapshots\"").nth(1).expect("a past snapshots table");
    let past = unescape(&strip_tags(past));
    assert!(past.contains("doomed (taken by olivia)"), "{past}");
    assert!(past.contains("removed outside vmdeck"), "{past}");
    assert_eq!(stored(&app, "br-shutoff").await.0, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vm_without_snapshots_says_so() {
    let app = breadth_app().await;
    let uuid = uuid_of(&app, "br-paused").await;
    let (_, html) = app.get(&format!("/vms/lab/{uuid}")).await;
    let text = strip_tags(html.split("id=\"snapshots\"").nth(1).unwrap());
    assert!(text.contains("No snapshots."), "{text}");
}
