//! The VM list's rows, held in memory between polls. Every request used to read and parse
//! every VM from SQLite (about 40 ms for 10,000 VMs here, more while a poll writes); now a
//! request asks SQLite only for the inventory version (migration 0005's triggers move it on any
//! host or VM change) and re-reads the rows when it moved, at most once per change however
//! many browsers ask.

use std::sync::Arc;

use sqlx::SqlitePool;
use tokio::sync::Mutex;

use super::store::{self, VmListRow};
use crate::backend::IpAddress;

/// One VM as the list filters and sorts it: the stored row plus what every request would
/// otherwise recompute.
pub struct Entry {
    pub row: VmListRow,
    pub ips: Vec<IpAddress>,
    /// The name lowercased, for case-insensitive search and sorting.
    pub name_key: String,
    /// Each address as text, for search.
    pub ip_texts: Vec<String>,
}

impl Entry {
    fn new(row: VmListRow) -> Entry {
        let ips: Vec<IpAddress> = serde_json::from_str(&row.addresses).unwrap_or_default();
        Entry {
            name_key: row.name.to_lowercase(),
            ip_texts: ips.iter().map(|ip| ip.addr.to_string()).collect(),
            ips,
            row,
        }
    }
}

/// Every VM vmdeck knows (gone ones included) at one inventory version.
pub struct Snapshot {
    version: i64,
    pub entries: Vec<Entry>,
}

impl Snapshot {
    /// The inventory version the rows were read at.
    pub fn version(&self) -> i64 {
        self.version
    }
}

/// The latest snapshot, shared by all requests (Rocket-managed state).
#[derive(Default)]
pub struct Snapshots {
    latest: Mutex<Option<Arc<Snapshot>>>,
}

impl Snapshots {
    /// The rows as of now: the held snapshot if nothing changed since it was read, else a new
    /// one. Concurrent requests after a change wait for one re-read instead of each doing it.
    pub async fn current(&self, pool: &SqlitePool) -> anyhow::Result<Arc<Snapshot>> {
        // The version is read before the rows: a change landing in between leaves the snapshot
        // tagged older than its rows, so the next request re-reads (never the other way round).
        let version = store::inventory_version(pool).await?;
        let mut latest = self.latest.lock().await;
        if let Some(s) = latest.as_ref().filter(|s| s.version == version) {
            return Ok(Arc::clone(s));
        }
        let rows = store::vm_rows(pool).await?;
        let snapshot =
            Arc::new(Snapshot { version, entries: rows.into_iter().map(Entry::new).collect() });
        *latest = Some(Arc::clone(&snapshot));
        Ok(snapshot)
    }
}
