//! libvirt snapshots through the `virt` crate's snapshot API (not virsh): list with each
//! snapshot's XML (creation time, captured state, parent, memory), create from snapshot XML,
//! revert, delete. Internal snapshots: a qcow2 disk holds them; libvirt refuses raw disks and
//! (older releases) UEFI/pflash VMs, and those refusals come back in words.

use roxmltree::Document;
use virt::connect::Connect;
use virt::domain::Domain;
use virt::domain_snapshot::DomainSnapshot;
use virt::enumutil::Enum;
use virt::error::ErrorNumber;
use virt_sys as sys;

use crate::backend::{AfterRevert, BackendError, SnapshotOp, SnapshotReport};

/// What a snapshot's XML (`virDomainSnapshotGetXMLDesc`) says that vmdeck keeps.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SnapshotXml {
    pub name: String,
    pub description: String,
    pub parent: Option<String>,
    /// Seconds since the epoch.
    pub creation_time: Option<i64>,
    pub state: String,
    /// `<memory snapshot='internal|external'>`, or a `running`/`paused` state without a
    /// `<memory>` element (older libvirt): the guest's memory was captured.
    pub with_memory: bool,
}

/// Parses a `<domainsnapshot>` document. Unknown elements are ignored.
pub fn parse_snapshot(xml: &str) -> Result<SnapshotXml, String> {
    let doc = Document::parse(xml).map_err(|e| format!("snapshot XML: {e}"))?;
    let root = doc.root_element();
    if root.tag_name().name() != "domainsnapshot" {
        return Err(format!("snapshot XML: root element is <{}>", root.tag_name().name()));
    }
    let text = |name: &str| {
        root.children()
            .find(|n| n.has_tag_name(name))
            .and_then(|n| n.text())
            .map(|t| t.trim().to_string())
    };
    let name = text("name").filter(|n| !n.is_empty()).ok_or("snapshot XML: no <name>")?;
    let state = text("state").unwrap_or_default();
    let parent = root
        .children()
        .find(|n| n.has_tag_name("parent"))
        .and_then(|p| p.children().find(|n| n.has_tag_name("name")))
        .and_then(|n| n.text())
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty());
    let memory = root
        .children()
        .find(|n| n.has_tag_name("memory"))
        .and_then(|m| m.attribute("snapshot"))
        .map(str::to_string);
    let with_memory = match memory.as_deref() {
        Some("internal") | Some("external") => true,
        Some(_) => false,
        None => matches!(state.as_str(), "running" | "paused" | "blocked"),
    };
    Ok(SnapshotXml {
        name,
        description: text("description").unwrap_or_default(),
        parent,
        creation_time: text("creationTime").and_then(|t| t.parse().ok()),
        state,
        with_memory,
    })
}

/// The XML that asks libvirt for a new snapshot: name and description, escaped.
pub fn create_xml(name: &str, description: &str) -> String {
    format!(
        "<domainsnapshot><name>{}</name><description>{}</description></domainsnapshot>",
        escape(name),
        escape(description)
    )
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// Every snapshot of `dom`, with its XML read.
pub fn list(dom: &Domain) -> Result<Vec<SnapshotReport>, BackendError> {
    let snaps = dom.list_all_snapshots(0).map_err(|e| snapshot_error("listing snapshots", e))?;
    let mut out = Vec::with_capacity(snaps.len());
    for snap in snaps {
        let xml = match snap.xml_desc(0) {
            Ok(x) => x,
            // Deleted between the list and this call: it is simply gone.
            Err(e) if is_no_snapshot(&e) => continue,
            Err(e) => return Err(snapshot_error("reading a snapshot", e)),
        };
        let parsed = parse_snapshot(&xml).map_err(BackendError::Malformed)?;
        let current = snap.is_current(0).unwrap_or(false);
        out.push(SnapshotReport {
            id: parsed.name.clone(),
            name: parsed.name,
            description: parsed.description,
            parent_id: parsed.parent,
            created_at_ms: parsed.creation_time.map(|s| s.saturating_mul(1000)),
            vm_state: parsed.state,
            with_memory: parsed.with_memory,
            current,
        });
    }
    Ok(out)
}

/// Runs one snapshot request against `dom`.
pub fn run(dom: &Domain, op: &SnapshotOp) -> Result<(), BackendError> {
    match op {
        SnapshotOp::Take { name, description, with_memory: _ } => {
            // libvirt's internal snapshot of a running domain always captures its memory
            // (a system checkpoint); of a shut-off one, the disks.
            dom.create_snapshot_xml(&create_xml(name, description), 0)
                .map(|_| ())
                .map_err(|e| snapshot_error("taking the snapshot", e))
        }
        SnapshotOp::Revert { id, after } => {
            let snap = find(dom, id)?;
            let flags = match after {
                AfterRevert::AsTaken => 0,
                AfterRevert::Running => sys::VIR_DOMAIN_SNAPSHOT_REVERT_RUNNING,
                AfterRevert::Paused => sys::VIR_DOMAIN_SNAPSHOT_REVERT_PAUSED,
            };
            snap.revert(flags).map_err(|e| snapshot_error("reverting to the snapshot", e))
        }
        SnapshotOp::Delete { id } => {
            let snap = find(dom, id)?;
            snap.delete(0).map_err(|e| snapshot_error("deleting the snapshot", e))
        }
    }
}

fn find(dom: &Domain, id: &str) -> Result<DomainSnapshot, BackendError> {
    Domain::lookup_snapshot_by_name(dom, id, 0).map_err(|e| {
        if is_no_snapshot(&e) {
            BackendError::InvalidState(format!("the snapshot {id:?} no longer exists"))
        } else {
            snapshot_error("looking up the snapshot", e)
        }
    })
}

fn is_no_snapshot(e: &virt::error::Error) -> bool {
    matches!(e.code(), Enum::Known(ErrorNumber::NoDomainSnapshot))
}

/// libvirt's refusal of a snapshot call, in words an operator can act on; what libvirt said
/// is kept after them.
pub fn snapshot_error(what: &str, e: virt::error::Error) -> BackendError {
    let said = e.message().trim_end_matches('.').to_string();
    let lower = said.to_lowercase();
    match e.code() {
        Enum::Known(ErrorNumber::NoDomain) => BackendError::NoSuchVm,
        _ if is_no_snapshot(&e) => {
            BackendError::InvalidState(format!("the snapshot no longer exists (libvirt: {said})"))
        }
        _ if lower.contains("already exists") => BackendError::InvalidState(format!(
            "a snapshot with this name already exists; choose another name (libvirt: {said})"
        )),
        _ if lower.contains("pflash") || lower.contains("uefi") || lower.contains("nvram") => {
            BackendError::Unsupported(format!(
                "this host's libvirt cannot take internal snapshots of a VM with UEFI firmware \
                 (pflash); newer libvirt releases can (libvirt: {said})"
            ))
        }
        _ if lower.contains("raw") || lower.contains("does not support internal snapshots")
            || lower.contains("internal snapshot") && lower.contains("support") =>
        {
            BackendError::Unsupported(format!(
                "a disk of this VM cannot hold internal snapshots (a raw image, not qcow2) \
                 (libvirt: {said})"
            ))
        }
        _ if lower.contains("no space") || lower.contains("enospc") => BackendError::Hypervisor(
            format!("the host ran out of disk space {what} (libvirt: {said})"),
        ),
        _ if lower.contains("locked") || lower.contains("another job") || lower.contains("busy") => {
            BackendError::InvalidState(format!(
                "the VM is busy with another job (locked); try again once it is done (libvirt: {said})"
            ))
        }
        Enum::Known(ErrorNumber::NoSupport) => BackendError::Unsupported(format!(
            "this host's libvirt driver cannot do this (libvirt: {said})"
        )),
        Enum::Known(ErrorNumber::OperationInvalid) => BackendError::InvalidState(said),
        _ => BackendError::Hypervisor(format!("{what} failed: {said}")),
    }
}

/// Looks up a domain and lists its snapshots: the one call the poller and the confirmation
/// make.
pub fn list_for(conn: &Connect, uuid: &str) -> Result<Vec<SnapshotReport>, BackendError> {
    let dom = super::connection::lookup(conn, uuid)?;
    list(&dom)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_documents_name_parent_time_state_and_memory_are_read() {
        let xml = "<domainsnapshot><name>before-upgrade</name>\
            <description>db &amp; web</description><state>running</state>\
            <parent><name>base</name></parent><creationTime>1764558000</creationTime>\
            <memory snapshot='internal'/><domain><name>web</name></domain></domainsnapshot>";
        let s = parse_snapshot(xml).unwrap();
        assert_eq!(s.name, "before-upgrade");
        assert_eq!(s.description, "db & web");
        assert_eq!(s.parent.as_deref(), Some("base"));
        assert_eq!(s.creation_time, Some(1_764_558_000));
        assert_eq!(s.state, "running");
        assert!(s.with_memory);
        let off = parse_snapshot(
            "<domainsnapshot><name>a</name><state>shutoff</state><memory snapshot='no'/></domainsnapshot>",
        )
        .unwrap();
        assert!(!off.with_memory);
        assert_eq!(off.parent, None);
        assert!(parse_snapshot("<domain><name>x</name></domain>").is_err());
        assert!(parse_snapshot("<domainsnapshot><name> </name></domainsnapshot>").is_err());
    }

    #[test]
    fn names_and_descriptions_are_escaped_in_the_create_document() {
        let xml = create_xml("a<b>&c", "x</description><name>evil");
        let parsed = parse_snapshot(&xml).unwrap();
        assert_eq!(parsed.name, "a<b>&c");
        assert_eq!(parsed.description, "x</description><name>evil");
    }
}
