//! The VM page's "Snapshots" section: the snapshots that exist now as a tree (each row knows
//! its depth, for indentation, and its parent's name, for screen readers), with links to the
//! snapshot forms for those who may use them, and the snapshots that existed once ("Past
//! snapshots"), with when they were seen and who removed them when vmdeck did.

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use super::store::SnapshotRow;
use crate::domain::VmKey;
use crate::web::format as view;

/// Indentation stops at this depth (deeper rows say their parent in words all the same).
const MAX_INDENT: usize = 12;

/// One snapshot that exists now, as a row of the tree.
#[derive(Debug, Serialize)]
pub struct SnapshotNode {
    pub id: i64,
    pub name: String,
    pub description: String,
    /// 0 for a root; the CSS class `depth-N` indents by it (capped).
    pub depth: usize,
    pub indent: usize,
    /// The parent's name, said in words beside the name for screen readers.
    pub parent: Option<String>,
    pub current: bool,
    /// When it was taken (`absolute` time, for the `utc_time` filter), or when vmdeck first
    /// saw it where the hypervisor does not say.
    pub taken: String,
    pub taken_known: bool,
    pub age: String,
    /// What it captured, in words: `disk and memory (running)`, `disk only (shutoff)`.
    pub captured: String,
    /// `taken by <user>` when vmdeck took it, else empty.
    pub taken_by: String,
    pub revert_href: String,
    pub delete_href: String,
}

/// One snapshot that no longer exists.
#[derive(Debug, Serialize)]
pub struct PastSnapshot {
    pub name: String,
    pub description: String,
    pub taken: String,
    pub first_seen: String,
    pub gone: String,
    /// Who removed it, in words.
    pub removed_by: String,
    pub taken_by: String,
}

/// The whole section.
#[derive(Debug, Serialize, Default)]
pub struct SnapshotSection {
    pub tree: Vec<SnapshotNode>,
    pub past: Vec<PastSnapshot>,
    /// The links to take, revert and delete, for operators on a backend with snapshots.
    pub links: bool,
    pub new_href: String,
    /// Past snapshots beyond those listed exist.
    pub past_capped: bool,
}

impl SnapshotSection {
    /// Builds the section from the VM's present and past rows (present in any order).
    pub fn build(
        key: &VmKey,
        present: Vec<SnapshotRow>,
        past: Vec<SnapshotRow>,
        links: bool,
        now: i64,
    ) -> SnapshotSection {
        let base = key.href();
        let past_capped = past.len() as i64 >= super::store::MAX_PAST_SNAPSHOTS;
        SnapshotSection {
            tree: tree(present, &base, now),
            past: past.into_iter().map(past_view).collect(),
            links,
            new_href: format!("{base}/snapshots/new"),
            past_capped,
        }
    }
}

/// Depth-first order: each root (or snapshot whose parent vmdeck does not list) and then its
/// children, oldest first at each level.
fn tree(rows: Vec<SnapshotRow>, base: &str, now: i64) -> Vec<SnapshotNode> {
    let present: HashSet<&str> = rows.iter().map(|r| r.snap_id.as_str()).collect();
    let names: HashMap<&str, &str> =
        rows.iter().map(|r| (r.snap_id.as_str(), r.name.as_str())).collect();
    let mut children: HashMap<Option<&str>, Vec<usize>> = HashMap::new();
    for (i, r) in rows.iter().enumerate() {
        let parent = r.parent_snap_id.as_deref().filter(|p| present.contains(p));
        children.entry(parent).or_default().push(i);
    }
    for list in children.values_mut() {
        list.sort_by(|&x, &y| {
            let k = |i: usize| {
                (rows[i].created_at.unwrap_or(rows[i].first_seen), &rows[i].name, rows[i].id)
            };
            k(x).cmp(&k(y))
        });
    }
    let mut order: Vec<(usize, usize)> = Vec::with_capacity(rows.len());
    let mut seen = vec![false; rows.len()];
    // An explicit stack: snapshot chains can be hundreds deep.
    let mut stack: Vec<(usize, usize)> =
        children.get(&None).map(|v| v.iter().rev().map(|&i| (i, 0)).collect()).unwrap_or_default();
    while let Some((i, depth)) = stack.pop() {
        if std::mem::replace(&mut seen[i], true) {
            continue;
        }
        order.push((i, depth));
        if let Some(kids) = children.get(&Some(rows[i].snap_id.as_str())) {
            stack.extend(kids.iter().rev().map(|&k| (k, depth + 1)));
        }
    }
    // A parent cycle (a hypervisor bug) leaves rows unreached: list them as roots.
    order.extend(seen.iter().enumerate().filter(|(_, s)| !**s).map(|(i, _)| (i, 0)));
    order
        .into_iter()
        .map(|(i, depth)| {
            let r = &rows[i];
            let parent = r
                .parent_snap_id
                .as_deref()
                .and_then(|p| names.get(p))
                .filter(|_| depth > 0)
                .map(|n| n.to_string());
            let when = r.created_at.unwrap_or(r.first_seen);
            SnapshotNode {
                id: r.id,
                name: r.name.clone(),
                description: r.description.clone(),
                depth,
                indent: depth.min(MAX_INDENT),
                parent,
                current: r.is_current,
                taken: view::absolute(when),
                taken_known: r.created_at.is_some(),
                age: view::duration_words(now - when),
                captured: captured(r),
                taken_by: taken_by(r),
                revert_href: format!("{base}/snapshots/{}/revert", r.id),
                delete_href: format!("{base}/snapshots/{}/delete", r.id),
            }
        })
        .collect()
}

fn captured(r: &SnapshotRow) -> String {
    let what = if r.with_memory { "disk and memory" } else { "disk only" };
    if r.vm_state.is_empty() {
        what.to_string()
    } else {
        format!("{what} ({})", r.vm_state)
    }
}

fn taken_by(r: &SnapshotRow) -> String {
    match (r.taken_by_audit_id, &r.taken_by) {
        (Some(_), Some(user)) => format!("taken by {user}"),
        (Some(_), None) => "taken by vmdeck".to_string(),
        (None, _) => String::new(),
    }
}

fn past_view(r: SnapshotRow) -> PastSnapshot {
    let removed_by = match (r.removed_by_audit_id, &r.removed_by) {
        (Some(_), Some(user)) => format!("removed by {user}"),
        (Some(_), None) => "removed by vmdeck".to_string(),
        (None, _) => "removed outside vmdeck (or by a revert)".to_string(),
    };
    PastSnapshot {
        taken: r.created_at.map(view::absolute).unwrap_or_default(),
        first_seen: view::absolute(r.first_seen),
        gone: r.gone_at.map(view::absolute).unwrap_or_default(),
        removed_by,
        taken_by: taken_by(&r),
        name: r.name,
        description: r.description,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: i64, name: &str, parent: Option<&str>, created: i64) -> SnapshotRow {
        SnapshotRow {
            id,
            snap_id: name.into(),
            name: name.into(),
            description: String::new(),
            parent_snap_id: parent.map(str::to_string),
            created_at: Some(created),
            vm_state: "running".into(),
            with_memory: true,
            is_current: false,
            first_seen: created,
            gone_at: None,
            taken_by_audit_id: None,
            taken_by: None,
            removed_by_audit_id: None,
            removed_by: None,
        }
    }

    #[test]
    fn the_tree_lists_children_under_their_parent_oldest_first_and_orphans_as_roots() {
        let rows = vec![
            row(1, "b-child", Some("root"), 30),
            row(2, "root", None, 10),
            row(3, "a-child", Some("root"), 20),
            row(4, "grandchild", Some("a-child"), 40),
            row(5, "orphan", Some("deleted-long-ago"), 5),
        ];
        let t = tree(rows, "/vms/h/u", 100);
        let got: Vec<(&str, usize, Option<&str>)> =
            t.iter().map(|n| (n.name.as_str(), n.depth, n.parent.as_deref())).collect();
        assert_eq!(
            got,
            vec![
                ("orphan", 0, None),
                ("root", 0, None),
                ("a-child", 1, Some("root")),
                ("grandchild", 2, Some("a-child")),
                ("b-child", 1, Some("root")),
            ]
        );
        assert_eq!(t[1].revert_href, "/vms/h/u/snapshots/2/revert");
    }

    #[test]
    fn a_parent_cycle_does_not_loop_and_loses_no_row() {
        let rows = vec![row(1, "a", Some("b"), 1), row(2, "b", Some("a"), 2)];
        assert_eq!(tree(rows, "/x", 3).len(), 2);
    }

    #[test]
    fn a_deep_chain_is_indented_up_to_a_cap() {
        let rows: Vec<SnapshotRow> = (0..500)
            .map(|i| {
                let parent = (i > 0).then(|| format!("s{}", i - 1));
                row(i, &format!("s{i}"), parent.as_deref(), i)
            })
            .collect();
        let t = tree(rows, "/x", 1000);
        assert_eq!(t.last().map(|n| (n.depth, n.indent)), Some((499, MAX_INDENT)));
    }
}
