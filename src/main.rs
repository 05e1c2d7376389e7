//! The `vmdeck` command: installs telemetry, reads the configuration and runs the server.

use clap::{Parser, Subcommand};

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
}

#[rocket::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    vmdeck::telemetry::init();
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve().await,
    }
}

async fn serve() -> std::process::ExitCode {
    let rocket = match vmdeck::build(rocket::Config::figment()) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("vmdeck: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rocket.launch().await {
        Ok(_) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // Ignite failures were already logged with their cause by the failing fairing.
            eprintln!("vmdeck: could not start: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
