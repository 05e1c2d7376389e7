//! A libvirt VM's screen for the browser console: which VNC device, and how to reach it.
//!
//! On a local connection (`qemu:///system`, `qemu+unix://…`) libvirt hands over a socket already
//! connected to the VM's VNC server (`virDomainOpenGraphicsFD`, with VNC authentication skipped):
//! no TCP port needs to be reachable and no VNC password is needed. Over a remote transport
//! (`qemu+ssh://kvm1/system`) a socket cannot be passed, so vmdeck connects to the address and
//! port in the live domain XML, and says plainly when that address is the remote host's own
//! loopback. The host key `console` (`auto`, `handover`, `direct`) can force either way.
//!
//! [`route`] is the decision, a pure function of the XML's graphics and the URI, so every case
//! is unit tested; [`open`] carries it out on the connection.

use std::net::IpAddr;

use virt::connect::Connect;
use virt::domain::Domain;
use virt::enumutil::Enum;
use virt::error::ErrorNumber;

use super::settings::ConsoleVia;
use super::xml::Graphics;
use crate::backend::{BackendError, DisplayError};
use crate::config::uri::HostUri;

/// `VIR_DOMAIN_OPEN_GRAPHICS_SKIPAUTH`: the handed-over socket skips VNC authentication (the
/// caller already proved who it is to libvirt, and vmdeck to its user).
const SKIPAUTH: u32 = 1;

/// How to reach a VM's VNC server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Ask libvirt for a connected socket to graphics device number `index`.
    HandOver { index: u32 },
    /// Connect over TCP.
    Tcp { host: String, port: u16 },
    /// Connect to the VNC server's unix socket (local hosts only).
    Unix { path: String },
}

/// Where the host is, from its URI.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Place {
    /// libvirt's in-process test driver: domains without a real screen.
    TestDriver,
    /// This machine, over a unix socket: libvirt can hand over a file descriptor.
    Local,
    /// Another machine (`host`), over ssh, tcp or tls.
    Remote { host: String },
}

fn place(uri: &HostUri) -> Place {
    let Ok(url) = url::Url::parse(uri.expose()) else { return Place::Local };
    let mut scheme = url.scheme().splitn(2, '+');
    let driver = scheme.next().unwrap_or_default();
    let transport = scheme.next();
    if driver == "test" {
        return Place::TestDriver;
    }
    let host = url.host_str().unwrap_or_default().trim_matches(['[', ']']).to_string();
    let local_host = host.is_empty() || host == "localhost" || is_loopback(&host);
    match transport {
        None | Some("unix") if local_host => Place::Local,
        // A remote transport to this very machine still cannot pass a file descriptor.
        _ if local_host => Place::Remote { host: "127.0.0.1".into() },
        _ => Place::Remote { host },
    }
}

fn is_loopback(addr: &str) -> bool {
    addr == "localhost" || addr.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn is_wildcard(addr: &str) -> bool {
    addr.parse::<IpAddr>().is_ok_and(|ip| ip.is_unspecified())
}

/// Whether the host at `uri` can show screens at all (the test driver cannot).
pub fn support(uri: &HostUri) -> Result<(), String> {
    match place(uri) {
        Place::TestDriver => Err(TEST_DRIVER.into()),
        Place::Local | Place::Remote { .. } => Ok(()),
    }
}

const TEST_DRIVER: &str = "libvirt's test driver simulates VMs without a real screen, so there \
                           is nothing to show (the console works with QEMU/KVM hosts)";

/// Decides how to reach the VM's first VNC device, or why it cannot be reached.
pub fn route(graphics: &[Graphics], uri: &HostUri, via: ConsoleVia) -> Result<Route, DisplayError> {
    let Some((index, vnc)) = graphics.iter().enumerate().find(|(_, g)| g.kind == "vnc") else {
        let other = graphics.first().map(|g| g.kind.to_uppercase());
        return Err(DisplayError::NoVnc(other));
    };
    let index = u32::try_from(index).unwrap_or(u32::MAX);
    match (place(uri), via) {
        (Place::TestDriver, _) => Err(DisplayError::Unsupported(TEST_DRIVER.into())),
        (Place::Local, ConsoleVia::Auto | ConsoleVia::Handover) => Ok(Route::HandOver { index }),
        (Place::Local, ConsoleVia::Direct) => direct(vnc, None),
        (Place::Remote { .. }, ConsoleVia::Handover) => Err(DisplayError::Unsupported(
            "this host's `console = \"handover\"` needs a local libvirt connection (qemu:///system \
             or qemu+unix://): libvirt cannot pass a socket over a remote transport"
                .into(),
        )),
        (Place::Remote { host }, _) => direct(vnc, Some(&host)),
    }
}

/// A TCP (or unix socket) route to `vnc`; `remote` is the host's name when it is not this
/// machine.
fn direct(vnc: &Graphics, remote: Option<&String>) -> Result<Route, DisplayError> {
    if let Some(path) = &vnc.socket {
        return match remote {
            None => Ok(Route::Unix { path: path.clone() }),
            Some(host) => Err(DisplayError::Unreachable(format!(
                "the VM's display is the unix socket {path} on {host}, which only that host can \
                 open. Make it listen on a management network address, or use a local libvirt \
                 connection on that host"
            ))),
        };
    }
    let Some(port) = vnc.port else {
        return Err(DisplayError::Unsupported(
            "the VM's VNC display has no port yet (libvirt assigns one when the VM starts)".into(),
        ));
    };
    let listen = vnc.listen.clone().unwrap_or_else(|| "127.0.0.1".into());
    match remote {
        None if is_wildcard(&listen) => Ok(Route::Tcp { host: "127.0.0.1".into(), port }),
        None => Ok(Route::Tcp { host: listen, port }),
        Some(host) if is_loopback(&listen) => Err(DisplayError::Unreachable(format!(
            "the VM's display listens on {listen}:{port} of {host}, which only {host} itself can \
             reach. Open an SSH tunnel from vmdeck's machine (ssh -N -L {port}:{listen}:{port} \
             {host}) and connect this host with a local URI, or make the VM listen on a \
             management network address (<graphics type='vnc' listen='…'>)"
        ))),
        Some(host) if is_wildcard(&listen) => Ok(Route::Tcp { host: host.clone(), port }),
        Some(_) => Ok(Route::Tcp { host: listen, port }),
    }
}

/// What [`open`] found: a socket libvirt handed over, or where to connect.
pub enum Opened {
    Fd(std::os::fd::OwnedFd),
    Tcp { host: String, port: u16 },
    Unix { path: String },
}

/// Looks the VM up, checks it runs, reads its live XML and either takes a handed-over socket
/// from libvirt or returns where to connect. Runs on the blocking pool.
pub fn open(
    conn: &Connect,
    uuid: &str,
    uri: &HostUri,
    via: ConsoleVia,
) -> Result<Result<Opened, DisplayError>, BackendError> {
    let dom = super::connection::lookup(conn, uuid)?;
    let (state, _) = dom.state().map_err(|e| hypervisor("reading the VM's state", e))?;
    let (normal, _, _) = super::describe_state(state.to_raw(), 0);
    if !matches!(normal, crate::domain::PowerState::Running | crate::domain::PowerState::Paused) {
        return Ok(Err(DisplayError::NotRunning(normal.label().to_string())));
    }
    let xml = dom.xml_desc(0).map_err(|e| hypervisor("reading the VM's definition", e))?;
    let parsed = super::xml::parse_domain(&xml).map_err(BackendError::Malformed)?;
    Ok(match route(&parsed.graphics, uri, via) {
        Ok(Route::HandOver { index }) => hand_over(&dom, index).map(Opened::Fd),
        Ok(Route::Tcp { host, port }) => Ok(Opened::Tcp { host, port }),
        Ok(Route::Unix { path }) => Ok(Opened::Unix { path }),
        Err(e) => Err(e),
    })
}

fn hand_over(dom: &Domain, index: u32) -> Result<std::os::fd::OwnedFd, DisplayError> {
    match dom.open_graphics_fd(index, SKIPAUTH) {
        Ok(fd) => Ok(owned(fd)),
        Err(e) => match e.code() {
            Enum::Known(ErrorNumber::NoSupport | ErrorNumber::OperationUnsupported) => {
                Err(DisplayError::Unsupported(format!(
                    "this host's libvirt cannot hand over the VM's display: {}",
                    e.message()
                )))
            }
            _ => Err(DisplayError::Host(hypervisor("opening the VM's display", e))),
        },
    }
}

/// Takes ownership of the descriptor libvirt returned.
#[allow(unsafe_code)] // The one descriptor virDomainOpenGraphicsFD returns is ours to close.
fn owned(fd: u32) -> std::os::fd::OwnedFd {
    use std::os::fd::FromRawFd;
    // SAFETY: libvirt returns a fresh, open descriptor that nothing else owns or closes.
    unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) }
}

fn hypervisor(what: &str, e: virt::error::Error) -> BackendError {
    BackendError::Hypervisor(format!("{what}: {}", e.message()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vnc(port: Option<u16>, listen: Option<&str>) -> Graphics {
        Graphics { kind: "vnc".into(), port, listen: listen.map(str::to_string), socket: None }
    }

    fn uri(s: &str) -> HostUri {
        HostUri::parse(s).unwrap()
    }

    #[test]
    fn a_local_connection_gets_a_handed_over_socket_for_the_first_vnc_device() {
        let spice = Graphics { kind: "spice".into(), ..Graphics::default() };
        let g = [spice, vnc(Some(5900), Some("127.0.0.1"))];
        for u in ["qemu:///system", "qemu:///session", "qemu+unix:///system?socket=/tmp/s"] {
            assert_eq!(route(&g, &uri(u), ConsoleVia::Auto).unwrap(), Route::HandOver { index: 1 });
        }
    }

    #[test]
    fn a_remote_host_is_reached_at_its_listen_address_or_told_why_not() {
        let remote = uri("qemu+ssh://root@kvm1.example.org/system");
        let any = [vnc(Some(5901), Some("0.0.0.0"))];
        assert_eq!(
            route(&any, &remote, ConsoleVia::Auto).unwrap(),
            Route::Tcp { host: "kvm1.example.org".into(), port: 5901 }
        );
        let mgmt = [vnc(Some(5902), Some("10.1.2.3"))];
        assert_eq!(
            route(&mgmt, &remote, ConsoleVia::Auto).unwrap(),
            Route::Tcp { host: "10.1.2.3".into(), port: 5902 }
        );
        let lo = [vnc(Some(5903), Some("127.0.0.1"))];
        let e = route(&lo, &remote, ConsoleVia::Auto).unwrap_err().to_string();
        assert!(e.contains("not reachable") && e.contains("ssh -N -L 5903:127.0.0.1:5903"), "{e}");
        let e = route(&lo, &remote, ConsoleVia::Handover).unwrap_err().to_string();
        assert!(e.contains("local libvirt connection"), "{e}");
    }

    #[test]
    fn direct_on_a_local_host_connects_to_the_listen_address_or_socket() {
        let local = uri("qemu:///system");
        let g = [vnc(Some(5900), Some("0.0.0.0"))];
        assert_eq!(
            route(&g, &local, ConsoleVia::Direct).unwrap(),
            Route::Tcp { host: "127.0.0.1".into(), port: 5900 }
        );
        let sock = [Graphics { socket: Some("/run/vnc.sock".into()), ..vnc(None, None) }];
        assert_eq!(
            route(&sock, &local, ConsoleVia::Direct).unwrap(),
            Route::Unix { path: "/run/vnc.sock".into() }
        );
        let unstarted = [vnc(None, Some("127.0.0.1"))];
        assert!(route(&unstarted, &local, ConsoleVia::Direct).is_err());
    }

    #[test]
    fn no_vnc_device_and_the_test_driver_say_why() {
        let e = route(&[], &uri("qemu:///system"), ConsoleVia::Auto).unwrap_err().to_string();
        assert!(e.contains("no VNC display"), "{e}");
        let spice = [Graphics { kind: "spice".into(), ..Graphics::default() }];
        let e = route(&spice, &uri("qemu:///system"), ConsoleVia::Auto).unwrap_err().to_string();
        assert!(e.contains("SPICE"), "{e}");
        let g = [vnc(Some(5900), None)];
        let e = route(&g, &uri("test:///default"), ConsoleVia::Auto).unwrap_err().to_string();
        assert!(e.contains("test driver"), "{e}");
    }
}
