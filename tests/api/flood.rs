//! Abuse without an account: a flood of hostile login attempts (foreign Origin, 30 KB user
//! names, wrong passwords past the throttle) must not grow the database by more than a little,
//! nor push the real entries off the audit page's first page.

use futures::StreamExt;

use crate::support::app::{spawn_app, uuid_of, AppOptions, TestApp};

/// Bytes of the database in use (pages holding data), after folding the WAL back in.
async fn used_bytes(app: &TestApp) -> i64 {
    sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)").execute(&app.pool).await.unwrap();
    sqlx::query_scalar(
        "SELECT (page_count - freelist_count) * page_size FROM pragma_page_count, pragma_freelist_count, pragma_page_size",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_thousand_hostile_logins_grow_the_database_by_less_than_a_megabyte() {
    // Requests, from the environment for a longer run by hand; 20,000 by default, as the
    // issue that asked for this measured.
    let n: usize =
        std::env::var("VMDECK_FLOOD_REQUESTS").ok().and_then(|v| v.parse().ok()).unwrap_or(20_000);
    // Hostile clients come through a proxy vmdeck trusts, so the flood can come from several
    // addresses.
    let app = spawn_app(AppOptions {
        trusted_proxies: vec!["127.0.0.1".into()],
        ..AppOptions::breadth()
    })
    .await;
    // Real entries first: an operator pauses a VM.
    let operator = app.session("operator").await;
    let vm = uuid_of(&app, "br-running").await;
    let res = operator.post(&format!("/vms/lab/{vm}/power"), &[("action", "pause")]).await;
    assert_eq!(res.status().as_u16(), 303);
    let before = used_bytes(&app).await;

    let huge = "y".repeat(30 * 1024);
    let started = std::time::Instant::now();
    let statuses: Vec<u16> = futures::stream::iter(0..n)
        .map(|i| {
            let (client, base, huge) = (app.client.clone(), app.base.clone(), huge.clone());
            async move {
                // Three clients; a third of the requests each: foreign Origin, a 30 KB name,
                // and guessing the admin's password (throttled after the first few).
                let from = format!("203.0.113.{}", i % 3 + 1);
                let mut req = client
                    .post(format!("{base}/login"))
                    .header("X-Forwarded-For", from)
                    .timeout(std::time::Duration::from_secs(60));
                let form = match i % 3 {
                    0 => {
                        req = req.header("Origin", "http://evil.example");
                        [("username", "admin".to_string()), ("password", "guess".to_string())]
                    }
                    1 => [("username", format!("{i}{huge}")), ("password", "guess".into())],
                    _ => [("username", "admin".into()), ("password", format!("guess {i}"))],
                };
                req.form(&form).send().await.map(|r| r.status().as_u16()).unwrap_or(0)
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let took = started.elapsed();
    let count = |s: u16| statuses.iter().filter(|&&x| x == s).count();
    assert_eq!(count(0), 0, "every request got an answer");
    assert!(statuses.iter().all(|s| [400, 401, 403, 429].contains(s)), "refused, never a 500");
    let growth = used_bytes(&app).await - before;
    println!(
        "flood: {n} hostile login requests in {:.1} s ({} refused for their origin, {} throttled, {} wrong password); database grew by {growth} bytes",
        took.as_secs_f64(),
        count(403),
        count(429),
        count(401)
    );
    // A third of the requests each: refused for their origin, for their name's length (400,
    // before anything is looked up), and password guesses, nearly all of them throttled.
    assert_eq!((count(403), count(400)), (n.div_ceil(3), (n + 1) / 3));
    assert!(count(401) < 50 && count(401) + count(429) == n / 3, "the guesses were throttled");
    assert!(growth < 1_000_000, "the database grew by {growth} bytes");

    // The audit log's first page still shows the real entries.
    let admin = app.session("admin").await;
    let (status, page) = admin.get("/audit").await;
    assert_eq!(status, 200);
    assert!(page.contains("br-running"), "the pause is on the first page");
    let rows = page.matches("<tr").count();
    let refused: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM audit_log WHERE kind IN ('login_failed', 'csrf_refused')",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    println!(
        "flood: {refused} audit entries for the whole flood; first audit page has {rows} rows"
    );
    assert!(refused < 50, "{refused} entries: the flood fits within one audit page");
}
