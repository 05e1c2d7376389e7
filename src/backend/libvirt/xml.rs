//! Reads the parts of libvirt's domain XML that vmdeck shows: vCPUs, memory, OS type, disks
//! and NICs. Pure functions over a string, so every odd document can be unit tested.

use roxmltree::{Document, Node};

use crate::backend::{Disk, Nic};

/// What the domain XML says.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DomainXml {
    pub vcpus: u32,
    pub memory_max_kib: u64,
    pub memory_current_kib: u64,
    pub os_type: String,
    pub disks: Vec<Disk>,
    pub nics: Vec<Nic>,
    /// Host-side interface names (`vnet0`), by NIC index: libvirt's interface stats take these.
    pub nic_targets: Vec<Option<String>>,
    /// The graphics devices, in the domain's order (their index is what
    /// `virDomainOpenGraphicsFD` takes).
    pub graphics: Vec<Graphics>,
}

impl DomainXml {
    /// The VM's display as the inventory records it: `vnc` when any graphics device is VNC
    /// (the one the console can show), else the first device's type; None without one.
    pub fn display_kind(&self) -> Option<String> {
        let vnc = self.graphics.iter().find(|g| g.kind == "vnc");
        vnc.or(self.graphics.first()).map(|g| g.kind.to_ascii_lowercase()).filter(|k| !k.is_empty())
    }
}

/// One `<graphics>` device.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Graphics {
    /// `vnc`, `spice`, `rdp`, `sdl`, `egl-headless`, `dbus`…
    pub kind: String,
    /// The TCP port in the live XML (`-1` or absent while not started, or for a socket).
    pub port: Option<u16>,
    /// The listen address (`listen` attribute or `<listen type='address'>`).
    pub listen: Option<String>,
    /// A unix socket path (`<listen type='socket'>` or the `socket` attribute).
    pub socket: Option<String>,
}

/// Parses a domain definition. Unknown elements are ignored; a document that is not XML or has
/// no `<domain>` root is an error.
pub fn parse_domain(xml: &str) -> Result<DomainXml, String> {
    let doc = Document::parse(xml).map_err(|e| format!("domain XML: {e}"))?;
    let root = doc.root_element();
    if root.tag_name().name() != "domain" {
        return Err(format!("domain XML: root element is <{}>", root.tag_name().name()));
    }
    let vcpu = child(root, "vcpu");
    // `current` is the number of online vCPUs when fewer than the maximum are plugged in.
    let vcpus = vcpu
        .and_then(|n| n.attribute("current").or_else(|| n.text()))
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0);
    let memory_max_kib = child(root, "memory").and_then(memory_kib).unwrap_or(0);
    let memory_current_kib =
        child(root, "currentMemory").and_then(memory_kib).unwrap_or(memory_max_kib);
    let os_type = child(root, "os")
        .and_then(|os| child(os, "type"))
        .and_then(|t| t.text())
        .unwrap_or_default()
        .trim()
        .to_string();

    let mut disks = Vec::new();
    let mut nics = Vec::new();
    let mut nic_targets = Vec::new();
    let mut graphics = Vec::new();
    if let Some(devices) = child(root, "devices") {
        for dev in devices.children().filter(Node::is_element) {
            match dev.tag_name().name() {
                "disk" => {
                    let Some(target) = child(dev, "target").and_then(|t| t.attribute("dev")) else {
                        continue;
                    };
                    let source = child(dev, "source").and_then(|s| {
                        s.attribute("file")
                            .or_else(|| s.attribute("dev"))
                            .or_else(|| s.attribute("name"))
                            .map(str::to_string)
                            .or_else(|| match (s.attribute("pool"), s.attribute("volume")) {
                                (Some(p), Some(v)) => Some(format!("{p}/{v}")),
                                _ => None,
                            })
                    });
                    disks.push(Disk {
                        target: target.to_string(),
                        device: dev.attribute("device").unwrap_or("disk").to_string(),
                        source,
                        bus: child(dev, "target")
                            .and_then(|t| t.attribute("bus"))
                            .map(str::to_string),
                        capacity_bytes: None,
                    });
                }
                "interface" => {
                    let mac = child(dev, "mac")
                        .and_then(|m| m.attribute("address"))
                        .unwrap_or_default()
                        .to_ascii_lowercase();
                    let kind = dev.attribute("type").unwrap_or("unknown").to_string();
                    let source = child(dev, "source").and_then(|s| {
                        s.attribute("network")
                            .or_else(|| s.attribute("bridge"))
                            .or_else(|| s.attribute("dev"))
                            .map(str::to_string)
                    });
                    nics.push(Nic {
                        mac,
                        model: child(dev, "model")
                            .and_then(|m| m.attribute("type"))
                            .map(str::to_string),
                        kind,
                        source,
                    });
                    nic_targets.push(
                        child(dev, "target").and_then(|t| t.attribute("dev")).map(str::to_string),
                    );
                }
                "graphics" => graphics.push(parse_graphics(dev)),
                _ => {}
            }
        }
    }
    Ok(DomainXml {
        vcpus,
        memory_max_kib,
        memory_current_kib,
        os_type,
        disks,
        nics,
        nic_targets,
        graphics,
    })
}

fn parse_graphics(dev: Node) -> Graphics {
    let listen = dev.children().find(|c| c.is_element() && c.tag_name().name() == "listen");
    let listen_type = listen.and_then(|l| l.attribute("type"));
    Graphics {
        kind: dev.attribute("type").unwrap_or_default().to_string(),
        port: dev.attribute("port").and_then(|p| p.parse::<u16>().ok()).filter(|p| *p > 0),
        listen: listen
            .filter(|_| listen_type == Some("address"))
            .and_then(|l| l.attribute("address"))
            .or_else(|| dev.attribute("listen"))
            .filter(|a| !a.is_empty())
            .map(str::to_string),
        socket: listen
            .filter(|_| listen_type == Some("socket"))
            .and_then(|l| l.attribute("socket"))
            .or_else(|| dev.attribute("socket"))
            .map(str::to_string),
    }
}

fn child<'a, 'i>(node: Node<'a, 'i>, name: &str) -> Option<Node<'a, 'i>> {
    node.children().find(|c| c.is_element() && c.tag_name().name() == name)
}

/// A `<memory unit='...'>N</memory>` value in KiB (libvirt's default unit).
fn memory_kib(node: Node) -> Option<u64> {
    let value: u64 = node.text()?.trim().parse().ok()?;
    let bytes_per_unit: u64 = match node.attribute("unit").unwrap_or("KiB") {
        "b" | "bytes" => 1,
        "KB" => 1_000,
        "k" | "KiB" => 1 << 10,
        "MB" => 1_000_000,
        "M" | "MiB" => 1 << 20,
        "GB" => 1_000_000_000,
        "G" | "GiB" => 1 << 30,
        "TB" => 1_000_000_000_000,
        "T" | "TiB" => 1 << 40,
        _ => return None,
    };
    Some(value.checked_mul(bytes_per_unit)? / 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"<domain type='kvm'>
      <name>web-01</name><uuid>6695eb01-f6a4-8304-79aa-97f2502e193f</uuid>
      <memory unit='GiB'>4</memory><currentMemory unit='MiB'>2048</currentMemory>
      <vcpu placement='static' current='2'>4</vcpu>
      <os><type arch='x86_64' machine='pc'>hvm</type></os>
      <devices>
        <disk type='file' device='disk'><source file='/var/lib/libvirt/images/web.qcow2'/>
          <target dev='vda' bus='virtio'/></disk>
        <disk type='volume' device='disk'><source pool='default' volume='data.raw'/>
          <target dev='vdb' bus='virtio'/></disk>
        <disk type='file' device='cdrom'><target dev='sda' bus='sata'/></disk>
        <interface type='network'><mac address='52:54:00:AA:bb:01'/><source network='default'/>
          <target dev='vnet3'/><model type='virtio'/></interface>
        <interface type='bridge'><mac address='52:54:00:aa:bb:02'/><source bridge='br0'/></interface>
      </devices></domain>"#;

    #[test]
    fn reads_resources_disks_and_nics() {
        let d = parse_domain(FULL).unwrap();
        assert_eq!(d.vcpus, 2, "current vCPUs win over the maximum");
        assert_eq!(d.memory_max_kib, 4 * 1024 * 1024);
        assert_eq!(d.memory_current_kib, 2048 * 1024);
        assert_eq!(d.os_type, "hvm");
        assert_eq!(d.disks.len(), 3);
        assert_eq!(d.disks[0].source.as_deref(), Some("/var/lib/libvirt/images/web.qcow2"));
        assert_eq!(d.disks[1].source.as_deref(), Some("default/data.raw"));
        assert_eq!(d.disks[2].device, "cdrom");
        assert_eq!(d.disks[2].source, None, "an empty CD-ROM drive has no source");
        assert_eq!(d.nics[0].mac, "52:54:00:aa:bb:01", "MACs are normalised to lower case");
        assert_eq!(d.nics[0].source.as_deref(), Some("default"));
        assert_eq!(d.nics[1].kind, "bridge");
        assert_eq!(d.nic_targets, vec![Some("vnet3".to_string()), None]);
    }

    #[test]
    fn reads_graphics_devices_in_order_with_their_listen_address_or_socket() {
        let d = parse_domain(
            "<domain><devices>
               <graphics type='spice' port='5901' autoport='yes' listen='0.0.0.0'/>
               <graphics type='vnc' port='5900' autoport='yes' listen='127.0.0.1'>
                 <listen type='address' address='127.0.0.1'/></graphics>
               <graphics type='vnc' port='-1' autoport='yes'><listen type='socket'
                 socket='/run/libvirt/qemu/vnc.sock'/></graphics>
             </devices></domain>",
        )
        .unwrap();
        let kinds: Vec<&str> = d.graphics.iter().map(|g| g.kind.as_str()).collect();
        assert_eq!(kinds, ["spice", "vnc", "vnc"]);
        assert_eq!(d.graphics[1].port, Some(5900));
        assert_eq!(d.graphics[1].listen.as_deref(), Some("127.0.0.1"));
        assert_eq!(d.graphics[2].port, None, "-1: not started");
        assert_eq!(d.graphics[2].socket.as_deref(), Some("/run/libvirt/qemu/vnc.sock"));
        assert_eq!(d.graphics[2].listen, None);
        assert_eq!(d.display_kind().as_deref(), Some("vnc"), "VNC wins over a first SPICE");
    }

    #[test]
    fn the_recorded_display_is_the_first_device_without_vnc_and_none_without_graphics() {
        let spice = parse_domain(
            "<domain><devices><graphics type='spice' autoport='yes'/>
               <graphics type='sdl'/></devices></domain>",
        )
        .unwrap();
        assert_eq!(spice.display_kind().as_deref(), Some("spice"));
        assert_eq!(parse_domain(FULL).unwrap().display_kind(), None);
    }

    #[test]
    fn a_domain_without_devices_parses() {
        let d = parse_domain("<domain><name>x</name><memory>1024</memory><vcpu>1</vcpu></domain>")
            .unwrap();
        assert_eq!((d.vcpus, d.memory_max_kib, d.memory_current_kib), (1, 1024, 1024));
        assert!(d.disks.is_empty() && d.nics.is_empty());
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bad in ["", "<", "<network/>", "not xml at all", "<domain><vcpu>x</vcpu>"] {
            assert!(parse_domain(bad).is_err(), "{bad:?} should be refused");
        }
        let odd =
            parse_domain("<domain><vcpu>many</vcpu><memory unit='parsec'>3</memory></domain>")
                .unwrap();
        assert_eq!((odd.vcpus, odd.memory_max_kib), (0, 0));
    }
}
