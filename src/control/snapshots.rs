//! TEMPORARY STUB until snap-act lands (reverted before the merge).
use crate::control::{Control, Target};
use crate::db::StorageFault;
use crate::domain::{Actor, AfterRevert, SnapshotAction};

pub struct SnapshotRequest {
    pub action: SnapshotAction,
    pub snapshot_name: String,
    pub snap_id: Option<String>,
    pub description: String,
    pub with_memory: bool,
    pub after: AfterRevert,
    pub schedule_id: Option<i64>,
}
pub enum SnapshotOutcome {
    Requested { audit_id: i64 },
    Refused(String),
    Failed(String),
    Unrecorded(StorageFault),
}
impl Control {
    pub async fn snapshot(&self, _t: &Target, _r: SnapshotRequest, _a: &Actor) -> SnapshotOutcome {
        SnapshotOutcome::Failed("stub".into())
    }
}
