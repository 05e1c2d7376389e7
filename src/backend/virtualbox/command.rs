//! Running `VBoxManage`: never through a shell, with `LC_ALL=C`, a time limit per command after
//! which the child is killed, and at most [`MAX_CONCURRENT_COMMANDS`] commands per host at once.

use std::borrow::Cow;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::process::Command;
use tokio::sync::Semaphore;

use super::VirtualBoxSettings;

/// VBoxManage talks to one VBoxSVC per host; a few commands at once keep a poll of many VMs
/// short without queueing dozens of processes on it.
pub const MAX_CONCURRENT_COMMANDS: usize = 4;

/// Runs VBoxManage for one host.
pub struct Runner {
    settings: VirtualBoxSettings,
    permits: Semaphore,
}

/// What a finished command printed.
#[derive(Debug, Clone)]
pub struct Output {
    /// None when the child was ended by a signal.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Why a command produced no output to judge.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot run {program}: {source}")]
    Spawn { program: String, source: std::io::Error },
    #[error("VBoxManage did not finish within {0:?} (killed)")]
    Timeout(Duration),
    #[error("reading VBoxManage's output failed: {0}")]
    Io(std::io::Error),
}

impl Runner {
    pub fn new(settings: VirtualBoxSettings) -> Self {
        Runner { settings, permits: Semaphore::new(MAX_CONCURRENT_COMMANDS) }
    }

    /// The argument vector for `args`: the prefix, the executable, then `args`.
    pub fn argv(&self, args: &[&str]) -> Vec<String> {
        let s = &self.settings;
        let mut argv = Vec::with_capacity(s.command_prefix.len() + 1 + args.len());
        argv.extend(s.command_prefix.iter().cloned());
        argv.push(s.vboxmanage.clone());
        argv.extend(args.iter().map(|a| a.to_string()));
        argv
    }

    /// `text` typed by a person (a snapshot's name or description) as an argument that reaches
    /// VBoxManage unchanged. Through `ssh`, whose remote shell joins and re-splits the command
    /// line, it is quoted for a POSIX shell, so spaces stay inside it and `;`, `$(...)` or
    /// quotes are not run; run directly or through `sudo`, it is passed as it is.
    pub fn text_arg<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let through_ssh = self
            .settings
            .command_prefix
            .iter()
            .any(|w| Path::new(w).file_name().is_some_and(|f| f == "ssh"));
        if through_ssh {
            Cow::Owned(format!("'{}'", text.replace('\'', "'\\''")))
        } else {
            Cow::Borrowed(text)
        }
    }

    /// Runs one command under `command_timeout` and collects its output. The time limit starts
    /// when the command starts, not while it waits for a free slot (the poll's own limit bounds
    /// that).
    pub async fn run(&self, args: &[&str]) -> Result<Output, RunError> {
        self.run_for(args, self.settings.command_timeout).await
    }

    /// Runs one command under `limit` instead of `command_timeout` (a snapshot take, restore
    /// or delete, which may take minutes); killed past it like any other.
    pub async fn run_for(&self, args: &[&str], limit: Duration) -> Result<Output, RunError> {
        let _permit = self.permits.acquire().await.expect("the semaphore is never closed");
        let argv = self.argv(args);
        let mut child = Command::new(&argv[0])
            .args(&argv[1..])
            .env("LC_ALL", "C")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // A poll that is dropped (its own time limit) takes its children with it.
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| RunError::Spawn { program: argv[0].clone(), source })?;
        let mut stdout = child.stdout.take().expect("stdout is piped");
        let mut stderr = child.stderr.take().expect("stderr is piped");
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let finished = tokio::time::timeout(limit, async {
            let (o, e, status) = tokio::join!(
                stdout.read_to_end(&mut out),
                stderr.read_to_end(&mut err),
                child.wait()
            );
            o.and(e).and(status)
        })
        .await;
        match finished {
            Ok(Ok(status)) => Ok(Output {
                code: status.code(),
                stdout: String::from_utf8_lossy(&out).into_owned(),
                stderr: String::from_utf8_lossy(&err).into_owned(),
            }),
            Ok(Err(e)) => Err(RunError::Io(e)),
            Err(_) => {
                // Kill and reap now, so no hung VBoxManage outlives its time limit.
                let _ = child.start_kill();
                let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
                tracing::warn!(
                    command = %args.join(" "),
                    "VBoxManage timed out after {limit:?}; killed"
                );
                Err(RunError::Timeout(limit))
            }
        }
    }
}
