//! The real `vmdeck` binary, as the CLI tests, the configuration tests and the crash tests run it.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};

/// Runs `vmdeck user ARGS` with `config` as its Rocket.toml (in the config's directory, where a
/// relative database URL points); `stdin` feeds the password. Returns (exit success, output).
pub fn vmdeck_user(config: &Path, args: &[&str], stdin: &str) -> (bool, String) {
    let (status, out) = vmdeck(config, &[&["user"], args].concat(), stdin);
    (status.success(), out)
}

/// Writes `cli.toml` in `dir`, pointing at the test app's database there (`vmdeck.db`), and
/// returns its path.
pub fn config_for_app_database(dir: &Path) -> PathBuf {
    let config = dir.join("cli.toml");
    std::fs::write(
        &config,
        // A host, as the server's configuration has: without one vmdeck runs its demo, which
        // keeps its own database.
        format!(
            "[default]\ndatabase_url = \"sqlite://{}/vmdeck.db\"\n\
             [[default.hosts]]\nname = \"lab\"\ndriver = \"libvirt\"\nuri = \"test:///default\"\n",
            dir.display()
        ),
    )
    .unwrap();
    config
}

/// Runs `vmdeck ARGS` as [`vmdeck_user`] does. Returns (exit status, stdout and stderr).
pub fn vmdeck(config: &Path, args: &[&str], stdin: &str) -> (ExitStatus, String) {
    vmdeck_with_env(config, args, stdin, &[])
}

/// [`vmdeck`] with more environment variables (e.g. `ROCKET_PROFILE`).
pub fn vmdeck_with_env(
    config: &Path,
    args: &[&str],
    stdin: &str,
    env: &[(&str, &str)],
) -> (ExitStatus, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_vmdeck"))
        .args(args)
        .envs(env.iter().copied())
        .current_dir(config.parent().expect("the configuration's directory"))
        .env("ROCKET_CONFIG", config)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let text =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status, text)
}
