//! The `vmdeck` command: installs telemetry, reads the configuration and runs the server, or
//! manages users against the same database.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use vmdeck::cli::UserCommand;
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
}

#[rocket::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    vmdeck::telemetry::init();
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve().await,
        Command::User { command } => user(command).await,
    }
}

async fn serve() -> ExitCode {
    let rocket = match vmdeck::build(rocket::Config::figment()) {
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
    // The same configuration as the server, so the same database; the secret key and hosts are
    // not needed here, but a broken configuration is still reported the same way.
    let figment = rocket::Config::figment();
    let settings = match Settings::from_figment(&figment) {
        Ok(s) => s,
        Err(e) if e.key == "secret_key" => {
            match Settings::from_figment(&figment.merge(("secret_key", "cli-does-not-use-it"))) {
                Ok(s) => s,
                Err(e) => return fail(e),
            }
        }
        Err(e) => return fail(e),
    };
    let pool = match vmdeck::db::connect(&settings.database_url).await {
        Ok(p) => p,
        Err(e) => {
            return fail(format!("database_url: cannot open {}: {e:#}", settings.database_url))
        }
    };
    match vmdeck::cli::run(&pool, command).await {
        Ok(out) => {
            println!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

fn fail(e: impl std::fmt::Display) -> ExitCode {
    eprintln!("vmdeck: {e}");
    ExitCode::FAILURE
}
