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
