//! Evaluation, pure: which subjects each rule's condition holds for ([`hits`]), and how the
//! open alerts move given those hits and the clock ([`advance`]). No SQL and no clock of its
//! own here; `store` reads the facts and writes the steps, `AlertEngine::evaluate` joins them.

use std::collections::{HashMap, HashSet};

use super::rules::{Condition, Expected, RuleSpec};
use crate::domain::quoted;
use crate::web::format;

/// A rule as the evaluator needs it.
#[derive(Debug, Clone)]
pub struct Rule {
    pub id: i64,
    pub spec: RuleSpec,
}

/// One present VM, from its latest stored poll.
#[derive(Debug, Clone, Default)]
pub struct VmFacts {
    pub host: String,
    pub uuid: String,
    pub name: String,
    pub state: String,
    pub autostart: Option<bool>,
    pub cpu_pct: Option<f64>,
    pub memory_used_kib: Option<i64>,
    pub memory_assigned_kib: Option<i64>,
    pub disk_capacity_bytes: Option<i64>,
    /// Creation time (ms) of the VM's oldest snapshot, when it has any and they were read.
    pub snapshot_oldest: Option<i64>,
}

/// One configured host.
#[derive(Debug, Clone, Default)]
pub struct HostFacts {
    pub name: String,
    /// The last poll's result: None before the first poll.
    pub last_ok: Option<bool>,
    pub last_error: Option<String>,
    /// When its last successful poll finished.
    pub ok_at: Option<i64>,
}

/// A request that failed or was unconfirmed.
#[derive(Debug, Clone)]
pub struct FailedRequest {
    pub host: String,
    pub uuid: String,
    pub vm_name: Option<String>,
    pub at: i64,
    pub action: String,
    pub outcome: String,
    pub error: Option<String>,
}

/// Everything evaluation reads, at one moment.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    pub now: i64,
    pub vms: Vec<VmFacts>,
    pub hosts: Vec<HostFacts>,
    /// Each VM's disk capacity `period` seconds ago (its first known one if it is newer), by
    /// period, then by (host, uuid).
    pub disk_before: HashMap<u64, HashMap<(String, String), i64>>,
    /// Failed and unconfirmed requests settled within the longest look-back of any rule.
    pub failed_requests: Vec<FailedRequest>,
}

/// A rule's condition holds for a subject.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    pub rule_id: i64,
    pub subject: String,
    pub host: String,
    pub vm_uuid: Option<String>,
    pub vm_name: Option<String>,
    pub summary: String,
    pub value: Option<f64>,
}

pub fn vm_subject(host: &str, uuid: &str) -> String {
    format!("vm:{host}/{uuid}")
}

pub fn host_subject(host: &str) -> String {
    format!("host:{host}")
}

/// Hosts whose VM data is not current (their last poll failed, or none yet): their VMs'
/// alerts neither start nor end until the host is polled again.
pub fn stale_hosts(facts: &Facts) -> HashSet<String> {
    facts.hosts.iter().filter(|h| h.last_ok != Some(true)).map(|h| h.name.clone()).collect()
}

/// Every subject each enabled rule's condition holds for now.
pub fn hits(rules: &[Rule], facts: &Facts) -> Vec<Hit> {
    let stale = stale_hosts(facts);
    let mut out = Vec::new();
    for rule in rules.iter().filter(|r| r.spec.enabled) {
        let spec = &rule.spec;
        if let Condition::HostUnreachable = spec.condition {
            for h in facts.hosts.iter().filter(|h| spec.scope.has_host(&h.name)) {
                if h.last_ok == Some(false) {
                    let since = match h.ok_at {
                        Some(t) => format!("; last polled {}", format::ago(t, facts.now)),
                        None => "; never polled".to_string(),
                    };
                    out.push(Hit {
                        rule_id: rule.id,
                        subject: host_subject(&h.name),
                        host: h.name.clone(),
                        vm_uuid: None,
                        vm_name: None,
                        summary: format!(
                            "host {} unreachable: {}{since}",
                            quoted(&h.name),
                            h.last_error.as_deref().unwrap_or("its poll failed")
                        ),
                        value: None,
                    });
                }
            }
            continue;
        }
        let failed_by_vm = match spec.condition {
            Condition::RequestFailed { period_secs } => {
                let since = facts.now - period_secs as i64 * 1000;
                let mut by: HashMap<(&str, &str), &FailedRequest> = HashMap::new();
                for f in facts.failed_requests.iter().filter(|f| f.at >= since) {
                    let e = by.entry((f.host.as_str(), f.uuid.as_str())).or_insert(f);
                    if f.at > e.at {
                        *e = f;
                    }
                }
                by
            }
            _ => HashMap::new(),
        };
        for vm in facts.vms.iter() {
            if stale.contains(&vm.host) || !spec.scope.has_vm(&vm.host, &vm.uuid, &vm.name) {
                continue;
            }
            let hit = |summary: String, value: Option<f64>| Hit {
                rule_id: rule.id,
                subject: vm_subject(&vm.host, &vm.uuid),
                host: vm.host.clone(),
                vm_uuid: Some(vm.uuid.clone()),
                vm_name: Some(vm.name.clone()),
                summary,
                value,
            };
            let running = vm.state == "running";
            let name = quoted(&vm.name);
            match spec.condition {
                Condition::VmState { expected } => {
                    let expected_running = match expected {
                        Expected::Running => true,
                        Expected::RunningIfAutostart => vm.autostart == Some(true),
                    };
                    if expected_running && !running {
                        let why = match expected {
                            Expected::Running => "",
                            Expected::RunningIfAutostart => " (it is set to autostart)",
                        };
                        out.push(hit(
                            format!(
                                "{name} is {} but should be running{why}",
                                state_word(&vm.state)
                            ),
                            None,
                        ));
                    }
                }
                Condition::CpuAbove { percent } => {
                    if let (true, Some(cpu)) = (running, vm.cpu_pct) {
                        if cpu > percent {
                            out.push(hit(
                                format!(
                                    "{name} uses {} CPU (above {} %)",
                                    format::percent(cpu),
                                    trim(percent)
                                ),
                                Some(cpu),
                            ));
                        }
                    }
                }
                Condition::MemoryAbove { percent } => {
                    if let (true, Some(used), Some(max)) =
                        (running, vm.memory_used_kib, vm.memory_assigned_kib)
                    {
                        if max > 0 {
                            let pct = used as f64 / max as f64 * 100.0;
                            if pct > percent {
                                out.push(hit(
                                    format!(
                                        "{name} uses {} of its {} memory (above {} %)",
                                        format::percent(pct),
                                        format::bytes(max as u64 * 1024),
                                        trim(percent)
                                    ),
                                    Some(pct),
                                ));
                            }
                        }
                    }
                }
                Condition::DiskGrowth { bytes, period_secs } => {
                    let before = facts
                        .disk_before
                        .get(&period_secs)
                        .and_then(|m| m.get(&(vm.host.clone(), vm.uuid.clone())));
                    if let (Some(now), Some(before)) = (vm.disk_capacity_bytes, before) {
                        let grew = now - before;
                        if grew >= bytes {
                            out.push(hit(
                                format!(
                                    "{name}'s disks grew by {} within {} (to {})",
                                    format::bytes(grew as u64),
                                    super::rules::format_duration(period_secs),
                                    format::bytes(now as u64)
                                ),
                                Some(grew as f64),
                            ));
                        }
                    }
                }
                Condition::RequestFailed { .. } => {
                    if let Some(f) = failed_by_vm.get(&(vm.host.as_str(), vm.uuid.as_str())) {
                        out.push(hit(
                            format!(
                                "{} of {name} {} {}{}",
                                f.action.replace('_', " "),
                                if f.outcome == "failed" { "failed" } else { "was unconfirmed" },
                                format::ago(f.at, facts.now),
                                f.error.as_deref().map(|e| format!(": {e}")).unwrap_or_default()
                            ),
                            None,
                        ));
                    }
                }
                Condition::SnapshotAge { days } => {
                    if let Some(oldest) = vm.snapshot_oldest {
                        let age_days = (facts.now - oldest) as f64 / 86_400_000.0;
                        if age_days > days {
                            out.push(hit(
                                format!(
                                    "{name}'s oldest snapshot is {:.0} days old (limit {} days)",
                                    age_days.floor(),
                                    trim(days)
                                ),
                                Some(age_days),
                            ));
                        }
                    }
                }
                Condition::HostUnreachable => {}
            }
        }
    }
    out
}

fn trim(v: f64) -> String {
    let s = format!("{v:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

fn state_word(state: &str) -> String {
    state.replace('_', " ")
}

/// An alert that is open (pending or firing), as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Open {
    pub id: i64,
    /// None once its rule was removed.
    pub rule_id: Option<i64>,
    pub subject: String,
    pub host: String,
    pub firing: bool,
    pub pending_since: i64,
    pub summary: String,
}

/// One change to the stored alerts.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// A new alert: pending, or firing at once when the rule's `for` is 0.
    Start { hit: Hit, firing: bool },
    /// A pending alert whose `for` elapsed.
    Fire { id: i64 },
    /// An open alert whose condition no longer holds: resolved (it fired) or inactive (it was
    /// pending); `why` says what ended it.
    End { id: i64, fired: bool, why: String },
    /// An open alert whose condition still holds, in new words (the CPU % moved...).
    Reword { id: i64, summary: String, value: Option<f64> },
}

/// How the open alerts move at `now`, given what holds. Alerts of VMs on stale hosts stay as
/// they are; alerts of rules that are gone or disabled end.
pub fn advance(
    rules: &[Rule],
    open: &[Open],
    hits: Vec<Hit>,
    stale: &HashSet<String>,
    now: i64,
) -> Vec<Step> {
    let rules_by_id: HashMap<i64, &Rule> = rules.iter().map(|r| (r.id, r)).collect();
    let mut open_by_key: HashMap<(i64, &str), &Open> = HashMap::new();
    let mut steps = Vec::new();
    for o in open {
        let rule = o.rule_id.and_then(|id| rules_by_id.get(&id));
        match (o.rule_id, rule) {
            (Some(id), Some(r)) if r.spec.enabled => {
                open_by_key.insert((id, o.subject.as_str()), o);
            }
            (_, Some(_)) => steps.push(Step::End {
                id: o.id,
                fired: o.firing,
                why: "its rule was disabled".into(),
            }),
            _ => steps.push(Step::End {
                id: o.id,
                fired: o.firing,
                why: "its rule was removed".into(),
            }),
        }
    }
    let mut held: HashSet<(i64, String)> = HashSet::new();
    for hit in hits {
        let Some(rule) = rules_by_id.get(&hit.rule_id) else { continue };
        let for_ms = rule.spec.for_secs as i64 * 1000;
        held.insert((hit.rule_id, hit.subject.clone()));
        match open_by_key.get(&(hit.rule_id, hit.subject.as_str())) {
            None => steps.push(Step::Start { firing: for_ms == 0, hit }),
            Some(o) => {
                if !o.firing && now - o.pending_since >= for_ms {
                    steps.push(Step::Fire { id: o.id });
                }
                if o.summary != hit.summary {
                    steps.push(Step::Reword { id: o.id, summary: hit.summary, value: hit.value });
                }
            }
        }
    }
    for ((rule_id, subject), o) in &open_by_key {
        if held.contains(&(*rule_id, subject.to_string())) {
            continue;
        }
        // A VM's data is stale while its host cannot be polled: its alerts wait.
        if subject.starts_with("vm:") && stale.contains(&o.host) {
            continue;
        }
        steps.push(Step::End {
            id: o.id,
            fired: o.firing,
            why: "the condition no longer holds".into(),
        });
    }
    steps
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::rules::{Scope, Severity};

    const UUID: &str = "6695eb01-f6a4-8304-79aa-97f2502e193f";

    fn rule(id: i64, condition: Condition, for_secs: u64) -> Rule {
        Rule {
            id,
            spec: RuleSpec {
                name: format!("r{id}"),
                enabled: true,
                condition,
                scope: Scope::All,
                for_secs,
                severity: Severity::Warning,
            },
        }
    }

    fn facts(state: &str, cpu: Option<f64>) -> Facts {
        Facts {
            now: 1_000_000,
            vms: vec![VmFacts {
                host: "lab".into(),
                uuid: UUID.into(),
                name: "web".into(),
                state: state.into(),
                autostart: Some(true),
                cpu_pct: cpu,
                memory_used_kib: Some(900),
                memory_assigned_kib: Some(1000),
                disk_capacity_bytes: Some(30 << 30),
                snapshot_oldest: Some(1_000_000 - 20 * 86_400_000),
            }],
            hosts: vec![HostFacts {
                name: "lab".into(),
                last_ok: Some(true),
                ..HostFacts::default()
            }],
            disk_before: HashMap::from([(
                86_400,
                HashMap::from([(("lab".into(), UUID.into()), 10 << 30)]),
            )]),
            failed_requests: vec![],
        }
    }

    #[test]
    fn each_condition_holds_exactly_when_it_says() {
        let expect = |c: Condition, f: &Facts| !hits(&[rule(1, c, 0)], f).is_empty();
        let running = facts("running", Some(95.0));
        let off = facts("shut_off", None);
        let auto = Condition::VmState { expected: Expected::RunningIfAutostart };
        assert!(expect(auto.clone(), &off));
        assert!(!expect(auto.clone(), &running));
        let mut not_auto = off.clone();
        not_auto.vms[0].autostart = Some(false);
        assert!(!expect(auto, &not_auto));
        assert!(expect(Condition::VmState { expected: Expected::Running }, &not_auto));
        assert!(expect(Condition::CpuAbove { percent: 90.0 }, &running));
        assert!(!expect(Condition::CpuAbove { percent: 96.0 }, &running));
        assert!(!expect(Condition::CpuAbove { percent: 90.0 }, &off), "only running VMs use CPU");
        assert!(expect(Condition::MemoryAbove { percent: 85.0 }, &running));
        assert!(!expect(Condition::MemoryAbove { percent: 95.0 }, &running));
        assert!(expect(Condition::DiskGrowth { bytes: 20 << 30, period_secs: 86_400 }, &running));
        assert!(!expect(Condition::DiskGrowth { bytes: 21 << 30, period_secs: 86_400 }, &running));
        assert!(expect(Condition::SnapshotAge { days: 14.0 }, &running));
        assert!(!expect(Condition::SnapshotAge { days: 21.0 }, &running));
        let mut failed = running.clone();
        failed.failed_requests.push(FailedRequest {
            host: "lab".into(),
            uuid: UUID.into(),
            vm_name: None,
            at: 1_000_000 - 600_000,
            action: "shutdown".into(),
            outcome: "unconfirmed".into(),
            error: None,
        });
        assert!(expect(Condition::RequestFailed { period_secs: 3_600 }, &failed));
        assert!(!expect(Condition::RequestFailed { period_secs: 300 }, &failed));
        let mut down = running.clone();
        down.hosts[0].last_ok = Some(false);
        assert!(expect(Condition::HostUnreachable, &down));
        assert!(!expect(Condition::HostUnreachable, &running));
        assert!(
            !expect(Condition::CpuAbove { percent: 90.0 }, &down),
            "VMs of a host that cannot be polled are not judged on stale data"
        );
    }

    #[test]
    fn for_makes_an_alert_wait_pending_and_ending_early_leaves_it_inactive() {
        let rules = [rule(1, Condition::VmState { expected: Expected::Running }, 300)];
        let f = facts("shut_off", None);
        let none = HashSet::new();
        let steps = advance(&rules, &[], hits(&rules, &f), &none, 0);
        assert!(matches!(&steps[..], [Step::Start { firing: false, .. }]));
        let Step::Start { hit, .. } = &steps[0] else { unreachable!() };
        let open = Open {
            id: 7,
            rule_id: Some(1),
            subject: hit.subject.clone(),
            host: "lab".into(),
            firing: false,
            pending_since: 0,
            summary: hit.summary.clone(),
        };
        assert!(advance(&rules, std::slice::from_ref(&open), hits(&rules, &f), &none, 299_999)
            .is_empty());
        assert_eq!(
            advance(&rules, std::slice::from_ref(&open), hits(&rules, &f), &none, 300_000),
            vec![Step::Fire { id: 7 }]
        );
        let up = facts("running", Some(1.0));
        let ended = advance(&rules, std::slice::from_ref(&open), hits(&rules, &up), &none, 100_000);
        assert!(matches!(&ended[..], [Step::End { id: 7, fired: false, .. }]));
        let stale = HashSet::from(["lab".to_string()]);
        assert!(
            advance(&rules, &[open], vec![], &stale, 100_000).is_empty(),
            "a stale host's VM alerts wait"
        );
    }

    #[test]
    fn alerts_of_removed_or_disabled_rules_end() {
        let mut rules = vec![rule(1, Condition::HostUnreachable, 0)];
        let open = Open {
            id: 3,
            rule_id: Some(1),
            subject: host_subject("lab"),
            host: "lab".into(),
            firing: true,
            pending_since: 0,
            summary: String::new(),
        };
        rules[0].spec.enabled = false;
        let steps = advance(&rules, std::slice::from_ref(&open), vec![], &HashSet::new(), 1);
        assert!(
            matches!(&steps[..], [Step::End { fired: true, why, .. }] if why.contains("disabled"))
        );
        let gone = Open { rule_id: None, ..open };
        let steps = advance(&[], &[gone], vec![], &HashSet::new(), 1);
        assert!(matches!(&steps[..], [Step::End { why, .. }] if why.contains("removed")));
    }
}
