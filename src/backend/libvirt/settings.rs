//! A libvirt host's keys in a `[[hosts]]` table (`driver = "libvirt"`) and their validation.

use serde::Deserialize;

use crate::backend::DriverSettings;
use crate::config::keys::{ConfigError, HostKeys};
use crate::config::uri::HostUri;

/// How vmdeck reaches a libvirt host.
#[derive(Debug, Clone)]
pub struct LibvirtSettings {
    /// The connection URI (`uri` key), e.g. `qemu+ssh://kvm1/system`.
    pub uri: HostUri,
    /// How the browser console reaches a VM's screen (`console` key).
    pub console: ConsoleVia,
}

/// How the browser console reaches a libvirt VM's VNC server (`console` key of a host).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ConsoleVia {
    /// A socket handed over by libvirt on a local connection, else the listen address.
    #[default]
    Auto,
    /// Only a socket handed over by libvirt (local connections).
    Handover,
    /// Only the VNC server's own listen address (or unix socket) from the live XML.
    Direct,
}

impl ConsoleVia {
    fn parse(s: &str) -> Option<ConsoleVia> {
        match s {
            "auto" => Some(ConsoleVia::Auto),
            "handover" => Some(ConsoleVia::Handover),
            "direct" => Some(ConsoleVia::Direct),
            _ => None,
        }
    }
}

/// The keys as written, before validation.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLibvirt {
    uri: Option<String>,
    console: Option<String>,
}

impl LibvirtSettings {
    /// A host at `uri` with the other keys at their defaults.
    pub fn new(uri: HostUri) -> Self {
        LibvirtSettings { uri, console: ConsoleVia::default() }
    }
}

impl DriverSettings for LibvirtSettings {
    const DRIVER: &'static str = "libvirt";
    const KEYS: &'static [&'static str] = &["uri", "console"];

    fn from_keys(keys: &HostKeys) -> Result<Self, ConfigError> {
        if !cfg!(feature = "libvirt") {
            return Err(keys.error("driver", "this vmdeck was built without the `libvirt` feature"));
        }
        let raw: RawLibvirt = keys.extract()?;
        let uri = raw.uri.ok_or_else(|| keys.error("uri", "missing"))?;
        let uri = HostUri::parse(&uri).map_err(|m| keys.error("uri", m))?;
        let console = match raw.console.as_deref() {
            None => ConsoleVia::Auto,
            Some(v) => ConsoleVia::parse(v).ok_or_else(|| {
                keys.error(
                    "console",
                    format!("{v:?} is not one of \"auto\", \"handover\", \"direct\""),
                )
            })?,
        };
        Ok(LibvirtSettings { uri, console })
    }

    fn uri(&self) -> HostUri {
        self.uri.clone()
    }
}
