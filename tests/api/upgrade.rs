//! Upgrading a real database: `tests/fixtures/upgrade/vmdeck-66fbaab.db` was written by the
//! vmdeck released before the audit log's hash chain (its README says how, `make.sh` redoes
//! it). The current code starts on a copy and must migrate it, keep every old row readable
//! where users look for it, and chain the old audit entries.

use serde_json::json;

use crate::support::app::{
    fixture, libvirt_host, login, spawn_app_in, vm_names, AppOptions, PASSWORD,
};
use crate::support::binary::{config_for_app_database, vmdeck};
use crate::support::wait::eventually;

/// What the fixture holds (see its README): one VM polled 12 times, 8 settled audit entries.
const FIXTURE: &str = "upgrade/vmdeck-66fbaab.db";
const OLD_VM: &str = "6695eb01-f6a4-8304-79aa-97f2502e193f";
const OLD_SAMPLES: usize = 12;
const OLD_ENTRIES: [(i64, &str); 8] = [
    (1, "user_added"),
    (2, "user_added"),
    (3, "login_failed"),
    (4, "login_failed"),
    (5, "login_failed"),
    (6, "login"),
    (7, "power"),
    (8, "power"),
];
const OLD_ADMIN_PASSWORD: &str = "the old release passphrase";
/// A week ending just after the fixture's last sample (2026-11-30T18:27:51Z): read from the
/// hourly rollups at a 60 s poll interval, which outlive raw samples (kept 2 days), so the
/// test keeps working as the fixture ages; no sample the upgraded server takes falls in it.
const OLD_WEEK: &str = "range=custom&from=2026-11-23T18:28&to=2026-11-30T18:28";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_from_the_release_before_the_hash_chain_upgrades_with_its_history() {
    // Arrange: a copy of the old database where the server keeps its own.
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(fixture(FIXTURE), dir.path().join("vmdeck.db")).expect("copy the fixture");
    let opts = AppOptions {
        poll_interval_secs: 60,
        extra: vec![
            ("rollup_5m_retention_days", json!(3650)),
            ("rollup_1h_retention_days", json!(36_500)),
            ("rollup_1d_retention_days", json!(36_500)),
        ],
        ..AppOptions::with_hosts(vec![libvirt_host("lab", "test:///default")])
    };

    // Act: the current code starts on it (and logs in the fixture's viewer).
    let app = spawn_app_in(dir, opts).await;

    // Assert: every migration ran, the chain's among them.
    let applied: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    let known: Vec<i64> = sqlx::migrate!("./migrations").iter().map(|m| m.version).collect();
    assert_eq!(applied, known, "every migration is applied to the old database");
    assert!(applied.contains(&4), "0004_audit_chain ran: {applied:?}");

    // The old VM is listed, as the same row (not a new one the first poll created).
    let (status, html) = app.get("/vms").await;
    assert_eq!(status, 200);
    assert_eq!(vm_names(&html), ["test"], "the old VM is listed once");
    let vm_id: i64 = sqlx::query_scalar("SELECT id FROM vms WHERE uuid = ?")
        .bind(OLD_VM)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(vm_id, 1, "the VM keeps the id the old release gave it");

    // Its old history is on its page (from the rollups the upgraded server computes from it).
    let page = format!("/vms/lab/{OLD_VM}?{OLD_WEEK}");
    let expected = format!(">Times in UTC. {OLD_SAMPLES} samples in this range");
    eventually("the old samples on the VM page", std::time::Duration::from_secs(30), async || {
        app.get(&page).await.1.contains(&expected)
    })
    .await;
    let (status, html) = app.get(&page).await;
    assert_eq!(status, 200);
    assert!(html.contains("read from hourly"), "a week is read from the hourly rollups: {html}");

    // The old audit entries are on the audit page, and chained in their order.
    let (status, html) = app.get("/audit").await;
    assert_eq!(status, 200);
    for (id, kind) in OLD_ENTRIES {
        let row = format!("<tr data-id=\"{id}\" class=\"kind-{kind}\">");
        assert!(html.contains(&row), "old entry {id} ({kind}) is on /audit");
    }
    let seqs: Vec<(i64, Option<i64>)> =
        sqlx::query_as("SELECT id, chain_seq FROM audit_log WHERE id <= 8 ORDER BY id")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    let expected_seqs: Vec<(i64, Option<i64>)> = (1..=8).map(|i| (i, Some(i))).collect();
    assert_eq!(seqs, expected_seqs, "the old entries start the chain, in id order");
    let (status, out) = vmdeck(&config_for_app_database(app.dir.path()), &["audit", "verify"], "");
    assert!(status.success(), "vmdeck audit verify passes on the upgraded log: {out}");
    assert!(out.contains("audit log intact"), "{out}");

    // The old accounts log in with their old passwords.
    let admin = login(&app.base, "admin", OLD_ADMIN_PASSWORD).await.expect("the old admin logs in");
    let (status, users) = admin.get("/users").await;
    assert_eq!(status, 200, "the old admin is still an admin");
    assert!(users.contains("viewer"), "{users}");
    assert!(login(&app.base, "viewer", PASSWORD).await.is_ok(), "the old viewer logs in");
}
