//! The libvirt backend: its host settings ([`settings`], always built, so that a vmdeck built
//! without libvirt still names the problem in a host's configuration), and, with the `libvirt`
//! feature, its connection ([`connection`]), the bulk stats call ([`bulk`]) the domain XML
//! parser ([`xml`]), snapshots ([`snapshots`]) and the console's display ([`display`]).

mod offers;
pub mod settings;

#[cfg(feature = "libvirt")]
mod bulk;
#[cfg(feature = "libvirt")]
mod connection;
#[cfg(feature = "libvirt")]
pub mod display;
#[cfg(feature = "libvirt")]
pub mod snapshots;
#[cfg(feature = "libvirt")]
pub mod xml;

#[cfg(feature = "libvirt")]
pub use connection::{describe_state, LibvirtBackend};
pub use offers::offers;
pub use settings::{ConsoleVia, LibvirtSettings};
