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
}

/// The keys as written, before validation.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLibvirt {
    uri: Option<String>,
}

impl DriverSettings for LibvirtSettings {
    const DRIVER: &'static str = "libvirt";
    const KEYS: &'static [&'static str] = &["uri"];

    fn from_keys(keys: &HostKeys) -> Result<Self, ConfigError> {
        if !cfg!(feature = "libvirt") {
            return Err(keys.error("driver", "this vmdeck was built without the `libvirt` feature"));
        }
        let raw: RawLibvirt = keys.extract()?;
        let uri = raw.uri.ok_or_else(|| keys.error("uri", "missing"))?;
        let uri = HostUri::parse(&uri).map_err(|m| keys.error("uri", m))?;
        Ok(LibvirtSettings { uri })
    }

    fn uri(&self) -> HostUri {
        self.uri.clone()
    }
}
