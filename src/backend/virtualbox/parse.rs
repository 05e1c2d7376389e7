//! Pure parsers for what `VBoxManage` prints: `list vms`, `showvminfo --machinereadable`,
//! `showmediuminfo`, `guestproperty enumerate` (the ≤ 6.1 and the 7.0+ layouts), `metrics query`,
//! `list hostinfo`, `--version`, the snapshot tree (in `showvminfo` and `snapshot list`), and the
//! error lines on stderr.
//!
//! Every parser takes text and returns what it could read: none fails, none panics (a fuzz test
//! feeds them mutated captures), and a line it does not understand is skipped, never fatal.
//! `tests/fixtures/virtualbox/FORMAT-NOTES.md` describes each format, with the real captures the
//! tests read beside it.
//!
//! Long because it holds one parser per VBoxManage output format, with their unit tests.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use crate::backend::{PowerState, SnapshotReport};

/// The name `list vms` and `showvminfo` print for a VM whose settings cannot be read.
pub const INACCESSIBLE: &str = "<inaccessible>";

/// One VM as `list vms` prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedVm {
    pub name: String,
    pub uuid: String,
}

impl ListedVm {
    pub fn is_inaccessible(&self) -> bool {
        self.name == INACCESSIBLE
    }
}

/// Parses `list vms` (or `list runningvms`): `"<name>" {<uuid>}` per VM.
///
/// Names are printed raw, so a name may hold quotes, braces or even a newline: each entry is
/// read from the right (the last ` {uuid}` of a line ends it), and lines that do not end in a
/// UUID are joined to the next one when they open a quoted name.
pub fn list_vms(out: &str) -> Vec<ListedVm> {
    /// A name spanning more lines than this is not a name but noise.
    const MAX_NAME_LINES: usize = 8;
    let mut vms = Vec::new();
    let mut pending: Option<(String, usize)> = None;
    for line in out.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        let Some((head, uuid)) = split_trailing_uuid(line) else {
            pending = match pending.take() {
                Some((mut text, n)) if n < MAX_NAME_LINES => {
                    text.push_str(line);
                    text.push('\n');
                    Some((text, n + 1))
                }
                Some(_) => None,
                None if line.trim_start().starts_with('"') => Some((format!("{line}\n"), 1)),
                None => None,
            };
            continue;
        };
        let whole = match pending.take() {
            Some((mut text, _)) => {
                text.push_str(head);
                text
            }
            None => head.to_string(),
        };
        let quoted = whole.trim_start();
        if let Some(name) = quoted.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
            vms.push(ListedVm { name: name.to_string(), uuid: uuid.to_ascii_lowercase() });
        }
    }
    vms
}

/// Splits `<head> {<uuid>}` into head and uuid.
fn split_trailing_uuid(line: &str) -> Option<(&str, &str)> {
    let line = line.trim_end();
    let body = line.strip_suffix('}')?;
    let open = body.rfind(" {")?;
    let uuid = &body[open + 2..];
    is_uuid(uuid).then(|| (&line[..open], uuid))
}

/// True for the 8-4-4-4-12 hexadecimal form VirtualBox prints.
pub fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

/// The `key=value` pairs of `--machinereadable` output, values unquoted and unescaped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MachineReadable {
    values: HashMap<String, String>,
    /// Lines that were not `key=value` at all (`Encryption:     disabled`, ` rec_screen0`).
    pub skipped_lines: usize,
}

impl MachineReadable {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(String::as_str)
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.values.keys().map(String::as_str)
    }

    fn number<T: std::str::FromStr>(&self, key: &str) -> Option<T> {
        self.get(key)?.trim().parse().ok()
    }
}

/// Parses `--machinereadable` output.
///
/// Keys may be quoted (`"SATA Controller-0-0"=...`) or bare, even with spaces in them
/// (`BIOS NVRAM File=...`); values are quoted strings with `\"` and `\\` escapes that may span
/// several lines, or bare to the end of the line (`memory=1024`, `vrdeproperty[X]=<not set>`).
/// Anything after a closing quote on the same line is ignored (`VideoMode="720,400,0"@0,0 1`).
pub fn machine_readable(out: &str) -> MachineReadable {
    let mut mr = MachineReadable::default();
    let mut rest = out;
    while !rest.is_empty() {
        let s = rest.trim_start_matches([' ', '\t']);
        let eol = s.find('\n').unwrap_or(s.len());
        let next_line = &s[(eol + 1).min(s.len())..];
        let line = s[..eol].strip_suffix('\r').unwrap_or(&s[..eol]);
        if line.is_empty() {
            rest = next_line;
            continue;
        }
        let key_and_after = if let Some(quoted) = line.strip_prefix('"') {
            read_quoted(quoted)
        } else {
            line.find('=').map(|i| (line[..i].trim_end().to_string(), &line[i..]))
        };
        let Some((key, after_key)) = key_and_after else {
            mr.skipped_lines += 1;
            rest = next_line;
            continue;
        };
        let Some(value_text) = after_key.strip_prefix('=') else {
            mr.skipped_lines += 1;
            rest = next_line;
            continue;
        };
        if key.is_empty() {
            mr.skipped_lines += 1;
            rest = next_line;
            continue;
        }
        // The value is read from the whole remaining text, not the line: it may span lines.
        // `value_text` is a suffix of `line`, which starts where `s` starts.
        let from_value = &s[line.len() - value_text.len()..];
        if let Some(quoted) = from_value.strip_prefix('"') {
            match read_quoted(quoted) {
                Some((value, after)) => {
                    mr.values.insert(key, value);
                    // Skip whatever follows the closing quote up to the end of its line.
                    rest = after.find('\n').map_or("", |i| &after[i + 1..]);
                }
                None => {
                    // No closing quote anywhere: keep the first line, go on with the next.
                    let first = value_text.strip_prefix('"').unwrap_or(value_text);
                    mr.values.insert(key, first.to_string());
                    rest = next_line;
                }
            }
        } else {
            mr.values.insert(key, value_text.trim_end().to_string());
            rest = next_line;
        }
    }
    mr
}

/// Reads a quoted string whose opening quote is already consumed, undoing `\"` and `\\`;
/// returns it and the text after the closing quote, or None if it never closes. A backslash
/// before any other character is kept as it is (VirtualBox escapes only those two).
fn read_quoted(s: &str) -> Option<(String, &str)> {
    let mut value = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((value, &s[i + 1..])),
            '\\' => match s[i + 1..].chars().next() {
                Some(e @ ('"' | '\\')) => {
                    value.push(e);
                    chars.next();
                }
                _ => value.push('\\'),
            },
            _ => value.push(c),
        }
    }
    None
}

/// What kind of device a storage attachment is, in vmdeck's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeviceKind {
    Disk,
    Dvd,
    Floppy,
}

impl DeviceKind {
    /// vmdeck's device vocabulary (the same as libvirt's).
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceKind::Disk => "disk",
            DeviceKind::Dvd => "cdrom",
            DeviceKind::Floppy => "floppy",
        }
    }
}

/// One medium (or empty drive) attached to a storage controller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    /// The controller's own name (free text: `SATA`, `SATA Controller`, `IDE`...).
    pub controller: String,
    /// The controller type as VirtualBox names it (`IntelAhci`, `PIIX4`, `LsiLogic`...).
    pub controller_type: Option<String>,
    pub port: u32,
    pub device: u32,
    pub kind: DeviceKind,
    /// The image path; None for an empty drive.
    pub location: Option<String>,
    pub medium_uuid: Option<String>,
}

impl Attachment {
    /// How VirtualBox itself names the slot (`SATA Controller-0-0`).
    pub fn slot(&self) -> String {
        format!("{}-{}-{}", self.controller, self.port, self.device)
    }

    /// The bus in vmdeck's words, from the controller type.
    pub fn bus(&self) -> Option<&'static str> {
        Some(match self.controller_type.as_deref()? {
            "IntelAhci" => "sata",
            "PIIX3" | "PIIX4" | "ICH6" => "ide",
            "LsiLogic" | "BusLogic" => "scsi",
            "LsiLogicSas" => "sas",
            "NVMe" => "nvme",
            "VirtioSCSI" => "virtio-scsi",
            "I82078" => "fdc",
            "USB" => "usb",
            _ => return None,
        })
    }
}

/// One enabled network adapter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NicInfo {
    /// VirtualBox's adapter number, from 1.
    pub slot: u32,
    /// The attachment type as printed (`nat`, `bridged`, `hostonly`, `intnet`, `natnetwork`,
    /// `generic`, `null` for not attached...), lower case.
    pub attachment: String,
    /// Lower-case colon form, `08:00:27:e5:fa:8f`.
    pub mac: Option<String>,
    /// Adapter type (`82540EM`, `virtio`...).
    pub adapter_type: Option<String>,
    /// The bridge, host-only adapter, internal or NAT network it is attached to.
    pub network: Option<String>,
}

/// What vmdeck reads from `showvminfo --machinereadable`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VmInfo {
    pub name: Option<String>,
    pub uuid: Option<String>,
    pub os_type: Option<String>,
    pub cpus: Option<u32>,
    pub memory_mib: Option<u64>,
    pub balloon_mib: Option<u64>,
    /// The short state word after `VMState=` (`poweroff`, `running`, `gurumeditation`...).
    pub vm_state: Option<String>,
    /// `VMStateChangeTime`: UTC, 9 fraction digits, no zone (`2019-02-09T21:00:33.575000000`).
    pub state_change_time: Option<String>,
    pub autostart: bool,
    /// `vrde="on"`: the VM's remote display (RDP) is enabled.
    pub vrde: bool,
    pub attachments: Vec<Attachment>,
    pub nics: Vec<NicInfo>,
    /// Printed only while the VM runs: 0 = no Guest Additions, 1 system, 2 userland, 3 desktop.
    pub guest_additions_run_level: Option<u32>,
    pub guest_additions_version: Option<String>,
    /// The VM's snapshot tree (empty when it has none), see [`snapshots`].
    pub snapshots: Vec<SnapshotReport>,
    pub skipped_lines: usize,
}

impl VmInfo {
    pub fn is_inaccessible(&self) -> bool {
        self.name.as_deref() == Some(INACCESSIBLE)
    }
}

/// Parses `showvminfo <vm> --machinereadable` into what vmdeck stores.
pub fn vm_info(out: &str) -> VmInfo {
    // The snapshot lines first: their values are printed raw, which the general reader would
    // misread (a description ending in a backslash would swallow the lines after it).
    let (snapshots, rest) = split_snapshots(out);
    let mr = machine_readable(&rest);
    VmInfo {
        name: mr.get("name").map(str::to_string),
        uuid: mr.get("UUID").map(str::to_ascii_lowercase),
        os_type: mr.get("ostype").map(str::to_string),
        cpus: mr.number("cpus"),
        memory_mib: mr.number("memory"),
        balloon_mib: mr.number("GuestMemoryBalloon"),
        vm_state: mr.get("VMState").map(str::to_string),
        state_change_time: mr.get("VMStateChangeTime").map(str::to_string),
        autostart: mr.get("autostart-enabled") == Some("on"),
        vrde: mr.get("vrde") == Some("on"),
        attachments: attachments(&mr),
        nics: nics(&mr),
        guest_additions_run_level: mr.number("GuestAdditionsRunLevel"),
        guest_additions_version: mr.get("GuestAdditionsVersion").map(str::to_string),
        snapshots,
        skipped_lines: mr.skipped_lines,
    }
}

/// The text `snapshot <vm> list` prints (on stdout, with exit status 1) for a VM without
/// snapshots.
pub const NO_SNAPSHOTS: &str = "This machine does not have any snapshots";

/// Parses the snapshot tree of `snapshot <vm> list --machinereadable`, or of `showvminfo
/// --machinereadable`, which prints the same lines. `id` is the snapshot's UUID (lower case);
/// VirtualBox lists no creation time, captured state or memory, so those stay unknown.
///
/// The format (VBoxManageInfo.cpp, `showSnapshots`): per node, in tree order,
/// `SnapshotName<p>`, `SnapshotUUID<p>` and `SnapshotDescription<p>` (only when not empty),
/// where `<p>` is empty for the root and grows by `-<n>` per level (`SnapshotName-1-2` is the
/// second child of the root's first child), so a node's parent is the node whose `<p>` drops the
/// last `-<n>`. `CurrentSnapshotName`, `CurrentSnapshotUUID` and `CurrentSnapshotNode` follow
/// the current node itself, before its children. Names and descriptions are printed raw:
/// quotes inside them are not escaped and a description may span lines; see [`raw_value`].
pub fn snapshots(out: &str) -> Vec<SnapshotReport> {
    split_snapshots(out).0
}

/// Which snapshot key a line starts with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SnapshotKey<'a> {
    /// `SnapshotName<p>`, `SnapshotUUID<p>`, `SnapshotDescription<p>`: the field and `<p>`.
    Node(NodeField, &'a str),
    CurrentUuid,
    CurrentNode,
    /// `CurrentSnapshotName`: the current node's name again.
    CurrentName,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NodeField {
    Name,
    Uuid,
    Description,
}

/// The key of a snapshot line (`<key>="…`, leading blanks removed) and the text after `="`.
fn snapshot_key(line: &str) -> Option<(SnapshotKey<'_>, &str)> {
    let (key, value) = line.split_once("=\"")?;
    let fixed = match key {
        "CurrentSnapshotUUID" => Some(SnapshotKey::CurrentUuid),
        "CurrentSnapshotNode" => Some(SnapshotKey::CurrentNode),
        "CurrentSnapshotName" => Some(SnapshotKey::CurrentName),
        _ => None,
    };
    if let Some(k) = fixed {
        return Some((k, value));
    }
    let (field, suffix) = [
        ("SnapshotName", NodeField::Name),
        ("SnapshotUUID", NodeField::Uuid),
        ("SnapshotDescription", NodeField::Description),
    ]
    .into_iter()
    .find_map(|(word, field)| Some((field, key.strip_prefix(word)?)))?;
    is_tree_suffix(suffix).then_some((SnapshotKey::Node(field, suffix), value))
}

/// `""`, `-1`, `-1-12`...: the position of a node in the tree.
fn is_tree_suffix(s: &str) -> bool {
    s.is_empty()
        || s.strip_prefix('-').is_some_and(|rest| {
            rest.split('-').all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        })
}

/// The line a raw value may end before: another snapshot line, or the guest section that
/// follows the tree in `showvminfo` (`GuestMemoryBalloon=`, `GuestAdditionsRunLevel=`...).
fn follows_a_value(line: &str) -> bool {
    snapshot_key(line).is_some() || (line.starts_with("Guest") && line.contains('='))
}

/// A description longer than this many lines is cut there (the rest is read as other lines).
const MAX_VALUE_LINES: usize = 1000;

/// Reads a raw (unescaped) value whose opening quote ended on a line whose rest is `first`;
/// `next` are the lines after it. Returns the value and how many of `next` it used.
///
/// The closing quote is the last character of a line; since the value may itself hold quotes
/// and line breaks, it is the first such line followed by the end of the output or by a line
/// that can follow a value ([`follows_a_value`]). Without one, the first line ending in a quote
/// ends it; without that, the first line is the whole value.
fn raw_value(first: &str, next: &[&str]) -> (String, usize) {
    let clean = |l: &str| l.strip_suffix('\r').unwrap_or(l).to_string();
    let blank_from = next.iter().rposition(|l| !l.trim().is_empty()).map_or(0, |i| i + 1);
    let mut fallback = None;
    for used in 0..=next.len().min(MAX_VALUE_LINES) {
        let last = if used == 0 { first } else { next[used - 1].trim_end_matches('\r') };
        if !last.ends_with('"') {
            continue;
        }
        fallback = fallback.or(Some(used));
        let ends = used >= blank_from
            || follows_a_value(next[used].trim_start_matches([' ', '\t']).trim_end_matches('\r'));
        if ends {
            fallback = Some(used);
            break;
        }
    }
    let Some(used) = fallback else {
        return (first.to_string(), 0);
    };
    let mut value = first.to_string();
    for line in &next[..used] {
        value.push('\n');
        value.push_str(&clean(line));
    }
    value.pop(); // the closing quote
    (value, used)
}

/// Separates the snapshot tree from the rest of machine-readable output.
fn split_snapshots(out: &str) -> (Vec<SnapshotReport>, Cow<'_, str>) {
    if !out.contains("SnapshotName") {
        return (Vec::new(), Cow::Borrowed(out));
    }
    #[derive(Default)]
    struct Node {
        name: String,
        uuid: String,
        description: String,
    }
    let lines: Vec<&str> = out.split('\n').collect();
    let mut rest = String::with_capacity(out.len());
    let mut nodes: Vec<(String, Node)> = Vec::new();
    let mut current_uuid: Option<String> = None;
    let mut current_node: Option<String> = None;
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i].trim_start_matches([' ', '\t']);
        let line = line.strip_suffix('\r').unwrap_or(line);
        let Some((key, first)) = snapshot_key(line) else {
            rest.push_str(lines[i]);
            if i + 1 < lines.len() {
                rest.push('\n');
            }
            i += 1;
            continue;
        };
        let (value, used) = raw_value(first, &lines[i + 1..]);
        i += 1 + used;
        match key {
            SnapshotKey::Node(field, suffix) => {
                let at = match nodes.iter().position(|(s, _)| s == suffix) {
                    Some(at) => at,
                    None => {
                        nodes.push((suffix.to_string(), Node::default()));
                        nodes.len() - 1
                    }
                };
                let node = &mut nodes[at].1;
                match field {
                    NodeField::Name => node.name = value,
                    NodeField::Uuid => node.uuid = value.trim().to_ascii_lowercase(),
                    NodeField::Description => node.description = value,
                }
            }
            SnapshotKey::CurrentUuid => current_uuid = Some(value.trim().to_ascii_lowercase()),
            SnapshotKey::CurrentNode => {
                current_node = value.strip_prefix("SnapshotName").map(str::to_string)
            }
            SnapshotKey::CurrentName => {}
        }
    }
    let uuid_of = |suffix: &str| {
        nodes.iter().find(|(s, _)| s == suffix).map(|(_, n)| n.uuid.clone()).filter(|u| is_uuid(u))
    };
    let current =
        current_uuid.filter(|u| is_uuid(u)).or_else(|| current_node.as_deref().and_then(uuid_of));
    let reports = nodes
        .iter()
        .filter(|(_, n)| is_uuid(&n.uuid))
        .map(|(suffix, n)| SnapshotReport {
            id: n.uuid.clone(),
            name: n.name.clone(),
            description: n.description.clone(),
            parent_id: suffix.rfind('-').and_then(|cut| uuid_of(&suffix[..cut])),
            created_at_ms: None,
            vm_state: String::new(),
            with_memory: false,
            current: current.as_deref() == Some(n.uuid.as_str()),
        })
        .collect();
    (reports, Cow::Owned(rest))
}

/// Storage attachments, found through the `storagecontrollername<N>` keys: the attachment
/// keys are `"<controller name>-<port>-<device>"`, with per-attachment flags such as
/// `"<name>-ImageUUID-<port>-<device>"` and `"<name>-IsEjected-<port>-<device>"`.
fn attachments(mr: &MachineReadable) -> Vec<Attachment> {
    let mut controllers: Vec<(u32, String, Option<String>)> = mr
        .keys()
        .filter_map(|k| {
            let n: u32 = k.strip_prefix("storagecontrollername")?.parse().ok()?;
            let name = mr.get(k)?.to_string();
            let kind = mr.get(&format!("storagecontrollertype{n}")).map(str::to_string);
            Some((n, name, kind))
        })
        .collect();
    controllers.sort();
    // Longest names first, so `SATA Controller-0-0` is not read as controller `SATA`.
    let mut by_length: Vec<usize> = (0..controllers.len()).collect();
    by_length.sort_by_key(|&i| std::cmp::Reverse(controllers[i].1.len()));

    let mut slots: HashMap<(usize, u32, u32), &str> = HashMap::new();
    let mut removable: HashSet<(usize, u32, u32)> = HashSet::new();
    for key in mr.keys() {
        for &ci in &by_length {
            let Some(suffix) =
                key.strip_prefix(controllers[ci].1.as_str()).and_then(|s| s.strip_prefix('-'))
            else {
                continue;
            };
            if let Some((port, device)) = port_device(suffix) {
                slots.insert((ci, port, device), mr.get(key).unwrap_or_default());
                break;
            }
            let flagged = ["IsEjected-", "tempeject-", "dvdpassthrough-"]
                .iter()
                .find_map(|flag| suffix.strip_prefix(flag).and_then(port_device));
            if let Some((port, device)) = flagged {
                removable.insert((ci, port, device));
                break;
            }
        }
    }
    let mut out: Vec<Attachment> = slots
        .into_iter()
        .filter(|(_, value)| *value != "none")
        .map(|((ci, port, device), value)| {
            let (_, name, controller_type) = &controllers[ci];
            let empty = value == "emptydrive";
            let kind = if controller_type.as_deref() == Some("I82078") {
                DeviceKind::Floppy
            } else if empty
                || removable.contains(&(ci, port, device))
                || value.to_ascii_lowercase().ends_with(".iso")
            {
                DeviceKind::Dvd
            } else {
                DeviceKind::Disk
            };
            Attachment {
                controller: name.clone(),
                controller_type: controller_type.clone(),
                port,
                device,
                kind,
                location: (!empty).then(|| value.to_string()),
                medium_uuid: mr
                    .get(&format!("{name}-ImageUUID-{port}-{device}"))
                    .filter(|u| is_uuid(u))
                    .map(str::to_ascii_lowercase),
            }
        })
        .collect();
    out.sort_by(|a, b| {
        let ci = |x: &Attachment| controllers.iter().position(|c| c.1 == x.controller);
        (ci(a), a.port, a.device).cmp(&(ci(b), b.port, b.device))
    });
    out
}

/// `<port>-<device>`, both numbers.
fn port_device(s: &str) -> Option<(u32, u32)> {
    let (p, d) = s.split_once('-')?;
    let digits = |x: &str| !x.is_empty() && x.bytes().all(|b| b.is_ascii_digit());
    if digits(p) && digits(d) {
        Some((p.parse().ok()?, d.parse().ok()?))
    } else {
        None
    }
}

/// Enabled network adapters: `nic<N>` is `none` when disabled, else the attachment type.
fn nics(mr: &MachineReadable) -> Vec<NicInfo> {
    let mut out: Vec<NicInfo> = mr
        .keys()
        .filter_map(|k| {
            let slot: u32 = k.strip_prefix("nic")?.parse().ok()?;
            let attachment = mr.get(k)?.to_ascii_lowercase();
            if attachment == "none" {
                return None;
            }
            let network_key = match attachment.as_str() {
                "nat" => "natnet",
                "bridged" => "bridgeadapter",
                "hostonly" => "hostonlyadapter",
                "intnet" => "intnet",
                "natnetwork" => "nat-network",
                "generic" => "generic",
                "hostonlynetwork" => "hostonly-network",
                "cloudnetwork" => "cloud-network",
                _ => "",
            };
            let network = (!network_key.is_empty())
                .then(|| mr.get(&format!("{network_key}{slot}")))
                .flatten()
                .filter(|n| !n.is_empty())
                .map(str::to_string);
            Some(NicInfo {
                slot,
                attachment,
                mac: mr.get(&format!("macaddress{slot}")).and_then(normalize_mac),
                adapter_type: mr.get(&format!("nictype{slot}")).map(str::to_string),
                network,
            })
        })
        .collect();
    out.sort_by_key(|n| n.slot);
    out
}

/// `080027E5FA8F` or `08:00:27:E5:FA:8F` → `08:00:27:e5:fa:8f`; None if it is not a MAC.
pub fn normalize_mac(s: &str) -> Option<String> {
    let hex: String = s.trim().chars().filter(|c| !matches!(c, ':' | '-')).collect();
    if hex.len() != 12 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let hex = hex.to_ascii_lowercase();
    Some((0..6).map(|i| &hex[i * 2..i * 2 + 2]).collect::<Vec<_>>().join(":"))
}

/// Maps a `VMState` word onto vmdeck's states. Unknown words (future versions) are Unknown,
/// with the word kept by the caller as the raw state.
pub fn power_state(vm_state: &str) -> PowerState {
    match vm_state {
        "running" | "livesnapshotting" | "onlinesnapshotting" | "deletingsnapshotlive" => {
            PowerState::Running
        }
        "paused" | "deletingsnapshotlivepaused" => PowerState::Paused,
        // A saved VM is stopped, its memory on disk; `startvm` restores it (libvirt's managed
        // save is shut off too).
        "poweroff" | "saved" | "teleported" => PowerState::ShutOff,
        "aborted" | "aborted-saved" | "gurumeditation" => PowerState::Crashed,
        "starting"
        | "stopping"
        | "saving"
        | "restoring"
        | "teleporting"
        | "teleportingpausedvm"
        | "teleportingin"
        | "restoringsnapshot"
        | "deletingsnapshot"
        | "snapshotting"
        | "settingup" => PowerState::InTransition,
        _ => PowerState::Unknown,
    }
}

/// VirtualBox's own words for a state (its human-readable `showvminfo` output).
pub fn state_words(vm_state: &str) -> &'static str {
    match vm_state {
        "poweroff" => "powered off",
        "saved" => "saved",
        "teleported" => "teleported",
        "aborted" => "aborted",
        "aborted-saved" => "aborted, state saved",
        "running" => "running",
        "paused" => "paused",
        "gurumeditation" => "guru meditation",
        "teleporting" => "teleporting",
        "livesnapshotting" => "live snapshotting",
        "starting" => "starting",
        "stopping" => "stopping",
        "saving" => "saving",
        "restoring" => "restoring",
        "teleportingpausedvm" => "teleporting paused vm",
        "teleportingin" => "teleporting (incoming)",
        "deletingsnapshotlive" => "deleting snapshot live",
        "deletingsnapshotlivepaused" => "deleting snapshot live paused",
        "onlinesnapshotting" => "online snapshotting",
        "restoringsnapshot" => "restoring snapshot",
        "deletingsnapshot" => "deleting snapshot",
        "settingup" => "setting up",
        "snapshotting" => "offline snapshotting",
        _ => "unknown",
    }
}

/// Sizes from `showmediuminfo` (or `showhdinfo`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MediumSizes {
    /// `Capacity:` the size the guest sees.
    pub capacity_bytes: Option<u64>,
    /// `Size on disk:` the image file on the host.
    pub size_on_disk_bytes: Option<u64>,
}

/// Parses `showmediuminfo <uuid>`: `Capacity:  60000 MBytes`, `Size on disk:  31991 MBytes`.
/// An inaccessible medium reports a capacity of 0, which means "unknown", not empty.
pub fn medium_sizes(out: &str) -> MediumSizes {
    let mut sizes = MediumSizes::default();
    let mut inaccessible = false;
    for line in out.lines() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        match k.trim() {
            "Capacity" => sizes.capacity_bytes = size_with_unit(v),
            "Size on disk" => sizes.size_on_disk_bytes = size_with_unit(v),
            "State" => inaccessible = v.trim() == "inaccessible",
            _ => {}
        }
    }
    if inaccessible {
        sizes.capacity_bytes = sizes.capacity_bytes.filter(|&c| c > 0);
        sizes.size_on_disk_bytes = sizes.size_on_disk_bytes.filter(|&c| c > 0);
    }
    sizes
}

/// `60000 MBytes` → bytes.
fn size_with_unit(v: &str) -> Option<u64> {
    let mut words = v.split_whitespace();
    let n: u64 = words.next()?.parse().ok()?;
    let shift = match words.next().unwrap_or("bytes") {
        "bytes" | "Bytes" | "B" => 0,
        "KBytes" | "kB" | "KB" => 10,
        "MBytes" | "MB" => 20,
        "GBytes" | "GB" => 30,
        "TBytes" | "TB" => 40,
        _ => return None,
    };
    n.checked_mul(1u64 << shift)
}

/// One guest property.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestProperty {
    pub name: String,
    /// None when the property has no value (`value: ,`, `<NULL>` or `''`).
    pub value: Option<String>,
}

/// Parses `guestproperty enumerate` in either layout: VirtualBox ≤ 6.1 (and 7.x with
/// `--old-format`) prints `Name: <n>, value: <v>, timestamp: <t>, flags: <f>`; 7.0+ prints
/// `<name padded> = '<value>'<padding>@ <ISO time>[ <flags>]`, values unescaped. `No properties
/// found.`, banners and blank lines yield nothing.
pub fn guest_properties(out: &str) -> Vec<GuestProperty> {
    out.lines()
        .filter_map(|line| {
            let line = line.trim_end_matches('\r');
            if let Some(rest) = line.strip_prefix("Name: ") {
                old_format_property(rest)
            } else {
                new_format_property(line)
            }
        })
        .collect()
}

fn old_format_property(rest: &str) -> Option<GuestProperty> {
    let (name, after) = rest.split_once(", value: ")?;
    // The value may itself contain ", ": it ends at the last timestamp (or flags) field.
    let end =
        after.rfind(", timestamp: ").or_else(|| after.rfind(", flags:")).unwrap_or(after.len());
    Some(GuestProperty { name: name.trim().to_string(), value: property_value(&after[..end]) })
}

fn new_format_property(line: &str) -> Option<GuestProperty> {
    let (name, after) = line.split_once(" = '")?;
    let name = name.trim();
    if name.is_empty() || name.contains(' ') {
        return None;
    }
    // The value ends at the quote before the timestamp column `@ `; without one, at the last
    // quote of the line.
    let value = after
        .rmatch_indices("@ ")
        .map(|(i, _)| after[..i].trim_end())
        .find(|head| head.ends_with('\''))
        .or_else(|| Some(after.trim_end()).filter(|s| s.ends_with('\'')))?;
    Some(GuestProperty { name: name.to_string(), value: property_value(&value[..value.len() - 1]) })
}

fn property_value(v: &str) -> Option<String> {
    let v = v.trim_end();
    (!v.is_empty() && v != "<NULL>").then(|| v.to_string())
}

/// An address the guest reports for one of its interfaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestAddress {
    /// The interface's MAC as the guest reports it, in vmdeck's lower-case colon form.
    pub mac: String,
    pub addr: IpAddr,
    pub prefix: u8,
}

/// The addresses in `/VirtualBox/GuestInfo/Net/<N>/...` properties: `V4/IP` (prefix from
/// `V4/Netmask`) and `V6/IP` (prefix from `V6/Netmask` when given), each tied to `Net/<N>/MAC`.
///
/// `<N>` counts the guest's interfaces, not VirtualBox's adapter slots, so the MAC is the link
/// to a NIC. Interfaces at or past `Net/Count` are stale leftovers the guest no longer reports,
/// and interfaces whose `Status` is `Down` carry no reachable address; both are skipped, as are
/// interfaces without a MAC and loopback or unspecified addresses.
pub fn guest_addresses(props: &[GuestProperty]) -> Vec<GuestAddress> {
    const NET: &str = "/VirtualBox/GuestInfo/Net/";
    let mut per_if: HashMap<u32, HashMap<&str, &str>> = HashMap::new();
    let mut count: Option<u32> = None;
    for p in props {
        let Some(rest) = p.name.strip_prefix(NET) else {
            continue;
        };
        let Some(value) = p.value.as_deref() else {
            continue;
        };
        if rest == "Count" {
            count = value.trim().parse().ok();
            continue;
        }
        if let Some((n, field)) = rest.split_once('/') {
            if let Ok(n) = n.parse::<u32>() {
                per_if.entry(n).or_default().insert(field, value);
            }
        }
    }
    let mut indices: Vec<u32> = per_if.keys().copied().collect();
    indices.sort_unstable();
    let mut out = Vec::new();
    for n in indices {
        if count.is_some_and(|c| n >= c) {
            continue;
        }
        let fields = &per_if[&n];
        if fields.get("Status").is_some_and(|s| s.trim() == "Down") {
            continue;
        }
        let Some(mac) = fields.get("MAC").and_then(|m| normalize_mac(m)) else {
            continue;
        };
        for (ip_key, mask_key, full) in
            [("V4/IP", "V4/Netmask", 32u8), ("V6/IP", "V6/Netmask", 128)]
        {
            let Some(addr) = fields.get(ip_key).and_then(|v| v.trim().parse::<IpAddr>().ok())
            else {
                continue;
            };
            if addr.is_loopback() || addr.is_unspecified() {
                continue;
            }
            let prefix = fields.get(mask_key).and_then(|m| prefix_len(m, full)).unwrap_or(full);
            out.push(GuestAddress { mac: mac.clone(), addr, prefix });
        }
    }
    out
}

/// `255.255.255.0` → 24; `64` → 64; a non-contiguous or unreadable mask → None.
fn prefix_len(mask: &str, full: u8) -> Option<u8> {
    let mask = mask.trim();
    if let Ok(n) = mask.parse::<u8>() {
        return (n <= full).then_some(n);
    }
    let bits: u128 = match mask.parse::<IpAddr>().ok()? {
        IpAddr::V4(m) if full == 32 => u128::from(u32::from(m)) << 96,
        IpAddr::V6(m) if full == 128 => u128::from(m),
        _ => return None,
    };
    let ones = bits.leading_ones();
    (bits.checked_shl(ones).unwrap_or(0) == 0).then_some(ones as u8)
}

/// One figure from `metrics query`: the newest sample and its unit.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricValue {
    pub value: f64,
    pub unit: String,
}

/// The rows of `metrics query`, by object name and metric.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metrics {
    rows: HashMap<(String, String), Option<MetricValue>>,
}

impl Metrics {
    /// The newest sample of `metric` for the object named `object`; None when VirtualBox has
    /// no data yet or the row could not be told apart from another object's.
    pub fn get(&self, object: &str, metric: &str) -> Option<&MetricValue> {
        self.rows.get(&(object.to_string(), metric.to_string()))?.as_ref()
    }
}

/// Parses `metrics query`: rows `%-15s %-40s <values>`, where the object is a VM's name (or
/// `host`), padded but not truncated and not quoted. Names may contain spaces, so each row is
/// matched against the names the caller knows (`objects`): the object is the known name the
/// row starts with whose next word is a metric (metric names contain `/`). A row that matches
/// two objects, or an (object, metric) pair that appears twice (two VMs of the same name), gives
/// no figure rather than a figure that may belong to another VM.
pub fn metrics_query(out: &str, objects: &[&str]) -> Metrics {
    let mut m = Metrics::default();
    let mut seen: HashSet<(String, String)> = HashSet::new();
    for line in out.lines() {
        let line = line.trim_end_matches('\r');
        let candidates: Vec<(&str, &str, &str)> = objects
            .iter()
            .filter_map(|&name| {
                let rest = line.strip_prefix(name)?;
                if !rest.starts_with(' ') {
                    return None;
                }
                let rest = rest.trim_start();
                let (metric, values) = rest.split_once(' ').unwrap_or((rest, ""));
                metric.contains('/').then_some((name, metric, values))
            })
            .collect();
        let [(name, metric, values)] = candidates.as_slice() else {
            continue;
        };
        let key = (name.to_string(), metric.to_string());
        if !seen.insert(key.clone()) {
            m.rows.insert(key, None);
            continue;
        }
        let newest = values
            .split(", ")
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .last()
            .and_then(metric_value);
        m.rows.insert(key, newest);
    }
    m
}

/// `12.55%` → (12.55, `%`); `1816052 kB` → (1816052, `kB`).
fn metric_value(v: &str) -> Option<MetricValue> {
    let end = v.find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-')).unwrap_or(v.len());
    let value: f64 = v[..end].parse().ok()?;
    value.is_finite().then(|| MetricValue { value, unit: v[end..].trim().to_string() })
}

/// The host's online logical processors, from `list hostinfo` (`Processor online count: 8`).
pub fn host_cpu_count(out: &str) -> Option<u32> {
    out.lines().find_map(|l| {
        l.trim()
            .strip_prefix("Processor online count:")?
            .trim()
            .parse()
            .ok()
            .filter(|&n: &u32| n > 0)
    })
}

/// `(major, minor)` from `VBoxManage --version` (`7.0.10r158379`, `6.1.38_Ubuntur153438`).
pub fn version(out: &str) -> Option<(u32, u32)> {
    let line = out.lines().map(str::trim).find(|l| !l.is_empty())?;
    let mut parts = line.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor_digits: String = parts.next()?.chars().take_while(char::is_ascii_digit).collect();
    Some((major, minor_digits.parse().ok()?))
}

/// The error VBoxManage printed on stderr.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VboxError {
    /// The result code name from the `Details:` line (`VBOX_E_OBJECT_NOT_FOUND`,
    /// `NS_ERROR_FAILURE`, `E_ACCESSDENIED`...), when there is one.
    pub code: Option<String>,
    /// The first error line, without the `VBoxManage: error: ` prefix.
    pub message: String,
}

/// Reads VBoxManage's error lines: `VBoxManage: error: <message>`, then usually
/// `VBoxManage: error: Details: code <NAME> (0x…), component …` and a `Context:` line (on
/// Windows the prefix is `VBoxManage.exe: error: `). None when stderr has no error line.
pub fn vbox_error(stderr: &str) -> Option<VboxError> {
    let mut message: Option<String> = None;
    let mut code = None;
    for line in stderr.lines() {
        let Some(idx) = line.find("error: ") else {
            continue;
        };
        let prefix = &line[..idx];
        if !prefix.contains("VBoxManage") {
            continue;
        }
        let text = line[idx + "error: ".len()..].trim();
        if let Some(details) = text.strip_prefix("Details: ") {
            code = code.or_else(|| {
                details
                    .strip_prefix("code ")
                    .and_then(|c| c.split([' ', ',']).next())
                    .filter(|c| !c.is_empty())
                    .map(str::to_string)
            });
        } else if !text.starts_with("Context: ") && message.is_none() && !text.is_empty() {
            message = Some(text.to_string());
        }
    }
    match (message, code) {
        (Some(message), code) => Some(VboxError { code, message }),
        (None, Some(code)) => Some(VboxError { message: code.clone(), code: Some(code) }),
        (None, None) => None,
    }
}

/// Every error message VBoxManage printed, in order, without the `Details:` and `Context:`
/// lines: a failed operation prints its own words first ("Failed to take snapshot") and the
/// cause on the next line.
pub fn error_messages(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter_map(|line| {
            let idx = line.find("error: ")?;
            line[..idx].contains("VBoxManage").then(|| line[idx + "error: ".len()..].trim())
        })
        .filter(|t| !t.is_empty() && !t.starts_with("Details: ") && !t.starts_with("Context: "))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machine_readable_handles_escapes_multiline_values_and_junk_lines() {
        // Synthetic: every quirk at once.
        let text = "name=\"a \\\"quoted\\\" \\\\ name\"\n\
                    Encryption:     disabled\n\
                    \"SATA Controller-0-0\"=\"/vms/disk.vdi\"\n\
                    BIOS NVRAM File=\"/x.nvram\"\n\
                    memory=2048\n\
                    vrdeproperty[TCP/Address]=<not set>\n\
                    VideoMode=\"720,400,0\"@0,0 1\n\
                    description=\"line one\nline \\\"two\\\"\n\"\n \
                    rec_screen0\n\
                    cpus=2\n";
        let mr = machine_readable(text);
        assert_eq!(mr.get("name"), Some("a \"quoted\" \\ name"));
        assert_eq!(mr.get("SATA Controller-0-0"), Some("/vms/disk.vdi"));
        assert_eq!(mr.get("BIOS NVRAM File"), Some("/x.nvram"));
        assert_eq!(mr.get("memory"), Some("2048"));
        assert_eq!(mr.get("vrdeproperty[TCP/Address]"), Some("<not set>"));
        assert_eq!(mr.get("VideoMode"), Some("720,400,0"));
        assert_eq!(mr.get("description"), Some("line one\nline \"two\"\n"));
        assert_eq!(mr.get("cpus"), Some("2"), "parsing goes on after junk");
        assert_eq!(mr.skipped_lines, 2, "Encryption: and rec_screen0");
    }

    #[test]
    fn an_unterminated_quote_loses_one_value_not_the_rest() {
        let mr = machine_readable("name=\"broken\ncpus=4\nmemory=512\n");
        // The open quote swallows nothing: there is no closing quote anywhere.
        assert_eq!(mr.get("name"), Some("broken"));
        assert_eq!(mr.get("cpus"), Some("4"));
        assert_eq!(mr.get("memory"), Some("512"));
    }

    #[test]
    fn list_vms_reads_names_from_the_right() {
        // Synthetic names: braces, quotes, spaces, unicode, and a newline.
        let text = "\"plain\" {2e16b1fc-675d-4a7a-a9a1-e89a8bde7874}\n\
                    \"odd {name} \"with\" quotes\" {def44546-e3da-4902-8d15-b91c99c80cbc}\n\
                    \"café ✓ ünï\" {19e117b3-06f4-4a1e-851d-47336ad6a142}\n\
                    \"two\nlines\" {7a6fec6f-ace1-4d51-95ea-f3b20eacc5c7}\n\
                    \"<inaccessible>\" {6294f16b-4f05-4430-afb9-773bdb237aec}\n\
                    garbage line\n";
        let vms = list_vms(text);
        let names: Vec<&str> = vms.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(
            names,
            vec![
                "plain",
                "odd {name} \"with\" quotes",
                "café ✓ ünï",
                "two\nlines",
                "<inaccessible>"
            ]
        );
        assert!(vms[4].is_inaccessible());
    }

    #[test]
    fn every_vm_state_maps_to_a_normalized_state() {
        let all = [
            ("poweroff", PowerState::ShutOff),
            ("saved", PowerState::ShutOff),
            ("teleported", PowerState::ShutOff),
            ("aborted", PowerState::Crashed),
            ("aborted-saved", PowerState::Crashed),
            ("running", PowerState::Running),
            ("paused", PowerState::Paused),
            ("gurumeditation", PowerState::Crashed),
            ("teleporting", PowerState::InTransition),
            ("livesnapshotting", PowerState::Running),
            ("starting", PowerState::InTransition),
            ("stopping", PowerState::InTransition),
            ("saving", PowerState::InTransition),
            ("restoring", PowerState::InTransition),
            ("teleportingpausedvm", PowerState::InTransition),
            ("teleportingin", PowerState::InTransition),
            ("deletingsnapshotlive", PowerState::Running),
            ("deletingsnapshotlivepaused", PowerState::Paused),
            ("onlinesnapshotting", PowerState::Running),
            ("restoringsnapshot", PowerState::InTransition),
            ("deletingsnapshot", PowerState::InTransition),
            ("settingup", PowerState::InTransition),
            ("snapshotting", PowerState::InTransition),
        ];
        for (word, state) in all {
            assert_eq!(power_state(word), state, "{word}");
            assert_ne!(state_words(word), "unknown", "{word} has words");
        }
        assert_eq!(power_state("unknown"), PowerState::Unknown);
        assert_eq!(power_state("somethingnew"), PowerState::Unknown);
    }

    #[test]
    fn macs_are_normalized_to_lower_case_colon_form() {
        assert_eq!(normalize_mac("080027E5FA8F").as_deref(), Some("08:00:27:e5:fa:8f"));
        assert_eq!(normalize_mac("08:00:27:E5:FA:8F").as_deref(), Some("08:00:27:e5:fa:8f"));
        for bad in ["", "0800", "08002", "ZZ0027E5FA8F", "080027E5FA8F00"] {
            assert_eq!(normalize_mac(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn netmasks_become_prefix_lengths() {
        assert_eq!(prefix_len("255.255.255.0", 32), Some(24));
        assert_eq!(prefix_len("255.255.0.255", 32), None, "not contiguous");
        assert_eq!(prefix_len("64", 128), Some(64));
        assert_eq!(prefix_len("ffff:ffff:ffff:ffff::", 128), Some(64));
        assert_eq!(prefix_len("0.0.0.0", 32), Some(0));
    }

    #[test]
    fn errors_are_read_by_code_not_by_text() {
        let e = vbox_error(
            "VBoxManage: error: Something\nVBoxManage: error: Details: code VBOX_E_IPRT_ERROR (0x80bb0005), component X\n",
        )
        .unwrap();
        assert_eq!(e.code.as_deref(), Some("VBOX_E_IPRT_ERROR"));
        assert_eq!(e.message, "Something");
        assert_eq!(vbox_error("0%...10%...100%\n"), None, "progress is not an error");
        let no_code =
            vbox_error("VBoxManage: error: Machine 'x' is not currently running.\n").unwrap();
        assert_eq!(no_code.code, None);
    }

    #[test]
    fn versions_are_read_from_the_version_line() {
        assert_eq!(version("7.0.10r158379\n"), Some((7, 0)));
        assert_eq!(version("6.1.38_Ubuntur153438\n"), Some((6, 1)));
        assert_eq!(version("garbage"), None);
    }
}
