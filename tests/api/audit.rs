//! The audit log: its page's filters and notices, the CSV export, and the database keeping
//! settled entries append-only.

use crate::support::app::{breadth_app, uuid_of};
use crate::support::audit::settled_power;

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
