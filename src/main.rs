//! The `vmdeck` command: installs telemetry, reads the configuration and runs the server, or
//! manages users and verifies the audit log against the same database.

use std::io::Write;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sqlx::SqlitePool;
use vmdeck::cli::{AuditCommand, UserCommand};
use vmdeck::config::Settings;

#[derive(Parser)]
#[command(
    name = "vmdeck",
    version,
    about = "A web console for libvirt and VirtualBox virtual machines"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the web server and the poller (the default).
    Serve,
    /// Manage users (works while the server runs).
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Check the audit log (works while the server runs).
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Print the effective configuration (secrets masked) and try each host once; exits
    /// non-zero with one line per problem.
    CheckConfig,
    /// Write a consistent copy of the database to FILE (works while the server runs).
    Backup {
        /// Where to write the copy; must not exist yet.
        file: std::path::PathBuf,
    },
}

#[rocket::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    vmdeck::telemetry::init();
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve().await,
        Command::User { command } => user(command).await,
        Command::Audit { command } => audit(command).await,
        Command::CheckConfig => check_config().await,
        Command::Backup { file } => match database().await {
            Ok(pool) => report(vmdeck::cli::backup(&pool, &file).await),
            Err(code) => code,
        },
    }
}

async fn serve() -> ExitCode {
    let rocket = match vmdeck::build(vmdeck::config::figment()) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("vmdeck: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rocket.launch().await {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            // Ignite failures were already logged with their cause by the failing fairing.
            eprintln!("vmdeck: could not start: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn user(command: UserCommand) -> ExitCode {
    match database().await {
        Ok(pool) => report(vmdeck::cli::run(&pool, command).await),
        Err(code) => code,
    }
}

async fn audit(command: AuditCommand) -> ExitCode {
    match database().await {
        Ok(pool) => report(vmdeck::cli::audit(&pool, command).await),
        Err(code) => code,
    }
}

async fn check_config() -> ExitCode {
    let (out, problems) = vmdeck::cli::check_config(&vmdeck::config::figment()).await;
    if let Err(code) = print_out(&out) {
        return code;
    }
    for p in &problems {
        eprintln!("vmdeck: {p}");
    }
    if problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Opens the server's database for a command; a failure has been reported when it returns one.
async fn database() -> Result<SqlitePool, ExitCode> {
    // The same configuration as the server, so the same database. The secret key only
    // encrypts cookies: commands never need it, so a throwaway one stands in for it (an
    // admin's shell has no access to the service's key, nor should it).
    let figment = vmdeck::cli::without_secret_key(vmdeck::config::figment());
    let settings = match Settings::from_figment(&figment) {
        Ok(s) => s,
        Err(e) => return Err(fail(e)),
    };
    vmdeck::db::connect_limited(&settings.database_url, settings.database_max_size)
        .await
        .map_err(|e| fail(format!("database_url: cannot open {}: {e:#}", settings.database_url)))
}

/// Prints a command's result: the output on stdout, or the error on stderr with a failure code.
fn report(result: Result<String, String>) -> ExitCode {
    match result {
        Ok(out) => match print_out(&out) {
            Ok(()) => ExitCode::SUCCESS,
            Err(code) => code,
        },
        Err(e) => fail(e),
    }
}

/// Writes a command's output and a newline to stdout. A reader that stopped reading
/// (`vmdeck user list | head -1`, `| grep -q admin`) is not an error: the command did its
/// work, and the shell's pipeline decides. (`println!` would panic there: Rust ignores SIGPIPE,
/// so the write fails with EPIPE.) Any other write error is reported.
fn print_out(out: &str) -> Result<(), ExitCode> {
    match writeln!(std::io::stdout().lock(), "{out}") {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(fail(format!("cannot write the output: {e}"))),
    }
}

fn fail(e: impl std::fmt::Display) -> ExitCode {
    eprintln!("vmdeck: {e}");
    ExitCode::FAILURE
}
