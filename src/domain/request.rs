//! What a request in flight asks for: a power action or a snapshot action. Both go through the
//! same lifecycle and audit log (one request in flight per VM, whichever kind), so the list's
//! and the VM page's pending and failure markers, and the power menus that only offer what
//! may overrule a pending request, read either through this one type.

use serde::Serialize;
use sqlx::sqlite::{Sqlite, SqliteTypeInfo, SqliteValueRef};

use super::{PowerAction, SnapshotAction};

/// A request's action, as the audit log's `action` column stores it (power actions under their
/// own names, snapshot actions as `snapshot_…`, so the two never collide).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(untagged)]
pub enum RequestAction {
    Power(PowerAction),
    Snapshot(SnapshotAction),
}

impl RequestAction {
    pub fn as_str(self) -> &'static str {
        match self {
            RequestAction::Power(a) => a.as_str(),
            RequestAction::Snapshot(a) => a.as_str(),
        }
    }

    /// Words for people ("Shut down", "Take snapshot").
    pub fn label(self) -> &'static str {
        match self {
            RequestAction::Power(a) => a.label(),
            RequestAction::Snapshot(a) => a.label(),
        }
    }

    pub fn parse(s: &str) -> Option<RequestAction> {
        PowerAction::parse(s)
            .map(RequestAction::Power)
            .or_else(|| SnapshotAction::parse(s).map(RequestAction::Snapshot))
    }

    /// The power action, when it is one.
    pub fn power(self) -> Option<PowerAction> {
        match self {
            RequestAction::Power(a) => Some(a),
            RequestAction::Snapshot(_) => None,
        }
    }

    /// Whether power action `by` may overrule this pending request (a forced power action
    /// over a graceful one; nothing overrules a snapshot request: the hypervisor is busy with
    /// the VM's disks).
    pub fn overruled_by(self, by: PowerAction) -> bool {
        self.power().is_some_and(|p| by.overrules(p))
    }
}

impl From<PowerAction> for RequestAction {
    fn from(a: PowerAction) -> Self {
        RequestAction::Power(a)
    }
}

impl From<SnapshotAction> for RequestAction {
    fn from(a: SnapshotAction) -> Self {
        RequestAction::Snapshot(a)
    }
}

impl sqlx::Type<Sqlite> for RequestAction {
    fn type_info() -> SqliteTypeInfo {
        <str as sqlx::Type<Sqlite>>::type_info()
    }

    fn compatible(ty: &SqliteTypeInfo) -> bool {
        <str as sqlx::Type<Sqlite>>::compatible(ty)
    }
}

impl<'r> sqlx::Decode<'r, Sqlite> for RequestAction {
    fn decode(value: SqliteValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
        let s = <&str as sqlx::Decode<Sqlite>>::decode(value)?;
        RequestAction::parse(s).ok_or_else(|| format!("unknown request action {s:?}").into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_action_reads_back_from_its_stored_name() {
        for a in PowerAction::ALL {
            assert_eq!(RequestAction::parse(a.as_str()), Some(RequestAction::Power(a)));
        }
        for a in SnapshotAction::ALL {
            assert_eq!(RequestAction::parse(a.as_str()), Some(RequestAction::Snapshot(a)));
        }
        assert_eq!(RequestAction::parse("reboot_now"), None);
    }

    #[test]
    fn nothing_overrules_a_pending_snapshot_request() {
        let take = RequestAction::Snapshot(SnapshotAction::Take);
        assert!(PowerAction::ALL.iter().all(|a| !take.overruled_by(*a)));
        let shutdown = RequestAction::Power(PowerAction::Shutdown);
        assert!(shutdown.overruled_by(PowerAction::PowerOff));
    }
}
