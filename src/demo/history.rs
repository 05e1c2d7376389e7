//! The demo's month of history: at its first start on an empty demo database, vmdeck writes 30
//! days of made-up polls of the demo lab's VMs (daily load cycles, a crash and its restart, a
//! disk that grew, an IP address change, a VM shut off for days, a few audited power actions),
//! so that the VM page and the reports have something to show from the first minute.
//!
//! Everything goes through the code the server itself writes with: each generated poll is
//! recorded by `hosts::store::record_success` (the poller's path), rolled up by
//! `history::rollup::maintain`, and each power action moves through `control::store`'s
//! lifecycle into the audit log's hash chain, so `vmdeck audit verify` passes. The VMs are the
//! ones the lab's backend reports at that moment, and each ends the month in the state,
//! configuration and addresses it has now: the first real poll continues the same history.
//!
//! Speed: a month of polls every 10 s would be 260,000 transactions. The month is written one
//! poll an hour, the last day or two one per 5 minutes, the last hour at the poll interval
//! ([`plan`]): about 1,500 polls. Each stretch is rolled up on its own and its samples weighted
//! as the polls they stand for (`rollup::weigh`), so reports see the time they cover. A
//! `demo_history` row marks the database as seeded (migrations/0006).

use std::f64::consts::PI;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sqlx::SqlitePool;

use crate::backend::{AddrSource, Counters, IpAddress, VmReport};
use crate::control::store::{self as control, PowerRequest};
use crate::domain::{Actor, AuditOutcome, PowerAction, PowerState, VmUuid};
use crate::history::rollup;
use crate::hosts::store::{self as hosts, HostCache};
use crate::hosts::HostEntry;

const MINUTE: i64 = 60_000;
const HOUR: i64 = 60 * MINUTE;
const DAY: i64 = 24 * HOUR;

/// How much history the demo starts with.
pub const DAYS: i64 = 30;
/// Spacing of the generated polls over the last day or two (the 5-minute rollup bucket).
pub const SPARSE_STEP: i64 = 5 * MINUTE;
/// The generated power actions' user: not an account, a name in the audit log.
pub const DEMO_USER: &str = "alice (demo)";
/// The `detail` of every generated audit entry.
pub const DEMO_DETAIL: &str = "demo data: generated with the demo's month of history";
/// Seeds the noise: the demo looks the same at every install.
const SEED: u64 = 0x766d_6465_636b;

/// The stretch of time a demo database holds generated history for (ms).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Generated {
    pub from: i64,
    pub until: i64,
}

/// A stretch of generated polls: `[from, until)` every `step` ms, each sample weighted as
/// `weight` polls in the rollups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Era {
    pub from: i64,
    pub until: i64,
    pub step: i64,
    pub weight: i64,
}

impl Era {
    /// Its polls' times, oldest first.
    pub fn times(self) -> impl Iterator<Item = i64> {
        (0..).map(move |k| self.from + k * self.step).take_while(move |t| *t < self.until)
    }
}

/// When the generated polls fall: one poll an hour until yesterday's midnight (UTC), one per
/// 5 minutes until an hour ago, then at the poll interval; never finer than the interval. The
/// hourly stretch feeds the 7- and 30-day charts (hourly rollups), the 5-minute one the
/// 24-hour chart, the last hour the 1-hour chart: each range reads the same rows it would after
/// a month of real polls, from a few thousand polls instead of 260,000.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub from: i64,
    pub until: i64,
    /// Contiguous, oldest first. Their boundaries are bucket boundaries: the hourly stretch
    /// ends at a midnight, the 5-minute one on a 5-minute mark.
    pub eras: Vec<Era>,
}

/// The plan for a month ending at `now`, for a poller polling every `interval` ms.
pub fn plan(now: i64, interval: i64) -> Plan {
    let interval = interval.max(1000);
    let floor = |t: i64, to: i64| t - t.rem_euclid(to);
    let from = floor(now - DAYS * DAY, HOUR.max(interval));
    let stretches =
        [(HOUR, floor(now - DAY, DAY)), (SPARSE_STEP, floor(now - HOUR, SPARSE_STEP)), (1, now)];
    let mut eras: Vec<Era> = Vec::new();
    let mut at = from;
    for (step, until) in stretches {
        let step = step.max(interval);
        if until <= at {
            continue;
        }
        match eras.last_mut() {
            Some(last) if last.step == step => last.until = until,
            _ => eras.push(Era {
                from: at,
                until,
                step,
                weight: (step as f64 / interval as f64).round() as i64,
            }),
        }
        at = until;
    }
    Plan { from, until: now, eras }
}

impl Plan {
    /// Every generated poll's time, oldest first.
    pub fn times(&self) -> impl Iterator<Item = i64> + '_ {
        self.eras.iter().flat_map(|e| e.times())
    }
}

/// Office-hours activity at `t` (ms, UTC), 0 to 1: nothing at night, rising from 07:00 to a
/// peak at 13:00 and gone by 19:00; weekends at a quarter.
pub fn office_hours(t: i64) -> f64 {
    let hour = t.rem_euclid(DAY) as f64 / HOUR as f64;
    let bump =
        if (7.0..19.0).contains(&hour) { (PI * (hour - 7.0) / 12.0).sin().powi(2) } else { 0.0 };
    if weekend(t) {
        bump * 0.25
    } else {
        bump
    }
}

/// Saturday or Sunday (UTC). 1970-01-01 was a Thursday.
fn weekend(t: i64) -> bool {
    (t.div_euclid(DAY) + 3).rem_euclid(7) >= 5
}

/// What a VM runs, which sets its load.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Workload {
    /// A web server: busy in office hours.
    Web,
    /// A database: office hours plus a nightly maintenance job at 02:00.
    Database,
    /// Follows the database at a lower level.
    Replica,
    /// CI jobs in bursts during office hours.
    Ci,
    /// Reads hard while it runs (at night).
    Backup,
    /// A developer's machine.
    Desktop,
    /// About the same all day: the share of CPU.
    Steady(f64),
}

impl Workload {
    /// CPU use at `t` in percent, before noise.
    fn cpu(self, t: i64, rng: &mut StdRng) -> f64 {
        let office = office_hours(t);
        match self {
            Workload::Web => 6.0 + 64.0 * office,
            Workload::Database => {
                let nightly = (2 * HOUR..2 * HOUR + 45 * MINUTE).contains(&t.rem_euclid(DAY));
                if nightly {
                    72.0
                } else {
                    9.0 + 45.0 * office
                }
            }
            Workload::Replica => 5.0 + 26.0 * office,
            Workload::Ci if office > 0.15 && rng.gen_bool(0.55) => rng.gen_range(70.0..96.0),
            Workload::Ci => 3.0,
            Workload::Backup => 38.0,
            Workload::Desktop => 12.0 + 30.0 * office,
            Workload::Steady(share) => share * 100.0,
        }
    }

    /// Disk read and write, network receive and send, in bytes/s at full load.
    fn io(self) -> [f64; 4] {
        match self {
            Workload::Web => [0.4e6, 0.6e6, 3.0e6, 9.0e6],
            Workload::Database => [6.0e6, 4.0e6, 2.0e6, 2.5e6],
            Workload::Replica => [1.0e6, 4.0e6, 2.5e6, 0.3e6],
            Workload::Ci => [8.0e6, 12.0e6, 6.0e6, 0.5e6],
            Workload::Backup => [180.0e6, 2.0e6, 0.2e6, 150.0e6],
            Workload::Desktop => [1.5e6, 1.0e6, 0.8e6, 0.2e6],
            Workload::Steady(_) => [0.3e6, 0.5e6, 0.4e6, 0.4e6],
        }
    }
}

/// Whether a VM on a schedule runs at a time.
type Schedule = fn(i64) -> bool;

/// What one VM did over the month.
struct Story {
    workload: Workload,
    /// State changes before `settled_from`, oldest first; the VM runs before the first.
    changes: Vec<(i64, PowerState)>,
    /// Running when it says so, else `schedule_off`.
    schedule: Option<(Schedule, PowerState)>,
    /// From here on the VM is as the lab has it now.
    settled_from: i64,
    /// Restarts from inside (reboots): counters start again.
    reboots: Vec<i64>,
    /// Before this its first IPv4 address was another one.
    ip_change: Option<i64>,
    /// Its largest disk was enlarged at these times (half, then three quarters, then all of
    /// today's capacity), and its allocation grew all month.
    disk_growth: Vec<i64>,
    /// Power actions by the demo user that caused changes: (when, action).
    actions: Vec<(i64, PowerAction)>,
}

impl Story {
    fn always(workload: Workload, from: i64) -> Story {
        Story {
            workload,
            changes: Vec::new(),
            schedule: None,
            settled_from: from,
            reboots: Vec::new(),
            ip_change: None,
            disk_growth: Vec::new(),
            actions: Vec::new(),
        }
    }

    /// The state at `t` before it settled into today's.
    fn state_before_settled(&self, t: i64) -> PowerState {
        if let Some((running, off)) = self.schedule {
            return if running(t) { PowerState::Running } else { off };
        }
        self.changes.iter().rev().find(|(at, _)| *at <= t).map_or(PowerState::Running, |c| c.1)
    }
}

/// The demo lab's VMs' stories, by name; any other VM keeps its current state all month.
/// `day0` is today's midnight (UTC), `until` the end of the generated stretch.
fn story(name: &str, plan: &Plan) -> Story {
    let day0 = plan.until - plan.until.rem_euclid(DAY);
    let at = |days_ago: i64, hour: i64, minute: i64| {
        day0 - days_ago * DAY + hour * HOUR + minute * MINUTE
    };
    let workload = match name {
        "web-01" | "web-02" => Workload::Web,
        "db-primary" => Workload::Database,
        "db-replica" => Workload::Replica,
        "ci-runner-1" => Workload::Ci,
        "backup" => Workload::Backup,
        "dev-sandbox" => Workload::Desktop,
        "monitoring" => Workload::Steady(0.22),
        "build-cache" => Workload::Steady(0.08),
        "mail-relay" => Workload::Steady(0.04),
        "ldap" => Workload::Steady(0.03),
        _ => Workload::Steady(0.1),
    };
    let mut s = Story::always(workload, plan.from);
    match name {
        "web-01" => {
            // A kernel update: rebooted by the demo user one evening.
            s.reboots.push(at(20, 21, 15));
            s.actions.push((at(20, 21, 15), PowerAction::Reboot));
        }
        "web-02" => s.ip_change = Some(at(12, 6, 40)),
        "db-primary" => s.disk_growth = vec![at(19, 9, 30), at(6, 10, 0)],
        "monitoring" => {
            // Crashed last night; started again by the demo user in the morning. (Last night:
            // the 5-minute stretch, so the outage is traced to the minute, not the hour.)
            let (crash, restart) = (at(1, 3, 12), at(1, 5, 47));
            s.changes = vec![(crash, PowerState::Crashed), (restart, PowerState::Running)];
            s.reboots.push(restart);
            s.actions.push((restart, PowerAction::Start));
            s.settled_from = restart;
        }
        "ci-runner-1" => {
            // Shut down by the demo user five days ago, off since.
            // On the hour: the hourly stretch sees the change when it happens.
            let off = at(5, 11, 0);
            s.changes = vec![(off, PowerState::ShutOff)];
            s.actions.push((off, PowerAction::Shutdown));
            s.settled_from = off;
        }
        "build-cache" => {
            let paused = at(2, 16, 0);
            s.changes = vec![(paused, PowerState::Paused)];
            s.actions.push((paused, PowerAction::Pause));
            s.settled_from = paused;
        }
        // Crashed three hours ago and still down: something to start in the demo.
        "mail-relay" => s.settled_from = plan.until - 3 * HOUR,
        "backup" => {
            let nightly: Schedule = |t| (HOUR..2 * HOUR + 40 * MINUTE).contains(&t.rem_euclid(DAY));
            s.schedule = Some((nightly, PowerState::ShutOff));
            s.settled_from = plan.until - 20 * HOUR;
        }
        "dev-sandbox" => {
            let office: Schedule = |t| office_hours(t) > 0.05 && !weekend(t);
            s.schedule = Some((office, PowerState::Suspended));
            s.settled_from = plan.until - 20 * HOUR;
        }
        _ => {}
    }
    s
}

/// The words libvirt uses for a state it reached, as the libvirt backend reports them.
fn words(state: PowerState) -> (&'static str, &'static str) {
    match state {
        PowerState::Running => ("running", "booted"),
        PowerState::Paused => ("paused", "user"),
        PowerState::Suspended => ("pmsuspended", "unknown"),
        PowerState::InTransition => ("shutdown", "user"),
        PowerState::Crashed => ("crashed", "panicked"),
        PowerState::ShutOff => ("shutoff", "shut down"),
        PowerState::Unknown => ("nostate", "unknown"),
    }
}

/// One VM being simulated: what the lab reports now, its story, and its counters.
struct Sim {
    now: VmReport,
    story: Story,
    rng: StdRng,
    counters: [u64; 5],
    was_running: bool,
    /// Addresses while running (today's, or made up for a VM that is not running now).
    addresses: Vec<IpAddress>,
    /// The largest disk, for growth: (index, today's capacity).
    grown_disk: Option<(usize, u64)>,
}

impl Sim {
    fn new(index: usize, now: VmReport, plan: &Plan) -> Sim {
        let story = story(&now.name, plan);
        let addresses = if now.addresses.is_empty() {
            now.config
                .nics
                .iter()
                .take(1)
                .map(|nic| IpAddress {
                    mac: nic.mac.to_lowercase(),
                    addr: std::net::Ipv4Addr::new(192, 168, 122, 150 + index as u8).into(),
                    prefix: 24,
                    source: AddrSource::DhcpLease,
                })
                .collect()
        } else {
            now.addresses.clone()
        };
        let grown_disk = (!story.disk_growth.is_empty())
            .then(|| {
                now.config
                    .disks
                    .iter()
                    .enumerate()
                    .filter_map(|(i, d)| d.capacity_bytes.map(|c| (i, c)))
                    .max_by_key(|(_, c)| *c)
            })
            .flatten();
        Sim {
            now,
            story,
            rng: StdRng::seed_from_u64(SEED ^ index as u64),
            counters: [0; 5],
            was_running: false,
            addresses,
            grown_disk,
        }
    }

    /// The report of a poll at `t`, `dt` ms after the previous one.
    fn report(&mut self, t: i64, dt: i64, plan: &Plan) -> VmReport {
        let mut r = self.now.clone();
        if t < self.story.settled_from {
            r.state = self.story.state_before_settled(t);
            let (raw, reason) = words(r.state);
            r.raw_state = raw.into();
            r.state_reason = reason.into();
        }
        let running = r.state == PowerState::Running;
        let rebooted = self.story.reboots.iter().any(|b| (t - dt..t).contains(b));
        if running && (!self.was_running || rebooted) {
            // A new VM process: its counters start again (the poller derives no rate across).
            self.counters = [0; 5];
        }
        self.was_running = running;
        if running {
            let w = self.story.workload;
            let cpu = (w.cpu(t, &mut self.rng) + self.rng.gen_range(-3.0..3.0)).clamp(0.5, 100.0);
            let load = cpu / 100.0;
            let secs = dt as f64 / 1000.0;
            let vcpus = f64::from(r.config.vcpus.max(1));
            self.counters[0] += (load * vcpus * secs * 1e9) as u64;
            for (c, rate) in self.counters[1..].iter_mut().zip(w.io()) {
                let noise = self.rng.gen_range(0.8..1.2);
                *c += (rate * (0.05 + load) * noise * secs) as u64;
            }
            let [cpu_time, rd, wr, rx, tx] = self.counters.map(Some);
            r.counters = Counters {
                cpu_time_ns: cpu_time,
                disk_read_bytes: rd,
                disk_write_bytes: wr,
                net_rx_bytes: rx,
                net_tx_bytes: tx,
            };
            let memory = r.config.memory_current_kib as f64;
            r.memory_used_kib = Some((memory * (0.42 + 0.35 * load)) as u64);
            if t < self.story.settled_from {
                r.addresses.clone_from(&self.addresses);
            }
            if self.story.ip_change.is_some_and(|c| t < c) {
                if let Some(std::net::IpAddr::V4(v4)) = r.addresses.first().map(|a| a.addr) {
                    let [a, b, c, d] = v4.octets();
                    let before = 2 + (u16::from(d) + 97) % 250;
                    r.addresses[0].addr = std::net::Ipv4Addr::new(a, b, c, before as u8).into();
                }
            }
        } else if t < self.story.settled_from {
            // Stopped or paused: the lab reports a VM in today's state, leave that as it is.
            r.counters = Counters::default();
            r.memory_used_kib = None;
            r.addresses = Vec::new();
        }
        if let Some((disk, capacity)) = self.grown_disk {
            let enlarged = self.story.disk_growth.iter().filter(|g| **g <= t).count() as u64;
            let steps = self.story.disk_growth.len() as u64;
            if enlarged < steps {
                r.config.disks[disk].capacity_bytes =
                    Some(capacity / (2 * steps) * (steps + enlarged));
            }
            // Allocation grows from 40 % of today's, a step an hour, to today's an hour ago.
            let target = r.config.disks[disk].target.clone();
            let hour = t - t.rem_euclid(HOUR);
            let done = ((hour - plan.from) as f64 / (plan.until - HOUR - plan.from) as f64)
                .clamp(0.0, 1.0);
            for u in r.disk_usage.iter_mut().filter(|u| u.target == target) {
                u.allocation_bytes =
                    u.allocation_bytes.map(|a| (a as f64 * (0.4 + 0.6 * done)) as u64);
            }
        }
        r
    }
}

/// Why seeding failed.
#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    #[error("the demo lab could not be read: {0}")]
    Lab(#[from] crate::backend::BackendError),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// What [`seed`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seeded {
    /// Generated now: so many polls.
    Now(Generated, usize),
    /// Seeded at an earlier start.
    Before(Generated),
    /// The database has real polls and was never seeded: left alone.
    Skipped,
}

/// Seeds the demo database with a month of history ending `now`, unless it was seeded before
/// or already has polls. `interval` is the poller's (ms).
pub async fn seed(
    pool: &SqlitePool,
    host: &HostEntry,
    interval: i64,
    now: i64,
) -> Result<Seeded, SeedError> {
    if let Some(generated) = marker(pool).await? {
        return Ok(Seeded::Before(generated));
    }
    if any_polls(pool).await? {
        return Ok(Seeded::Skipped);
    }
    let lab = host.backend.inventory().await?;
    let plan = plan(now, interval);
    let mut sims: Vec<Sim> =
        lab.into_iter().enumerate().map(|(i, r)| Sim::new(i, r, &plan)).collect();
    let mut cache = HostCache::default();
    let (mut polls, mut prev) = (0, plan.from - plan.eras.first().map_or(0, |e| e.step));
    let mut weighed_until = 0;
    for era in &plan.eras {
        for t in era.times() {
            let reports: Vec<VmReport> =
                sims.iter_mut().map(|s| s.report(t, t - prev, &plan)).collect();
            hosts::record_success(pool, &mut cache, host.id, t, t + 40, &reports).await?;
            prev = t;
            polls += 1;
        }
        if era.weight > 1 {
            // Roll up this stretch, and only it, then count its samples as the polls they
            // stand for, before the next stretch's samples join its buckets.
            rollup::maintain(pool, era.until + rollup::SLACK_SECS * 1000).await?;
            rollup::weigh(pool, weighed_until, era.until / 1000, era.weight).await?;
        }
        weighed_until = era.until / 1000;
    }
    rollup::maintain(pool, now).await?;
    record_actions(pool, host, &sims).await?;
    let generated = Generated { from: plan.from, until: plan.until };
    mark(pool, generated, now).await?;
    Ok(Seeded::Now(generated, polls))
}

/// Records the stories' power actions through the control store's lifecycle, oldest first
/// (the audit chain follows the order they are written in), each confirmed a few seconds
/// after it was sent.
async fn record_actions(
    pool: &SqlitePool,
    host: &HostEntry,
    sims: &[Sim],
) -> Result<(), SeedError> {
    let actor = Actor { user: Some(DEMO_USER.into()), addr: Some("192.0.2.10".into()) };
    let mut actions: Vec<(i64, PowerAction, &Sim)> =
        sims.iter().flat_map(|s| s.story.actions.iter().map(move |(t, a)| (*t, *a, s))).collect();
    actions.sort_by_key(|a| a.0);
    for (t, action, sim) in actions {
        let Ok(uuid) = VmUuid::parse(&sim.now.uuid) else { continue };
        let request = PowerRequest {
            actor: &actor,
            host: host.config.name.as_str(),
            vm_uuid: &uuid,
            vm_name: &sim.now.name,
            action,
        };
        let id = control::requested_at(pool, &request, t - 2_400)
            .await
            .map_err(|e| match e {
                control::RequestError::Db(e) => e,
                pending => sqlx::Error::Protocol(pending.to_string()),
            })?
            .id;
        control::sent_at(pool, id, t - 2_350).await?;
        control::accepted_at(pool, id, t - 1_900).await?;
        control::settled_at(pool, id, AuditOutcome::Confirmed, None, Some(DEMO_DETAIL), t + 6_000)
            .await?;
    }
    Ok(())
}

/// The generated stretch, if the database was seeded.
pub async fn marker(pool: &SqlitePool) -> sqlx::Result<Option<Generated>> {
    let row: Option<(i64, i64)> =
        sqlx::query_as("SELECT generated_from, generated_until FROM demo_history WHERE id = 1")
            .fetch_optional(pool)
            .await?;
    Ok(row.map(|(from, until)| Generated { from, until }))
}

async fn mark(pool: &SqlitePool, g: Generated, now: i64) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO demo_history (id, generated_from, generated_until, seeded_at) VALUES (1, ?, ?, ?)",
    )
    .bind(g.from)
    .bind(g.until)
    .bind(now)
    .execute(pool)
    .await?;
    Ok(())
}

async fn any_polls(pool: &SqlitePool) -> sqlx::Result<bool> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM polls)").fetch_one(pool).await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-11-25, a Wednesday, 00:00 UTC.
    const WEDNESDAY: i64 = 1_795_564_800_000;

    #[test]
    fn office_hours_peak_in_the_afternoon_and_rest_at_night_and_at_weekends() {
        let at = |day: i64, hour: i64| office_hours(WEDNESDAY + day * DAY + hour * HOUR);
        assert_eq!(at(0, 3), 0.0, "nothing at 03:00");
        assert!(at(0, 13) > 0.99, "peak at 13:00: {}", at(0, 13));
        assert!(at(0, 10) > 0.4 && at(0, 10) < at(0, 13), "rising in the morning: {}", at(0, 10));
        assert!(at(0, 16) < at(0, 13) && at(0, 16) > 0.4, "falling after: {}", at(0, 16));
        assert_eq!(at(0, 20), 0.0, "gone by the evening");
        // 2026-11-28 is a Saturday.
        assert!(at(3, 13) < 0.3 && at(3, 13) > 0.0, "a quiet Saturday: {}", at(3, 13));
        assert!(at(5, 13) > 0.99, "Monday is busy again");
    }

    #[test]
    fn the_plan_writes_hours_then_5_minutes_then_the_last_hour_at_the_poll_interval() {
        let now = WEDNESDAY + 14 * HOUR + 7 * MINUTE + 12_345;
        let p = plan(now, 10_000);
        let shape: Vec<(i64, i64)> = p.eras.iter().map(|e| (e.step, e.weight)).collect();
        assert_eq!(shape, vec![(HOUR, 360), (SPARSE_STEP, 30), (10_000, 1)], "{p:?}");
        assert!(now - p.from >= DAYS * DAY && p.from.rem_euclid(HOUR) == 0, "a whole month");
        assert_eq!(p.eras[0].until, WEDNESDAY - DAY, "hourly until yesterday's midnight");
        assert_eq!(p.eras[2].from, WEDNESDAY + 13 * HOUR + 5 * MINUTE, "the last hour at 10 s");
        assert!(p.eras.windows(2).all(|w| w[0].until == w[1].from), "contiguous: {p:?}");
        let times: Vec<i64> = p.times().collect();
        assert!(times.windows(2).all(|w| w[0] < w[1]), "in time order");
        assert!(*times.last().unwrap() < now, "the first real poll comes after");
        assert!(times.len() < 2_000, "cheap to write: {} polls", times.len());
        // A poller slower than 5 minutes: no 5-minute stretch; slower than an hour: every poll.
        let ten = plan(now, 600_000);
        let shape: Vec<(i64, i64)> = ten.eras.iter().map(|e| (e.step, e.weight)).collect();
        assert_eq!(shape, vec![(HOUR, 6), (600_000, 1)]);
        let slow = plan(now, 3_600_000);
        assert_eq!(slow.eras.len(), 1);
        assert_eq!((slow.eras[0].weight, slow.times().count()), (1, 30 * 24 + 1));
    }

    #[test]
    fn scheduled_vms_follow_their_schedule_until_they_settle() {
        let p = plan(WEDNESDAY + 14 * HOUR, 10_000);
        let backup = story("backup", &p);
        assert_eq!(
            backup.state_before_settled(WEDNESDAY - 3 * DAY + 90 * MINUTE),
            PowerState::Running
        );
        assert_eq!(
            backup.state_before_settled(WEDNESDAY - 3 * DAY + 12 * HOUR),
            PowerState::ShutOff
        );
        let monitoring = story("monitoring", &p);
        let crash = monitoring.changes[0].0;
        assert_eq!(monitoring.state_before_settled(crash - 1), PowerState::Running);
        assert_eq!(monitoring.state_before_settled(crash + HOUR), PowerState::Crashed);
        assert_eq!(monitoring.actions, vec![(monitoring.changes[1].0, PowerAction::Start)]);
    }
}
