//! What the audit log holds, read straight from the test app's database: power requests, and
//! waiting for one to settle.
#![allow(dead_code)]

use std::time::Duration;

use crate::support::app::TestApp;
use crate::support::wait::{poll_until, EVERY};

/// How long a power request may take to settle: the test driver acts at once, real QEMU and the
/// stand-in VBoxManage take a moment.
pub const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);

/// The power entries of a VM, oldest first: (status, error, sent_at, accepted_at, settled_at).
pub async fn power_entries(
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

/// Whether a power entry's status is final.
pub fn is_settled(status: &str) -> bool {
    !["requested", "sent", "accepted"].contains(&status)
}

/// Waits until the VM's newest power entry is settled; returns its (status, error, detail).
pub async fn settled_power(app: &TestApp, uuid: &str) -> (String, Option<String>, Option<String>) {
    let newest = async || {
        let row: Option<(String, Option<String>, Option<String>)> = sqlx::query_as(
            "SELECT status, error, detail FROM audit_log WHERE kind = 'power' AND vm_uuid = ? ORDER BY id DESC LIMIT 1",
        )
        .bind(uuid)
        .fetch_optional(&app.pool)
        .await
        .unwrap();
        row.filter(|(status, ..)| is_settled(status))
    };
    match poll_until(SETTLE_TIMEOUT, EVERY, newest).await {
        Some(entry) => entry,
        None => panic!(
            "the power entry of {uuid} did not settle within {SETTLE_TIMEOUT:?}: {:?}",
            power_entries(app, uuid).await
        ),
    }
}

/// How many audit entries of `kind` there are.
pub async fn audit_count(app: &TestApp, kind: &str) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM audit_log WHERE kind = ?")
        .bind(kind)
        .fetch_one(&app.pool)
        .await
        .unwrap()
}
