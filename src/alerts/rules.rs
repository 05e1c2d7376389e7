//! Alert rules as vmdeck understands them: a condition, a scope, how long the condition must
//! hold (`for`) and a severity; and silences' matchers. One parser ([`RuleFields::parse`])
//! serves the Alerts page's form and the configuration file's `[[alert_rules]]` tables, so a
//! rule means the same wherever it was written.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::domain::{glob_matches, quoted};

/// Longest rule name, silence comment, scope value.
pub const MAX_NAME: usize = 80;
pub const MAX_TEXT: usize = 500;
/// Most VMs one rule may list.
pub const MAX_LISTED_VMS: usize = 1_000;
/// Longest `for` and growth period: 30 days.
pub const MAX_PERIOD_SECS: u64 = 30 * 86_400;

/// How severe an alert is. Ordered: a target's `min_severity` passes this and above.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub const ALL: [Severity; 3] = [Severity::Info, Severity::Warning, Severity::Critical];

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }

    pub fn parse(s: &str) -> Option<Severity> {
        Severity::ALL.into_iter().find(|v| v.as_str() == s.trim())
    }
}

/// What a `vm_state` rule expects of the VMs in its scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Expected {
    /// Every VM in scope should be running (the scope lists the VMs that should run).
    Running,
    /// VMs set to start with their host (autostart) should be running.
    RunningIfAutostart,
}

impl Expected {
    pub fn as_str(self) -> &'static str {
        match self {
            Expected::Running => "running",
            Expected::RunningIfAutostart => "running_if_autostart",
        }
    }

    fn parse(s: &str) -> Option<Expected> {
        match s.trim() {
            "running" => Some(Expected::Running),
            "running_if_autostart" | "" => Some(Expected::RunningIfAutostart),
            _ => None,
        }
    }
}

/// A rule's condition, checked against stored data after each poll.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Condition {
    /// A VM in scope is not running although it should be.
    VmState { expected: Expected },
    /// A host in scope could not be polled (its last poll failed).
    HostUnreachable,
    /// A running VM's CPU use (percent of all its vCPUs) is above `percent`.
    CpuAbove { percent: f64 },
    /// A running VM's memory use is above `percent` of its assigned memory.
    MemoryAbove { percent: f64 },
    /// A VM's allocated disk capacity grew by `bytes` or more within `period_secs`.
    DiskGrowth { bytes: i64, period_secs: u64 },
    /// A power or snapshot request for a VM failed or was unconfirmed within `period_secs`.
    RequestFailed { period_secs: u64 },
    /// A VM's oldest snapshot is older than `days`.
    SnapshotAge { days: f64 },
}

impl Condition {
    pub const KINDS: [&'static str; 7] = [
        "vm_state",
        "host_unreachable",
        "cpu_above",
        "memory_above",
        "disk_growth",
        "request_failed",
        "snapshot_age",
    ];

    pub fn kind(&self) -> &'static str {
        match self {
            Condition::VmState { .. } => "vm_state",
            Condition::HostUnreachable => "host_unreachable",
            Condition::CpuAbove { .. } => "cpu_above",
            Condition::MemoryAbove { .. } => "memory_above",
            Condition::DiskGrowth { .. } => "disk_growth",
            Condition::RequestFailed { .. } => "request_failed",
            Condition::SnapshotAge { .. } => "snapshot_age",
        }
    }

    /// Whether the rule's subjects are hosts rather than VMs.
    pub fn about_hosts(&self) -> bool {
        matches!(self, Condition::HostUnreachable)
    }

    /// The stored columns: (threshold, period_secs, expected).
    pub fn columns(&self) -> (Option<f64>, Option<i64>, Option<&'static str>) {
        match *self {
            Condition::VmState { expected } => (None, None, Some(expected.as_str())),
            Condition::HostUnreachable => (None, None, None),
            Condition::CpuAbove { percent } | Condition::MemoryAbove { percent } => {
                (Some(percent), None, None)
            }
            Condition::DiskGrowth { bytes, period_secs } => {
                (Some(bytes as f64), Some(period_secs as i64), None)
            }
            Condition::RequestFailed { period_secs } => (None, Some(period_secs as i64), None),
            Condition::SnapshotAge { days } => (Some(days), None, None),
        }
    }

    /// Rebuilds a condition from its stored columns (written by [`Condition::columns`]).
    pub fn from_columns(
        kind: &str,
        threshold: Option<f64>,
        period_secs: Option<i64>,
        expected: Option<&str>,
    ) -> Option<Condition> {
        let period = || period_secs.and_then(|p| u64::try_from(p).ok());
        Some(match kind {
            "vm_state" => Condition::VmState { expected: Expected::parse(expected.unwrap_or(""))? },
            "host_unreachable" => Condition::HostUnreachable,
            "cpu_above" => Condition::CpuAbove { percent: threshold? },
            "memory_above" => Condition::MemoryAbove { percent: threshold? },
            "disk_growth" => {
                Condition::DiskGrowth { bytes: threshold? as i64, period_secs: period()? }
            }
            "request_failed" => Condition::RequestFailed { period_secs: period()? },
            "snapshot_age" => Condition::SnapshotAge { days: threshold? },
            _ => return None,
        })
    }

    /// The condition in words: "CPU above 90 %".
    pub fn describe(&self) -> String {
        match self {
            Condition::VmState { expected: Expected::Running } => "VM not running".into(),
            Condition::VmState { expected: Expected::RunningIfAutostart } => {
                "autostart VM not running".into()
            }
            Condition::HostUnreachable => "host unreachable".into(),
            Condition::CpuAbove { percent } => format!("CPU above {} %", trim_float(*percent)),
            Condition::MemoryAbove { percent } => {
                format!("memory above {} % of assigned", trim_float(*percent))
            }
            Condition::DiskGrowth { bytes, period_secs } => format!(
                "disk capacity grew by {} or more within {}",
                crate::web::format::bytes(*bytes as u64),
                format_duration(*period_secs)
            ),
            Condition::RequestFailed { period_secs } => format!(
                "a power or snapshot request failed or was unconfirmed within {}",
                format_duration(*period_secs)
            ),
            Condition::SnapshotAge { days } => {
                format!("oldest snapshot older than {} days", trim_float(*days))
            }
        }
    }
}

fn trim_float(v: f64) -> String {
    let s = format!("{v:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// Which VMs (or hosts) a rule or a silence applies to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "scope", content = "value", rename_all = "snake_case")]
pub enum Scope {
    All,
    Host(String),
    /// VM names matching a glob (`*`, `?`), case-insensitively, on every host.
    Pattern(String),
    /// Listed VMs, by host name and uuid.
    Vms(Vec<(String, String)>),
}

impl Scope {
    pub fn kind(&self) -> &'static str {
        match self {
            Scope::All => "all",
            Scope::Host(_) => "host",
            Scope::Pattern(_) => "pattern",
            Scope::Vms(_) => "vms",
        }
    }

    /// The stored `scope_value`.
    pub fn value(&self) -> &str {
        match self {
            Scope::Host(v) | Scope::Pattern(v) => v,
            Scope::All | Scope::Vms(_) => "",
        }
    }

    /// Whether a VM is in scope.
    pub fn has_vm(&self, host: &str, uuid: &str, name: &str) -> bool {
        match self {
            Scope::All => true,
            Scope::Host(h) => h == host,
            Scope::Pattern(p) => glob_matches(p, name),
            Scope::Vms(list) => list.iter().any(|(h, u)| h == host && u.eq_ignore_ascii_case(uuid)),
        }
    }

    /// Whether a host is in scope (host rules): a pattern matches host names; listed VMs put
    /// their hosts in scope.
    pub fn has_host(&self, host: &str) -> bool {
        match self {
            Scope::All => true,
            Scope::Host(h) => h == host,
            Scope::Pattern(p) => glob_matches(p, host),
            Scope::Vms(list) => list.iter().any(|(h, _)| h == host),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Scope::All => "every VM".into(),
            Scope::Host(h) => format!("VMs on host {}", quoted(h)),
            Scope::Pattern(p) => format!("VMs named like {}", quoted(p)),
            Scope::Vms(list) => format!("{} listed VM(s)", list.len()),
        }
    }
}

/// A validated rule, as stored and evaluated.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RuleSpec {
    pub name: String,
    pub enabled: bool,
    pub condition: Condition,
    pub scope: Scope,
    pub for_secs: u64,
    pub severity: Severity,
}

/// A rule as typed: the page's form fields and the configuration file's keys. Every field is
/// text (or absent) so that every mistake is reported in words by [`RuleFields::parse`].
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleFields {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub enabled: Option<bool>,
    /// One of [`Condition::KINDS`].
    #[serde(default)]
    pub condition: String,
    /// Percent (cpu_above, memory_above), a size ("10 GiB", disk_growth) or days
    /// (snapshot_age).
    #[serde(default, deserialize_with = "text_or_number")]
    pub threshold: String,
    /// A duration ("1h", "7d", "90m", "3600" seconds): disk_growth's window, request_failed's
    /// look-back (default 1h).
    #[serde(default, deserialize_with = "text_or_number")]
    pub period: String,
    /// vm_state: "running" or "running_if_autostart" (default).
    #[serde(default)]
    pub expected: String,
    /// "all" (default), "host", "pattern" or "vms".
    #[serde(default)]
    pub scope: String,
    /// The host (scope host) or the glob (scope pattern).
    #[serde(default)]
    pub scope_value: String,
    /// Listed VMs (scope vms), each "host/uuid".
    #[serde(default)]
    pub vms: Vec<String>,
    /// How long the condition must hold before the alert fires ("5m"; default 0).
    #[serde(default, rename = "for", deserialize_with = "text_or_number")]
    pub for_: String,
    /// "info", "warning" (default) or "critical".
    #[serde(default)]
    pub severity: String,
}

fn text_or_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum TextOrNumber {
        Text(String),
        Int(i64),
        Float(f64),
    }
    Ok(match TextOrNumber::deserialize(d)? {
        TextOrNumber::Text(s) => s,
        TextOrNumber::Int(i) => i.to_string(),
        TextOrNumber::Float(f) => f.to_string(),
    })
}

/// What is wrong with a rule, naming the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: &'static str,
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// A mistake in `field`, in words.
pub fn err(field: &'static str, message: impl Into<String>) -> FieldError {
    FieldError { field, message: message.into() }
}

/// A rule's or a target's `name`, trimmed: required, at most [`MAX_NAME`] characters, on one
/// line. `what` names the thing in the error ("a rule needs a name").
pub fn check_name(name: &str, what: &str) -> Result<String, FieldError> {
    let name = name.trim();
    if name.is_empty() {
        return Err(err("name", format!("{what} needs a name")));
    }
    if name.chars().count() > MAX_NAME || name.chars().any(char::is_control) {
        return Err(err(
            "name",
            format!("at most {MAX_NAME} characters, without line breaks or tabs"),
        ));
    }
    Ok(name.to_string())
}

impl RuleFields {
    /// Validates every field; the first mistake is returned in words, naming its field.
    pub fn parse(&self) -> Result<RuleSpec, FieldError> {
        let name = check_name(&self.name, "a rule")?;
        let severity = match self.severity.trim() {
            "" => Severity::Warning,
            s => Severity::parse(s)
                .ok_or_else(|| err("severity", "choose info, warning or critical"))?,
        };
        let for_secs = match self.for_.trim() {
            "" => 0,
            s => parse_duration(s).map_err(|m| err("for", m))?,
        };
        let condition = self.condition()?;
        let scope = self.scope()?;
        if condition.about_hosts() && matches!(scope, Scope::Vms(_)) {
            return Err(err(
                "scope",
                "a host rule applies to all hosts, one host or a host name pattern",
            ));
        }
        Ok(RuleSpec {
            name,
            enabled: self.enabled.unwrap_or(true),
            condition,
            scope,
            for_secs,
            severity,
        })
    }

    fn condition(&self) -> Result<Condition, FieldError> {
        let percent = || -> Result<f64, FieldError> {
            let t = self.threshold.trim().trim_end_matches('%').trim();
            let v: f64 = t
                .parse()
                .map_err(|_| err("threshold", "a percentage between 0 and 100, e.g. 90"))?;
            if !(0.0..=100.0).contains(&v) || !v.is_finite() {
                return Err(err("threshold", "a percentage between 0 and 100, e.g. 90"));
            }
            Ok(v)
        };
        let period = |default: Option<u64>| -> Result<u64, FieldError> {
            match (self.period.trim(), default) {
                ("", Some(d)) => Ok(d),
                ("", None) => Err(err("period", "how long to look back, e.g. 1d")),
                (s, _) => {
                    let p = parse_duration(s).map_err(|m| err("period", m))?;
                    if p == 0 {
                        return Err(err("period", "must be longer than zero"));
                    }
                    Ok(p)
                }
            }
        };
        Ok(match self.condition.trim() {
            "vm_state" => Condition::VmState {
                expected: Expected::parse(&self.expected)
                    .ok_or_else(|| err("expected", "choose running or running_if_autostart"))?,
            },
            "host_unreachable" => Condition::HostUnreachable,
            "cpu_above" => Condition::CpuAbove { percent: percent()? },
            "memory_above" => Condition::MemoryAbove { percent: percent()? },
            "disk_growth" => {
                let bytes = parse_size(&self.threshold).map_err(|m| err("threshold", m))?;
                Condition::DiskGrowth { bytes, period_secs: period(None)? }
            }
            "request_failed" => Condition::RequestFailed { period_secs: period(Some(3_600))? },
            "snapshot_age" => {
                let days: f64 = self
                    .threshold
                    .trim()
                    .trim_end_matches('d')
                    .trim()
                    .parse()
                    .map_err(|_| err("threshold", "a number of days, e.g. 14"))?;
                if !(days > 0.0 && days <= 3_650.0) {
                    return Err(err("threshold", "a number of days between 0 and 3650"));
                }
                Condition::SnapshotAge { days }
            }
            "" => return Err(err("condition", "choose a condition")),
            other => {
                return Err(err(
                    "condition",
                    format!(
                        "{} is not a condition; choose one of {}",
                        quoted(other),
                        Condition::KINDS.join(", ")
                    ),
                ))
            }
        })
    }

    fn scope(&self) -> Result<Scope, FieldError> {
        let value = self.scope_value.trim();
        if value.chars().count() > MAX_NAME || value.chars().any(char::is_control) {
            return Err(err("scope_value", format!("at most {MAX_NAME} characters")));
        }
        Ok(match self.scope.trim() {
            "" | "all" => Scope::All,
            "host" if value.is_empty() => return Err(err("scope_value", "name the host")),
            "host" => Scope::Host(value.to_string()),
            "pattern" if value.is_empty() => {
                return Err(err("scope_value", "give a name pattern, e.g. web-*"))
            }
            "pattern" => Scope::Pattern(value.to_string()),
            "vms" => {
                let mut list = Vec::new();
                for item in self.vms.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
                    let Some((host, uuid)) = item.split_once('/') else {
                        return Err(err("vms", format!("{} is not host/uuid", quoted(item))));
                    };
                    if host.is_empty() || uuid.len() != 36 {
                        return Err(err("vms", format!("{} is not host/uuid", quoted(item))));
                    }
                    let pair = (host.to_string(), uuid.to_ascii_lowercase());
                    if !list.contains(&pair) {
                        list.push(pair);
                    }
                }
                if list.is_empty() {
                    return Err(err("vms", "choose at least one VM"));
                }
                if list.len() > MAX_LISTED_VMS {
                    return Err(err("vms", format!("at most {MAX_LISTED_VMS} VMs")));
                }
                Scope::Vms(list)
            }
            _ => return Err(err("scope", "choose all, host, pattern or vms")),
        })
    }
}

/// Parses a duration as typed: a number with an optional unit (`s`, `m`, `h`, `d`, `w`; plain
/// numbers are seconds), e.g. "90s", "5m", "1h30m" is not accepted: one number, one unit.
pub fn parse_duration(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let bad = || format!("{} is not a duration; write e.g. 30s, 5m, 2h or 7d", quoted(s));
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => (&s[..i], s[i..].trim()),
        None => (s, "s"),
    };
    let n: u64 = num.parse().map_err(|_| bad())?;
    let mult = match unit {
        "s" | "sec" | "secs" | "seconds" => 1,
        "m" | "min" | "minutes" => 60,
        "h" | "hours" => 3_600,
        "d" | "days" => 86_400,
        "w" | "weeks" => 7 * 86_400,
        _ => return Err(bad()),
    };
    let secs = n.checked_mul(mult).ok_or_else(bad)?;
    if secs > MAX_PERIOD_SECS {
        return Err(format!("at most 30 days ({} is longer)", quoted(s)));
    }
    Ok(secs)
}

/// A duration in the units [`parse_duration`] reads: "5m", "2h", "7d".
pub fn format_duration(secs: u64) -> String {
    match secs {
        0 => "0s".into(),
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3_600 == 0 => format!("{}h", s / 3_600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// Parses a size as typed: a number with an optional unit (B, KB, MB, GB, TB: powers of 1000;
/// KiB, MiB, GiB, TiB: powers of 1024; a plain number is bytes).
pub fn parse_size(s: &str) -> Result<i64, String> {
    let t = s.trim();
    let bad = || format!("{} is not a size; write e.g. 10 GiB or 500 MB", quoted(t));
    let i = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let n: f64 = t[..i].parse().map_err(|_| bad())?;
    let mult: f64 = match t[i..].trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        "tb" => 1e12,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        "tib" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return Err(bad()),
    };
    let bytes = n * mult;
    if !(1.0..1e18).contains(&bytes) {
        return Err(format!("{} must be at least 1 byte", quoted(t)));
    }
    Ok(bytes as i64)
}

/// A silence's matchers: each one left empty matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Matchers {
    pub rule_name: Option<String>,
    pub host_name: Option<String>,
    pub vm_pattern: Option<String>,
}

impl Matchers {
    /// Whether an alert of rule `rule` about `host` (and VM `vm_name`, if a VM alert) matches.
    /// A VM pattern never matches a host alert.
    pub fn matches(&self, rule: &str, host: &str, vm_name: Option<&str>) -> bool {
        self.rule_name.as_deref().is_none_or(|r| r.eq_ignore_ascii_case(rule))
            && self.host_name.as_deref().is_none_or(|h| h == host)
            && self
                .vm_pattern
                .as_deref()
                .is_none_or(|p| vm_name.is_some_and(|n| glob_matches(p, n)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(condition: &str) -> RuleFields {
        RuleFields { name: "r".into(), condition: condition.into(), ..RuleFields::default() }
    }

    #[test]
    fn durations_and_sizes_parse_with_units_and_refuse_nonsense() {
        assert_eq!(parse_duration("90"), Ok(90));
        assert_eq!(parse_duration("5m"), Ok(300));
        assert_eq!(parse_duration("2 h"), Ok(7_200));
        assert_eq!(parse_duration("7d"), Ok(604_800));
        assert!(parse_duration("31d").unwrap_err().contains("at most 30 days"));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("-5m").is_err());
        assert!(parse_duration("99999999999999999999d").is_err());
        assert_eq!(parse_size("10 GiB"), Ok(10 * 1024 * 1024 * 1024));
        assert_eq!(parse_size("500MB"), Ok(500_000_000));
        assert_eq!(parse_size("1.5 KiB"), Ok(1_536));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("0").is_err());
        assert_eq!(format_duration(300), "5m");
        assert_eq!(format_duration(86_400 * 7), "7d");
        assert_eq!(format_duration(61), "61s");
    }

    #[test]
    fn every_condition_round_trips_through_its_columns() {
        let cases = [
            RuleFields { expected: "running".into(), ..fields("vm_state") },
            fields("vm_state"),
            fields("host_unreachable"),
            RuleFields { threshold: "90 %".into(), ..fields("cpu_above") },
            RuleFields { threshold: "80".into(), ..fields("memory_above") },
            RuleFields { threshold: "10 GiB".into(), period: "1d".into(), ..fields("disk_growth") },
            fields("request_failed"),
            RuleFields { threshold: "14".into(), ..fields("snapshot_age") },
        ];
        for f in cases {
            let spec = f.parse().unwrap_or_else(|e| panic!("{f:?}: {e}"));
            let (t, p, e) = spec.condition.columns();
            let back = Condition::from_columns(spec.condition.kind(), t, p, e);
            assert_eq!(back.as_ref(), Some(&spec.condition));
            assert!(!spec.condition.describe().is_empty());
        }
    }

    #[test]
    fn mistakes_name_their_field() {
        let field = |f: RuleFields| f.parse().unwrap_err().field;
        assert_eq!(field(RuleFields { name: " ".into(), ..fields("host_unreachable") }), "name");
        assert_eq!(field(fields("cpu_above")), "threshold");
        assert_eq!(
            field(RuleFields { threshold: "120".into(), ..fields("cpu_above") }),
            "threshold"
        );
        assert_eq!(
            field(RuleFields { threshold: "1 GiB".into(), ..fields("disk_growth") }),
            "period"
        );
        assert_eq!(field(fields("teleported")), "condition");
        assert_eq!(field(RuleFields { for_: "soon".into(), ..fields("host_unreachable") }), "for");
        assert_eq!(
            field(RuleFields { severity: "dire".into(), ..fields("host_unreachable") }),
            "severity"
        );
        assert_eq!(
            field(RuleFields { scope: "host".into(), ..fields("host_unreachable") }),
            "scope_value"
        );
        assert_eq!(
            field(RuleFields {
                scope: "vms".into(),
                vms: vec!["lab/x".into()],
                ..fields("vm_state")
            }),
            "vms"
        );
        assert_eq!(
            field(RuleFields {
                scope: "vms".into(),
                vms: vec![format!("lab/{}", "a".repeat(36))],
                ..fields("host_unreachable")
            }),
            "scope"
        );
    }

    #[test]
    fn scopes_and_silences_match_what_they_say() {
        let uuid = "6695eb01-f6a4-8304-79aa-97f2502e193f";
        assert!(Scope::All.has_vm("a", uuid, "x"));
        assert!(Scope::Host("a".into()).has_vm("a", uuid, "x"));
        assert!(!Scope::Host("a".into()).has_vm("b", uuid, "x"));
        assert!(Scope::Pattern("web-*".into()).has_vm("a", uuid, "WEB-01"));
        assert!(!Scope::Pattern("web-*".into()).has_vm("a", uuid, "db-01"));
        let listed = Scope::Vms(vec![("a".into(), uuid.into())]);
        assert!(listed.has_vm("a", &uuid.to_uppercase(), "x"));
        assert!(!listed.has_vm("b", uuid, "x"));
        let all = Matchers::default();
        assert!(all.matches("r", "a", None));
        let web = Matchers { vm_pattern: Some("web-*".into()), ..Matchers::default() };
        assert!(web.matches("r", "a", Some("web-1")));
        assert!(!web.matches("r", "a", None), "a VM pattern does not silence host alerts");
        let rule = Matchers {
            rule_name: Some("CPU".into()),
            host_name: Some("a".into()),
            ..Matchers::default()
        };
        assert!(rule.matches("cpu", "a", Some("x")));
        assert!(!rule.matches("cpu", "b", Some("x")));
    }
}
