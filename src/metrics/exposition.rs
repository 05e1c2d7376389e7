//! The exposition itself: one scrape's data, encoded by `prometheus-client` in the Prometheus
//! text format. The data is read once per scrape into [`Scrape`], and a [`Collector`] walks it
//! family by family, so a VM costs a few lines of text and no hashing.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    prometheus_text, DescriptorEncoder, EncodeMetric, MetricEncoder,
};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::store::VmRow;
use crate::domain::PowerState;

/// One configured host's poll health.
#[derive(Debug)]
pub struct HostFigures {
    pub name: String,
    pub up: bool,
    pub last_duration_secs: Option<f64>,
    pub last_success_secs: Option<f64>,
    pub consecutive_failures: u32,
    pub vms: i64,
}

/// Everything one scrape shows.
#[derive(Debug)]
pub struct Scrape {
    pub now_ms: i64,
    pub vms: Arc<Vec<VmRow>>,
    pub hosts: Vec<HostFigures>,
    /// Pending requests by kind (`power`, `snapshot`), both always present.
    pub pending: Vec<(String, i64)>,
    /// Audit entries counted by kind.
    pub audit: Vec<(String, u64)>,
    pub login_failures: u64,
    pub consoles_open: usize,
    /// Open alerts by (state, severity): pending and firing, every severity, zeros included.
    pub alerts: Vec<((String, String), i64)>,
}

/// The exposition's `Content-Type`, as the encoder defines it.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// The whole exposition, as `/metrics` sends it.
pub fn encode(scrape: Scrape) -> Result<String, std::fmt::Error> {
    // Roughly 2.5 KB a VM (about 20 series with two UUID-sized labels each).
    let mut body = String::with_capacity(4096 + 2560 * scrape.vms.len());
    let mut registry = Registry::default();
    registry.register_collector(Box::new(scrape));
    prometheus_text::encode(&mut body, &registry)?;
    Ok(body)
}

fn kib(v: Option<i64>) -> Option<u64> {
    v.and_then(|v| u64::try_from(v).ok()).map(|v| v * 1024)
}

fn count(v: Option<i64>) -> Option<u64> {
    v.and_then(|v| u64::try_from(v).ok())
}

impl Scrape {
    /// One family over every VM, labelled `host`, `uuid`; a VM without a value has no series.
    /// `encode` writes one value as the family's type.
    fn vm_family<N>(
        &self,
        encoder: &mut DescriptorEncoder,
        (name, help, kind): (&str, &str, MetricType),
        value: impl Fn(&VmRow) -> Option<N>,
        encode: impl Fn(N, MetricEncoder) -> std::fmt::Result,
    ) -> std::fmt::Result {
        let mut family = encoder.encode_descriptor(name, help, None, kind)?;
        for vm in self.vms.iter() {
            if let Some(v) = value(vm) {
                let labels = [("host", vm.host.as_str()), ("uuid", vm.uuid.as_str())];
                encode(v, family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }

    fn vm_gauge<N: prometheus_client::encoding::EncodeGaugeValue + std::fmt::Debug>(
        &self,
        encoder: &mut DescriptorEncoder,
        name: &str,
        help: &str,
        value: impl Fn(&VmRow) -> Option<N>,
    ) -> std::fmt::Result {
        self.vm_family(encoder, (name, help, MetricType::Gauge), value, |v, e| {
            ConstGauge::new(v).encode(e)
        })
    }

    /// The same for a counter (`name` without `_total`, which the encoder adds).
    fn vm_counter<N: prometheus_client::encoding::EncodeCounterValue + std::fmt::Debug>(
        &self,
        encoder: &mut DescriptorEncoder,
        name: &str,
        help: &str,
        value: impl Fn(&VmRow) -> Option<N>,
    ) -> std::fmt::Result {
        self.vm_family(encoder, (name, help, MetricType::Counter), value, |v, e| {
            ConstCounter::new(v).encode(e)
        })
    }

    fn host_gauge<N: prometheus_client::encoding::EncodeGaugeValue + std::fmt::Debug>(
        &self,
        encoder: &mut DescriptorEncoder,
        name: &str,
        help: &str,
        value: impl Fn(&HostFigures) -> Option<N>,
    ) -> std::fmt::Result {
        let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
        for host in &self.hosts {
            if let Some(v) = value(host) {
                ConstGauge::new(v)
                    .encode(family.encode_family(&[("host", host.name.as_str())])?)?;
            }
        }
        Ok(())
    }
}

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let e = &mut encoder;
        {
            let mut family = e.encode_descriptor(
                "vmdeck_vm_info",
                "Descriptive labels of each VM vmdeck sees now (always 1); join on host and uuid.",
                None,
                MetricType::Gauge,
            )?;
            for vm in self.vms.iter() {
                let yes_no = |b: Option<bool>| match b {
                    Some(true) => "true",
                    Some(false) => "false",
                    None => "",
                };
                let labels = [
                    ("host", vm.host.as_str()),
                    ("uuid", vm.uuid.as_str()),
                    ("name", vm.name.as_str()),
                    ("driver", vm.driver.as_str()),
                    ("os_type", vm.os_type.as_deref().unwrap_or("")),
                    ("autostart", yes_no(vm.autostart)),
                    ("persistent", yes_no(vm.persistent)),
                ];
                ConstGauge::new(1i64).encode(family.encode_family(&labels)?)?;
            }
        }
        {
            let mut family = e.encode_descriptor(
                "vmdeck_vm_state",
                "1 for the VM's current power state, 0 for each other state.",
                None,
                MetricType::Gauge,
            )?;
            for vm in self.vms.iter() {
                for state in PowerState::ALL {
                    let labels = [
                        ("host", vm.host.as_str()),
                        ("uuid", vm.uuid.as_str()),
                        ("state", state.as_str()),
                    ];
                    let v = i64::from(vm.state == state.as_str());
                    ConstGauge::new(v).encode(family.encode_family(&labels)?)?;
                }
            }
        }
        self.vm_gauge(e, "vmdeck_vm_vcpus", "Virtual CPUs configured.", |v| count(v.vcpus))?;
        self.vm_gauge(
            e,
            "vmdeck_vm_memory_assigned_bytes",
            "Memory the VM has now (its current balloon size), in bytes.",
            |v| kib(v.memory_current_kib),
        )?;
        self.vm_gauge(
            e,
            "vmdeck_vm_memory_max_bytes",
            "The most memory the VM may be given, in bytes.",
            |v| kib(v.memory_max_kib),
        )?;
        self.vm_gauge(
            e,
            "vmdeck_vm_memory_used_bytes",
            "Memory in use as the guest reports it (latest sample), in bytes.",
            |v| kib(v.memory_used_kib),
        )?;
        self.vm_gauge(
            e,
            "vmdeck_vm_disk_capacity_bytes",
            "Total capacity of the VM's disks, in bytes.",
            |v| count(v.disk_capacity_bytes),
        )?;
        self.vm_counter(
            e,
            "vmdeck_vm_cpu_seconds",
            "CPU time used, as the hypervisor reports it (latest sample); resets when the VM restarts.",
            |v| count(v.cpu_time_ns).map(|ns| ns as f64 / 1e9),
        )?;
        self.vm_counter(
            e,
            "vmdeck_vm_disk_read_bytes",
            "Bytes read from the VM's disks (latest sample); resets when the VM restarts.",
            |v| count(v.disk_read_bytes),
        )?;
        self.vm_counter(
            e,
            "vmdeck_vm_disk_written_bytes",
            "Bytes written to the VM's disks (latest sample); resets when the VM restarts.",
            |v| count(v.disk_write_bytes),
        )?;
        self.vm_counter(
            e,
            "vmdeck_vm_network_receive_bytes",
            "Bytes received on the VM's interfaces (latest sample); resets when the VM restarts.",
            |v| count(v.net_rx_bytes),
        )?;
        self.vm_counter(
            e,
            "vmdeck_vm_network_transmit_bytes",
            "Bytes sent on the VM's interfaces (latest sample); resets when the VM restarts.",
            |v| count(v.net_tx_bytes),
        )?;
        self.vm_gauge(
            e,
            "vmdeck_vm_snapshots",
            "Snapshots the VM has now (once vmdeck has read its snapshot set).",
            |v| v.snapshots_read.then_some(v.snapshot_count),
        )?;
        let now = self.now_ms;
        self.vm_gauge(
            e,
            "vmdeck_vm_oldest_snapshot_age_seconds",
            "Age of the VM's oldest snapshot, in seconds (VMs with snapshots only).",
            |v| {
                (v.snapshot_count > 0)
                    .then_some(v.snapshot_oldest)
                    .flatten()
                    .map(|t| (now - t).max(0) as f64 / 1000.0)
            },
        )?;

        self.host_gauge(
            e,
            "vmdeck_host_up",
            "1 if the host's last poll succeeded, else 0.",
            |h| Some(i64::from(h.up)),
        )?;
        self.host_gauge(
            e,
            "vmdeck_host_poll_duration_seconds",
            "How long the host's last poll took, in seconds.",
            |h| h.last_duration_secs,
        )?;
        self.host_gauge(
            e,
            "vmdeck_host_last_success_timestamp_seconds",
            "When the host's last successful poll finished (Unix time, seconds).",
            |h| h.last_success_secs,
        )?;
        self.host_gauge(
            e,
            "vmdeck_host_consecutive_failures",
            "Polls of the host that failed in a row since its last success (since vmdeck started).",
            |h| Some(h.consecutive_failures),
        )?;
        self.host_gauge(e, "vmdeck_host_vms", "VMs vmdeck sees on the host now.", |h| Some(h.vms))?;

        {
            let mut family = e.encode_descriptor(
                "vmdeck_control_requests_pending",
                "Power and snapshot requests not settled yet, by kind.",
                None,
                MetricType::Gauge,
            )?;
            for (kind, n) in &self.pending {
                ConstGauge::new(*n).encode(family.encode_family(&[("kind", kind.as_str())])?)?;
            }
        }
        {
            let mut family = e.encode_descriptor(
                "vmdeck_audit_entries",
                "Audit log entries written, by kind (counted from the log when vmdeck starts).",
                None,
                MetricType::Counter,
            )?;
            for (kind, n) in &self.audit {
                ConstCounter::new(*n).encode(family.encode_family(&[("kind", kind.as_str())])?)?;
            }
        }
        ConstCounter::new(self.login_failures).encode(e.encode_descriptor(
            "vmdeck_login_failures",
            "Failed logins (audit entries of kind login_failed).",
            None,
            MetricType::Counter,
        )?)?;
        ConstGauge::new(self.consoles_open as i64).encode(e.encode_descriptor(
            "vmdeck_consoles_open",
            "Browser consoles open now.",
            None,
            MetricType::Gauge,
        )?)?;
        {
            let mut family = e.encode_descriptor(
                "vmdeck_alerts",
                "Open alerts by state (pending, firing) and severity.",
                None,
                MetricType::Gauge,
            )?;
            for ((state, severity), n) in &self.alerts {
                let labels = [("state", state.as_str()), ("severity", severity.as_str())];
                ConstGauge::new(*n).encode(family.encode_family(&labels)?)?;
            }
        }
        let mut family = e.encode_descriptor(
            "vmdeck_build_info",
            "vmdeck's version (always 1).",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(1i64)
            .encode(family.encode_family(&[("version", env!("CARGO_PKG_VERSION"))])?)?;
        Ok(())
    }
}
