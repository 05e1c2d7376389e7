//! The libvirt connection: one reused connection per host, reconnect with backoff, and an
//! inventory built from one bulk stats call plus the per-domain calls that fill what the bulk call
//! lacks.
//!
//! libvirt calls block, so every call runs on tokio's blocking pool under a time limit: the
//! host's `call_timeout`, or `snapshot_timeout` for a snapshot take, revert or delete. A call
//! that hangs keeps its thread (libvirt cannot be interrupted); while one is stuck past its own
//! time limit, new calls fail fast with [`BackendError::Busy`] instead of piling up behind it. A
//! snapshot still within its longer limit is not stuck: polls and power actions go on beside it.
//!
//! Long because the connection's life (reconnect, backoff, the stuck-call guard) and the
//! inventory's per-domain fallbacks belong together; the bulk call's FFI is in `bulk.rs`, the XML
//! in `xml.rs`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, TryLockError};
use std::time::{Duration, Instant};

use virt::connect::Connect;
use virt::domain::Domain;
use virt::enumutil::Enum;
use virt::error::ErrorNumber;
use virt_sys as sys;

use super::bulk::{self, Stats};
use super::xml;
use crate::backend::{
    sort_addresses, AddrSource, Backend, BackendError, Counters, DiskUsage, DisplayError,
    DisplayStream, IpAddress, Offer, PowerAction, PowerState, SnapshotCaps, SnapshotOp,
    SnapshotReport, VmConfig, VmReport, VmState,
};
use crate::config::uri::HostUri;

/// Longest wait between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

pub struct LibvirtBackend {
    inner: Arc<Inner>,
    console: super::ConsoleVia,
    call_timeout: Duration,
    snapshot_timeout: Duration,
}

struct Inner {
    uri: HostUri,
    call_timeout: Duration,
    conn: Mutex<ConnState>,
    /// The calls in progress, by call number.
    calls: Mutex<HashMap<u64, Call>>,
    next_call: std::sync::atomic::AtomicU64,
}

/// A call in progress: when it started and how long it may take. Each call is judged against
/// its own limit, so a snapshot allowed ten minutes does not make the host look hung after the
/// ordinary call limit.
#[derive(Debug, Clone, Copy)]
struct Call {
    started: Instant,
    limit: Duration,
}

impl Call {
    fn overdue(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.started) > self.limit
    }
}

#[derive(Default)]
struct ConnState {
    conn: Option<Arc<Connect>>,
    failures: u32,
    retry_at: Option<Instant>,
    last_error: String,
}

impl LibvirtBackend {
    pub fn new(
        settings: &super::LibvirtSettings,
        call_timeout: Duration,
        snapshot_timeout: Duration,
    ) -> Self {
        silence_default_error_printer();
        LibvirtBackend {
            console: settings.console,
            inner: Arc::new(Inner {
                uri: settings.uri.clone(),
                call_timeout,
                conn: Mutex::default(),
                calls: Mutex::default(),
                next_call: Default::default(),
            }),
            call_timeout,
            snapshot_timeout,
        }
    }

    /// Runs `f` with the host's connection on the blocking pool, under the call time limit.
    async fn with_connection<T, F>(&self, f: F) -> Result<T, BackendError>
    where
        T: Send + 'static,
        F: FnOnce(&Connect) -> Result<T, BackendError> + Send + 'static,
    {
        self.with_connection_for(self.call_timeout, f).await
    }

    /// Runs `f` with the host's connection on the blocking pool, under `limit`.
    async fn with_connection_for<T, F>(&self, limit: Duration, f: F) -> Result<T, BackendError>
    where
        T: Send + 'static,
        F: FnOnce(&Connect) -> Result<T, BackendError> + Send + 'static,
    {
        let inner = self.inner.clone();
        let span = tracing::Span::current();
        let task = tokio::task::spawn_blocking(move || {
            let _entered = span.enter();
            inner.run(limit, f)
        });
        match tokio::time::timeout(limit, task).await {
            Ok(Ok(result)) => result,
            Ok(Err(join)) => Err(BackendError::Hypervisor(format!("libvirt call failed: {join}"))),
            Err(_) => Err(BackendError::Timeout(limit)),
        }
    }
}

#[async_trait::async_trait]
impl Backend for LibvirtBackend {
    async fn inventory(&self) -> Result<Vec<VmReport>, BackendError> {
        self.with_connection(collect_inventory).await
    }

    async fn power(&self, uuid: &str, action: PowerAction) -> Result<(), BackendError> {
        let uuid = uuid.to_string();
        self.with_connection(move |conn| {
            let dom = lookup(conn, &uuid)?;
            let result = match action {
                PowerAction::Start => dom.create(),
                PowerAction::Shutdown => dom.shutdown(),
                PowerAction::PowerOff => dom.destroy(),
                PowerAction::Reboot => dom.reboot(0),
                PowerAction::Reset => dom.reset(),
                PowerAction::Pause => dom.suspend(),
                PowerAction::Resume => dom.resume(),
                PowerAction::Save => dom.managed_save(0).map(|_| ()),
                PowerAction::Wake => dom.pm_wakeup(0),
            };
            result.map(|_| ()).map_err(|e| {
                // The state the VM is in now, for the words: the page the request came from
                // may have shown an older one.
                let now = dom.info().ok().map(|i| describe_state(i.state.to_raw(), 0).1);
                action_error(action, e, now)
            })
        })
        .await
    }

    fn offers(&self, action: PowerAction, state: PowerState, raw_state: &str) -> Offer {
        super::offers(action, state, raw_state)
    }

    async fn vm_state(&self, uuid: &str) -> Result<VmState, BackendError> {
        let uuid = uuid.to_string();
        self.with_connection(move |conn| {
            let dom = lookup(conn, &uuid)?;
            let info = dom.info().map_err(|e| hv_error("reading the VM state", e))?;
            // virDomainGetInfo has no reason; the next poll stores it.
            let (state, raw, _) = describe_state(info.state.to_raw(), 0);
            Ok(VmState { state, raw_state: raw.to_string(), state_reason: String::new() })
        })
        .await
    }

    async fn snapshots(&self, uuid: &str) -> Result<Vec<SnapshotReport>, BackendError> {
        let uuid = uuid.to_string();
        self.with_connection(move |conn| super::snapshots::list_for(conn, &uuid)).await
    }

    async fn snapshot(&self, uuid: &str, op: &SnapshotOp) -> Result<(), BackendError> {
        let uuid = uuid.to_string();
        let op = op.clone();
        // Taking a running VM's memory, or reverting to it, can take minutes: its own limit.
        self.with_connection_for(self.snapshot_timeout, move |conn| {
            super::snapshots::run(&lookup(conn, &uuid)?, &op)
        })
        .await
    }

    fn display_support(&self) -> Result<(), String> {
        super::display::support(&self.inner.uri)
    }

    async fn open_display(&self, uuid: &str) -> Result<DisplayStream, DisplayError> {
        use super::display::Opened;
        let (uuid, uri, via) = (uuid.to_string(), self.inner.uri.clone(), self.console);
        let opened = self
            .with_connection(move |conn| super::display::open(conn, &uuid, &uri, via))
            .await??;
        let unreachable = |to: &str, e: std::io::Error| {
            DisplayError::Unreachable(format!("cannot connect to the VM's display at {to}: {e}"))
        };
        match opened {
            Opened::Fd(fd) => {
                let std = std::os::unix::net::UnixStream::from(fd);
                let io = std
                    .set_nonblocking(true)
                    .and_then(|()| tokio::net::UnixStream::from_std(std))
                    .map_err(|e| {
                        BackendError::Hypervisor(format!("the handed-over socket: {e}"))
                    })?;
                Ok(DisplayStream {
                    io: Box::new(io),
                    via: "a socket handed over by libvirt".into(),
                })
            }
            Opened::Tcp { host, port } => {
                let to = format!("{host}:{port}");
                let connect = tokio::net::TcpStream::connect((host.as_str(), port));
                let io = tokio::time::timeout(self.call_timeout, connect)
                    .await
                    .map_err(|_| unreachable(&to, std::io::ErrorKind::TimedOut.into()))?
                    .map_err(|e| unreachable(&to, e))?;
                let _ = io.set_nodelay(true);
                Ok(DisplayStream { io: Box::new(io), via: to })
            }
            Opened::Unix { path } => {
                let io = tokio::net::UnixStream::connect(&path)
                    .await
                    .map_err(|e| unreachable(&path, e))?;
                Ok(DisplayStream { io: Box::new(io), via: path })
            }
        }
    }

    fn snapshot_caps(&self) -> SnapshotCaps {
        // Internal snapshots: a running VM's always includes its memory; a revert may leave the
        // VM running or paused whatever the snapshot captured.
        SnapshotCaps {
            supported: true,
            memory_choice: false,
            running_with_memory: true,
            revert_choose_state: true,
        }
    }
}

pub(super) fn lookup(conn: &Connect, uuid: &str) -> Result<Domain, BackendError> {
    conn.lookup_domain_by_uuid_string(uuid).map_err(|e| {
        if matches!(e.code(), Enum::Known(ErrorNumber::NoDomain)) {
            BackendError::NoSuchVm
        } else {
            hv_error("looking up the VM", e)
        }
    })
}

/// libvirt's error for a power action, in words an operator can act on.
/// A refused action in words: what libvirt said is kept, after what it means. `now` is
/// libvirt's word for the domain's state read after the failure, when it could be.
fn action_error(action: PowerAction, e: virt::error::Error, now: Option<&str>) -> BackendError {
    let said = e.message().trim_end_matches('.').to_string();
    let state = now.map_or_else(String::new, |w| format!(" (its state is {w})"));
    match e.code() {
        Enum::Known(ErrorNumber::NoDomain) => BackendError::NoSuchVm,
        Enum::Known(ErrorNumber::NoSupport) => BackendError::Unsupported(format!(
            "this host's libvirt driver cannot {} a VM (libvirt: {said})",
            action.label().to_lowercase()
        )),
        // "Domain is already active" (start, on a running or crashed domain) and the test
        // driver's "domain '…' not paused" come without a state: say it with one.
        _ if said.contains("already active") || said.contains("already running") => {
            BackendError::InvalidState(format!("the VM is already running{state}"))
        }
        _ if said.contains("not paused") => {
            BackendError::InvalidState(format!("the VM is not paused{state}"))
        }
        _ if said.contains("not running") => {
            BackendError::InvalidState(format!("the VM is not running{state}"))
        }
        Enum::Known(ErrorNumber::OperationInvalid) => {
            BackendError::InvalidState(format!("{said}{state}"))
        }
        _ => BackendError::Hypervisor(format!("{} failed: {said}", action.label())),
    }
}

impl Inner {
    /// Runs `f` with the host's connection, connecting first if needed.
    ///
    /// libvirt connections are thread-safe, so calls run concurrently on one shared connection;
    /// the lock only guards connecting. A call still running past its time limit (`limit`
    /// for this one) means the host hangs: further calls then fail fast instead of piling up
    /// blocked threads.
    fn run<T>(
        &self,
        limit: Duration,
        f: impl FnOnce(&Connect) -> Result<T, BackendError>,
    ) -> Result<T, BackendError> {
        if self.hung() {
            return Err(BackendError::Busy);
        }
        let conn = self.connection()?;
        let id = self.begin_call(limit);
        let result = f(&conn);
        self.end_call(id);
        match result {
            Ok(v) => {
                if let Ok(mut st) = self.conn.lock() {
                    st.failures = 0;
                    st.retry_at = None;
                }
                Ok(v)
            }
            Err(err) => {
                // Only a dead connection is dropped; a domain-level error keeps it.
                if !conn.is_alive().unwrap_or(false) {
                    tracing::warn!(uri = self.uri.redacted(), "connection lost; will reconnect");
                    if let Ok(mut st) = self.conn.lock() {
                        if st.conn.as_ref().is_some_and(|c| Arc::ptr_eq(c, &conn)) {
                            st.conn = None;
                            st.record_failure(&err);
                        }
                    }
                }
                Err(err)
            }
        }
    }

    /// The shared connection, opened (respecting the backoff) when there is none.
    fn connection(&self) -> Result<Arc<Connect>, BackendError> {
        // Another thread may be connecting (which can hang): wait for it up to the time limit.
        let deadline = Instant::now() + self.call_timeout;
        let mut st = loop {
            match self.conn.try_lock() {
                Ok(guard) => break guard,
                Err(TryLockError::Poisoned(p)) => {
                    let mut guard = p.into_inner();
                    guard.conn = None;
                    break guard;
                }
                Err(TryLockError::WouldBlock) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                Err(TryLockError::WouldBlock) => return Err(BackendError::Busy),
            }
        };
        if let Some(c) = &st.conn {
            return Ok(c.clone());
        }
        if let Some(at) = st.retry_at {
            let now = Instant::now();
            if at > now {
                return Err(BackendError::Backoff {
                    failures: st.failures,
                    retry_in_secs: (at - now).as_secs().max(1),
                    last_error: st.last_error.clone(),
                });
            }
        }
        let call = self.begin_call(self.call_timeout);
        let opened = Connect::open(Some(self.uri.expose()));
        self.end_call(call);
        match opened {
            Ok(c) => {
                tracing::info!(uri = self.uri.redacted(), "connected");
                let c = Arc::new(c);
                st.conn = Some(c.clone());
                Ok(c)
            }
            Err(e) => {
                let err = BackendError::Connect {
                    uri: self.uri.redacted().to_string(),
                    message: scrub(e.message(), &self.uri),
                };
                st.record_failure(&err);
                Err(err)
            }
        }
    }

    fn begin_call(&self, limit: Duration) -> u64 {
        let id = self.next_call.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Ok(mut calls) = self.calls.lock() {
            calls.insert(id, Call { started: Instant::now(), limit });
        }
        id
    }

    fn end_call(&self, id: u64) {
        if let Ok(mut calls) = self.calls.lock() {
            calls.remove(&id);
        }
    }

    /// Whether a call has been stuck inside libvirt for longer than its own time limit.
    fn hung(&self) -> bool {
        let now = Instant::now();
        self.calls.lock().map(|c| c.values().any(|call| call.overdue(now))).unwrap_or(false)
    }
}

impl ConnState {
    fn record_failure(&mut self, err: &BackendError) {
        self.failures += 1;
        // 1 s, 2 s, 4 s ... up to MAX_BACKOFF; the first retry comes at the next poll.
        let backoff = Duration::from_secs(1u64 << (self.failures - 1).min(6)).min(MAX_BACKOFF);
        self.retry_at = Some(Instant::now() + backoff);
        self.last_error = err.to_string();
    }
}

/// libvirt prints every error to stderr unless a handler is set; vmdeck reports errors itself.
fn silence_default_error_printer() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(virt::error::clear_error_callback);
}

/// Removes the raw URI (which may hold a password) from a libvirt error message.
fn scrub(message: &str, uri: &HostUri) -> String {
    message.replace(uri.expose(), uri.redacted())
}

fn hv_error(what: &str, e: virt::error::Error) -> BackendError {
    BackendError::Hypervisor(format!("{what}: {}", e.message()))
}

/// The whole inventory: one bulk stats call, then per-domain calls for what it lacks.
fn collect_inventory(conn: &Connect) -> Result<Vec<VmReport>, BackendError> {
    let records = bulk::all_domain_stats(conn).map_err(|e| hv_error("listing domains", e))?;
    let mut out = Vec::with_capacity(records.len());
    for (dom, stats) in records {
        match domain_report(conn, &dom, &stats) {
            Ok(r) => out.push(r),
            // A domain undefined between the bulk call and its per-domain calls is simply gone.
            Err(e) if matches!(e.code(), Enum::Known(ErrorNumber::NoDomain)) => continue,
            Err(e) => return Err(hv_error("reading a domain", e)),
        }
    }
    Ok(out)
}

fn domain_report(
    conn: &Connect,
    dom: &Domain,
    stats: &Stats,
) -> Result<VmReport, virt::error::Error> {
    let uuid = dom.uuid_string()?;
    let name = dom.name()?;
    let xml_text = dom.xml_desc(0)?;
    // An unreadable definition still lets the VM be listed with its state and counters.
    let parsed = xml::parse_domain(&xml_text).unwrap_or_else(|m| {
        tracing::warn!(vm = %name, "unreadable domain XML: {m}");
        xml::DomainXml::default()
    });

    // Every driver that implements the bulk call reports the state group; without it the
    // state is honestly unknown.
    let state_code = stats.u64("state.state").unwrap_or(0) as u32;
    let reason_code = stats.u64("state.reason").unwrap_or(0) as u32;
    let active = matches!(state_code, 1..=4);
    // The test driver's bulk call has no cpu/balloon groups; virDomainGetInfo fills them.
    let info = if stats.u64("cpu.time").is_none() { dom.info().ok() } else { None };

    let vcpus =
        stats.u64("vcpu.current").map(|v| v as u32).filter(|_| active).unwrap_or(parsed.vcpus);
    let memory_max_kib = stats
        .u64("balloon.maximum")
        .or(info.as_ref().map(|i| i.max_mem))
        .unwrap_or(parsed.memory_max_kib);
    let memory_current_kib = stats
        .u64("balloon.current")
        .or(info.as_ref().filter(|_| active).map(|i| i.memory))
        .unwrap_or(parsed.memory_current_kib);
    let memory_used_kib = stats.u64("balloon.rss").filter(|_| active);

    // Block devices: bulk records are indexed, matched to the XML by target name.
    let block_count = stats.u64("block.count").unwrap_or(0);
    let mut block_by_name: HashMap<&str, u64> = HashMap::new();
    for i in 0..block_count {
        if let Some(n) = stats.str(&format!("block.{i}.name")) {
            block_by_name.insert(n, i);
        }
    }
    let graphics = parsed.display_kind();
    let mut disks = parsed.disks;
    let mut disk_usage = Vec::with_capacity(disks.len());
    let (mut rd, mut wr, mut have_block_io) = (0u64, 0u64, false);
    for d in &mut disks {
        let (cap, alloc, phys) = match block_by_name.get(d.target.as_str()) {
            Some(i) => (
                stats.u64(&format!("block.{i}.capacity")),
                stats.u64(&format!("block.{i}.allocation")),
                stats.u64(&format!("block.{i}.physical")),
            ),
            None => (None, None, None),
        };
        let (cap, alloc, phys) = match (cap, d.source.as_deref()) {
            (None, Some(source)) => disk_size_fallback(conn, dom, &d.target, source),
            _ => (cap, alloc, phys),
        };
        d.capacity_bytes = cap;
        disk_usage.push(DiskUsage {
            target: d.target.clone(),
            allocation_bytes: alloc,
            physical_bytes: phys,
        });
        if !active || d.device != "disk" {
            continue;
        }
        let io = match block_by_name.get(d.target.as_str()) {
            Some(i) => stats
                .u64(&format!("block.{i}.rd.bytes"))
                .zip(stats.u64(&format!("block.{i}.wr.bytes"))),
            None => dom
                .block_stats(&d.target)
                .ok()
                .map(|s| (s.rd_bytes.max(0) as u64, s.wr_bytes.max(0) as u64)),
        };
        if let Some((r, w)) = io {
            rd = rd.saturating_add(r);
            wr = wr.saturating_add(w);
            have_block_io = true;
        }
    }

    // Interfaces: bulk `net.N.*` when present, else per-interface stats.
    let (mut rx, mut tx, mut have_net_io) = (0u64, 0u64, false);
    if active {
        let net_count = stats.u64("net.count");
        if let Some(n) = net_count.filter(|n| *n > 0) {
            for i in 0..n {
                if let (Some(r), Some(t)) = (
                    stats.u64(&format!("net.{i}.rx.bytes")),
                    stats.u64(&format!("net.{i}.tx.bytes")),
                ) {
                    rx = rx.saturating_add(r);
                    tx = tx.saturating_add(t);
                    have_net_io = true;
                }
            }
        } else {
            for (nic, target) in parsed.nics.iter().zip(&parsed.nic_targets) {
                let path = target.as_deref().unwrap_or(&nic.mac);
                if let Ok(s) = dom.interface_stats(path) {
                    rx = rx.saturating_add(s.rx_bytes.max(0) as u64);
                    tx = tx.saturating_add(s.tx_bytes.max(0) as u64);
                    have_net_io = true;
                }
            }
        }
    }

    let cpu_time_ns = stats.u64("cpu.time").or(info.map(|i| i.cpu_time)).filter(|_| active);
    let addresses = if active && !parsed.nics.is_empty() { ip_addresses(dom) } else { Vec::new() };

    let config = VmConfig {
        vcpus,
        memory_max_kib,
        memory_current_kib,
        os_type: parsed.os_type,
        autostart: dom.autostart().unwrap_or(false),
        persistent: dom.is_persistent().unwrap_or(false),
        disks,
        nics: parsed.nics,
        graphics,
    };
    let (state, raw_state, state_reason) = describe_state(state_code, reason_code);
    Ok(VmReport {
        uuid,
        name,
        state,
        raw_state: raw_state.to_string(),
        state_reason,
        config,
        memory_used_kib,
        counters: Counters {
            cpu_time_ns,
            disk_read_bytes: have_block_io.then_some(rd),
            disk_write_bytes: have_block_io.then_some(wr),
            net_rx_bytes: have_net_io.then_some(rx),
            net_tx_bytes: have_net_io.then_some(tx),
        },
        disk_usage,
        addresses,
        snapshots: None,
    })
}

/// Disk sizes when the bulk call has none (inactive domains, drivers without the block group):
/// the storage volume behind the path if libvirt manages it, else virDomainGetBlockInfo.
fn disk_size_fallback(
    conn: &Connect,
    dom: &Domain,
    target: &str,
    source: &str,
) -> (Option<u64>, Option<u64>, Option<u64>) {
    if source.starts_with('/') {
        if let Ok(info) = conn.lookup_storage_vol_by_path(source).and_then(|v| v.info()) {
            return (Some(info.capacity), Some(info.allocation), None);
        }
    }
    match dom.block_info(target, 0) {
        Ok(b) => (Some(b.capacity), Some(b.allocation), Some(b.physical)),
        Err(_) => (None, None, None),
    }
}

/// Asks the guest agent, then the DHCP leases, then the host's ARP table; the first source that
/// knows any address wins.
fn ip_addresses(dom: &Domain) -> Vec<IpAddress> {
    let sources = [
        (sys::VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_AGENT, AddrSource::GuestAgent),
        (sys::VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_LEASE, AddrSource::DhcpLease),
        (sys::VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_ARP, AddrSource::Arp),
    ];
    for (flag, source) in sources {
        let Ok(ifaces) = bulk::interface_addresses(dom, flag) else {
            continue;
        };
        let mut found: Vec<IpAddress> = ifaces
            .iter()
            .flat_map(|iface| {
                let mac = iface.hwaddr.clone().unwrap_or_default().to_ascii_lowercase();
                iface.addrs.iter().filter_map(move |(a, prefix)| {
                    let addr: IpAddr = a.parse().ok()?;
                    // The agent also reports loopback; nobody connects to a VM's 127.0.0.1.
                    if addr.is_loopback() {
                        return None;
                    }
                    Some(IpAddress {
                        mac: mac.clone(),
                        addr,
                        prefix: (*prefix).min(128) as u8,
                        source,
                    })
                })
            })
            .collect();
        if !found.is_empty() {
            sort_addresses(&mut found);
            found.dedup();
            return found;
        }
    }
    Vec::new()
}

/// Maps libvirt's state and reason codes to vmdeck's state, libvirt's word, and the reason.
pub fn describe_state(state: u32, reason: u32) -> (PowerState, &'static str, String) {
    let (normalized, word, reasons): (PowerState, &str, &[&str]) = match state {
        1 => (
            PowerState::Running,
            "running",
            &[
                "unknown",
                "booted",
                "migrated",
                "restored",
                "from snapshot",
                "unpaused",
                "migration canceled",
                "save canceled",
                "woken up",
                "crashed",
                "post-copy",
            ],
        ),
        2 => (PowerState::Running, "blocked", &["unknown"]),
        3 => (
            PowerState::Paused,
            "paused",
            &[
                "unknown",
                "user",
                "migration",
                "saving",
                "dumping",
                "I/O error",
                "watchdog",
                "from snapshot",
                "shutting down",
                "snapshot",
                "crashed",
                "starting up",
                "post-copy",
                "post-copy failed",
            ],
        ),
        4 => (PowerState::InTransition, "shutdown", &["unknown", "user"]),
        5 => (
            PowerState::ShutOff,
            "shutoff",
            &[
                "unknown",
                "shut down",
                "destroyed",
                "crashed",
                "migrated",
                "saved",
                "failed",
                "from snapshot",
                "daemon",
            ],
        ),
        6 => (PowerState::Crashed, "crashed", &["unknown", "panicked"]),
        7 => (PowerState::Suspended, "pmsuspended", &["unknown"]),
        _ => (PowerState::Unknown, "nostate", &["unknown"]),
    };
    let reason =
        reasons.get(reason as usize).map_or_else(|| format!("reason {reason}"), |r| r.to_string());
    (normalized, word, reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_libvirt_state_maps_to_a_normalized_state() {
        assert_eq!(describe_state(1, 1).0, PowerState::Running);
        assert_eq!(describe_state(2, 0).1, "blocked");
        assert_eq!(describe_state(3, 1), (PowerState::Paused, "paused", "user".to_string()));
        assert_eq!(describe_state(4, 1).0, PowerState::InTransition);
        assert_eq!(describe_state(5, 2).2, "destroyed");
        assert_eq!(describe_state(6, 1).0, PowerState::Crashed);
        assert_eq!(describe_state(7, 0).0, PowerState::Suspended);
        assert_eq!(describe_state(0, 0).0, PowerState::Unknown);
        assert_eq!(describe_state(99, 42).2, "reason 42", "unknown codes are kept, not dropped");
    }

    fn inner(call_timeout: Duration) -> Inner {
        Inner {
            uri: HostUri::parse("test:///default").expect("a valid URI"),
            call_timeout,
            conn: Mutex::default(),
            calls: Mutex::default(),
            next_call: Default::default(),
        }
    }

    /// Records a call as if it had started `ago` before now, with its own `limit`.
    fn started(inner: &Inner, ago: Duration, limit: Duration) -> u64 {
        let id = inner.begin_call(limit);
        let started = Instant::now().checked_sub(ago).expect("the clock is past `ago`");
        inner.calls.lock().expect("not poisoned").insert(id, Call { started, limit });
        id
    }

    #[test]
    fn each_call_is_judged_against_its_own_limit_so_a_long_snapshot_does_not_look_hung() {
        let secs = Duration::from_secs;
        let inner = inner(secs(20));
        // A snapshot 60 s in, allowed 600 s: past the ordinary limit, yet not stuck.
        let snapshot = started(&inner, secs(60), secs(600));
        assert!(!inner.hung(), "a snapshot within its own limit made the host look hung");
        // An ordinary call 30 s in, allowed 20 s: the host hangs.
        let poll = started(&inner, secs(30), secs(20));
        assert!(inner.hung(), "an ordinary call past its limit did not make the host look hung");
        inner.end_call(poll);
        assert!(!inner.hung(), "the overdue call ended, yet the host still looks hung");
        inner.end_call(snapshot);
        // A snapshot past its own limit is stuck too.
        started(&inner, secs(700), secs(600));
        assert!(inner.hung(), "a snapshot past its own limit did not make the host look hung");
    }
}
