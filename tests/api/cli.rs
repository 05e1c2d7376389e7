//! `vmdeck user ...` as a real process, against the database of a running server: changes take
//! effect at once.

use crate::support::app::{breadth_app, login, PASSWORD};

/// Runs `vmdeck user ARGS` on the test app's database; `stdin` feeds the password.
fn vmdeck_user(db_dir: &std::path::Path, args: &[&str], stdin: &str) -> (bool, String) {
    let config = crate::support::binary::config_for_app_database(db_dir);
    crate::support::binary::vmdeck_user(&config, args, stdin)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_manages_users_while_the_server_runs() {
    let app = breadth_app().await;
    let dir = app.dir.path().to_path_buf();

    let (ok, out) =
        vmdeck_user(&dir, &["add", "carol", "--role", "operator"], &format!("{PASSWORD}\n"));
    assert!(ok, "{out}");
    let carol =
        login(&app.base, "carol", PASSWORD).await.expect("carol logs in to the running server");

    let (ok, out) = vmdeck_user(&dir, &["list"], "");
    assert!(
        ok && out.contains("carol") && out.contains("operator") && out.contains("viewer"),
        "{out}"
    );

    let (ok, out) = vmdeck_user(&dir, &["role", "carol", "viewer"], "");
    assert!(ok, "{out}");
    let (_, html) = carol.get("/vms").await;
    assert!(html.contains(">viewer<"), "the role changed on the next request");

    let (ok, out) = vmdeck_user(&dir, &["passwd", "carol"], "another good password\n");
    assert!(ok, "{out}");
    assert_eq!(carol.get("/vms").await.0, 401, "a password change ends the user's sessions");
    assert!(login(&app.base, "carol", "another good password").await.is_ok());

    let (ok, out) = vmdeck_user(&dir, &["remove", "carol"], "");
    assert!(ok, "{out}");
    assert!(login(&app.base, "carol", "another good password").await.is_err());

    // Mistakes are explained and change nothing.
    for (args, stdin, expect) in [
        (vec!["add", "dave", "--role", "operator"], "short\n", "at least 10 characters"),
        (vec!["add", "viewer", "--role", "operator"], "long enough password\n", "already exists"),
        (
            vec!["add", "bad name", "--role", "viewer"],
            "long enough password\n",
            "not a valid user name",
        ),
        (vec!["add", "erin", "--role", "root"], "long enough password\n", "invalid value"),
        (vec!["role", "nobody", "admin"], "", "no user named"),
        (vec!["remove", "nobody"], "", "no user named"),
        (vec!["add", "frank", "--role", "viewer"], "", "no password"),
    ] {
        let (ok, out) = vmdeck_user(&dir, &args, stdin);
        assert!(!ok, "{args:?} should fail");
        assert!(out.contains(expect), "{args:?}: expected {expect:?} in {out}");
    }
    let (_, out) = vmdeck_user(&dir, &["list"], "");
    assert!(!out.contains("dave") && !out.contains("frank"));
    let audited: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM audit_log WHERE user_name LIKE 'cli:%'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(audited, 4, "add, role, passwd and remove are audited");
}

#[tokio::test]
async fn the_last_admin_cannot_be_removed_or_demoted() {
    let app = breadth_app().await;
    let dir = app.dir.path().to_path_buf();
    let (ok, _) =
        vmdeck_user(&dir, &["add", "root-admin", "--role", "admin"], &format!("{PASSWORD}\n"));
    assert!(ok);
    let (ok, out) = vmdeck_user(&dir, &["role", "root-admin", "viewer"], "");
    assert!(!ok && out.contains("last admin"), "{out}");
    let (ok, out) = vmdeck_user(&dir, &["remove", "root-admin"], "");
    assert!(!ok && out.contains("last admin"), "{out}");
}
