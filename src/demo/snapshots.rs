//! The demo lab's snapshots: a few VMs get a small snapshot tree at every start (libvirt's test
//! driver keeps snapshots in memory only), taken through the backend as an operator's would be,
//! so the list's Snapshots column and age filter and the VM page's tree have something to show.
//! Their creation times are set back by each one's planned age when first recorded (the test
//! driver stamps them now), like the rest of the demo's generated history; a restart finds
//! them recorded already and keeps those times.

use sqlx::SqlitePool;

use crate::backend::{AfterRevert, BackendError, SnapshotOp};
use crate::hosts::{snapshots::record_snapshots, HostEntry};

const DAY_MS: i64 = 86_400_000;

/// One step of a demo VM's tree: take a snapshot, or first go back to an earlier one so the
/// next take starts a branch.
enum Step {
    Take { name: &'static str, description: &'static str, age_days: i64 },
    RevertTo(&'static str),
}

/// The VMs with snapshots, and how their trees grow.
const TREES: &[(&str, &[Step])] = &[
    (
        "db-primary",
        &[
            Step::Take {
                name: "before-pg16-upgrade",
                description: "PostgreSQL 15.6, before the major upgrade.\nKeep until the upgrade has run a month.",
                age_days: 62,
            },
            Step::Take {
                name: "schema-v42",
                description: "After migration 42",
                age_days: 20,
            },
            Step::Take { name: "pre-reindex", description: "", age_days: 3 },
        ],
    ),
    (
        "web-01",
        &[
            Step::Take {
                name: "golden-image",
                description: "Base image with the web stack configured",
                age_days: 40,
            },
            Step::Take { name: "nginx-1.26", description: "", age_days: 9 },
            Step::RevertTo("golden-image"),
            Step::Take {
                name: "caddy-trial",
                description: "Trying Caddy instead of nginx",
                age_days: 2,
            },
        ],
    ),
    (
        "win2022-ad",
        &[Step::Take {
            name: "before-patch-tuesday",
            description: "Before the November updates",
            age_days: 35,
        }],
    ),
];

/// Gives the demo VMs their trees and records them (a VM missing from the lab is skipped; a
/// failure is logged and the demo runs on without that VM's snapshots).
pub async fn seed(pool: &SqlitePool, host: &HostEntry, now: i64) {
    let lab = match host.backend.inventory().await {
        Ok(lab) => lab,
        Err(e) => {
            tracing::error!("demo: no snapshots (the lab's inventory failed: {e})");
            return;
        }
    };
    for (vm_name, steps) in TREES {
        let Some(vm) = lab.iter().find(|r| r.name == *vm_name) else { continue };
        if let Err(e) = grow(pool, host, &vm.uuid, steps, now).await {
            tracing::error!(vm = vm_name, "demo: snapshots not created: {e}");
        }
    }
}

async fn grow(
    pool: &SqlitePool,
    host: &HostEntry,
    uuid: &str,
    steps: &[Step],
    now: i64,
) -> Result<(), BackendError> {
    for step in steps {
        let op = match step {
            Step::Take { name, description, .. } => SnapshotOp::Take {
                name: name.to_string(),
                description: description.to_string(),
                with_memory: false,
            },
            Step::RevertTo(name) => {
                SnapshotOp::Revert { id: name.to_string(), after: AfterRevert::AsTaken }
            }
        };
        host.backend.snapshot(uuid, &op).await?;
    }
    let mut set = host.backend.snapshots(uuid).await?;
    for s in &mut set {
        let age = steps.iter().find_map(|st| match st {
            Step::Take { name, age_days, .. } if *name == s.name => Some(*age_days),
            _ => None,
        });
        if let Some(days) = age {
            s.created_at_ms = Some(now - days * DAY_MS);
        }
    }
    // Recorded now if the VM is known (the generated history recorded it); otherwise the
    // first poll records them with the test driver's own times.
    let vm_id: Option<i64> =
        sqlx::query_scalar("SELECT id FROM vms WHERE host_id = ? AND uuid = ?")
            .bind(host.id)
            .bind(uuid)
            .fetch_optional(pool)
            .await
            .map_err(|e| BackendError::Hypervisor(format!("reading the VM's row: {e}")))?;
    if let Some(vm_id) = vm_id {
        record_snapshots(pool, vm_id, &set, now, None, None)
            .await
            .map_err(|e| BackendError::Hypervisor(format!("recording them: {e}")))?;
    }
    Ok(())
}
