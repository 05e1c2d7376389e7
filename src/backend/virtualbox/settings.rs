//! A VirtualBox host's keys in a `[[hosts]]` table (`driver = "virtualbox"`) and their
//! validation.

use std::time::Duration;

use serde::Deserialize;

use crate::backend::DriverSettings;
use crate::config::keys::{ConfigError, HostKeys};
use crate::config::uri::HostUri;

/// How vmdeck runs `VBoxManage` for a VirtualBox host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VirtualBoxSettings {
    /// The executable (`vboxmanage` key): a path, or a name looked up on `PATH` (on the remote
    /// side when a `command_prefix` such as `ssh` runs it).
    pub vboxmanage: String,
    /// Arguments placed before the executable (`command_prefix` key), e.g. `ssh -o
    /// BatchMode=yes vbox@desk1` or `sudo -u vbox`; empty to run it directly.
    pub command_prefix: Vec<String>,
    /// Time limit for one VBoxManage command (`command_timeout_secs` key).
    pub command_timeout: Duration,
}

pub const DEFAULT_VBOXMANAGE: &str = "VBoxManage";
pub const DEFAULT_COMMAND_TIMEOUT_SECS: u64 = 30;
pub const MAX_COMMAND_TIMEOUT_SECS: u64 = 600;

impl Default for VirtualBoxSettings {
    fn default() -> Self {
        VirtualBoxSettings {
            vboxmanage: DEFAULT_VBOXMANAGE.to_string(),
            command_prefix: Vec::new(),
            command_timeout: Duration::from_secs(DEFAULT_COMMAND_TIMEOUT_SECS),
        }
    }
}

/// The keys as written, before validation.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVirtualBox {
    vboxmanage: Option<String>,
    command_prefix: Option<Vec<String>>,
    command_timeout_secs: Option<u64>,
    /// Read only to refuse it with a hint: a libvirt habit.
    uri: Option<serde::de::IgnoredAny>,
}

impl DriverSettings for VirtualBoxSettings {
    const DRIVER: &'static str = "virtualbox";
    const KEYS: &'static [&'static str] =
        &["vboxmanage", "command_prefix", "command_timeout_secs", "uri"];

    fn from_keys(keys: &HostKeys) -> Result<Self, ConfigError> {
        let raw: RawVirtualBox = keys.extract()?;
        if raw.uri.is_some() {
            return Err(keys.error(
                "uri",
                "not used by the virtualbox driver: set vboxmanage (and command_prefix for a remote host) instead",
            ));
        }
        let vboxmanage = raw.vboxmanage.unwrap_or_else(|| DEFAULT_VBOXMANAGE.to_string());
        if vboxmanage.is_empty() || vboxmanage.trim() != vboxmanage || vboxmanage.contains('\0') {
            return Err(keys
                .error("vboxmanage", "must be a path or command name without surrounding spaces"));
        }
        let command_prefix = raw.command_prefix.unwrap_or_default();
        if let Some(i) = command_prefix.iter().position(|w| w.is_empty() || w.contains('\0')) {
            return Err(keys.error(&format!("command_prefix[{i}]"), "must be a non-empty argument"));
        }
        let secs = raw.command_timeout_secs.unwrap_or(DEFAULT_COMMAND_TIMEOUT_SECS);
        if !(1..=MAX_COMMAND_TIMEOUT_SECS).contains(&secs) {
            return Err(keys.error(
                "command_timeout_secs",
                format!("{secs} is out of range: use 1 to {MAX_COMMAND_TIMEOUT_SECS} seconds"),
            ));
        }
        Ok(VirtualBoxSettings {
            vboxmanage,
            command_prefix,
            command_timeout: Duration::from_secs(secs),
        })
    }

    /// A VirtualBox host has no URI: it is shown by the command line vmdeck runs, secrets masked.
    fn uri(&self) -> HostUri {
        let mut words = self.command_prefix.clone();
        words.push(self.vboxmanage.clone());
        HostUri::command(&words)
    }
}
