//! The real `vmdeck` binary, as the CLI tests, the configuration tests and the crash tests run it.
#![allow(dead_code)]

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

/// Runs `vmdeck user ARGS` with `config` as its Rocket.toml (in the config's directory, where a
/// relative database URL points); `stdin` feeds the password. Returns (exit success, output).
pub fn vmdeck_user(config: &Path, args: &[&str], stdin: &str) -> (bool, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_vmdeck"))
        .arg("user")
        .args(args)
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
    (out.status.success(), text)
}
