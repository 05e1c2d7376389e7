//! Snapshot actions: what an operator (or a schedule) can ask of a VM's snapshots, and what a
//! reverted VM does next. Requests go through the same lifecycle and audit log as power
//! actions (audit kind `snapshot`, the action column holds [`SnapshotAction::as_str`]).

use serde::{Deserialize, Serialize};

/// A snapshot action. Stored in the audit log's `action` column as its `snapshot_…` name, so
/// it never collides with a power action's.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    sqlx::Type,
    rocket::FromFormField,
)]
#[serde(rename_all = "snake_case")]
#[sqlx(rename_all = "snake_case")]
pub enum SnapshotAction {
    /// Take a new snapshot (disk only, or with the running VM's memory).
    #[field(value = "snapshot_take")]
    #[serde(rename = "snapshot_take")]
    #[sqlx(rename = "snapshot_take")]
    Take,
    /// Go back to a snapshot: the VM's current state is lost.
    #[field(value = "snapshot_revert")]
    #[serde(rename = "snapshot_revert")]
    #[sqlx(rename = "snapshot_revert")]
    Revert,
    /// Delete one snapshot (its children are kept and re-parented by the hypervisor).
    #[field(value = "snapshot_delete")]
    #[serde(rename = "snapshot_delete")]
    #[sqlx(rename = "snapshot_delete")]
    Delete,
}

impl SnapshotAction {
    pub const ALL: [SnapshotAction; 3] =
        [SnapshotAction::Take, SnapshotAction::Revert, SnapshotAction::Delete];

    pub fn as_str(self) -> &'static str {
        match self {
            SnapshotAction::Take => "snapshot_take",
            SnapshotAction::Revert => "snapshot_revert",
            SnapshotAction::Delete => "snapshot_delete",
        }
    }

    /// Words for people ("Take snapshot").
    pub fn label(self) -> &'static str {
        match self {
            SnapshotAction::Take => "Take snapshot",
            SnapshotAction::Revert => "Revert to snapshot",
            SnapshotAction::Delete => "Delete snapshot",
        }
    }

    pub fn parse(s: &str) -> Option<SnapshotAction> {
        SnapshotAction::ALL.into_iter().find(|a| a.as_str() == s)
    }
}

/// What a VM does once reverted to a snapshot.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Default,
    Serialize,
    Deserialize,
    sqlx::Type,
    rocket::FromFormField,
)]
#[serde(rename_all = "snake_case")]
#[sqlx(rename_all = "snake_case")]
pub enum AfterRevert {
    /// The state the snapshot captured (running if taken with memory, else shut off).
    #[default]
    #[field(value = "as_taken")]
    AsTaken,
    /// Running, whatever the snapshot captured.
    #[field(value = "running")]
    Running,
    /// Paused, so the operator can look before the guest runs on.
    #[field(value = "paused")]
    Paused,
}

impl AfterRevert {
    /// Every choice, in the order the revert form shows them.
    pub const ALL: [AfterRevert; 3] =
        [AfterRevert::AsTaken, AfterRevert::Running, AfterRevert::Paused];

    pub fn as_str(self) -> &'static str {
        match self {
            AfterRevert::AsTaken => "as_taken",
            AfterRevert::Running => "running",
            AfterRevert::Paused => "paused",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            AfterRevert::AsTaken => "as the snapshot left it",
            AfterRevert::Running => "running",
            AfterRevert::Paused => "paused",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_actions_never_share_a_name_with_a_power_action() {
        for a in SnapshotAction::ALL {
            assert!(crate::domain::PowerAction::ALL.iter().all(|p| p.as_str() != a.as_str()));
            assert_eq!(SnapshotAction::parse(a.as_str()), Some(a));
        }
    }
}
