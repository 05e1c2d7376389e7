//! The audit log: its page's filters and notices, the CSV export, the database keeping
//! settled entries append-only, and the hash chain `vmdeck audit verify` checks.

use std::str::FromStr;

use sqlx::migrate::Migrator;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode};
use sqlx::SqlitePool;
use vmdeck::audit::chain::{self, VerifyError};
use vmdeck::control::store::{self, PowerRequest, RequestError};
use vmdeck::domain::{Actor, AuditKind, AuditOutcome, PowerAction, VmUuid};
use vmdeck::events::chain::{Content, Link};

use crate::support::app::{breadth_app, uuid_of, TestApp};
use crate::support::audit::settled_power;
use crate::support::binary::{config_for_app_database, vmdeck};

#[tokio::test]
async fn the_audit_log_filters_paginates_and_exports_csv() {
    let app = breadth_app().await;
    let op = app.session("operator").await;
    for name in ["br-running", "br-blocked"] {
        let uuid = uuid_of(&app, name).await;
        op.post(&format!("/vms/lab/{uuid}/power"), &[("action", "pause")]).await;
        settled_power(&app, &uuid).await;
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

    // Answered 200 as text/csv (checked by `csv`).
    let csv = op.csv("/audit.csv?action=pause").await;
    let (headers, rows) = (&csv[0], &csv[1..]);
    assert!(headers.iter().any(|h| h == "request_to_confirmation_ms"), "units in column names");
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

// ---------------------------------------------------------------------------------------------
// The hash chain (migrations/0004_audit_chain.sql, src/events/chain.rs, src/audit/chain.rs).

/// Inserts a power request as `control::store::requested` does; returns its id.
async fn pending_request(pool: &SqlitePool, vm_uuid: &str) -> i64 {
    sqlx::query_scalar(
        "INSERT INTO audit_log (ts, kind, user_name, host_name, vm_uuid, vm_name, action, status)
         VALUES (?, 'power', 'op', 'lab', ?, ?, 'start', 'requested') RETURNING id",
    )
    .bind(vmdeck::db::now_ms())
    .bind(vm_uuid)
    .bind(format!("name of {vm_uuid}"))
    .fetch_one(pool)
    .await
    .unwrap()
}

/// The chain as stored: (id, seq), in seq order.
async fn chain(pool: &SqlitePool) -> Vec<(i64, i64)> {
    sqlx::query_as(
        "SELECT id, chain_seq FROM audit_log WHERE chain_seq IS NOT NULL ORDER BY chain_seq",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

/// What someone who can write the database file does first.
async fn drop_audit_triggers(pool: &SqlitePool) {
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master
         WHERE type = 'trigger' AND tbl_name IN ('audit_log', 'audit_retention')",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    assert!(names.len() >= 10, "the audit triggers: {names:?}");
    for name in names {
        sqlx::query(&format!("DROP TRIGGER \"{name}\"")).execute(pool).await.unwrap();
    }
}

/// A copy of the app's database as it is now, opened the way another process opens it.
async fn copy_of(app: &TestApp, name: &str) -> SqlitePool {
    let path = app.dir.path().join(format!("{name}.db"));
    sqlx::query("VACUUM INTO ?").bind(path.display().to_string()).execute(&app.pool).await.unwrap();
    vmdeck::db::connect(&format!("sqlite://{}", path.display())).await.unwrap()
}

/// A log with every kind of entry in the chain: logins, a confirmed power action, a refused one.
async fn busy_log() -> TestApp {
    let app = breadth_app().await;
    let op = app.session("operator").await;
    app.session("admin").await;
    let uuid = uuid_of(&app, "br-running").await;
    op.post(&format!("/vms/lab/{uuid}/power"), &[("action", "pause")]).await;
    settled_power(&app, &uuid).await;
    op.post(&format!("/vms/lab/{uuid}/power"), &[("action", "pause")]).await;
    app.session("viewer").await;
    app
}

#[tokio::test]
async fn sql_cannot_get_around_the_append_only_audit_log() {
    let app = breadth_app().await;
    let pool = &app.pool;
    let (login, login_seq): (i64, i64) = sqlx::query_as(
        "SELECT id, chain_seq FROM audit_log WHERE kind = 'login' ORDER BY id LIMIT 1",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    let sent = pending_request(pool, "vm-a").await;
    vmdeck::control::store::sent(pool, sent).await.expect("requested -> sent is allowed");
    let requested = pending_request(pool, "vm-b").await;
    let far_future = i64::MAX / 2;
    // A forgery that looks chained, so only its id gives it away.
    let (next_seq, head): (i64, String) =
        sqlx::query_as("SELECT seq + 1, hash FROM audit_chain_head").fetch_one(pool).await.unwrap();

    for (what, sql, refusal) in [
        (
            "INSERT OR REPLACE over a settled entry",
            format!("INSERT OR REPLACE INTO audit_log (id, ts, kind, user_name, status, settled_at, chain_seq, chain_prev, chain_hash) VALUES ({login}, 1, 'login', 'mallory', 'ok', 1, {next_seq}, '{head}', '{head}')"),
            "that id is taken",
        ),
        (
            "INSERT OR REPLACE over a pending request",
            format!("INSERT OR REPLACE INTO audit_log (id, ts, kind, status) VALUES ({sent}, 1, 'power', 'requested')"),
            "that id is taken",
        ),
        (
            "an explicit id below the newest",
            "INSERT INTO audit_log (id, ts, kind, host_name, vm_uuid, status) VALUES (0, 1, 'power', 'lab', 'vm-z', 'requested')".into(),
            "an id above every other",
        ),
        (
            "INSERT OR REPLACE over the VM's pending request",
            "INSERT OR REPLACE INTO audit_log (ts, kind, host_name, vm_uuid, action, status) VALUES (1, 'power', 'lab', 'vm-a', 'start', 'requested')".into(),
            "another request is still pending",
        ),
        (
            "a settled entry outside the chain",
            "INSERT INTO audit_log (ts, kind, user_name, status, settled_at) VALUES (1, 'login', 'mallory', 'ok', 1)".into(),
            "settled at the end of the chain",
        ),
        (
            "a settled entry at a made-up chain position",
            format!("INSERT INTO audit_log (ts, kind, status, settled_at, chain_seq, chain_prev, chain_hash) VALUES (1, 'login', 'ok', 1, 999, '{0}', '{0}')", "a".repeat(64)),
            "settled at the end of the chain",
        ),
        (
            "a pending request with its outcome already written",
            "INSERT INTO audit_log (ts, kind, host_name, vm_uuid, status, detail) VALUES (1, 'power', 'lab', 'vm-y', 'requested', 'went fine')".into(),
            "a new entry is pending",
        ),
        (
            "an unknown status",
            "INSERT INTO audit_log (ts, kind, status, settled_at) VALUES (1, 'login', 'hacked', 1)".into(),
            "unknown audit status",
        ),
        (
            "a status changed to an unknown one",
            format!("UPDATE audit_log SET status = 'hacked' WHERE id = {sent}"),
            "unknown audit status",
        ),
        (
            "a pending request moved backwards",
            format!("UPDATE audit_log SET status = 'requested' WHERE id = {sent}"),
            "a pending power request only moves forward",
        ),
        (
            "a pending request's detail rewritten",
            format!("UPDATE audit_log SET detail = 'all fine' WHERE id = {sent}"),
            "a pending power request only moves forward",
        ),
        (
            "a pending request given an error without settling",
            format!("UPDATE audit_log SET error = 'nothing happened' WHERE id = {requested}"),
            "a pending power request only moves forward",
        ),
        (
            "a pending request settled outside the chain",
            format!("UPDATE audit_log SET status = 'confirmed', settled_at = 1 WHERE id = {sent}"),
            "a pending power request only moves forward",
        ),
        (
            "a pending request settled as an event",
            format!("UPDATE audit_log SET status = 'ok', settled_at = 1 WHERE id = {requested}"),
            "a pending power request only moves forward",
        ),
        (
            "a settled entry's detail",
            format!("UPDATE audit_log SET detail = 'nothing to see' WHERE id = {login}"),
            "a settled entry never changes",
        ),
        (
            "a settled entry's chain position",
            format!("UPDATE audit_log SET chain_seq = chain_seq + 1000 WHERE id = {login}"),
            "a settled entry never changes",
        ),
        (
            "deleting a settled entry",
            format!("DELETE FROM audit_log WHERE id = {login}"),
            "only retention pruning deletes them",
        ),
        (
            "deleting a pending request",
            format!("DELETE FROM audit_log WHERE id = {requested}"),
            "only retention pruning deletes them",
        ),
        ("deleting the retention row", "DELETE FROM audit_retention".into(), "cannot be removed"),
        (
            "replacing the retention row",
            "INSERT OR REPLACE INTO audit_retention (id, prune_before) VALUES (1, 0)".into(),
            "cannot be replaced",
        ),
        (
            "moving prune_before back",
            "UPDATE audit_retention SET prune_before = prune_before - 1".into(),
            "only moves forward",
        ),
        (
            "moving the anchor back",
            "UPDATE audit_retention SET anchor_seq = anchor_seq - 1".into(),
            "only moves forward",
        ),
        (
            "anchoring past entries newer than prune_before",
            format!("UPDATE audit_retention SET anchor_seq = {login_seq}, anchor_hash = (SELECT chain_hash FROM audit_log WHERE id = {login})"),
            "older than prune_before",
        ),
        (
            "anchoring on a hash that is not the entry's",
            format!("UPDATE audit_retention SET prune_before = {far_future}, anchor_seq = {login_seq}, anchor_hash = '{}'", "0".repeat(64)),
            "onto an entry of the chain",
        ),
    ] {
        match sqlx::query(&sql).execute(pool).await {
            Ok(_) => panic!("{what}: accepted ({sql})"),
            Err(e) => assert!(e.to_string().contains(refusal), "{what}: expected {refusal:?}, got {e}"),
        }
    }

    // What the code does is still allowed, and nothing above left a trace.
    vmdeck::control::store::settled(pool, sent, AuditOutcome::Confirmed, None, Some("seen"))
        .await
        .expect("sent -> confirmed, sealed into the chain");
    let status: (String, Option<String>) =
        sqlx::query_as("SELECT status, detail FROM audit_log WHERE id = ?")
            .bind(sent)
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!(status, ("confirmed".to_string(), Some("seen".to_string())));
    let summary = chain::verify(pool, None).await.expect("the log is intact");
    assert_eq!(summary.entries as usize, chain(pool).await.len());
    assert_eq!(summary.pending, 1, "vm-b's request is still pending");
}

#[tokio::test]
async fn retention_prunes_the_chain_from_its_old_end_and_the_rest_still_verifies() {
    let app = busy_log().await;
    let pool = &app.pool;
    let waiting = pending_request(pool, "vm-a").await;
    let before = chain(pool).await;
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;

    let removed = vmdeck::audit::store::prune(pool, 0).await.unwrap();
    assert_eq!(removed as usize, before.len(), "every settled entry is older than now");
    let (anchor_seq, anchor_hash): (i64, String) =
        sqlx::query_as("SELECT anchor_seq, anchor_hash FROM audit_retention")
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!(anchor_seq, before.last().unwrap().1, "anchored on the last entry pruned");
    assert_ne!(anchor_hash, vmdeck::events::chain::GENESIS);
    let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit_log WHERE id = ?")
        .bind(waiting)
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(left, 1, "a pending request is not pruned");
    // An entry dated long ago (a clock set wrong, say) is pruned by a longer retention
    // configured later, which does not move prune_before back: the database would refuse.
    let long_ago = vmdeck::db::now_ms() - 40 * 86_400_000;
    let actor = Actor { user: Some("early".into()), addr: None };
    let early = Content::settled(AuditKind::Login, &actor, AuditOutcome::Ok, long_ago);
    vmdeck::events::chain::append(pool, early).await.unwrap();
    assert_eq!(vmdeck::audit::store::prune(pool, 30).await.unwrap(), 1);
    let anchor_seq = anchor_seq + 1;

    // New entries follow the anchor; the pending request joins the chain when it settles.
    app.session("operator").await;
    vmdeck::control::store::settled(pool, waiting, AuditOutcome::Failed, Some("gone"), None)
        .await
        .unwrap();
    let summary = chain::verify(pool, None).await.expect("the pruned log verifies from its anchor");
    assert_eq!(summary.anchor.seq, anchor_seq);
    assert_eq!(summary.entries, 2, "{summary}");
    assert_eq!(summary.head.seq, anchor_seq + 2);

    let newest: i64 =
        sqlx::query_scalar("SELECT MAX(id) FROM audit_log").fetch_one(pool).await.unwrap();
    let delete = sqlx::query("DELETE FROM audit_log WHERE id = ?").bind(newest).execute(pool).await;
    assert!(delete.unwrap_err().to_string().contains("only retention pruning"));
}

#[tokio::test]
async fn verify_reports_the_first_entry_altered_removed_inserted_or_moved() {
    let app = busy_log().await;
    let clean = chain::verify(&app.pool, None).await.expect("the untouched log verifies");
    let ids = chain(&app.pool).await;
    assert!(ids.len() >= 6, "enough entries to tamper in the middle: {ids:?}");
    let id = |seq: i64| ids.iter().find(|(_, s)| *s == seq).map(|(id, _)| *id).unwrap();
    let next_id = ids.iter().map(|(id, _)| id).max().unwrap() + 1;

    // A forged entry sealed properly after seq 2: whoever knows the encoding can do that.
    let mut forged = Content::settled(
        AuditKind::Login,
        &Actor { user: Some("mallory".into()), addr: Some("10.6.6.6".into()) },
        AuditOutcome::Ok,
        vmdeck::db::now_ms(),
    );
    forged.id = next_id;
    let hash_2: String = sqlx::query_scalar("SELECT chain_hash FROM audit_log WHERE chain_seq = 2")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let seal = Link { seq: 2, hash: hash_2 }.seal(&forged);
    let insert_forged = format!(
        "INSERT INTO audit_log (id, ts, kind, user_name, client_addr, status, settled_at, chain_seq, chain_prev, chain_hash)
         VALUES ({}, {}, 'login', 'mallory', '10.6.6.6', 'ok', {}, 3, '{}', '{}')",
        forged.id, forged.ts, forged.settled_at.unwrap(), seal.prev, seal.hash
    );
    // Moves seq > 2 by `by`, through negative numbers so the unique index never sees a clash.
    let shift = |by: i64| {
        [
            format!("UPDATE audit_log SET chain_seq = -(chain_seq + {by}) WHERE chain_seq > 2"),
            "UPDATE audit_log SET chain_seq = -chain_seq WHERE chain_seq < 0".to_string(),
        ]
    };

    let cases: Vec<(&str, Vec<String>, String)> = vec![
        (
            "a field altered",
            vec!["UPDATE audit_log SET user_name = 'mallory' WHERE chain_seq = 3".into()],
            format!("entry {} (seq 3) was altered: its content does not match its hash", id(3)),
        ),
        (
            "NULL turned into an empty text",
            vec!["UPDATE audit_log SET host_name = '' WHERE chain_seq = 3 AND host_name IS NULL"
                .into()],
            format!("entry {} (seq 3) was altered", id(3)),
        ),
        (
            "a settled entry made pending again",
            vec!["UPDATE audit_log SET status = 'accepted', settled_at = NULL WHERE chain_seq = 5".into()],
            format!("entry {} (seq 5) was altered", id(5)),
        ),
        (
            "a time replaced by text",
            vec!["UPDATE audit_log SET ts = 'yesterday' WHERE chain_seq = 2".into()],
            format!("entry {} (seq 2) was altered: a column holds a value of the wrong type", id(2)),
        ),
        (
            "two entries altered: the first is reported",
            vec![
                "UPDATE audit_log SET detail = 'x' WHERE chain_seq = 5".into(),
                "UPDATE audit_log SET client_addr = '10.9.9.9' WHERE chain_seq = 2".into(),
            ],
            format!("entry {} (seq 2) was altered", id(2)),
        ),
        (
            "an entry removed",
            vec!["DELETE FROM audit_log WHERE chain_seq = 3".into()],
            format!("seq 3 is missing before entry {} (seq 4): an entry was removed", id(4)),
        ),
        (
            "an entry removed and the gap closed",
            [vec!["DELETE FROM audit_log WHERE chain_seq = 3".to_string()], shift(-1).to_vec()]
                .concat(),
            format!("entry {} (seq 3) was not sealed after entry {} (seq 2)", id(4), id(2)),
        ),
        (
            "the first entry removed",
            vec!["DELETE FROM audit_log WHERE chain_seq = 1".into()],
            format!("seq 1 is missing before entry {} (seq 2)", id(2)),
        ),
        (
            "an entry inserted outside the chain",
            vec!["INSERT INTO audit_log (ts, kind, user_name, status, settled_at) VALUES (1, 'login', 'mallory', 'ok', 1)".into()],
            format!("entry {next_id} is settled but has no place in the chain"),
        ),
        (
            "a forged entry sealed into the middle",
            [shift(1).to_vec(), vec![insert_forged]].concat(),
            format!("entry {} (seq 4) was not sealed after entry {next_id} (seq 3)", id(3)),
        ),
        (
            "two entries swapped",
            vec![
                "UPDATE audit_log SET chain_seq = -1 WHERE chain_seq = 3".into(),
                "UPDATE audit_log SET chain_seq = 3 WHERE chain_seq = 4".into(),
                "UPDATE audit_log SET chain_seq = 4 WHERE chain_seq = -1".into(),
            ],
            format!("entry {} (seq 3) was not sealed after entry {} (seq 2)", id(4), id(2)),
        ),
        (
            "the anchor moved over entries left in place",
            vec!["UPDATE audit_retention SET anchor_seq = 2, anchor_hash = (SELECT chain_hash FROM audit_log WHERE chain_seq = 2)".into()],
            format!("entry {} (seq 1) lies at or before the anchor (seq 2)", id(1)),
        ),
        (
            "the retention row removed",
            vec!["DELETE FROM audit_retention".into()],
            "the chain's anchor (the audit_retention row) is missing".into(),
        ),
    ];
    for (n, (what, statements, expected)) in cases.into_iter().enumerate() {
        let pool = copy_of(&app, &format!("tampered-{n}")).await;
        drop_audit_triggers(&pool).await;
        for sql in &statements {
            sqlx::query(sql).execute(&pool).await.unwrap_or_else(|e| panic!("{what}: {sql}: {e}"));
        }
        // The next start chains what it may; it must not hide anything.
        vmdeck::events::chain::backfill(&pool).await.unwrap();
        match chain::verify(&pool, None).await {
            Err(VerifyError::Tampered(found)) => {
                assert!(
                    found.to_string().contains(&expected),
                    "{what}: expected {expected:?}, got {found}"
                )
            }
            other => panic!("{what}: expected {expected:?}, got {other:?}"),
        }
        pool.close().await;
    }

    // What a chain cannot see on its own: the newest entry cut off. A head recorded earlier
    // does.
    let pool = copy_of(&app, "cut").await;
    drop_audit_triggers(&pool).await;
    sqlx::query("DELETE FROM audit_log WHERE chain_seq = (SELECT MAX(chain_seq) FROM audit_log)")
        .execute(&pool)
        .await
        .unwrap();
    let cut = chain::verify(&pool, None).await.expect("a shorter chain is still a chain");
    assert_eq!(cut.entries + 1, clean.entries);
    match chain::verify(&pool, Some(clean.head.clone())).await {
        Err(VerifyError::Tampered(found)) => assert!(
            found
                .to_string()
                .contains(&format!("short of the head recorded at seq {}", clean.head.seq)),
            "{found}"
        ),
        other => panic!("the recorded head should show the cut: {other:?}"),
    }
}

#[tokio::test]
async fn an_audit_log_written_before_the_chain_is_chained_once_at_upgrade() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/old.db", dir.path().display());
    // The schema as it was before the chain: migrations 0001 to 0003, through sqlx as vmdeck
    // applies them, so the upgrade sees them as applied.
    let old = dir.path().join("migrations");
    std::fs::create_dir(&old).unwrap();
    for entry in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if ["0001_", "0002_", "0003_"].iter().any(|v| name.starts_with(v)) {
            std::fs::copy(&path, old.join(&name)).unwrap();
        }
    }
    let before = open(&url).await;
    Migrator::new(old.as_path()).await.unwrap().run(&before).await.unwrap();
    // More entries than one backfill batch, a settled power request and a pending one.
    sqlx::query(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1200)
         INSERT INTO audit_log (ts, kind, user_name, status, settled_at)
         SELECT i, 'login', 'user' || i, 'ok', i FROM n",
    )
    .execute(&before)
    .await
    .unwrap();
    let pending: i64 = sqlx::query_scalar(
        "INSERT INTO audit_log (ts, kind, host_name, vm_uuid, vm_name, action, status, sent_at)
         VALUES (2000, 'power', 'lab', 'u1', 'vm1', 'start', 'sent', 2001) RETURNING id",
    )
    .fetch_one(&before)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO audit_log (ts, kind, host_name, vm_uuid, vm_name, action, status, error, settled_at)
         VALUES (2002, 'power', 'lab', 'u2', 'vm2', 'stop', 'failed', 'gone', 2003)",
    )
    .execute(&before)
    .await
    .unwrap();
    before.close().await;

    // The upgrade, then two processes starting at once: each chains what is left, in batches.
    let (a, b) = (open(&url).await, open(&url).await);
    sqlx::migrate!("./migrations").run(&a).await.unwrap();
    let (in_a, in_b) =
        tokio::join!(vmdeck::events::chain::backfill(&a), vmdeck::events::chain::backfill(&b));
    assert_eq!(in_a.unwrap() + in_b.unwrap(), 1201, "every settled entry, once");
    let ids = chain(&a).await;
    assert_eq!(ids.len(), 1201);
    assert!(ids.windows(2).all(|w| w[0].0 < w[1].0), "chained in id order");
    assert!(!ids.iter().any(|(id, _)| *id == pending), "a pending request is not chained");

    // It joins when it settles, and the whole log verifies; starting again chains nothing.
    vmdeck::control::store::settled(&a, pending, AuditOutcome::Confirmed, None, None)
        .await
        .unwrap();
    let pool = vmdeck::db::connect(&url).await.unwrap();
    let summary = chain::verify(&pool, None).await.expect("the upgraded log verifies");
    assert_eq!((summary.entries, summary.head.seq, summary.pending), (1202, 1202, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writers_in_two_processes_append_to_one_chain() {
    let app = breadth_app().await;
    // The CLI's pool: another set of connections to the same file, as another process has.
    let cli = vmdeck::db::connect(&format!("sqlite://{}/vmdeck.db", app.dir.path().display()))
        .await
        .unwrap();
    let writes = (0..40).map(|i| {
        let pool = if i % 2 == 0 { app.pool.clone() } else { cli.clone() };
        tokio::spawn(async move {
            let actor = Actor { user: Some(format!("writer{i}")), addr: None };
            vmdeck::events::record(
                &pool,
                AuditKind::UserAdded,
                &actor,
                AuditOutcome::Ok,
                None,
                None,
            )
            .await
        })
    });
    for w in futures::future::join_all(writes).await {
        w.unwrap().expect("every append succeeds, none waits on a stale snapshot");
    }
    let summary = chain::verify(&app.pool, None).await.expect("one chain, no fork");
    let writers: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM audit_log WHERE user_name LIKE 'writer%'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(writers, 40);
    assert_eq!(summary.entries as usize, chain(&app.pool).await.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vmdeck_audit_verify_passes_a_clean_log_and_names_the_first_tampered_entry() {
    let app = busy_log().await;
    let config = config_for_app_database(app.dir.path());
    let entries = chain(&app.pool).await;
    let verify = |args: &[&str]| vmdeck(&config, &[&["audit", "verify"], args].concat(), "");

    let (status, out) = verify(&[]);
    assert!(status.success(), "{out}");
    let expected = format!("audit log intact: {} entries verified", entries.len());
    assert!(out.contains(&expected), "expected {expected:?} in {out}");
    // The head, kept elsewhere (SEQ:HASH), for the last check below.
    let head = out.split("head ").nth(1).and_then(|s| s.split([';', '\n']).next()).unwrap();
    assert_eq!(head.split(':').next(), Some(entries.len().to_string().as_str()), "{out}");

    drop_audit_triggers(&app.pool).await;
    sqlx::query("UPDATE audit_log SET detail = 'nothing happened' WHERE chain_seq = 2")
        .execute(&app.pool)
        .await
        .unwrap();
    let (status, out) = verify(&[]);
    assert_eq!(status.code(), Some(1), "{out}");
    let expected =
        format!("vmdeck: audit log tampered: entry {} (seq 2) was altered", entries[1].0);
    assert!(out.contains(&expected), "expected {expected:?} in {out}");

    // Resealed from there on by someone who knows the encoding, the chain verifies on its own;
    // only the head recorded earlier shows it was rewritten.
    reseal_from(&app.pool, 2).await;
    let (status, out) = verify(&[]);
    assert!(status.success(), "a chain rewritten with care verifies alone: {out}");
    let (status, out) = verify(&["--head", head]);
    assert_eq!(status.code(), Some(1), "{out}");
    let expected = format!(
        "entry {} (seq {}) is not the one recorded",
        entries.last().unwrap().0,
        entries.len()
    );
    assert!(out.contains(&expected) && out.contains("rewritten"), "expected {expected:?} in {out}");
}

/// Reseals every chained entry from `seq` on, as someone who can write the file and knows the
/// encoding would after altering one.
async fn reseal_from(pool: &SqlitePool, seq: i64) {
    let mut conn = pool.acquire().await.unwrap();
    let mut link: Link = sqlx::query_as(
        "SELECT chain_seq AS seq, chain_hash AS hash FROM audit_log WHERE chain_seq = ?",
    )
    .bind(seq - 1)
    .fetch_one(&mut *conn)
    .await
    .unwrap();
    for (id, _) in chain(pool).await.into_iter().filter(|(_, s)| *s >= seq) {
        let content = vmdeck::events::chain::content(&mut conn, id).await.unwrap().unwrap();
        let seal = link.seal(&content);
        sqlx::query("UPDATE audit_log SET chain_prev = ?, chain_hash = ? WHERE id = ?")
            .bind(&seal.prev)
            .bind(&seal.hash)
            .bind(id)
            .execute(&mut *conn)
            .await
            .unwrap();
        link = seal.link();
    }
}

/// A pool on `url` as `db::connect` opens one, without migrating or chaining anything.
async fn open(url: &str) -> SqlitePool {
    let options = SqliteConnectOptions::from_str(url)
        .unwrap()
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .busy_timeout(std::time::Duration::from_secs(5));
    SqlitePool::connect_with(options).await.unwrap()
}

#[tokio::test]
async fn a_second_power_request_for_a_vm_in_flight_is_refused_as_pending() {
    let app = breadth_app().await;
    let uuid = VmUuid::parse("00000000-0000-0000-0000-0000000000aa").unwrap();
    let actor = Actor { user: Some("op".into()), addr: None };
    let request = PowerRequest {
        actor: &actor,
        host: "lab",
        vm_uuid: &uuid,
        vm_name: "vm",
        action: PowerAction::Start,
    };
    store::requested(&app.pool, &request).await.expect("the first is recorded");
    let second = store::requested(&app.pool, &request).await;
    assert!(matches!(second, Err(RequestError::Pending(Some(_)))), "{second:?}");
}

/// Records a refused login by `user` straight through the audit log's write path.
async fn refused_login_by(app: &TestApp, user: &str) -> i64 {
    let actor = Actor { user: Some(user.to_string()), addr: Some("192.0.2.7".into()) };
    vmdeck::events::record(
        &app.pool,
        AuditKind::LoginFailed,
        &actor,
        AuditOutcome::Refused,
        None,
        Some("a test"),
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn a_long_value_is_cut_short_in_the_list_and_whole_on_the_entrys_own_page() {
    let app = breadth_app().await;
    let long: String = (0..30_000).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
    let id = refused_login_by(&app, &long).await;

    let (status, html) = app.get("/audit").await;
    assert_eq!(status, 200);
    let row = html
        .split(&format!("<tr data-id=\"{id}\""))
        .nth(1)
        .and_then(|r| r.split("</tr>").next())
        .expect("the entry's row");
    assert!(!row.contains(&long[..65]), "the list shows at most 64 characters of it");
    assert!(row.contains(&format!("{}…", &long[..64])), "cut with an ellipsis: {}", &row[..300]);
    assert!(row.contains(&format!("href=\"/audit/{id}\"")), "a link to the entry in full");

    let (status, page) = app.get(&format!("/audit/{id}")).await;
    assert_eq!(status, 200);
    assert!(page.contains(&long), "the entry's page shows the whole value");
    assert!(page.contains("192.0.2.7") && page.contains("login_failed"), "every field");
    let (status, _) = app.get("/audit/999999999").await;
    assert_eq!(status, 404, "an entry that does not exist");
    let (status, _) = app.get("/audit/x").await;
    assert!((400..500).contains(&status), "not an id: {status}");
    // The CSV keeps the value whole.
    let csv = app.viewer.csv("/audit.csv?action=login_failed").await;
    assert!(csv.iter().any(|r| &r[3] == long.as_str()), "the CSV has the whole value");
}

#[tokio::test]
async fn the_action_filter_takes_several_actions_and_all_power_actions_and_the_csv_follows() {
    let app = breadth_app().await;
    let op = app.session("operator").await;
    let running = uuid_of(&app, "br-running").await;
    op.post(&format!("/vms/lab/{running}/power"), &[("action", "pause")]).await;
    settled_power(&app, &running).await;
    op.post(&format!("/vms/lab/{running}/power"), &[("action", "resume")]).await;
    settled_power(&app, &running).await;
    refused_login_by(&app, "someone").await;
    let count = |sql: &'static str| {
        let pool = app.pool.clone();
        async move { sqlx::query_scalar::<_, i64>(sql).fetch_one(&pool).await.unwrap() as usize }
    };
    let power = count("SELECT COUNT(*) FROM audit_log WHERE kind = 'power'").await;
    let pauses = count("SELECT COUNT(*) FROM audit_log WHERE action = 'pause'").await;
    let failed = count("SELECT COUNT(*) FROM audit_log WHERE kind = 'login_failed'").await;
    assert!(power >= 2 && pauses >= 1 && failed >= 1);

    for (query, want) in [
        ("action=pause", pauses),
        ("action=pause&action=login_failed", pauses + failed),
        ("action=power", power),
        ("action=power&action=login_failed", power + failed),
        ("action=power&action=pause", power),
    ] {
        let (status, html) = op.get(&format!("/audit?{query}")).await;
        assert_eq!(status, 200);
        assert_eq!(html.matches("<tr data-id").count(), want, "{query}: the union");
        for a in query.split('&').map(|kv| &kv[7..]) {
            assert!(html.contains(&format!("value=\"{a}\" selected")), "{query}: {a} stays chosen");
        }
        let csv = op.csv(&format!("/audit.csv?{query}")).await;
        assert_eq!(csv.len() - 1, want, "{query}: the CSV follows the same filter");
        // The pages' links keep every action chosen.
        let csv_href =
            html.split("id=\"csv-link\"").next().unwrap().rsplit("href=\"").next().unwrap();
        assert_eq!(csv_href.matches("action=").count(), query.matches("action=").count());
    }

    // A VM's name links to its page, and separately to its entries.
    let (_, html) = op.get("/audit?action=pause").await;
    assert!(html.contains(&format!("href=\"/vms/lab/{running}\"")), "the VM's page");
    assert!(html.contains(&format!("href=\"/audit?vm={running}\"")), "the VM's entries");
}
