//! vmdeck's own configuration keys, read from Rocket's figment (`Rocket.toml` profiles and
//! `ROCKET_*` variables) and validated once at startup into typed [`Settings`].
//!
//! Every error names the key it is about, so a bad configuration stops startup with one line.
//!
//! Longer than most files: about half of it is the table-driven tests of every key's errors.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rocket::figment::value::Value;
use rocket::figment::Figment;
use serde::Deserialize;

use crate::backend::DriverConfig;
pub use crate::domain::HostName;
use crate::domain::Resolution;

pub mod keys;
pub mod uri;

use keys::{figment_error_key, host_error};
pub use keys::{ConfigError, HostKeys};
pub use uri::HostUri;

/// The demo host's name, used when no `hosts` are configured.
pub const DEMO_HOST: &str = "demo";

/// Validated settings, managed as Rocket state.
#[derive(Debug, Clone)]
pub struct Settings {
    /// sqlx connection string for the SQLite database.
    pub database_url: String,
    /// The most the database file may grow to (`database_max_size_mb`); None: the disk's size.
    pub database_max_size: Option<DatabaseSize>,
    /// How often every host is polled.
    pub poll_interval: Duration,
    /// Time limit for one call into a hypervisor (one poll of one host).
    pub call_timeout: Duration,
    /// Time limit for one snapshot take, revert or delete (`snapshot_timeout_secs`): these can
    /// take minutes (a running VM's memory, VirtualBox merging disks), so `call_timeout` would
    /// report them failed while the hypervisor goes on.
    pub snapshot_timeout: Duration,
    /// The hosts to poll; the demo host when none are configured.
    pub hosts: Vec<HostConfig>,
    /// True when vmdeck runs on its built-in demo lab.
    pub demo: bool,
    /// A session ends after this long without a request.
    pub session_idle: Duration,
    /// A session ends this long after login, however active.
    pub session_lifetime: Duration,
    /// Proxies whose `X-Forwarded-For` / `X-Real-IP` header is believed; nobody else's is.
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// Audit entries older than this many days are pruned; None keeps them forever.
    pub audit_retention_days: Option<u32>,
    /// How long vmdeck watches for a power action's expected state before calling it unconfirmed.
    pub confirm_timeout: Duration,
    /// Power actions sent to one host at the same time (bulk actions).
    pub power_concurrency: usize,
    /// A VM's snapshot set is read again after this long even when nothing about the VM
    /// changed (backends whose inventory does not carry snapshots: libvirt).
    pub snapshot_interval: Duration,
    /// How long raw samples and each rollup resolution are kept.
    pub retention: Retention,
    /// The address users reach vmdeck at (`public_url`), when configured. With an `https`
    /// one (TLS terminated by a reverse proxy), the session cookie is `Secure` with the
    /// `__Host-` prefix and every response carries HSTS.
    pub public_url: Option<url::Url>,
    /// Bearer tokens that unlock `/healthz`'s details without a session (monitoring systems).
    pub healthz_tokens: Vec<String>,
    /// The browser console's limits.
    pub console: ConsoleLimits,
    /// Who may scrape `/metrics` (`metrics_tokens`, `metrics_allow`); off when neither is set.
    pub metrics: MetricsAccess,
    /// Alert rules and notification targets from the file, and notification timing.
    pub alerts: AlertSettings,
}

/// The configuration file's alerting keys (README "Monitoring and alerts").
#[derive(Debug, Clone, PartialEq)]
pub struct AlertSettings {
    /// `[[alert_rules]]`: read-only rules, written to the database at every start.
    pub rules: Vec<crate::alerts::rules::RuleSpec>,
    /// `[[alert_targets]]`, as written (validated by `alerts::notify` at ignite).
    pub targets: Vec<Value>,
    /// How often firing alerts are sent to Alertmanager again (`alert_resend_secs`).
    pub resend: Duration,
    /// Least time between two notifications of one group (`alert_group_interval_secs`).
    pub group_interval: Duration,
    /// A group whose alerts go on firing unchanged is sent again after this long
    /// (`alert_repeat_interval_secs`).
    pub repeat_interval: Duration,
    /// The first retry of a failed notification waits this long, doubling up to an hour
    /// (`alert_retry_secs`).
    pub retry: Duration,
}

impl Default for AlertSettings {
    fn default() -> Self {
        AlertSettings {
            rules: Vec::new(),
            targets: Vec::new(),
            resend: Duration::from_secs(60),
            group_interval: Duration::from_secs(300),
            repeat_interval: Duration::from_secs(4 * 3600),
            retry: Duration::from_secs(10),
        }
    }
}

/// Who may read `GET /metrics`. Off (404) when both lists are empty; with both set, a scrape
/// must come from an allowed address *and* carry a listed token.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetricsAccess {
    /// Bearer tokens (`metrics_tokens`); several, so one can be rotated.
    pub tokens: Vec<String>,
    /// Scrapers' addresses or networks (`metrics_allow`), checked against `auth::client_addr`.
    pub allow: Vec<ipnet::IpNet>,
}

impl MetricsAccess {
    /// Whether `/metrics` is served at all.
    pub fn enabled(&self) -> bool {
        !self.tokens.is_empty() || !self.allow.is_empty()
    }
}

/// The browser console's limits (`console_*` keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsoleLimits {
    /// A console with nothing passing either way (no input, no change on its screen) for this
    /// long is closed (`console_idle_secs`).
    pub idle: Duration,
    /// Consoles one user may have open at once (`console_max_per_user`).
    pub per_user: usize,
    /// Consoles open at once, all users together (`console_max_total`).
    pub total: usize,
    /// How long a console page's one-time ticket stays valid (`console_ticket_secs`).
    pub ticket: Duration,
}

impl Default for ConsoleLimits {
    fn default() -> Self {
        ConsoleLimits {
            idle: Duration::from_secs(15 * 60),
            per_user: 4,
            total: 32,
            ticket: Duration::from_secs(30),
        }
    }
}

/// A size the database may grow to, set in whole MiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DatabaseSize {
    mib: u64,
}

impl DatabaseSize {
    pub fn from_mib(mib: u64) -> DatabaseSize {
        DatabaseSize { mib }
    }

    pub fn bytes(self) -> u64 {
        self.mib * 1024 * 1024
    }
}

/// How long history is kept at each resolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub raw: Duration,
    pub rollup_5m: Duration,
    pub rollup_1h: Duration,
    pub rollup_1d: Duration,
}

impl Retention {
    /// How long history is kept at `res`.
    pub fn of(&self, res: Resolution) -> Duration {
        match res {
            Resolution::Raw => self.raw,
            Resolution::FiveMinutes => self.rollup_5m,
            Resolution::Hourly => self.rollup_1h,
            Resolution::Daily => self.rollup_1d,
        }
    }
}

/// One configured hypervisor host: its name and its driver's settings.
#[derive(Debug, Clone)]
pub struct HostConfig {
    pub name: HostName,
    /// Which backend talks to the host, with that backend's own keys.
    pub driver: DriverConfig,
}

impl HostConfig {
    pub fn new(name: HostName, driver: DriverConfig) -> Self {
        HostConfig { name, driver }
    }

    /// The `driver` key's value (`libvirt`, `virtualbox`), as stored and shown.
    pub fn driver_name(&self) -> &'static str {
        self.driver.name()
    }

    /// Where the host is reached, safe to store and show (see [`HostUri::redacted`]): a libvirt
    /// host's URI, or for a host reached by running a command (VirtualBox) that command line.
    pub fn uri(&self) -> HostUri {
        self.driver.uri()
    }
}

/// The keys as they appear in the figment, before validation.
#[derive(Debug, Deserialize)]
struct RawSettings {
    database_url: Option<String>,
    database_max_size_mb: Option<u64>,
    poll_interval_secs: Option<u64>,
    call_timeout_secs: Option<u64>,
    snapshot_timeout_secs: Option<u64>,
    /// Read in two steps (see [`HostKeys`]): the driver named in a table decides which keys
    /// the rest of it may hold.
    #[serde(default)]
    hosts: Vec<Value>,
    session_idle_minutes: Option<u64>,
    session_lifetime_hours: Option<u64>,
    #[serde(default)]
    trusted_proxies: Vec<String>,
    audit_retention_days: Option<u32>,
    confirm_timeout_secs: Option<u64>,
    power_concurrency_per_host: Option<usize>,
    snapshot_interval_secs: Option<u64>,
    raw_retention_days: Option<u64>,
    rollup_5m_retention_days: Option<u64>,
    rollup_1h_retention_days: Option<u64>,
    rollup_1d_retention_days: Option<u64>,
    tls: Option<serde::de::IgnoredAny>,
    public_url: Option<String>,
    #[serde(default)]
    healthz_tokens: Vec<String>,
    #[serde(default)]
    metrics_tokens: Vec<String>,
    #[serde(default)]
    metrics_allow: Vec<String>,
    console_idle_secs: Option<u64>,
    console_max_per_user: Option<usize>,
    console_max_total: Option<usize>,
    console_ticket_secs: Option<u64>,
    #[serde(default)]
    alert_rules: Vec<Value>,
    #[serde(default)]
    alert_targets: Vec<Value>,
    alert_resend_secs: Option<u64>,
    alert_group_interval_secs: Option<u64>,
    alert_repeat_interval_secs: Option<u64>,
    alert_retry_secs: Option<u64>,
}

/// Checks an optional number against its range; returns the default when absent.
fn ranged<T>(
    key: &str,
    value: Option<T>,
    default: T,
    range: std::ops::RangeInclusive<T>,
    unit: &str,
) -> Result<T, ConfigError>
where
    T: PartialOrd + Copy + fmt::Display,
{
    let v = value.unwrap_or(default);
    if range.contains(&v) {
        Ok(v)
    } else {
        Err(ConfigError::new(
            key,
            format!("{v} is out of range: use {} to {} {unit}", range.start(), range.end()),
        ))
    }
}

/// The keys every `[[hosts]]` table has, whatever its driver.
#[derive(Debug, Deserialize)]
struct RawHostHead {
    name: Option<String>,
    driver: Option<String>,
}

/// A `metrics_allow` entry: one address (a network of one) or a CIDR network.
fn allowed_network(s: &str) -> Option<ipnet::IpNet> {
    let s = s.trim();
    s.parse::<ipnet::IpNet>()
        .ok()
        .or_else(|| s.parse::<std::net::IpAddr>().ok().map(ipnet::IpNet::from))
}

/// The alerting timing keys, as written.
struct RawAlertTimes {
    alert_resend_secs: Option<u64>,
    alert_group_interval_secs: Option<u64>,
    alert_repeat_interval_secs: Option<u64>,
    alert_retry_secs: Option<u64>,
}

/// Validates the alerting keys: each `[[alert_rules]]` table through the page's own parser
/// (`alerts::rules::RuleFields`), so an error names the table and the field.
fn alert_settings(
    alert_rules: &[Value],
    alert_targets: &[Value],
    raw: &RawAlertTimes,
) -> Result<AlertSettings, ConfigError> {
    let defaults = AlertSettings::default();
    let mut rules: Vec<crate::alerts::rules::RuleSpec> = Vec::new();
    for (i, table) in alert_rules.iter().enumerate() {
        let fields: crate::alerts::rules::RuleFields = table
            .deserialize()
            .map_err(|e| ConfigError::new(format!("alert_rules[{i}]"), e.to_string()))?;
        let spec = fields.parse().map_err(|e| {
            ConfigError::new(format!("alert_rules[{i}].{}", e.field), e.message.clone())
        })?;
        if rules.iter().any(|r| r.name.eq_ignore_ascii_case(&spec.name)) {
            return Err(ConfigError::new(
                format!("alert_rules[{i}].name"),
                format!("{:?} is the name of an earlier rule; names must differ", spec.name),
            ));
        }
        rules.push(spec);
    }
    let secs =
        |key: &str, v: Option<u64>, default: Duration, range| -> Result<Duration, ConfigError> {
            Ok(Duration::from_secs(ranged(key, v, default.as_secs(), range, "seconds")?))
        };
    Ok(AlertSettings {
        rules,
        targets: alert_targets.to_vec(),
        resend: secs("alert_resend_secs", raw.alert_resend_secs, defaults.resend, 10..=3600)?,
        group_interval: secs(
            "alert_group_interval_secs",
            raw.alert_group_interval_secs,
            defaults.group_interval,
            0..=86_400,
        )?,
        repeat_interval: secs(
            "alert_repeat_interval_secs",
            raw.alert_repeat_interval_secs,
            defaults.repeat_interval,
            60..=7 * 86_400,
        )?,
        retry: secs("alert_retry_secs", raw.alert_retry_secs, defaults.retry, 1..=3600)?,
    })
}

/// Shortest accepted `healthz_tokens` / `metrics_tokens` entry.
pub const MIN_TOKEN_LEN: usize = 16;
pub const DEFAULT_DATABASE_URL: &str = "sqlite://data/vmdeck.db";

/// The demo's database file, in the directory of the configured one.
pub const DEMO_DATABASE: &str = "vmdeck-demo.db";
pub const DEFAULT_POLL_INTERVAL_SECS: u64 = 10;
pub const MAX_POLL_INTERVAL_SECS: u64 = 3600;
pub const DEFAULT_CALL_TIMEOUT_SECS: u64 = 20;
/// Time limit for one snapshot take, revert or delete.
pub const DEFAULT_SNAPSHOT_TIMEOUT_SECS: u64 = 600;
/// How often a VM whose state and configuration did not change has its snapshots read again.
pub const DEFAULT_SNAPSHOT_INTERVAL_SECS: u64 = 900;

impl Settings {
    /// Extracts and validates vmdeck's keys from the figment.
    pub fn from_figment(figment: &Figment) -> Result<Settings, ConfigError> {
        check_config_file()?;
        let raw: RawSettings = figment
            .extract()
            .map_err(|e| ConfigError::new(figment_error_key(&e), e.to_string()))?;

        let poll_secs = raw.poll_interval_secs.unwrap_or(DEFAULT_POLL_INTERVAL_SECS);
        if !(1..=MAX_POLL_INTERVAL_SECS).contains(&poll_secs) {
            return Err(ConfigError::new(
                "poll_interval_secs",
                format!("{poll_secs} is out of range: use 1 to {MAX_POLL_INTERVAL_SECS} seconds"),
            ));
        }
        let timeout_secs = raw.call_timeout_secs.unwrap_or(DEFAULT_CALL_TIMEOUT_SECS);
        if !(1..=600).contains(&timeout_secs) {
            return Err(ConfigError::new(
                "call_timeout_secs",
                format!("{timeout_secs} is out of range: use 1 to 600 seconds"),
            ));
        }

        let database_url = raw.database_url.unwrap_or_else(|| DEFAULT_DATABASE_URL.to_string());
        if !database_url.starts_with("sqlite:") {
            return Err(ConfigError::new(
                "database_url",
                format!(
                    "{database_url:?} is not a SQLite URL (expected e.g. sqlite://data/vmdeck.db)"
                ),
            ));
        }

        let database_max_size = match raw.database_max_size_mb {
            None => None,
            Some(mib) => Some(DatabaseSize::from_mib(ranged(
                "database_max_size_mb",
                Some(mib),
                mib,
                1..=16 * 1024 * 1024,
                "MiB",
            )?)),
        };

        let mut hosts: Vec<HostConfig> = Vec::with_capacity(raw.hosts.len());
        for (i, table) in raw.hosts.iter().enumerate() {
            let key = |field: &str| format!("hosts[{i}].{field}");
            let head: RawHostHead =
                RawHostHead::deserialize(table).map_err(|e| host_error(figment, i, table, e))?;
            let name = head.name.ok_or_else(|| ConfigError::new(key("name"), "missing"))?;
            let name = HostName::parse(&name).map_err(|m| ConfigError::new(key("name"), m))?;
            if hosts.iter().any(|o| o.name == name) {
                return Err(ConfigError::new(key("name"), format!("duplicate host name {name:?}")));
            }
            let driver = head.driver.ok_or_else(|| ConfigError::new(key("driver"), "missing"))?;
            let driver = DriverConfig::from_keys(&driver, &HostKeys::new(figment, i, table))?;
            hosts.push(HostConfig { name, driver });
        }

        let idle = ranged(
            "session_idle_minutes",
            raw.session_idle_minutes,
            30,
            1..=7 * 24 * 60,
            "minutes",
        )?;
        let lifetime =
            ranged("session_lifetime_hours", raw.session_lifetime_hours, 12, 1..=24 * 90, "hours")?;
        let snapshot_timeout = ranged(
            "snapshot_timeout_secs",
            raw.snapshot_timeout_secs,
            DEFAULT_SNAPSHOT_TIMEOUT_SECS,
            10..=3600,
            "seconds",
        )?;
        let confirm =
            ranged("confirm_timeout_secs", raw.confirm_timeout_secs, 120, 5..=3600, "seconds")?;
        let power_concurrency = ranged(
            "power_concurrency_per_host",
            raw.power_concurrency_per_host,
            4,
            1..=64,
            "actions",
        )?;
        let snapshot_interval = ranged(
            "snapshot_interval_secs",
            raw.snapshot_interval_secs,
            DEFAULT_SNAPSHOT_INTERVAL_SECS,
            60..=7 * 86_400,
            "seconds",
        )?;
        let defaults = ConsoleLimits::default();
        let console = ConsoleLimits {
            idle: Duration::from_secs(ranged(
                "console_idle_secs",
                raw.console_idle_secs,
                defaults.idle.as_secs(),
                10..=86_400,
                "seconds",
            )?),
            per_user: ranged(
                "console_max_per_user",
                raw.console_max_per_user,
                defaults.per_user,
                0..=64,
                "consoles (0 turns the console off)",
            )?,
            total: ranged(
                "console_max_total",
                raw.console_max_total,
                defaults.total,
                0..=1024,
                "consoles (0 turns the console off)",
            )?,
            ticket: Duration::from_secs(ranged(
                "console_ticket_secs",
                raw.console_ticket_secs,
                defaults.ticket.as_secs(),
                5..=300,
                "seconds",
            )?),
        };
        let days =
            |key: &str, v: Option<u64>, default: u64, max: u64| -> Result<Duration, ConfigError> {
                Ok(Duration::from_secs(ranged(key, v, default, 1..=max, "days")? * 86_400))
            };
        let retention = Retention {
            raw: days("raw_retention_days", raw.raw_retention_days, 2, 365)?,
            rollup_5m: days("rollup_5m_retention_days", raw.rollup_5m_retention_days, 60, 3650)?,
            rollup_1h: days("rollup_1h_retention_days", raw.rollup_1h_retention_days, 730, 36_500)?,
            rollup_1d: days(
                "rollup_1d_retention_days",
                raw.rollup_1d_retention_days,
                3650,
                36_500,
            )?,
        };
        let audit_retention_days = match raw.audit_retention_days {
            None | Some(0) => None,
            Some(d) => Some(ranged("audit_retention_days", Some(d), d, 1..=36_500, "days")?),
        };
        for (key, tokens) in
            [("healthz_tokens", &raw.healthz_tokens), ("metrics_tokens", &raw.metrics_tokens)]
        {
            if let Some(i) = tokens.iter().position(|t| t.chars().count() < MIN_TOKEN_LEN) {
                return Err(ConfigError::new(
                    format!("{key}[{i}]"),
                    format!(
                        "too short: use at least {MIN_TOKEN_LEN} characters (e.g. openssl rand -hex 16)"
                    ),
                ));
            }
        }
        let alerts = alert_settings(
            &raw.alert_rules,
            &raw.alert_targets,
            &RawAlertTimes {
                alert_resend_secs: raw.alert_resend_secs,
                alert_group_interval_secs: raw.alert_group_interval_secs,
                alert_repeat_interval_secs: raw.alert_repeat_interval_secs,
                alert_retry_secs: raw.alert_retry_secs,
            },
        )?;
        let metrics = MetricsAccess {
            tokens: raw.metrics_tokens,
            allow: raw
                .metrics_allow
                .iter()
                .enumerate()
                .map(|(i, a)| allowed_network(a).ok_or_else(|| {
                    ConfigError::new(
                        format!("metrics_allow[{i}]"),
                        format!("{a:?} is not an IP address or a CIDR network (e.g. 192.0.2.10 or 10.0.0.0/24)"),
                    )
                }))
                .collect::<Result<Vec<_>, _>>()?,
        };
        let trusted_proxies = raw
            .trusted_proxies
            .iter()
            .enumerate()
            .map(|(i, p)| {
                p.parse().map_err(|_| {
                    ConfigError::new(
                        format!("trusted_proxies[{i}]"),
                        format!("{p:?} is not an IP address"),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;

        // Rocket generates a throwaway key in the debug profile; anywhere else sessions must
        // survive restarts and cookies must not be forgeable, so a key is required.
        let profile = figment.profile().as_str().to_string();
        // Rocket's own defaults carry an all-zero key, so "present" is not enough.
        let key_provided = match figment.find_value("secret_key") {
            Err(_) => false,
            Ok(_) => match figment.extract_inner::<rocket::config::SecretKey>("secret_key") {
                Ok(k) => !k.is_zero(),
                Err(e) => {
                    return Err(ConfigError::new(
                        "secret_key",
                        format!(
                            "not a valid key ({e}); generate one with: openssl rand -base64 32"
                        ),
                    ))
                }
            },
        };
        if !key_provided && profile != "debug" {
            return Err(ConfigError::new(
                "secret_key",
                format!(
                    "required in the {profile:?} profile: set ROCKET_SECRET_KEY or secret_key in Rocket.toml \
                     (generate one with: openssl rand -base64 32)"
                ),
            ));
        }

        if raw.tls.is_some() {
            return Err(ConfigError::new(
                "tls",
                "vmdeck does not serve TLS itself: put it behind a reverse proxy that does \
                 (nginx, Caddy, Apache) and set public_url = \"https://…\" instead"
                    .to_string(),
            ));
        }
        let public_url = raw.public_url.as_deref().map(public_url).transpose()?;

        let demo = hosts.is_empty();
        // The demo never shares a database with a real installation: its generated admin and
        // throwaway history live in their own file beside the configured one.
        let database_url = if demo && sqlite_path(&database_url).is_some() {
            let dir = Settings::data_dir_of(&database_url);
            format!("sqlite://{}", dir.join(DEMO_DATABASE).display())
        } else {
            database_url
        };
        Ok(Settings {
            database_url,
            database_max_size,
            poll_interval: Duration::from_secs(poll_secs),
            call_timeout: Duration::from_secs(timeout_secs),
            snapshot_timeout: Duration::from_secs(snapshot_timeout),
            hosts,
            demo,
            session_idle: Duration::from_secs(idle * 60),
            session_lifetime: Duration::from_secs(lifetime * 3600),
            trusted_proxies,
            audit_retention_days,
            confirm_timeout: Duration::from_secs(confirm),
            power_concurrency,
            snapshot_interval: Duration::from_secs(snapshot_interval),
            retention,
            public_url,
            healthz_tokens: raw.healthz_tokens,
            console,
            metrics,
            alerts,
        })
    }

    /// The directory holding the SQLite file (the demo lab definition is written beside it).
    pub fn data_dir(&self) -> PathBuf {
        Self::data_dir_of(&self.database_url)
    }

    /// Whether users reach vmdeck over HTTPS (through a TLS-terminating proxy).
    pub fn https(&self) -> bool {
        self.public_url.as_ref().is_some_and(|u| u.scheme() == "https")
    }

    /// The session cookie's name: with the `__Host-` prefix over HTTPS, so that browsers
    /// accept it only `Secure`, for the whole site and from this very host.
    pub fn session_cookie(&self) -> &'static str {
        if self.https() {
            "__Host-vmdeck_session"
        } else {
            "vmdeck_session"
        }
    }

    fn data_dir_of(database_url: &str) -> PathBuf {
        sqlite_path(database_url)
            .and_then(|p| p.parent().map(Path::to_path_buf))
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or_else(|| PathBuf::from("."))
    }
}

/// Checks `public_url`: an absolute http(s) URL of the site's root.
fn public_url(text: &str) -> Result<url::Url, ConfigError> {
    let bad = |why: &str| {
        ConfigError::new("public_url", format!("{text:?} {why} (e.g. https://vmdeck.example.com)"))
    };
    let url = url::Url::parse(text).map_err(|e| bad(&format!("is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(bad("is not an http or https address"));
    }
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
        return Err(bad("must be the site's root, without a path: vmdeck is served at /"));
    }
    Ok(url)
}

/// The file path inside a `sqlite:` URL, or None for in-memory databases.
pub fn sqlite_path(url: &str) -> Option<PathBuf> {
    let rest = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or_default();
    if path.is_empty() || path == ":memory:" {
        None
    } else {
        Some(PathBuf::from(path))
    }
}

/// The configuration file of an installed vmdeck (the package's service reads it too).
pub const SYSTEM_CONFIG: &str = "/etc/vmdeck/vmdeck.toml";

/// Where the Debian package keeps an installed server's session key, as a root-only
/// `ROCKET_SECRET_KEY=...` line that the service's unit reads (`EnvironmentFile=`), so that the
/// key is never in [`SYSTEM_CONFIG`], which the service's group can read.
pub const SYSTEM_SECRET_ENV: &str = "/etc/vmdeck/secret.env";

/// The configuration file the server and the CLI read: the one `ROCKET_CONFIG` names when it
/// is set; else [`SYSTEM_CONFIG`] when it exists; else `Rocket.toml`, looked up from the
/// working directory upwards (Rocket's own default). So an admin's `vmdeck user add` on a
/// server reaches the service's database without any environment.
pub fn config_file() -> String {
    match std::env::var("ROCKET_CONFIG") {
        Ok(path) => path,
        Err(_) if Path::new(SYSTEM_CONFIG).exists() => SYSTEM_CONFIG.to_string(),
        Err(_) => "Rocket.toml".to_string(),
    }
}

/// Rocket's configuration figment (defaults, the file, `ROCKET_*` variables, the profile),
/// reading [`config_file`].
pub fn figment() -> Figment {
    use rocket::figment::providers::{Env, Format, Toml};
    use rocket::figment::Profile;
    Figment::from(rocket::Config::default())
        .merge(Toml::file(config_file()).nested())
        .merge(Env::prefixed("ROCKET_").ignore(&["PROFILE"]).global())
        .select(Profile::from_env_or("ROCKET_PROFILE", rocket::Config::DEFAULT_PROFILE))
}

/// Rocket's figment silently skips a missing `Rocket.toml`; a file named explicitly through
/// `ROCKET_CONFIG` that cannot be read is an error instead.
fn check_config_file() -> Result<(), ConfigError> {
    let Ok(path) = std::env::var("ROCKET_CONFIG") else {
        return Ok(());
    };
    match std::fs::read_to_string(&path) {
        Ok(_) => Ok(()),
        Err(e) => Err(ConfigError::new("ROCKET_CONFIG", format!("cannot read {path:?}: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::virtualbox::VirtualBoxSettings;

    #[test]
    fn host_names_must_be_url_safe() {
        for ok in ["kvm1", "KVM-1.lab", "a", "0_x"] {
            assert!(HostName::parse(ok).is_ok(), "{ok} should be accepted");
        }
        for bad in ["", "-x", "a b", "a/b", "é", &"x".repeat(64)] {
            assert!(HostName::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn uri_passwords_never_reach_the_redacted_form() {
        let u = HostUri::parse("qemu+ssh://admin:hunter2@kvm1/system").unwrap();
        assert!(!u.redacted().contains("hunter2"), "{}", u.redacted());
        assert!(u.redacted().contains("admin"));
        assert_eq!(u.expose(), "qemu+ssh://admin:hunter2@kvm1/system");
        let q = HostUri::parse("qemu+tcp://kvm1/system?password=s3cret&no_verify=1").unwrap();
        assert!(!q.redacted().contains("s3cret"), "{}", q.redacted());
        assert!(!format!("{q:?}").contains("s3cret"));
        let plain = HostUri::parse("qemu:///system").unwrap();
        assert_eq!(plain.redacted(), "qemu:///system");
    }

    #[test]
    fn malformed_uris_are_refused() {
        for bad in ["", " qemu:///system", "not a uri", "://x", "kvm1/system"] {
            assert!(HostUri::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    fn settings(toml: &str) -> Result<Settings, ConfigError> {
        use rocket::figment::providers::{Format, Toml};
        // The debug profile, where no secret key is required.
        Settings::from_figment(&Figment::from(Toml::string(toml)).select("debug"))
    }

    #[test]
    fn alert_rules_in_the_file_are_checked_by_the_pages_parser_naming_table_and_field() {
        let e = settings("[[alert_rules]]\nname = 'cpu'\ncondition = 'cpu_above'\nthreshold = 200")
            .err()
            .unwrap();
        assert_eq!(e.key, "alert_rules[0].threshold", "{e}");
        assert!(e.to_string().contains("percentage"), "{e}");
        let e = settings("[[alert_rules]]\nname = 'a'\ncondition = 'host_unreachable'\n[[alert_rules]]\nname = 'A'\ncondition = 'host_unreachable'")
            .err()
            .unwrap();
        assert_eq!(e.key, "alert_rules[1].name", "{e}");
        let e =
            settings("[[alert_rules]]\nname = 'a'\ncondition = 'host_unreachable'\nthresold = 3")
                .err()
                .unwrap();
        assert_eq!(e.key, "alert_rules[0]", "{e}");
        assert!(e.to_string().contains("thresold"), "an unknown key is named: {e}");
        let e = settings("alert_repeat_interval_secs = 5").err().unwrap();
        assert_eq!(e.key, "alert_repeat_interval_secs", "{e}");
        let s = settings(
            "[[alert_rules]]\nname = 'big disks'\ncondition = 'disk_growth'\nthreshold = '10 GiB'\nperiod = '1d'\nfor = '5m'\nseverity = 'critical'",
        )
        .unwrap();
        let rule = &s.alerts.rules[0];
        assert_eq!(rule.for_secs, 300);
        assert_eq!(
            rule.condition,
            crate::alerts::rules::Condition::DiskGrowth { bytes: 10 << 30, period_secs: 86_400 }
        );
    }

    #[test]
    fn https_comes_from_the_public_url_and_a_tls_table_is_refused_not_ignored() {
        let e = settings("[tls]\ncerts = 'c.pem'\nkey = 'k.pem'").err().unwrap();
        assert_eq!(e.key, "tls", "{e}");
        assert!(e.to_string().contains("reverse proxy"), "{e}");
        let s = settings("public_url = 'https://vmdeck.example.com'").unwrap();
        assert!(s.https());
        assert_eq!(s.session_cookie(), "__Host-vmdeck_session");
        let s = settings("public_url = 'http://vmdeck.lan:8000/'").unwrap();
        assert!(!s.https());
        assert!(!settings("").unwrap().https(), "plain HTTP unless said otherwise");
        for bad in
            ["vmdeck.example.com", "ftp://x", "https://x/vmdeck", "https://x/?a=1", "https://"]
        {
            let e = settings(&format!("public_url = '{bad}'")).err();
            assert_eq!(e.map(|e| e.key), Some("public_url".to_string()), "{bad}");
        }
    }

    #[test]
    fn the_demo_never_uses_the_configured_database_file() {
        let demo = settings("database_url = 'sqlite:///var/lib/vmdeck/vmdeck.db'").unwrap();
        assert!(demo.demo);
        assert_eq!(demo.database_url, "sqlite:///var/lib/vmdeck/vmdeck-demo.db");
        let real = settings(
            "database_url = 'sqlite:///var/lib/vmdeck/vmdeck.db'\n\
             [[hosts]]\nname = 'kvm1'\ndriver = 'libvirt'\nuri = 'qemu:///system'",
        )
        .unwrap();
        assert!(!real.demo);
        assert_eq!(real.database_url, "sqlite:///var/lib/vmdeck/vmdeck.db");
    }

    #[test]
    fn the_snapshot_interval_has_a_default_and_a_range() {
        assert_eq!(settings("").unwrap().snapshot_interval, Duration::from_secs(900));
        let s = settings("snapshot_interval_secs = 3600").unwrap();
        assert_eq!(s.snapshot_interval, Duration::from_secs(3600));
        for bad in ["snapshot_interval_secs = 0", "snapshot_interval_secs = 99999999"] {
            let e = settings(bad).err().unwrap_or_else(|| panic!("{bad} accepted"));
            assert_eq!(e.key, "snapshot_interval_secs", "{e}");
            assert!(e.message.contains("60 to 604800 seconds"), "{e}");
        }
    }

    #[test]
    fn healthz_tokens_must_be_long_enough() {
        let e = settings("healthz_tokens = ['0123456789abcdef', 'short']").err().unwrap();
        assert_eq!(e.key, "healthz_tokens[1]", "{e}");
        let ok = settings("healthz_tokens = ['0123456789abcdef']").unwrap();
        assert_eq!(ok.healthz_tokens, vec!["0123456789abcdef"]);
        assert!(settings("").unwrap().healthz_tokens.is_empty(), "none by default");
    }

    #[test]
    fn metrics_access_is_off_by_default_and_each_entry_is_checked() {
        assert!(!settings("").unwrap().metrics.enabled(), "never open by default");
        let e = settings("metrics_tokens = ['0123456789abcdef', 'short']").err().unwrap();
        assert_eq!(e.key, "metrics_tokens[1]", "{e}");
        let e = settings("metrics_allow = ['10.0.0.0/8', '10.0.0.300']").err().unwrap();
        assert_eq!(e.key, "metrics_allow[1]", "{e}");
        assert!(e.message.contains("CIDR"), "{e}");
        let ok = settings("metrics_allow = ['192.0.2.10', '10.0.0.0/24', '::1']").unwrap().metrics;
        assert!(ok.enabled());
        let strs: Vec<String> = ok.allow.iter().map(|n| n.to_string()).collect();
        assert_eq!(strs, ["192.0.2.10/32", "10.0.0.0/24", "::1/128"]);
        let ok = settings("metrics_tokens = ['0123456789abcdef']").unwrap().metrics;
        assert_eq!(ok.tokens, ["0123456789abcdef"]);
    }

    #[test]
    fn a_secret_key_is_required_outside_the_debug_profile() {
        use rocket::figment::providers::{Format, Toml};
        let release = Figment::from(Toml::string("poll_interval_secs = 5")).select("release");
        let err = Settings::from_figment(&release).unwrap_err();
        assert_eq!(err.key, "secret_key");
        assert!(err.message.contains("openssl rand -base64 32"), "{}", err.message);
        let with_key =
            release.clone().merge(("secret_key", "zigPkurot95C917dq3dz79gOu5QscfJH/hFs20Jrvyw="));
        assert!(Settings::from_figment(&with_key).is_ok());
        let bad = release.clone().merge(("secret_key", "too short"));
        assert!(Settings::from_figment(&bad).unwrap_err().message.contains("not a valid key"));
        // Rocket's default configuration carries an all-zero key: not a key.
        let zero =
            Figment::from(rocket::Config::release_default()).merge(("poll_interval_secs", 5));
        assert_eq!(Settings::from_figment(&zero).unwrap_err().key, "secret_key");
        assert!(settings("poll_interval_secs = 5").is_ok(), "debug needs no key");
    }

    #[test]
    fn a_virtualbox_host_needs_no_uri_and_gets_defaults() {
        let s = settings("[[hosts]]\nname = 'desk1'\ndriver = 'virtualbox'\n").unwrap();
        let h = &s.hosts[0];
        assert_eq!(h.driver_name(), "virtualbox");
        assert!(
            matches!(&h.driver, DriverConfig::Virtualbox(v) if *v == VirtualBoxSettings::default())
        );
        assert_eq!(h.uri().redacted(), "VBoxManage");
    }

    #[test]
    fn virtualbox_keys_are_read_and_the_command_is_shown_without_secrets() {
        let s = settings(
            "[[hosts]]\nname = 'desk1'\ndriver = 'virtualbox'\nvboxmanage = '/usr/bin/VBoxManage'\n\
             command_prefix = ['sshpass', '-p', 'hunter2', 'ssh', '-o', 'BatchMode=yes', 'vbox@desk1']\n\
             command_timeout_secs = 45\n",
        )
        .unwrap();
        let DriverConfig::Virtualbox(vbox) = s.hosts[0].driver.clone() else {
            panic!("a virtualbox host")
        };
        assert_eq!(vbox.vboxmanage, "/usr/bin/VBoxManage");
        assert_eq!(vbox.command_prefix.len(), 7);
        assert_eq!(vbox.command_timeout, Duration::from_secs(45));
        let shown = s.hosts[0].uri();
        let shown = shown.redacted();
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("vbox@desk1") && shown.ends_with("/usr/bin/VBoxManage"), "{shown}");
        let pw = HostUri::command(&[
            "tool".into(),
            "--password".into(),
            "s3cret".into(),
            "token=abc".into(),
        ]);
        assert_eq!(pw.redacted(), "tool --password *** token=***");
    }

    #[test]
    fn bad_virtualbox_keys_are_refused_naming_the_key() {
        let vbox = "[[hosts]]\nname = 'a'\ndriver = 'virtualbox'\n";
        let libvirt = "[[hosts]]\nname = 'a'\ndriver = 'libvirt'\nuri = 'test:///default'\n";
        let cases = [
            (
                "a uri on a virtualbox host",
                format!("{vbox}uri = 'qemu:///system'\n"),
                "hosts[0].uri",
            ),
            (
                "a prefix that is not a list",
                format!("{vbox}command_prefix = 'ssh desk1'\n"),
                "hosts[0].command_prefix",
            ),
            (
                "a prefix with a number",
                format!("{vbox}command_prefix = ['ssh', 1]\n"),
                "hosts[0].command_prefix[1]",
            ),
            (
                "an empty prefix word",
                format!("{vbox}command_prefix = ['ssh', '']\n"),
                "hosts[0].command_prefix[1]",
            ),
            (
                "a zero timeout",
                format!("{vbox}command_timeout_secs = 0\n"),
                "hosts[0].command_timeout_secs",
            ),
            (
                "an absurd timeout",
                format!("{vbox}command_timeout_secs = 100000\n"),
                "hosts[0].command_timeout_secs",
            ),
            (
                "a timeout of the wrong type",
                format!("{vbox}command_timeout_secs = 'soon'\n"),
                "hosts[0].command_timeout_secs",
            ),
            ("an empty vboxmanage", format!("{vbox}vboxmanage = ''\n"), "hosts[0].vboxmanage"),
            (
                "a misspelt key",
                format!("{vbox}comand_prefix = ['ssh']\n"),
                "hosts[0].comand_prefix",
            ),
            (
                "vboxmanage on a libvirt host",
                format!("{libvirt}vboxmanage = 'VBoxManage'\n"),
                "hosts[0].vboxmanage",
            ),
            (
                "a prefix on a libvirt host",
                format!("{libvirt}command_prefix = ['ssh']\n"),
                "hosts[0].command_prefix",
            ),
        ];
        for (what, toml, key) in cases {
            match settings(&toml) {
                Ok(_) => panic!("{what}: should be refused"),
                Err(e) => assert_eq!(e.key, key, "{what}: {e}"),
            }
        }
    }

    #[test]
    fn sqlite_paths_are_found_in_urls() {
        assert_eq!(sqlite_path("sqlite://data/x.db"), Some(PathBuf::from("data/x.db")));
        assert_eq!(sqlite_path("sqlite:///tmp/x.db?mode=rwc"), Some(PathBuf::from("/tmp/x.db")));
        assert_eq!(sqlite_path("sqlite::memory:"), None);
    }
}
