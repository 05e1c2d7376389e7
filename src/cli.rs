//! `vmdeck user ...`: account management from the command line, against the same database as
//! the running server (SQLite WAL lets both work at once). Changes take effect immediately:
//! sessions are checked against the database on every request. `vmdeck audit verify` checks
//! the audit log's hash chain (`audit::chain`).

use std::io::{BufRead, IsTerminal};

use clap::Subcommand;
use sqlx::SqlitePool;

use crate::audit::chain;
use crate::auth::users::{self, UserError};
use crate::domain::Role;
use crate::domain::{Actor, AuditKind, AuditOutcome};
use crate::events;
use crate::events::chain::Link;
use crate::web::format as view;

#[derive(Subcommand, Debug)]
pub enum UserCommand {
    /// Create a user. The password is read from stdin, or prompted for twice on a terminal.
    Add {
        name: String,
        #[arg(long, value_parser = ["viewer", "operator", "admin"])]
        role: String,
    },
    /// List users and their roles.
    List,
    /// Set a user's password (ends their sessions).
    Passwd { name: String },
    /// Change a user's role (takes effect on their next request).
    Role {
        name: String,
        #[arg(value_parser = ["viewer", "operator", "admin"])]
        role: String,
    },
    /// Remove a user (ends their sessions).
    Remove { name: String },
}

#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// Check the audit log's hash chain: prints how many entries were verified and the head
    /// (SEQ:HASH), or the first entry altered, removed or inserted (and exits with 1).
    Verify {
        /// A head printed by an earlier run and kept elsewhere: the chain must still reach it
        /// with that hash, which catches a chain rewritten or cut short since.
        #[arg(long, value_name = "SEQ:HASH")]
        head: Option<Link>,
    },
}

/// Runs one audit command; the error is the message to print.
pub async fn audit(pool: &SqlitePool, cmd: AuditCommand) -> Result<String, String> {
    match cmd {
        AuditCommand::Verify { head } => {
            chain::verify(pool, head).await.map(|s| s.to_string()).map_err(|e| e.to_string())
        }
    }
}

/// Reads a new password: twice from the terminal without echo, or one line from stdin.
fn read_password() -> Result<String, String> {
    if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("New password: ").map_err(|e| e.to_string())?;
        let second = rpassword::prompt_password("Again: ").map_err(|e| e.to_string())?;
        if first != second {
            return Err("the two passwords differ".into());
        }
        Ok(first)
    } else {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line).map_err(|e| e.to_string())?;
        let pw = line.trim_end_matches(['\n', '\r']).to_string();
        if pw.is_empty() {
            return Err("no password on stdin".into());
        }
        Ok(pw)
    }
}

fn cli_actor() -> Actor {
    let who = std::env::var("SUDO_USER")
        .or_else(|_| std::env::var("USER"))
        .unwrap_or_else(|_| "unknown".into());
    Actor { user: Some(format!("cli:{who}")), addr: Some("local".into()) }
}

/// Runs one user command; the error is the message to print.
pub async fn run(pool: &SqlitePool, cmd: UserCommand) -> Result<String, String> {
    let fail = |e: UserError| e.to_string();
    let actor = cli_actor();
    match cmd {
        UserCommand::Add { name, role } => {
            let role = Role::parse(&role).ok_or("unknown role")?;
            let pw = read_password()?;
            users::add(pool, &name, role, pw, false).await.map_err(fail)?;
            events::record_logged(
                pool,
                AuditKind::UserAdded,
                &actor,
                AuditOutcome::Ok,
                Some(role.as_str()),
                Some(&name),
            )
            .await;
            Ok(format!("user {name} added as {}", role.as_str()))
        }
        UserCommand::List => {
            let list = users::list(pool).await.map_err(|e| e.to_string())?;
            if list.is_empty() {
                return Ok("no users yet: add one with `vmdeck user add NAME --role admin`".into());
            }
            let width = list.iter().map(|u| u.name.chars().count()).max().unwrap_or(4).max(4);
            let mut out = format!("{:width$}  {:8}  created\n", "name", "role");
            for u in list {
                out.push_str(&format!(
                    "{:width$}  {:8}  {}{}\n",
                    u.name,
                    u.role.as_str(),
                    view::absolute(u.created_at),
                    if u.demo { "  (demo)" } else { "" }
                ));
            }
            Ok(out.trim_end().to_string())
        }
        UserCommand::Passwd { name } => {
            let pw = read_password()?;
            users::set_password(pool, &name, pw).await.map_err(fail)?;
            events::record_logged(
                pool,
                AuditKind::PasswordChanged,
                &actor,
                AuditOutcome::Ok,
                None,
                Some(&name),
            )
            .await;
            Ok(format!("password of {name} changed; their sessions were ended"))
        }
        UserCommand::Role { name, role } => {
            let role = Role::parse(&role).ok_or("unknown role")?;
            users::set_role(pool, &name, role).await.map_err(fail)?;
            events::record_logged(
                pool,
                AuditKind::RoleChanged,
                &actor,
                AuditOutcome::Ok,
                Some(role.as_str()),
                Some(&name),
            )
            .await;
            Ok(format!("{name} is now {}", role.as_str()))
        }
        UserCommand::Remove { name } => {
            users::remove(pool, &name).await.map_err(fail)?;
            events::record_logged(
                pool,
                AuditKind::UserRemoved,
                &actor,
                AuditOutcome::Ok,
                None,
                Some(&name),
            )
            .await;
            Ok(format!("user {name} removed"))
        }
    }
}

/// The figment with a throwaway secret key in place of the configured one: commands that only
/// use the database never need the server's key.
pub fn without_secret_key(figment: rocket::figment::Figment) -> rocket::figment::Figment {
    use base64::Engine;
    let mut key = [0u8; 64];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut key);
    figment.merge(("secret_key", base64::engine::general_purpose::STANDARD.encode(key)))
}

/// `vmdeck check-config`: the effective configuration with secrets masked, and one attempt to
/// reach each host. Returns the report and the problems (one line each).
pub async fn check_config(figment: &rocket::figment::Figment) -> (String, Vec<String>) {
    let mut out = format!(
        "configuration file: {} (profile {})\n",
        crate::config::config_file(),
        figment.profile()
    );
    let mut problems = Vec::new();
    // The key is checked on its own, then left out of the way of everything else.
    let mut key_shown = None;
    if let Err(e) = crate::config::Settings::from_figment(figment) {
        if e.key != "secret_key" {
            return (out, vec![e.to_string()]);
        }
        match service_key_file(figment) {
            Some((shown, problem)) => {
                key_shown = Some(shown);
                problems.extend(problem);
            }
            None => problems.push(e.to_string()),
        }
    }
    let key_set = figment.find_value("secret_key").is_ok();
    let s = match crate::config::Settings::from_figment(&without_secret_key(figment.clone())) {
        Ok(s) => s,
        Err(e) => return (out, vec![e.to_string()]),
    };
    let address: String = figment.extract_inner("address").unwrap_or_else(|_| "?".into());
    let port: u16 = figment.extract_inner("port").unwrap_or_default();
    let lines = [
        ("address", format!("{address}:{port}")),
        (
            "public_url",
            s.public_url.as_ref().map_or("(not set: plain HTTP)".into(), |u| u.to_string()),
        ),
        ("database_url", s.database_url.clone()),
        (
            "secret_key",
            key_shown
                .unwrap_or_else(|| if key_set { "(set, hidden)" } else { "(not set)" }.to_string()),
        ),
        ("demo", s.demo.to_string()),
        ("poll_interval_secs", s.poll_interval.as_secs().to_string()),
        ("call_timeout_secs", s.call_timeout.as_secs().to_string()),
        ("snapshot_timeout_secs", s.snapshot_timeout.as_secs().to_string()),
        ("session_idle_minutes", (s.session_idle.as_secs() / 60).to_string()),
        ("session_lifetime_hours", (s.session_lifetime.as_secs() / 3600).to_string()),
        ("trusted_proxies", format!("{:?}", s.trusted_proxies)),
        ("healthz_tokens", format!("{} (hidden)", s.healthz_tokens.len())),
        ("metrics_tokens", format!("{} (hidden)", s.metrics.tokens.len())),
        ("metrics_allow", format!("{:?}", s.metrics.allow)),
        ("confirm_timeout_secs", s.confirm_timeout.as_secs().to_string()),
        ("power_concurrency_per_host", s.power_concurrency.to_string()),
        (
            "audit_retention_days",
            s.audit_retention_days.map_or("keep forever".into(), |d| d.to_string()),
        ),
        (
            "retention (raw, 5 min, 1 h, 1 d; days)",
            [s.retention.raw, s.retention.rollup_5m, s.retention.rollup_1h, s.retention.rollup_1d]
                .map(|d| (d.as_secs() / 86_400).to_string())
                .join(", "),
        ),
    ];
    for (k, v) in lines {
        out.push_str(&format!("{k} = {v}\n"));
    }
    out.push_str(&format!("hosts ({}):\n", s.hosts.len()));
    for h in &s.hosts {
        let backend = crate::backend::connect(&h.driver, s.call_timeout, s.snapshot_timeout);
        let started = std::time::Instant::now();
        let status = match backend.inventory().await {
            Ok(vms) => format!("ok: {} VMs in {:.1} s", vms.len(), started.elapsed().as_secs_f64()),
            Err(e) => {
                problems.push(format!("hosts[{}]: cannot take an inventory: {e}", h.name));
                format!("FAILED: {e}")
            }
        };
        out.push_str(&format!("  {}  {}  {}\n", h.name, h.uri().redacted(), status));
    }
    (out.trim_end().to_string(), problems)
}

/// On a server installed from the Debian package, the key the service gets is not in its
/// configuration but in [`SYSTEM_SECRET_ENV`](crate::config::SYSTEM_SECRET_ENV), which the
/// unit reads: check-config checks that one, as the service will get it. Returns what to show
/// for the key and the problem with it, if any; None when no such file is in play.
fn service_key_file(figment: &rocket::figment::Figment) -> Option<(String, Option<String>)> {
    use crate::config::{config_file, SYSTEM_CONFIG, SYSTEM_SECRET_ENV};
    if config_file() != SYSTEM_CONFIG || !std::path::Path::new(SYSTEM_SECRET_ENV).exists() {
        return None;
    }
    let Ok(text) = std::fs::read_to_string(SYSTEM_SECRET_ENV) else {
        // Root only: another user cannot check it (systemd reads it for the service).
        return Some((format!("(in {SYSTEM_SECRET_ENV}, not readable by this user)"), None));
    };
    let key = text.lines().find_map(|l| l.trim().strip_prefix("ROCKET_SECRET_KEY="));
    let problem = match key.map(|k| k.trim().trim_matches('"')) {
        None => Some(format!("secret_key: {SYSTEM_SECRET_ENV} has no ROCKET_SECRET_KEY= line")),
        Some(key) => {
            crate::config::Settings::from_figment(&figment.clone().merge(("secret_key", key)))
                .err()
                .filter(|e| e.key == "secret_key")
                .map(|e| format!("{SYSTEM_SECRET_ENV}: {e}"))
        }
    };
    Some((format!("(in {SYSTEM_SECRET_ENV}, hidden)"), problem))
}

/// `vmdeck backup FILE`: a consistent copy of the database while the server runs (SQLite's
/// `VACUUM INTO` reads one snapshot), readable by its owner only.
pub async fn backup(pool: &SqlitePool, file: &std::path::Path) -> Result<String, String> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = file.to_str().ok_or("the backup's path must be valid UTF-8")?;
    // Created empty and owner-only first (SQLite fills an empty file), so the copy of the
    // password hashes is never readable by others, not even for a moment.
    std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(file).map_err(
        |e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => {
                format!("{} exists already: choose a new file", file.display())
            }
            _ => format!("cannot create {}: {e}", file.display()),
        },
    )?;
    if let Err(e) = sqlx::query("VACUUM INTO ?").bind(path).execute(pool).await {
        let _ = std::fs::remove_file(file);
        return Err(format!("backup to {} failed: {e}", file.display()));
    }
    let size = std::fs::metadata(file).map(|m| m.len()).unwrap_or(0);
    Ok(format!(
        "backed up to {} ({:.1} MiB); to restore, stop vmdeck and put this file in place of the database",
        file.display(),
        size as f64 / 1_048_576.0
    ))
}
