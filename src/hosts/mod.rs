//! The host registry: every configured host with its backend, its poll state, and the one way
//! observations of it are recorded. The poller, the inventory pages and power control all use
//! this; none of them writes inventory tables any other way.
//!
//! `store` holds the SQL that records polls and observed states.

pub mod snapshots;
pub mod store;

use std::sync::{Arc, Mutex};
use std::time::Instant;

use rocket::fairing::AdHoc;
use serde::Serialize;
use sqlx::SqlitePool;

use crate::backend::{self, Backend, VmState};
use crate::config::{HostConfig, Settings};
use crate::db::{now_ms, Db, Storage, StorageFault};
pub use store::SnapshotPolicy;
use store::{HostCache, Recorded, SnapshotDue};

/// A configured host with its backend and poll state, shared by the poller and the web layer.
pub struct HostEntry {
    pub config: HostConfig,
    pub id: i64,
    pub backend: Arc<dyn Backend>,
    /// Whether the database takes writes, shared with power control and the health pages.
    storage: Arc<Storage>,
    cache: tokio::sync::Mutex<HostCache>,
    runtime: Mutex<Runtime>,
    snapshot_policy: SnapshotPolicy,
    /// Moved after every poll, stored or not (see [`PollSignal`]).
    signal: Arc<PollSignal>,
}

/// Counts finished polls of every host, so work that follows polls (alert evaluation) wakes
/// after each one without the registry knowing who listens. Rocket state, as `Arc<PollSignal>`.
pub struct PollSignal(tokio::sync::watch::Sender<u64>);

impl Default for PollSignal {
    fn default() -> Self {
        PollSignal(tokio::sync::watch::Sender::new(0))
    }
}

impl PollSignal {
    /// A receiver that sees every later poll (several polls between two looks count once).
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.0.subscribe()
    }

    fn polled(&self) {
        self.0.send_modify(|n| *n = n.wrapping_add(1));
    }
}

/// In-memory poll state (the database has the history; this has what is happening now).
#[derive(Debug, Default, Clone, Serialize)]
pub struct Runtime {
    pub polling: bool,
    pub polls: u64,
    pub consecutive_failures: u32,
    pub last_duration_ms: Option<u64>,
    /// Set while this host's polls cannot be stored (the database is full, read-only...):
    /// the banner says so, and the error is logged once per streak, not at every poll.
    #[serde(skip)]
    pub store_fault: Option<StorageFault>,
    /// Snapshot sets asked of the backend since start (a set the inventory carried does not
    /// count): steady-state polls add none.
    #[serde(skip)]
    pub snapshot_reads: u64,
}

/// Every configured host, as Rocket state.
pub struct Hosts(pub Vec<Arc<HostEntry>>);

impl Hosts {
    pub fn get(&self, name: &str) -> Option<&Arc<HostEntry>> {
        self.0.iter().find(|h| h.config.name.as_str() == name)
    }

    /// The configured host names, in configuration order.
    pub fn names(&self) -> Vec<&str> {
        self.0.iter().map(|h| h.config.name.as_str()).collect()
    }
}

/// What one poll did.
#[derive(Debug)]
pub enum PollOutcome {
    Recorded(Recorded),
    /// The backend failed; the failure was recorded.
    Failed(String),
}

impl HostEntry {
    pub fn new(
        config: HostConfig,
        id: i64,
        backend: Arc<dyn Backend>,
        storage: Arc<Storage>,
    ) -> Self {
        HostEntry {
            config,
            id,
            backend,
            storage,
            cache: tokio::sync::Mutex::default(),
            runtime: Mutex::default(),
            snapshot_policy: SnapshotPolicy::default(),
            signal: Arc::default(),
        }
    }

    /// Announces this host's polls on `signal` (shared by every host).
    pub fn with_signal(mut self, signal: Arc<PollSignal>) -> Self {
        self.signal = signal;
        self
    }

    /// Reads snapshot sets as `policy` says instead of by the default intervals.
    pub fn with_snapshot_policy(mut self, policy: SnapshotPolicy) -> Self {
        self.snapshot_policy = policy;
        self
    }

    /// Stores one VM's freshly observed state (see [`store::record_state`]): a power action's
    /// confirmation shows in the list at once, without re-polling the whole host.
    pub async fn record_state(&self, pool: &SqlitePool, uuid: &str, state: &VmState) {
        let mut cache = self.cache.lock().await;
        if let Err(e) = store::record_state(pool, &mut cache, self.id, uuid, state, now_ms()).await
        {
            tracing::error!(vm = uuid, "storing an observed state failed: {e}");
            *cache = HostCache::default();
        }
    }

    pub fn runtime(&self) -> Runtime {
        self.runtime.lock().map(|r| r.clone()).unwrap_or_default()
    }

    fn update_runtime(&self, f: impl FnOnce(&mut Runtime)) {
        if let Ok(mut r) = self.runtime.lock() {
            f(&mut r);
        }
    }

    /// Polls the host once and records the result. Never panics; database errors are logged
    /// and returned as a failure.
    #[tracing::instrument(skip_all, fields(host = %self.config.name))]
    pub async fn poll(&self, pool: &SqlitePool) -> PollOutcome {
        self.update_runtime(|r| r.polling = true);
        let started_at = now_ms();
        let clock = Instant::now();
        let result = self.backend.inventory().await;
        let finished_at = now_ms();
        let mut snapshots_due = Vec::new();
        let stored = match result {
            Ok(reports) => {
                let mut cache = self.cache.lock().await;
                let recorded = store::record_success(
                    pool,
                    &mut cache,
                    self.id,
                    started_at,
                    finished_at,
                    &reports,
                )
                .await;
                if recorded.is_ok() {
                    let readable = self.backend.snapshot_caps().supported;
                    snapshots_due =
                        cache.snapshots_due(&reports, finished_at, self.snapshot_policy, readable);
                }
                recorded.map(PollOutcome::Recorded)
            }
            Err(e) => {
                let message = e.to_string();
                tracing::warn!("poll failed: {message}");
                store::record_failure(pool, self.id, started_at, finished_at, &message)
                    .await
                    .map(|_| PollOutcome::Failed(message))
            }
        };
        let outcome = match stored {
            Ok(outcome) => {
                self.storage.stored();
                if self.runtime().store_fault.is_some() {
                    tracing::info!("polls are stored again");
                }
                self.update_runtime(|r| r.store_fault = None);
                outcome
            }
            Err(e) => self.store_failed(&e),
        };
        if let PollOutcome::Recorded(rec) = &outcome {
            tracing::debug!(vms = rec.vms, new = rec.new_vms, gone = rec.gone_vms, "poll recorded");
            self.record_snapshot_sets(pool, snapshots_due).await;
        }
        let elapsed = clock.elapsed().as_millis() as u64;
        self.update_runtime(|r| {
            r.polling = false;
            r.polls += 1;
            r.last_duration_ms = Some(elapsed);
            match outcome {
                PollOutcome::Recorded(_) => r.consecutive_failures = 0,
                PollOutcome::Failed(_) => r.consecutive_failures += 1,
            }
        });
        self.signal.polled();
        outcome
    }
}

impl HostEntry {
    /// Records the snapshot sets a poll found due (see [`HostCache::snapshots_due`]): the
    /// reported ones as they are, the others read from the backend one VM at a time. A read or
    /// a write that fails is logged and tried again at the next poll (the cache keeps the VM
    /// due); it never fails the poll.
    async fn record_snapshot_sets(&self, pool: &SqlitePool, due: Vec<SnapshotDue>) {
        for item in due {
            let read;
            let snaps = match &item.reported {
                Some((snaps, _)) => snaps,
                None => {
                    self.update_runtime(|r| r.snapshot_reads += 1);
                    match self.backend.snapshots(&item.uuid).await {
                        Ok(s) => {
                            read = s;
                            &read
                        }
                        Err(e) => {
                            tracing::warn!(
                                vm = %item.uuid,
                                reason = ?item.reason,
                                "reading the VM's snapshots failed (tried again next poll): {e}"
                            );
                            continue;
                        }
                    }
                }
            };
            let now = now_ms();
            let recorded = snapshots::record_snapshots(
                pool,
                item.vm_id,
                snaps,
                now,
                Some(&item.read_key),
                None,
            )
            .await;
            match recorded {
                Ok(_) => self.cache.lock().await.snapshots_recorded(&item, now),
                Err(e) => {
                    tracing::error!(vm = %item.uuid, "storing the VM's snapshots failed: {e}")
                }
            }
        }
    }

    /// A poll that could not be stored: logged once per streak when the database refuses
    /// writes (the banner says so meanwhile), every time otherwise.
    fn store_failed(&self, e: &sqlx::Error) -> PollOutcome {
        let Some(fault) = self.storage.failed(e) else {
            tracing::error!("storing the poll failed: {e}");
            return PollOutcome::Failed(format!("storing the poll failed: {e}"));
        };
        if self.runtime().store_fault.is_none() {
            tracing::error!(
                "{}: cannot store polls ({e}); {}. Polling goes on, and this is logged again \
                 only after polls have been stored once more.",
                fault.label(),
                fault.remedy()
            );
        }
        self.update_runtime(|r| r.store_fault = Some(fault));
        PollOutcome::Failed(format!("{}: cannot store polls", fault.label()))
    }
}

/// Registers the configured hosts in the database and creates one backend per host.
pub fn stage() -> AdHoc {
    AdHoc::try_on_ignite("Hosts", |rocket| async move {
        let (Some(settings), Some(db), Some(storage)) =
            (rocket.state::<Settings>(), rocket.state::<Db>(), rocket.state::<Arc<Storage>>())
        else {
            return Err(rocket);
        };
        let ids = match store::upsert_hosts(&db.0, &settings.hosts, settings.demo).await {
            Ok(ids) => ids,
            Err(e) => {
                tracing::error!("cannot register hosts in the database: {e}");
                return Err(rocket);
            }
        };
        let signal = Arc::new(PollSignal::default());
        let entries = settings
            .hosts
            .iter()
            .zip(ids)
            .map(|(h, id)| {
                Arc::new(
                    HostEntry::new(
                        h.clone(),
                        id,
                        backend::connect(
                            &h.driver,
                            settings.call_timeout,
                            settings.snapshot_timeout,
                        ),
                        storage.clone(),
                    )
                    .with_snapshot_policy(SnapshotPolicy {
                        interval_ms: settings.snapshot_interval.as_millis() as i64,
                        poll_interval_ms: settings.poll_interval.as_millis() as i64,
                    })
                    .with_signal(signal.clone()),
                )
            })
            .collect();
        Ok(rocket.manage(Arc::new(Hosts(entries))).manage(signal))
    })
}
