//! The built-in demo host: libvirt's test driver loaded with the lab shipped in `demo/lab.xml`.

use std::path::Path;

use crate::backend::{libvirt::LibvirtSettings, DriverConfig};
use crate::config::{ConfigError, HostConfig, HostName, HostUri, DEMO_HOST};

/// The demo lab's node definition, embedded so the binary runs from anywhere.
pub const LAB_XML: &str = include_str!("../demo/lab.xml");

/// Writes the lab definition into `data_dir` (libvirt's test driver reads a file by absolute
/// path) and returns the demo host.
pub fn host(data_dir: &Path) -> Result<HostConfig, ConfigError> {
    let err = |message: String| ConfigError { key: "database_url".into(), message };
    // Owner-only, like the database that will live beside it (see `db`).
    std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
        .create(data_dir)
        .map_err(|e| err(format!("cannot create data directory {}: {e}", data_dir.display())))?;
    let path = data_dir.join("demo-lab.xml");
    std::fs::write(&path, LAB_XML)
        .map_err(|e| err(format!("cannot write {}: {e}", path.display())))?;
    let abs = std::fs::canonicalize(&path).map_err(|e| err(format!("{}: {e}", path.display())))?;
    let uri = HostUri::parse(&format!("test://{}", abs.display()))
        .map_err(|m| err(format!("demo lab path {}: {m}", abs.display())))?;
    Ok(HostConfig::new(
        HostName::parse(DEMO_HOST).expect("the demo host name is valid"),
        DriverConfig::Libvirt(LibvirtSettings { uri }),
    ))
}
