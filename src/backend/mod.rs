//! Hypervisor backends: the [`Backend`] trait every driver implements, the inventory types it
//! returns, [`DriverConfig`], the settings of each driver as a host's configuration holds them,
//! and [`connect`], the factory that picks the backend for a configured host.
//!
//! A backend is one folder (`libvirt/`, `virtualbox/`): its settings type with their validation
//! (`settings.rs`, implementing [`DriverSettings`]), its connection and its parsers. Adding one
//! takes that folder, a `pub mod` line, one line in the `driver_configs!` list and one arm in
//! [`connect`] here; `tests/api/backend_contract.rs` then gives it the behaviour every backend
//! shares.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::keys::{ConfigError, HostKeys};
use crate::config::uri::HostUri;
pub use crate::domain::{AddrSource, AfterRevert, Offer, PowerAction, PowerState, Why};

pub mod libvirt;
pub mod virtualbox;

/// Talks to one hypervisor host. Object-safe so hosts of different drivers sit in one list.
#[async_trait::async_trait]
pub trait Backend: Send + Sync {
    /// Takes an inventory of every VM on the host. Implementations bound the call by their time
    /// limit and never block the async runtime.
    async fn inventory(&self) -> Result<Vec<VmReport>, BackendError>;

    /// Sends a power action to one VM. Ok means the hypervisor accepted it; whether the VM got
    /// there is observed afterwards through [`Backend::vm_state`].
    async fn power(&self, uuid: &str, action: PowerAction) -> Result<(), BackendError>;

    /// The current state of one VM, cheaper than a full inventory: used to confirm power actions.
    async fn vm_state(&self, uuid: &str) -> Result<VmState, BackendError>;

    /// Whether this hypervisor takes `action` for a VM in `state` (`raw_state`: the backend's
    /// own word, as [`VmReport::raw_state`] stored it). The buttons offer only what this
    /// allows and power control refuses the rest before sending anything. The default goes by
    /// the normalised state ([`PowerAction::applies_to`]); a backend narrows it where its
    /// hypervisor refuses more.
    fn offers(&self, action: PowerAction, state: PowerState, raw_state: &str) -> Offer {
        let _ = raw_state;
        Offer::by_state(action, state)
    }

    /// Every snapshot of one VM, read from the hypervisor now. A backend whose
    /// [`Backend::inventory`] already carries them ([`VmReport::snapshots`] is `Some`) still
    /// answers this, for the confirmation of a snapshot request.
    async fn snapshots(&self, uuid: &str) -> Result<Vec<SnapshotReport>, BackendError> {
        let _ = uuid;
        Err(BackendError::Unsupported("this host's driver has no snapshots".into()))
    }

    /// Takes, reverts to or deletes a snapshot of one VM. Ok means the hypervisor did it (these
    /// calls return when the work is done); the request is confirmed once
    /// [`Backend::snapshots`] shows the result.
    async fn snapshot(&self, uuid: &str, op: &SnapshotOp) -> Result<(), BackendError> {
        let _ = (uuid, op);
        Err(BackendError::Unsupported("this host's driver has no snapshots".into()))
    }

    /// What the snapshot forms may offer for this backend's VMs.
    fn snapshot_caps(&self) -> SnapshotCaps {
        SnapshotCaps::default()
    }

    /// Whether this host's VMs can have a browser console at all, or why not (known without
    /// asking the host: the console page says it before trying).
    fn display_support(&self) -> Result<(), String> {
        Err("this host's driver has no display vmdeck can show".into())
    }

    /// Opens a byte stream to one VM's screen, speaking RFB (VNC), for the browser console. The
    /// default: [`Backend::display_support`]'s refusal.
    async fn open_display(&self, uuid: &str) -> Result<DisplayStream, DisplayError> {
        let _ = uuid;
        Err(DisplayError::Unsupported(self.display_support().err().unwrap_or_default()))
    }
}

/// A connection to a VM's VNC server: a socket libvirt handed over, or a TCP connection.
pub trait DisplayIo: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> DisplayIo for T {}

/// An open display connection and how it was reached.
pub struct DisplayStream {
    pub io: Box<dyn DisplayIo>,
    /// How the connection was made, for the audit log: "socket handed over by libvirt",
    /// "127.0.0.1:5900".
    pub via: String,
}

/// Why a VM's screen cannot be shown, in words an operator can act on.
#[derive(Debug, thiserror::Error)]
pub enum DisplayError {
    /// The VM is not running (or paused): it has no screen.
    #[error("the VM is {0}: its screen exists only while it runs")]
    NotRunning(String),
    /// The VM has no graphics device vmdeck can relay; `Some` names the one it has (SPICE).
    #[error("{}", match .0 {
        Some(kind) => format!("the VM's display is {kind}, not VNC: this console speaks VNC only"),
        None => "the VM has no VNC display (no <graphics type='vnc'> device)".to_string(),
    })]
    NoVnc(Option<String>),
    /// This host's driver cannot show a screen at all (VirtualBox, libvirt's test driver).
    #[error("{0}")]
    Unsupported(String),
    /// The display exists but vmdeck cannot reach it (listening on a remote host's loopback).
    #[error("this host is remote and its display is not reachable: {0}")]
    Unreachable(String),
    /// The host did not answer, or answered an error.
    #[error("{0}")]
    Host(#[from] BackendError),
}

/// One snapshot of a VM as its hypervisor reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotReport {
    /// The hypervisor's identifier: libvirt's snapshot name (unique per domain), VirtualBox's
    /// snapshot UUID.
    pub id: String,
    pub name: String,
    /// Empty when there is none.
    pub description: String,
    /// The parent snapshot's [`SnapshotReport::id`]; None for a root.
    pub parent_id: Option<String>,
    /// When the hypervisor says it was taken (ms since the epoch); None where it does not say
    /// (VirtualBox's list): vmdeck then shows when it first saw it.
    pub created_at_ms: Option<i64>,
    /// The VM state captured, in the hypervisor's words (libvirt: `running`, `shutoff`,
    /// `disk-snapshot`…); empty where unknown.
    pub vm_state: String,
    /// Whether the VM's memory was captured (reverting resumes the running guest).
    pub with_memory: bool,
    /// The snapshot the VM's current state descends from (libvirt's and VirtualBox's
    /// "current snapshot").
    pub current: bool,
}

/// A snapshot request as sent to a backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnapshotOp {
    /// Take a snapshot named `name`; `with_memory` is asked only where
    /// [`SnapshotCaps::memory_choice`] offers it.
    Take { name: String, description: String, with_memory: bool },
    /// Revert to the snapshot whose id is `id`, leaving the VM as `after` says.
    Revert { id: String, after: AfterRevert },
    /// Delete the snapshot whose id is `id` (children are kept).
    Delete { id: String },
}

/// What a backend's snapshots can do, for the forms: all false means no snapshots at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct SnapshotCaps {
    /// Snapshots can be listed, taken, reverted to and deleted.
    pub supported: bool,
    /// The take form may offer the choice: a running VM's snapshot with or without its memory.
    pub memory_choice: bool,
    /// Without that choice: whether a running VM's snapshot includes its memory (the form
    /// says so).
    pub running_with_memory: bool,
    /// A revert can leave the VM running or paused, whatever the snapshot captured.
    pub revert_choose_state: bool,
}

/// One VM's state as a backend reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmState {
    pub state: PowerState,
    pub raw_state: String,
    pub state_reason: String,
}

/// Why a backend call failed, in words an operator can act on.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BackendError {
    /// The host could not be reached or the connection broke.
    #[error("cannot connect to {uri}: {message}")]
    Connect { uri: String, message: String },
    /// After failures, the backend waits before it connects again.
    #[error("not reconnecting yet after {failures} failed attempt(s): next try in {retry_in_secs} s (last error: {last_error})")]
    Backoff { failures: u32, retry_in_secs: u64, last_error: String },
    /// The call did not finish within its time limit.
    #[error("the host did not answer within {0:?}")]
    Timeout(Duration),
    /// An earlier call is still stuck inside the hypervisor library.
    #[error("an earlier call to this host has not returned yet (the host is hanging)")]
    Busy,
    /// The hypervisor answered with an error.
    #[error("{0}")]
    Hypervisor(String),
    /// The VM does not exist (any more) on the host.
    #[error("the VM does not exist on this host (it may have been deleted)")]
    NoSuchVm,
    /// The VM is not in a state that allows the action.
    #[error("the VM is not in a state that allows this: {0}")]
    InvalidState(String),
    /// This host's hypervisor (or its driver) cannot do the action at all.
    #[error("{0}")]
    Unsupported(String),
    /// The hypervisor answered something vmdeck could not understand.
    #[error("unexpected answer from the hypervisor: {0}")]
    Malformed(String),
}

/// Everything a backend reports about one VM in one poll.
#[derive(Debug, Clone, PartialEq)]
pub struct VmReport {
    pub uuid: String,
    pub name: String,
    pub state: PowerState,
    /// The backend's own state word (libvirt: `running`, `blocked`, `pmsuspended`...).
    pub raw_state: String,
    /// The backend's reason for the state, in words (`booted`, `destroyed`...).
    pub state_reason: String,
    pub config: VmConfig,
    /// Resident memory of the VM process, where the backend knows it.
    pub memory_used_kib: Option<u64>,
    pub counters: Counters,
    /// Current allocation of each disk, by target (changes while the VM writes).
    pub disk_usage: Vec<DiskUsage>,
    pub addresses: Vec<IpAddress>,
    /// The VM's snapshots when the inventory reads them at no extra cost (VirtualBox's
    /// `showvminfo` lists them); None when they were not read in this poll (libvirt: the
    /// poller asks [`Backend::snapshots`] only when it needs to).
    pub snapshots: Option<Vec<SnapshotReport>>,
}

/// The configuration part of a report: stored as a new version only when it changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct VmConfig {
    pub vcpus: u32,
    pub memory_max_kib: u64,
    pub memory_current_kib: u64,
    pub os_type: String,
    pub autostart: bool,
    pub persistent: bool,
    pub disks: Vec<Disk>,
    pub nics: Vec<Nic>,
    /// The VM's remote display, as its protocol's lower-case name (`vnc`, `spice`, `rdp`);
    /// None when it has none (or the backend cannot tell). libvirt: the first `<graphics>`
    /// device, `vnc` if any is; VirtualBox: `rdp` while VRDE is enabled. Also stored in
    /// `vms.graphics`, which the pages read to offer the console.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub graphics: Option<String>,
}

impl VmConfig {
    /// Sum of the known disk capacities.
    pub fn disk_capacity_bytes(&self) -> u64 {
        self.disks.iter().filter_map(|d| d.capacity_bytes).sum()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Disk {
    /// Guest device name, e.g. `vda`.
    pub target: String,
    /// `disk`, `cdrom`, `floppy` or `lun`.
    pub device: String,
    pub source: Option<String>,
    pub bus: Option<String>,
    /// Size the guest sees.
    pub capacity_bytes: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskUsage {
    pub target: String,
    /// Host storage in use by the image.
    pub allocation_bytes: Option<u64>,
    /// Size of the image container on the host.
    pub physical_bytes: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Nic {
    pub mac: String,
    pub model: Option<String>,
    /// `network`, `bridge`, `user`, `direct`...
    pub kind: String,
    /// The network or bridge name it is attached to.
    pub source: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, PartialOrd, Ord)]
pub struct IpAddress {
    /// MAC of the NIC that carries it, lower case.
    pub mac: String,
    pub addr: std::net::IpAddr,
    pub prefix: u8,
    pub source: AddrSource,
}

/// Cumulative counters since the VM (process) started; None where the backend cannot tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Counters {
    pub cpu_time_ns: Option<u64>,
    pub disk_read_bytes: Option<u64>,
    pub disk_write_bytes: Option<u64>,
    pub net_rx_bytes: Option<u64>,
    pub net_tx_bytes: Option<u64>,
}

/// Sorts addresses IPv4 first, then IPv6, each in address order: the order the list shows.
pub fn sort_addresses(addrs: &mut [IpAddress]) {
    addrs.sort_by_key(|a| (a.addr.is_ipv6(), a.addr));
}

/// What a backend's settings type gives the configuration: the `driver` value that picks it,
/// the keys it reads, their validation and the host's public face.
pub trait DriverSettings: Sized {
    /// The `driver` key's value.
    const DRIVER: &'static str;
    /// The keys of a `[[hosts]]` table this driver reads besides `name` and `driver`, so that
    /// another driver's key given to this one is refused with a hint.
    const KEYS: &'static [&'static str];

    /// Validates the host's keys; every error names its key (`hosts[0].uri`).
    fn from_keys(keys: &HostKeys) -> Result<Self, ConfigError>;

    /// Where the host is reached, safe to store and show (see [`HostUri::redacted`]).
    fn uri(&self) -> HostUri;
}

/// Declares [`DriverConfig`], one variant per driver, with what the configuration needs of it.
macro_rules! driver_configs {
    ($($variant:ident($settings:ty),)+) => {
        /// A host's driver with that driver's settings: the `driver` key of a `[[hosts]]` table
        /// picks the variant, the table's other keys are its settings.
        #[derive(Debug, Clone)]
        pub enum DriverConfig {
            $($variant($settings),)+
        }

        impl DriverConfig {
            /// Every driver, and the keys it reads.
            const DRIVERS: &'static [(&'static str, &'static [&'static str])] =
                &[$((<$settings>::DRIVER, <$settings>::KEYS),)+];

            /// The `driver` key's value.
            pub fn name(&self) -> &'static str {
                match self {
                    $(DriverConfig::$variant(_) => <$settings>::DRIVER,)+
                }
            }

            /// Where the host is reached, safe to store and show.
            pub fn uri(&self) -> HostUri {
                match self {
                    $(DriverConfig::$variant(s) => s.uri(),)+
                }
            }

            fn parse(driver: &str, keys: &HostKeys) -> Option<Result<Self, ConfigError>> {
                $(if driver == <$settings>::DRIVER {
                    return Some(<$settings>::from_keys(keys).map(DriverConfig::$variant));
                })+
                None
            }
        }
    };
}

driver_configs! {
    Libvirt(libvirt::LibvirtSettings),
    Virtualbox(virtualbox::VirtualBoxSettings),
}

impl DriverConfig {
    /// Every driver's name, as the `driver` key spells it.
    pub fn names() -> impl Iterator<Item = &'static str> {
        Self::DRIVERS.iter().map(|(name, _)| *name)
    }

    /// The settings of a host whose `driver` key is `driver`, from the table's other keys.
    pub fn from_keys(driver: &str, keys: &HostKeys) -> Result<Self, ConfigError> {
        let Some(own) = Self::DRIVERS.iter().find(|(name, _)| *name == driver).map(|d| d.1) else {
            let known: Vec<&str> = Self::names().collect();
            return Err(keys.error(
                "driver",
                format!("unknown driver {driver:?} (known: {})", known.join(", ")),
            ));
        };
        // Another driver's key is a mix-up rather than a typo: say whose it is.
        for given in keys.names().filter(|k| !own.contains(k)) {
            if let Some((other, _)) = Self::DRIVERS.iter().find(|(_, ks)| ks.contains(&given)) {
                return Err(keys.error(given, format!("only used with driver = {other:?}")));
            }
        }
        Self::parse(driver, keys).expect("every driver in DRIVERS parses")
    }
}

/// Builds the backend for a configured host's driver settings (`HostConfig::driver`).
/// `call_timeout` bounds an ordinary call (a poll, a power action, a snapshot listing);
/// `snapshot_timeout` a snapshot take, revert or delete, which can take minutes.
pub fn connect(
    driver: &DriverConfig,
    call_timeout: Duration,
    snapshot_timeout: Duration,
) -> Arc<dyn Backend> {
    match driver {
        #[cfg(feature = "libvirt")]
        DriverConfig::Libvirt(s) => {
            Arc::new(libvirt::LibvirtBackend::new(s, call_timeout, snapshot_timeout))
        }
        #[cfg(not(feature = "libvirt"))]
        DriverConfig::Libvirt(_) => {
            // Config validation refuses this combination; keep the factory total anyway.
            let _ = (call_timeout, snapshot_timeout);
            Arc::new(Unavailable("built without the libvirt feature"))
        }
        DriverConfig::Virtualbox(s) => {
            Arc::new(virtualbox::VirtualBoxBackend::new(s.clone(), call_timeout, snapshot_timeout))
        }
    }
}

/// A backend that always fails with a fixed reason.
#[cfg(not(feature = "libvirt"))]
struct Unavailable(&'static str);

#[cfg(not(feature = "libvirt"))]
#[async_trait::async_trait]
impl Backend for Unavailable {
    async fn inventory(&self) -> Result<Vec<VmReport>, BackendError> {
        Err(BackendError::Hypervisor(self.0.to_string()))
    }
    async fn power(&self, _: &str, _: PowerAction) -> Result<(), BackendError> {
        Err(BackendError::Hypervisor(self.0.to_string()))
    }
    async fn vm_state(&self, _: &str) -> Result<VmState, BackendError> {
        Err(BackendError::Hypervisor(self.0.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;

    fn host_error(table: &str) -> Option<ConfigError> {
        use rocket::figment::providers::{Format, Toml};
        let figment = rocket::figment::Figment::from(Toml::string(table)).select("debug");
        Settings::from_figment(&figment).err()
    }

    #[test]
    fn every_key_a_driver_declares_is_one_its_settings_read() {
        for (driver, keys) in DriverConfig::DRIVERS {
            for key in *keys {
                let table = format!("[[hosts]]\nname = 'a'\ndriver = '{driver}'\n{key} = 0\n");
                if let Some(e) = host_error(&table) {
                    assert!(!e.message.contains("unknown field"), "{driver}: {key}: {e}");
                    assert!(!e.message.contains("only used with"), "{driver}: {key}: {e}");
                }
            }
        }
    }

    #[test]
    fn another_drivers_key_is_refused_naming_that_driver() {
        let e = host_error(
            "[[hosts]]\nname = 'a'\ndriver = 'libvirt'\nuri = 'test:///default'\ncommand_timeout_secs = 5\n",
        )
        .expect("refused");
        assert_eq!(e.key, "hosts[0].command_timeout_secs");
        assert_eq!(e.message, "only used with driver = \"virtualbox\"");
        let e = host_error("[[hosts]]\nname = 'a'\ndriver = 'xen'\n").expect("refused");
        assert_eq!(e.message, "unknown driver \"xen\" (known: libvirt, virtualbox)");
    }
}
