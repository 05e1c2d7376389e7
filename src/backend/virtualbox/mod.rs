//! The VirtualBox backend: inventory and power control through the `VBoxManage` command line,
//! locally or through a `command_prefix` such as `ssh` or `sudo`.
//!
//! A poll runs, per host: `list vms`; `showvminfo <uuid> --machinereadable` per VM;
//! `guestproperty enumerate <uuid>` per running VM with Guest Additions and a NIC (its IP
//! addresses); `showmediuminfo <uuid>` once per attached disk image (cached by medium UUID);
//! and, when VMs run, one `metrics query` for all of them (with `metrics setup` when a VM has
//! started since the last poll, and `list hostinfo` once). After the first poll that is at most
//! two commands per VM plus two per host. Each VM's snapshot tree comes with its `showvminfo`;
//! snapshot requests are in `snapshots.rs`.
//!
//! Only UUIDs and fixed words are ever passed as arguments, never VM names: they need no
//! quoting, so the same argument list works run directly, through `sudo`, or through `ssh`
//! (whose remote shell re-splits the command line).
//!
//! Long because it runs every VBoxManage command of a poll and a power action, with the
//! concurrency cap and time limits around them; the output parsers are in `parse.rs`.

#[cfg(test)]
mod capture_tests;
mod command;
mod offers;
pub mod parse;
pub mod settings;
mod snapshots;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::Instrument;

use super::{
    sort_addresses, AddrSource, Backend, BackendError, Counters, Disk, DiskUsage, IpAddress, Nic,
    Offer, PowerAction, PowerState, SnapshotCaps, SnapshotOp, SnapshotReport, VmConfig, VmReport,
    VmState,
};
use command::{Output, RunError, Runner};
pub use offers::offers;
use parse::{DeviceKind, ListedVm, MediumSizes, VmInfo};
pub use settings::VirtualBoxSettings;

/// How often VirtualBox samples the metrics vmdeck reads: the CPU figure is the average over
/// the last period before the poll.
const METRICS_PERIOD_SECS: &str = "5";

pub struct VirtualBoxBackend {
    runner: Arc<Runner>,
    call_timeout: Duration,
    /// Time limit for one `snapshot take|restore|delete` command, which may merge disks for
    /// minutes: killing it at `command_timeout` would leave the merge half done.
    snapshot_timeout: Duration,
    /// What one poll hands the next; the lock also keeps a host's polls from overlapping.
    memory: tokio::sync::Mutex<PollMemory>,
    /// `(major, minor)` of the host's VirtualBox, read on first need.
    version: tokio::sync::OnceCell<Option<(u32, u32)>>,
}

#[derive(Default)]
struct PollMemory {
    /// Disk sizes by medium UUID. A new image (new attachment, new snapshot) has a new UUID
    /// and is read then; entries no longer attached are dropped after each poll.
    media: HashMap<String, MediumSizes>,
    /// The last addresses read per VM, kept when one read of its guest properties fails, so a
    /// passing error does not end the address history.
    addresses: HashMap<String, Vec<IpAddress>>,
    metrics: MetricsMemory,
}

#[derive(Default)]
struct MetricsMemory {
    /// `metrics` answered with a syntax or "unknown command" error: not asked again.
    unsupported: bool,
    host_cpus: Option<u32>,
    host_cpus_read: bool,
    /// Running VMs whose metrics collection has been set up (a VM that starts registers new
    /// metrics, which collect nothing until set up).
    set_up: HashSet<String>,
    /// CPU load turned into a cumulative CPU-time counter per running VM (see [`cpu_counter`]).
    cpu: HashMap<String, CpuClock>,
}

#[derive(Clone, Copy)]
struct CpuClock {
    ns: u64,
    at: Instant,
}

impl VirtualBoxBackend {
    pub fn new(
        settings: VirtualBoxSettings,
        call_timeout: Duration,
        snapshot_timeout: Duration,
    ) -> Self {
        VirtualBoxBackend {
            runner: Arc::new(Runner::new(settings)),
            call_timeout,
            snapshot_timeout,
            memory: tokio::sync::Mutex::default(),
            version: tokio::sync::OnceCell::new(),
        }
    }

    /// Runs a read-only command that must succeed; returns its stdout.
    async fn query(&self, args: &[&str]) -> Result<String, BackendError> {
        let out = self.runner.run(args).await.map_err(run_error)?;
        if out.code == Some(0) {
            Ok(out.stdout)
        } else {
            Err(failed(&args.join(" "), &out))
        }
    }

    /// Runs the commands, at most [`command::MAX_CONCURRENT_COMMANDS`] at once; results in
    /// order. Dropping the future (the poll's time limit) aborts them all and kills the children.
    async fn run_all(&self, commands: Vec<Vec<String>>) -> Vec<Result<Output, RunError>> {
        let n = commands.len();
        let mut set = tokio::task::JoinSet::new();
        for (i, args) in commands.into_iter().enumerate() {
            let runner = self.runner.clone();
            set.spawn(
                async move {
                    let args: Vec<&str> = args.iter().map(String::as_str).collect();
                    (i, runner.run(&args).await)
                }
                .in_current_span(),
            );
        }
        let mut results: Vec<Option<Result<Output, RunError>>> = (0..n).map(|_| None).collect();
        while let Some(joined) = set.join_next().await {
            if let Ok((i, r)) = joined {
                results[i] = Some(r);
            }
        }
        results
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|| Err(RunError::Io(std::io::Error::other("the task panicked"))))
            })
            .collect()
    }

    async fn collect_inventory(&self) -> Result<Vec<VmReport>, BackendError> {
        let mut memory = self.memory.lock().await;
        let listed = parse::list_vms(&self.query(&["list", "vms"]).await?);

        let readable: Vec<&ListedVm> = listed.iter().filter(|v| !v.is_inaccessible()).collect();
        let details = self
            .run_all(
                readable
                    .iter()
                    .map(|v| words(&["showvminfo", &v.uuid, "--machinereadable"]))
                    .collect(),
            )
            .await;
        let mut infos: HashMap<&str, VmInfo> = HashMap::with_capacity(readable.len());
        for (vm, result) in readable.iter().zip(details) {
            let out = result.map_err(run_error)?;
            if out.code != Some(0) {
                match failed(&format!("showvminfo {}", vm.uuid), &out) {
                    // Deleted between `list vms` and now: simply gone.
                    BackendError::NoSuchVm => continue,
                    // Anything else fails the poll, as a libvirt read error does: the list
                    // keeps the last data with the error in the banner, rather than showing
                    // the VM as gone.
                    e => return Err(e),
                }
            }
            infos.insert(vm.uuid.as_str(), parse::vm_info(&out.stdout));
        }

        let running: Vec<&ListedVm> = readable
            .iter()
            .copied()
            .filter(|v| infos.get(v.uuid.as_str()).is_some_and(is_running))
            .collect();
        let PollMemory { media, addresses, metrics } = &mut *memory;
        let (_, guest, usage) = tokio::join!(
            self.refresh_media(media, infos.values()),
            self.guest_addresses(&running, &infos),
            self.usage(metrics, &running, &listed),
        );

        let mut reports = Vec::with_capacity(listed.len());
        for vm in &listed {
            let Some(info) = infos.get(vm.uuid.as_str()) else {
                if vm.is_inaccessible() {
                    reports.push(inaccessible_report(vm));
                }
                continue;
            };
            if info.is_inaccessible() {
                reports.push(inaccessible_report(vm));
                continue;
            }
            let vm_addresses = match guest.get(vm.uuid.as_str()) {
                Some(Ok(found)) => {
                    addresses.insert(vm.uuid.clone(), found.clone());
                    found.clone()
                }
                // The read failed: keep what the last poll saw.
                Some(Err(())) => addresses.get(&vm.uuid).cloned().unwrap_or_default(),
                None => {
                    addresses.remove(&vm.uuid);
                    Vec::new()
                }
            };
            reports.push(report(
                vm,
                info,
                media,
                vm_addresses,
                usage.get(vm.uuid.as_str()).copied().unwrap_or_default(),
            ));
        }
        let attached: HashSet<&str> = infos
            .values()
            .flat_map(|i| i.attachments.iter())
            .filter_map(|a| a.medium_uuid.as_deref())
            .collect();
        media.retain(|uuid, _| attached.contains(uuid.as_str()));
        Ok(reports)
    }

    /// Reads the sizes of attached disk images not read before.
    async fn refresh_media<'a>(
        &self,
        media: &mut HashMap<String, MediumSizes>,
        infos: impl Iterator<Item = &'a VmInfo>,
    ) {
        let wanted: Vec<String> = infos
            .flat_map(|i| i.attachments.iter())
            .filter(|a| a.kind == DeviceKind::Disk)
            .filter_map(|a| a.medium_uuid.clone())
            .filter(|u| !media.contains_key(u))
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        if wanted.is_empty() {
            return;
        }
        let results =
            self.run_all(wanted.iter().map(|u| words(&["showmediuminfo", u])).collect()).await;
        for (uuid, result) in wanted.into_iter().zip(results) {
            match result {
                Ok(out) if out.code == Some(0) => {
                    media.insert(uuid, parse::medium_sizes(&out.stdout));
                }
                // Unknown this time (sizes shown as unknown); asked again next poll.
                Ok(out) => {
                    tracing::warn!(medium = %uuid, "{}", failed("showmediuminfo", &out));
                }
                Err(e) => tracing::warn!(medium = %uuid, "showmediuminfo: {e}"),
            }
        }
    }

    /// Guest-reported addresses of running VMs that have Guest Additions and a NIC. `Err(())`
    /// marks a VM whose properties could not be read this time.
    async fn guest_addresses<'a>(
        &self,
        running: &[&'a ListedVm],
        infos: &HashMap<&str, VmInfo>,
    ) -> HashMap<&'a str, Result<Vec<IpAddress>, ()>> {
        let asked: Vec<(&'a ListedVm, &VmInfo)> = running
            .iter()
            .filter_map(|vm| Some((*vm, infos.get(vm.uuid.as_str())?)))
            // Run level 0: no Guest Additions, so no properties worth a command.
            .filter(|(_, i)| !i.nics.is_empty() && i.guest_additions_run_level != Some(0))
            .collect();
        let results = self
            .run_all(
                asked
                    .iter()
                    .map(|(vm, _)| words(&["guestproperty", "enumerate", &vm.uuid]))
                    .collect(),
            )
            .await;
        let mut out = HashMap::with_capacity(asked.len());
        for ((vm, info), result) in asked.into_iter().zip(results) {
            let value = match result {
                Ok(o) if o.code == Some(0) => Ok(matched_addresses(info, &o.stdout)),
                Ok(o) => {
                    tracing::warn!(vm = %vm.name, "{}", failed("guestproperty enumerate", &o));
                    Err(())
                }
                Err(e) => {
                    tracing::warn!(vm = %vm.name, "guestproperty enumerate: {e}");
                    Err(())
                }
            };
            out.insert(vm.uuid.as_str(), value);
        }
        out
    }

    /// Memory and CPU use of running VMs from VirtualBox's metrics, where available.
    async fn usage<'a>(
        &self,
        m: &mut MetricsMemory,
        running: &[&'a ListedVm],
        listed: &[ListedVm],
    ) -> HashMap<&'a str, Usage> {
        let running_ids: HashSet<&str> = running.iter().map(|v| v.uuid.as_str()).collect();
        m.set_up.retain(|u| running_ids.contains(u.as_str()));
        m.cpu.retain(|u, _| running_ids.contains(u.as_str()));
        if running.is_empty() || m.unsupported {
            return HashMap::new();
        }
        if !m.host_cpus_read {
            m.host_cpus_read = true;
            match self.query(&["list", "hostinfo"]).await {
                Ok(text) => m.host_cpus = parse::host_cpu_count(&text),
                Err(e) => tracing::warn!("list hostinfo: {e}; CPU use will be unknown"),
            }
        }
        if running.iter().any(|v| !m.set_up.contains(&v.uuid)) {
            // All objects, default metrics: the arguments stay free of shell patterns.
            match self
                .runner
                .run(&["metrics", "setup", "--period", METRICS_PERIOD_SECS, "--samples", "1"])
                .await
            {
                Ok(out) if out.code == Some(0) => {
                    m.set_up = running_ids.iter().map(|u| u.to_string()).collect();
                }
                Ok(out) => {
                    if metrics_unsupported(&out) {
                        tracing::info!("this VirtualBox has no usable metrics; CPU and memory use stay unknown");
                        m.unsupported = true;
                        return HashMap::new();
                    }
                    tracing::warn!("{}", failed("metrics setup", &out));
                }
                Err(e) => tracing::warn!("metrics setup: {e}"),
            }
        }
        let text = match self.runner.run(&["metrics", "query"]).await {
            Ok(out) if out.code == Some(0) => out.stdout,
            Ok(out) => {
                tracing::warn!("{}", failed("metrics query", &out));
                return HashMap::new();
            }
            Err(e) => {
                tracing::warn!("metrics query: {e}");
                return HashMap::new();
            }
        };
        let mut objects: Vec<&str> = listed.iter().map(|v| v.name.as_str()).collect();
        objects.push("host");
        let metrics = parse::metrics_query(&text, &objects);
        let now = Instant::now();
        running
            .iter()
            .map(|vm| {
                let memory_used_kib = metrics
                    .get(&vm.name, "RAM/Usage/Used")
                    .filter(|v| v.unit == "kB")
                    .map(|v| v.value.max(0.0) as u64);
                let load = |metric: &str| {
                    metrics.get(&vm.name, metric).filter(|v| v.unit == "%").map(|v| v.value)
                };
                let cpu_time_ns =
                    match (load("CPU/Load/User"), load("CPU/Load/Kernel"), m.host_cpus) {
                        (Some(user), Some(kernel), Some(cpus)) => Some(cpu_counter(
                            m.cpu.entry(vm.uuid.clone()),
                            (user + kernel) / 100.0 * f64::from(cpus),
                            now,
                        )),
                        _ => {
                            m.cpu.remove(&vm.uuid);
                            None
                        }
                    };
                (vm.uuid.as_str(), Usage { memory_used_kib, cpu_time_ns })
            })
            .collect()
    }

    async fn host_version(&self) -> Option<(u32, u32)> {
        *self
            .version
            .get_or_init(|| async {
                match self.query(&["--version"]).await {
                    Ok(text) => parse::version(&text),
                    Err(e) => {
                        tracing::warn!("VBoxManage --version: {e}");
                        None
                    }
                }
            })
            .await
    }

    async fn send_power(&self, uuid: &str, action: PowerAction) -> Result<(), BackendError> {
        if !parse::is_uuid(uuid) {
            return Err(BackendError::NoSuchVm);
        }
        let args: Vec<&str> = match action {
            PowerAction::Start => vec!["startvm", uuid, "--type", "headless"],
            PowerAction::Shutdown => vec!["controlvm", uuid, "acpipowerbutton"],
            PowerAction::PowerOff => vec!["controlvm", uuid, "poweroff"],
            PowerAction::Reset => vec!["controlvm", uuid, "reset"],
            PowerAction::Pause => vec!["controlvm", uuid, "pause"],
            PowerAction::Resume => vec!["controlvm", uuid, "resume"],
            PowerAction::Save => vec!["controlvm", uuid, "savestate"],
            PowerAction::Wake => {
                return Err(BackendError::Unsupported(
                    "VirtualBox has no wake-up for a suspended guest".into(),
                ))
            }
            PowerAction::Reboot => match self.host_version().await {
                Some((major, minor)) if major < 7 => {
                    return Err(BackendError::Hypervisor(format!(
                        "Reboot needs VirtualBox 7.0 or later (this host runs {major}.{minor}): use Reset, or Shut down and then Start"
                    )))
                }
                _ => vec!["controlvm", uuid, "reboot"],
            },
        };
        let out = self.runner.run(&args).await.map_err(run_error)?;
        if out.code == Some(0)
            || (parse::vbox_error(&out.stderr).is_none() && printed_success(action, &out))
        {
            if out.code != Some(0) {
                tracing::info!(
                    code = ?out.code,
                    "VBoxManage reported success but exited non-zero; treated as success (the state confirms it)"
                );
            }
            Ok(())
        } else {
            Err(failed(action.label(), &out))
        }
    }
}

#[async_trait::async_trait]
impl Backend for VirtualBoxBackend {
    async fn inventory(&self) -> Result<Vec<VmReport>, BackendError> {
        match tokio::time::timeout(self.call_timeout, self.collect_inventory()).await {
            Ok(result) => result,
            Err(_) => Err(BackendError::Timeout(self.call_timeout)),
        }
    }

    #[tracing::instrument(skip(self), fields(vm = %uuid))]
    async fn power(&self, uuid: &str, action: PowerAction) -> Result<(), BackendError> {
        self.send_power(uuid, action).await
    }

    fn offers(&self, action: PowerAction, state: PowerState, raw_state: &str) -> Offer {
        offers(action, state, raw_state)
    }

    #[tracing::instrument(skip(self), fields(vm = %uuid))]
    async fn vm_state(&self, uuid: &str) -> Result<VmState, BackendError> {
        if !parse::is_uuid(uuid) {
            return Err(BackendError::NoSuchVm);
        }
        let text = self.query(&["showvminfo", uuid, "--machinereadable"]).await?;
        let info = parse::vm_info(&text);
        if info.is_inaccessible() {
            return Ok(inaccessible_state());
        }
        let (state, raw_state, state_reason) = describe_state(&info);
        Ok(VmState { state, raw_state, state_reason })
    }

    #[tracing::instrument(skip(self), fields(vm = %uuid))]
    async fn snapshots(&self, uuid: &str) -> Result<Vec<SnapshotReport>, BackendError> {
        self.list_snapshots(uuid).await
    }

    #[tracing::instrument(skip(self, op), fields(vm = %uuid))]
    async fn snapshot(&self, uuid: &str, op: &SnapshotOp) -> Result<(), BackendError> {
        self.run_snapshot(uuid, op).await
    }

    fn snapshot_caps(&self) -> SnapshotCaps {
        // A running VM's snapshot always holds its memory (taken live, so the guest runs on);
        // a restore leaves the VM as the snapshot captured it (saved or powered off).
        SnapshotCaps {
            supported: true,
            memory_choice: false,
            running_with_memory: true,
            revert_choose_state: false,
        }
    }

    fn display_support(&self) -> Result<(), String> {
        Err(VRDE_IS_RDP.into())
    }
}

/// Why a VirtualBox VM has no browser console.
pub const VRDE_IS_RDP: &str = "VirtualBox's remote display (VRDE) speaks RDP, not VNC, so \
    vmdeck's browser console cannot show VirtualBox VMs: connect an RDP client (xfreerdp, \
    Remmina, mstsc) to the VM's VRDE port, enabled with `VBoxManage modifyvm <vm> --vrde on`";

/// [`VRDE_IS_RDP`] in a few words, for the VM page's note (the full text is its tooltip).
pub const VRDE_IS_RDP_SHORT: &str =
    "VirtualBox's remote display (VRDE) speaks RDP, not VNC: use an RDP client";

/// Usage figures for one running VM.
#[derive(Debug, Clone, Copy, Default)]
struct Usage {
    memory_used_kib: Option<u64>,
    cpu_time_ns: Option<u64>,
}

/// VirtualBox reports CPU load as a share of the host's CPUs, not as a cumulative CPU time as
/// vmdeck stores. The share times the host's CPU count is CPU-seconds per second; adding it up
/// over the time between polls gives a counter from which the store derives the same
/// percentage of the VM's vCPUs that it shows for libvirt VMs. A VM seen for the first time
/// starts at 0 (the store derives no rate from a first sample).
fn cpu_counter(
    entry: std::collections::hash_map::Entry<'_, String, CpuClock>,
    cpu_seconds_per_second: f64,
    now: Instant,
) -> u64 {
    let clock = entry
        .and_modify(|c| {
            let elapsed = now.saturating_duration_since(c.at).as_secs_f64();
            c.ns = c.ns.saturating_add((cpu_seconds_per_second.max(0.0) * elapsed * 1e9) as u64);
            c.at = now;
        })
        .or_insert(CpuClock { ns: 0, at: now });
    clock.ns
}

fn words(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| a.to_string()).collect()
}

fn is_running(info: &VmInfo) -> bool {
    info.vm_state.as_deref().is_some_and(|s| parse::power_state(s) == PowerState::Running)
}

/// The state triple vmdeck stores: normalized state, VirtualBox's word, and VirtualBox's
/// words with the time of the change (`powered off since 2019-02-09 21:00:33 UTC`).
fn describe_state(info: &VmInfo) -> (PowerState, String, String) {
    let raw = info.vm_state.clone().unwrap_or_else(|| "unknown".into());
    let words = parse::state_words(&raw);
    let reason = match info.state_change_time.as_deref().and_then(readable_utc) {
        Some(t) => format!("{words} since {t}"),
        None => words.to_string(),
    };
    (parse::power_state(&raw), raw, reason)
}

/// `2019-02-09T21:00:33.575000000` → `2019-02-09 21:00:33 UTC`.
fn readable_utc(t: &str) -> Option<String> {
    let (date, time) = t.split_once('T')?;
    let time = time.split(['.', 'Z']).next()?;
    (date.len() == 10 && time.len() == 8).then(|| format!("{date} {time} UTC"))
}

const INACCESSIBLE_REASON: &str =
    "VirtualBox cannot read this VM's settings (its files are missing or unreadable)";

fn inaccessible_state() -> VmState {
    VmState {
        state: PowerState::Unknown,
        raw_state: "inaccessible".into(),
        state_reason: INACCESSIBLE_REASON.into(),
    }
}

fn inaccessible_report(vm: &ListedVm) -> VmReport {
    let s = inaccessible_state();
    VmReport {
        uuid: vm.uuid.clone(),
        name: vm.name.clone(),
        state: s.state,
        raw_state: s.raw_state,
        state_reason: s.state_reason,
        config: VmConfig { persistent: true, ..VmConfig::default() },
        memory_used_kib: None,
        counters: Counters::default(),
        disk_usage: Vec::new(),
        addresses: Vec::new(),
        snapshots: None,
    }
}

fn report(
    vm: &ListedVm,
    info: &VmInfo,
    media: &HashMap<String, MediumSizes>,
    addresses: Vec<IpAddress>,
    usage: Usage,
) -> VmReport {
    let (state, raw_state, state_reason) = describe_state(info);
    let running = state == PowerState::Running;
    let mut disks = Vec::with_capacity(info.attachments.len());
    let mut disk_usage = Vec::new();
    for a in &info.attachments {
        let sizes = a
            .medium_uuid
            .as_deref()
            .filter(|_| a.kind == DeviceKind::Disk)
            .and_then(|u| media.get(u))
            .copied()
            .unwrap_or_default();
        disks.push(Disk {
            target: a.slot(),
            device: a.kind.as_str().to_string(),
            source: a.location.clone(),
            bus: a.bus().map(str::to_string),
            capacity_bytes: sizes.capacity_bytes,
        });
        if a.kind == DeviceKind::Disk {
            // VirtualBox reports one host-side figure, the image file's size.
            disk_usage.push(DiskUsage {
                target: a.slot(),
                allocation_bytes: sizes.size_on_disk_bytes,
                physical_bytes: sizes.size_on_disk_bytes,
            });
        }
    }
    let nics = info
        .nics
        .iter()
        .map(|n| Nic {
            mac: n.mac.clone().unwrap_or_default(),
            model: n.adapter_type.clone(),
            kind: n.attachment.clone(),
            source: n.network.clone(),
        })
        .collect();
    let memory_mib = info.memory_mib.unwrap_or(0);
    VmReport {
        uuid: vm.uuid.clone(),
        name: info.name.clone().unwrap_or_else(|| vm.name.clone()),
        state,
        raw_state,
        state_reason,
        config: VmConfig {
            vcpus: info.cpus.unwrap_or(0),
            memory_max_kib: memory_mib * 1024,
            memory_current_kib: memory_mib.saturating_sub(info.balloon_mib.unwrap_or(0)) * 1024,
            os_type: info.os_type.clone().unwrap_or_default(),
            autostart: info.autostart,
            // Every VM VirtualBox lists is registered, i.e. defined beyond its current run.
            persistent: true,
            disks,
            nics,
            graphics: info.vrde.then(|| "rdp".to_string()),
        },
        memory_used_kib: usage.memory_used_kib.filter(|_| running),
        counters: Counters {
            cpu_time_ns: usage.cpu_time_ns.filter(|_| running),
            ..Counters::default()
        },
        disk_usage,
        addresses: if running { addresses } else { Vec::new() },
        // `showvminfo` prints the snapshot tree: read at no extra command.
        snapshots: Some(info.snapshots.clone()),
    }
}

/// The guest's addresses on the VM's own NICs (matched by MAC), loopback and guest-internal
/// interfaces (a Docker bridge, say) left out.
fn matched_addresses(info: &VmInfo, enumerate_output: &str) -> Vec<IpAddress> {
    let macs: HashSet<&str> = info.nics.iter().filter_map(|n| n.mac.as_deref()).collect();
    let props = parse::guest_properties(enumerate_output);
    let mut found: Vec<IpAddress> = parse::guest_addresses(&props)
        .into_iter()
        .filter(|a| macs.contains(a.mac.as_str()))
        .map(|a| IpAddress {
            mac: a.mac,
            addr: a.addr,
            prefix: a.prefix,
            source: AddrSource::GuestAdditions,
        })
        .collect();
    sort_addresses(&mut found);
    found.dedup();
    found
}

/// Whether a command that exited non-zero printed its own success: some VirtualBox builds
/// print that `startvm` succeeded and exit 1 anyway.
fn printed_success(action: PowerAction, out: &Output) -> bool {
    match action {
        PowerAction::Start => out.stdout.contains("has been successfully started"),
        // The progress line (stderr on some versions, stdout on others) reaching 100 %.
        PowerAction::PowerOff | PowerAction::Save => {
            out.stdout.contains("100%") || out.stderr.contains("100%")
        }
        _ => false,
    }
}

/// This VBoxManage does not know `metrics`: a syntax error (exit status 2) without a result
/// code. (`metrics setup` also exits 2 when the collector refuses, but then with a code.)
fn metrics_unsupported(out: &Output) -> bool {
    out.code == Some(2) && parse::vbox_error(&out.stderr).and_then(|e| e.code).is_none()
}

fn run_error(e: RunError) -> BackendError {
    match e {
        RunError::Timeout(d) => BackendError::Timeout(d),
        other => BackendError::Hypervisor(other.to_string()),
    }
}

/// The error of a command that failed, by VirtualBox's result code, in words an operator can
/// act on. `what` names the command or action for the message.
fn failed(what: &str, out: &Output) -> BackendError {
    let status = out.code.map_or_else(
        || "was killed by a signal".to_string(),
        |c| format!("exited with status {c}"),
    );
    let Some(e) = parse::vbox_error(&out.stderr) else {
        let hint = out.stderr.lines().find(|l| !l.trim().is_empty()).unwrap_or_default();
        return BackendError::Hypervisor(format!(
            "{what}: VBoxManage {status}{}{hint}",
            if hint.is_empty() { "" } else { ": " }
        ));
    };
    match e.code.as_deref() {
        Some("VBOX_E_OBJECT_NOT_FOUND") => BackendError::NoSuchVm,
        Some("VBOX_E_INVALID_VM_STATE") => BackendError::InvalidState(e.message),
        Some("VBOX_E_INVALID_OBJECT_STATE") if e.message.contains("locked") => {
            BackendError::Hypervisor(format!(
                "{what}: the VM is locked by another session (the VirtualBox GUI, another VBoxManage command or an operation in progress is using it); try again when it is done. VirtualBox said: {}",
                e.message
            ))
        }
        Some(code) => BackendError::Hypervisor(format!("{what} failed: {} ({code})", e.message)),
        // The one refusal VBoxManage prints without a result code.
        None if e.message.contains("is not currently running") => {
            BackendError::InvalidState("the VM is not running".into())
        }
        None => BackendError::Hypervisor(format!("{what} failed: {}", e.message)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn output(code: i32, stdout: &str, stderr: &str) -> Output {
        Output { code: Some(code), stdout: stdout.into(), stderr: stderr.into() }
    }

    fn capture(name: &str) -> String {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/virtualbox")
            .join(name);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    #[test]
    fn real_error_captures_map_to_backend_errors_by_code() {
        let not_found = output(1, "", &capture("errors/not-found-startvm-windows.stderr.txt"));
        assert!(matches!(failed("Start", &not_found), BackendError::NoSuchVm));
        let not_found = output(1, "", &capture("errors/not-found-storagectl-linux.stderr.txt"));
        assert!(matches!(failed("Start", &not_found), BackendError::NoSuchVm));
        let paused =
            output(1, "", &capture("errors/invalid-state-paused-acpipowerbutton.stderr.txt"));
        match failed("Shut down", &paused) {
            BackendError::InvalidState(m) => assert_eq!(m, "Invalid machine state: Paused"),
            other => panic!("expected InvalidState, got {other:?}"),
        }
        let locked = output(1, "", &capture("errors/locked-startvm-headless-linux.stderr.txt"));
        match failed("Start", &locked) {
            BackendError::Hypervisor(m) => {
                assert!(m.contains("locked by another session") && m.contains("DC01"), "{m}")
            }
            other => panic!("expected a locked message, got {other:?}"),
        }
        // Transcript: the `$ VBoxManage startvm` prompt line is stripped before use.
        let gui = capture("errors/startvm-gui-no-display-terminated-unexpectedly.transcript.txt");
        let stderr: String = gui
            .lines()
            .filter(|l| l.starts_with("VBoxManage: error:"))
            .map(|l| format!("{l}\n"))
            .collect();
        match failed("Start", &output(1, "Waiting for VM \"<name>\" to power on...\n", &stderr)) {
            BackendError::Hypervisor(m) => {
                assert!(
                    m.contains("terminated unexpectedly") && m.contains("NS_ERROR_FAILURE"),
                    "{m}"
                )
            }
            other => panic!("{other:?}"),
        }
        let not_running =
            output(1, "", "VBoxManage: error: Machine 'x' is not currently running.\n");
        assert!(matches!(failed("Pause", &not_running), BackendError::InvalidState(_)));
    }

    #[test]
    fn success_printed_with_exit_status_1_counts_as_success_only_when_printed() {
        // Real transcript: the prompt line and the echoed `1` are the transcript's, not output.
        let transcript = capture("startvm-success-but-exit-status-1.transcript.txt");
        let stdout: String = transcript.lines().skip(1).take(2).map(|l| format!("{l}\n")).collect();
        assert!(printed_success(PowerAction::Start, &output(1, &stdout, "")));
        assert!(!printed_success(
            PowerAction::Start,
            &output(1, "Waiting for VM \"x\" to power on...\n", "")
        ));
        assert!(!printed_success(PowerAction::Pause, &output(1, "", "")));
        let windows =
            capture("windows-session-list-startvm-headless-controlvm-poweroff.transcript.txt");
        let progress = windows.lines().find(|l| l.starts_with("0%")).unwrap();
        assert!(printed_success(PowerAction::PowerOff, &output(1, "", progress)));
    }

    #[test]
    fn the_cpu_counter_adds_up_load_over_time() {
        let mut clocks: HashMap<String, CpuClock> = HashMap::new();
        let t0 = Instant::now();
        assert_eq!(cpu_counter(clocks.entry("a".into()), 2.0, t0), 0);
        // Two CPU-seconds per second for 10 s: 20 s of CPU time.
        let ns = cpu_counter(clocks.entry("a".into()), 2.0, t0 + Duration::from_secs(10));
        assert_eq!(ns, 20_000_000_000);
    }

    #[test]
    fn state_change_times_read_as_utc() {
        assert_eq!(
            readable_utc("2019-02-09T21:00:33.575000000").as_deref(),
            Some("2019-02-09 21:00:33 UTC")
        );
        assert_eq!(readable_utc("garbage"), None);
    }
}
