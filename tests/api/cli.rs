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

#[test]
fn commands_never_need_the_servers_secret_key() {
    use crate::support::binary::vmdeck_with_env;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("vmdeck.toml");
    let release = [("ROCKET_PROFILE", "release")];
    // A server's configuration, read by an admin's shell: no key there (the service has it in
    // a root-only file), or a key the shell cannot use.
    for key in ["", "secret_key = \"not a key\"\n"] {
        std::fs::write(
            &config,
            format!(
                "[release]\n{key}database_url = \"sqlite://{}/vmdeck.db\"\n\
                 [[release.hosts]]\nname = \"lab\"\ndriver = \"libvirt\"\nuri = \"test:///default\"\n",
                dir.path().display()
            ),
        )
        .unwrap();
        let (status, out) = vmdeck_with_env(&config, &["user", "list"], "", &release);
        assert!(status.success(), "{key:?}: {out}");
    }
    let (status, out) =
        vmdeck_with_env(&config, &["user", "add", "ops", "--role", "admin"], PASSWORD, &release);
    assert!(status.success() && out.contains("added"), "{out}");
    // The server itself still refuses to start without a valid key.
    let (status, out) = vmdeck_with_env(&config, &["check-config"], "", &release);
    assert!(!status.success() && out.contains("secret_key"), "{out}");
}

#[test]
fn check_config_shows_the_configuration_without_secrets_and_names_each_failing_host() {
    use crate::support::binary::vmdeck;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("vmdeck.toml");
    let good =
        "[[default.hosts]]\nname = \"lab\"\ndriver = \"libvirt\"\nuri = \"test:///default\"\n";
    // Port 1 on loopback refuses at once.
    let bad = "[[default.hosts]]\nname = \"far\"\ndriver = \"libvirt\"\n\
               uri = \"qemu+tcp://admin:hunter2@127.0.0.1:1/system\"\n";
    let head = format!(
        "[default]\ndatabase_url = \"sqlite://{}/vmdeck.db\"\nhealthz_tokens = [\"0123456789abcdef-token\"]\n\
         secret_key = \"hPRYyVRiMyxpw5sBB1XeCMN1kFsDCqKvBi2QJxBVHQk=\"\n",
        dir.path().display()
    );
    std::fs::write(&config, format!("{head}{good}")).unwrap();
    let (status, out) = vmdeck(&config, &["check-config"], "");
    assert!(status.success(), "{out}");
    assert!(out.contains("lab  test:///default  ok: 1 VMs"), "{out}");
    assert!(out.contains("poll_interval_secs = 10") && out.contains("(set, hidden)"), "{out}");

    std::fs::write(&config, format!("{head}{good}{bad}")).unwrap();
    let (status, out) = vmdeck(&config, &["check-config"], "");
    assert!(!status.success(), "a host that cannot be reached fails the check: {out}");
    let problems: Vec<&str> = out.lines().filter(|l| l.starts_with("vmdeck: ")).collect();
    assert_eq!(problems.len(), 1, "one line per problem: {out}");
    assert!(problems[0].starts_with("vmdeck: hosts[far]: cannot take an inventory"), "{out}");
    for secret in
        ["hunter2", "0123456789abcdef-token", "hPRYyVRiMyxpw5sBB1XeCMN1kFsDCqKvBi2QJxBVHQk"]
    {
        assert!(!out.contains(secret), "{secret} shown: {out}");
    }
    assert!(out.contains("admin:***@127.0.0.1"), "the host is named, redacted: {out}");

    std::fs::write(&config, format!("{head}poll_interval_secs = 0\n{good}")).unwrap();
    let (status, out) = vmdeck(&config, &["check-config"], "");
    assert!(!status.success() && out.contains("poll_interval_secs"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_while_polls_run_restores_into_an_identical_instance() {
    use crate::support::app::{spawn_app_in, AppOptions};
    use crate::support::binary::{config_for_app_database, vmdeck};
    use std::os::unix::fs::PermissionsExt;
    let app = breadth_app().await;
    let operator = app.session("operator").await;
    let vm = crate::support::app::uuid_of(&app, "br-running").await;
    let res = operator.post(&format!("/vms/lab/{vm}/power"), &[("action", "pause")]).await;
    assert_eq!(res.status().as_u16(), 303);
    // Write load: polls one after the other while the backup runs.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let polls = {
        let (stop, hosts, pool) = (stop.clone(), app.hosts.clone(), app.pool.clone());
        tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                hosts.get("lab").unwrap().poll(&pool).await;
                n += 1;
            }
            n
        })
    };
    let copy = tempfile::tempdir().unwrap();
    let file = copy.path().join("vmdeck.db");
    let config = config_for_app_database(app.dir.path());
    let arg = file.to_str().unwrap().to_string();
    let (status, out) =
        tokio::task::spawn_blocking(move || vmdeck(&config, &["backup", &arg], "")).await.unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let polled = polls.await.unwrap();
    assert!(status.success(), "{out}");
    assert!(polled > 0, "polls ran during the backup");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the copy holds password hashes: owner only");
    let config = config_for_app_database(app.dir.path());
    let again = file.to_str().unwrap().to_string();
    let (status, out) = vmdeck(&config, &["backup", &again], "");
    assert!(!status.success() && out.contains("exists already"), "never overwritten: {out}");

    // Restore: a fresh instance on the copy.
    let snapshot = vmdeck::db::connect(&format!("sqlite://{}", file.display())).await.unwrap();
    let count = async |pool: &sqlx::SqlitePool, sql: &str| -> i64 {
        sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
    };
    let samples = count(&snapshot, "SELECT count(*) FROM samples").await;
    let entries = vmdeck::audit::chain::verify(&snapshot, None).await.expect("chain intact");
    snapshot.close().await;
    assert!(samples > 0 && samples <= count(&app.pool, "SELECT count(*) FROM samples").await);
    let restored = spawn_app_in(copy, AppOptions::breadth()).await;
    let names = async |pool: &sqlx::SqlitePool| -> Vec<String> {
        sqlx::query_scalar("SELECT name FROM vms ORDER BY name").fetch_all(pool).await.unwrap()
    };
    assert_eq!(names(&restored.pool).await, names(&app.pool).await, "the same VMs");
    let (status, list) = restored.get("/vms").await;
    assert_eq!(status, 200);
    assert!(list.contains("br-running"), "the VM list is served from the restored database");
    let vm_page = restored.get(&format!("/vms/lab/{vm}?range=1h")).await;
    assert_eq!(vm_page.0, 200);
    let restored_chain = vmdeck::audit::chain::verify(&restored.pool, None).await.unwrap();
    assert!(restored_chain.entries >= entries.entries, "the audit chain came along, intact");
    let (_, audit) = restored.get("/audit").await;
    assert!(audit.contains("br-running"), "the pause is in the restored audit log");
}

#[tokio::test]
async fn a_database_from_a_newer_vmdeck_is_refused_with_a_clear_message() {
    use crate::support::binary::{config_for_app_database, vmdeck};
    let app = breadth_app().await;
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
         VALUES (9999, 'from the future', 1, x'00', 0)",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    let config = config_for_app_database(app.dir.path());
    let (status, out) =
        tokio::task::spawn_blocking(move || vmdeck(&config, &["user", "list"], "")).await.unwrap();
    assert!(!status.success(), "{out}");
    assert!(
        out.contains("written by a newer vmdeck") && out.contains("migration 9999"),
        "a downgrade says so: {out}"
    );
}

/// `vmdeck user list | grep -q admin` and `| head -1`: the reader stops reading and goes away.
/// The command did its work; it must not crash on the closed pipe (Rust ignores SIGPIPE, so a
/// plain `println!` panics with "failed printing to stdout: Broken pipe").
#[test]
fn output_into_a_pipe_nobody_reads_any_more_is_not_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let config = crate::support::binary::config_for_app_database(dir.path());
    // A pipe whose reading end is already closed: every write to it fails with EPIPE.
    let (reader, writer) = rustix::pipe::pipe().unwrap();
    drop(reader);
    for args in [&["user", "list"][..], &["check-config"][..]] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_vmdeck"))
            .args(args)
            .current_dir(dir.path())
            .env("ROCKET_CONFIG", &config)
            .env("ROCKET_SECRET_KEY", "x".repeat(64))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::from(writer.try_clone().unwrap()))
            .stderr(std::process::Stdio::piped())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "vmdeck {args:?} crashed: {stderr}");
        assert_ne!(out.status.code(), Some(101), "vmdeck {args:?}: {stderr}");
    }
}
