//! vmdeck's own configuration keys, read from Rocket's figment (`Rocket.toml` profiles and
//! `ROCKET_*` variables) and validated once at startup into typed [`Settings`].
//!
//! Every error names the key it is about, so a bad configuration stops startup with one line.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rocket::figment::Figment;
use serde::{Deserialize, Serialize};

/// The demo host's name, used when no `hosts` are configured.
pub const DEMO_HOST: &str = "demo";

/// Validated settings, managed as Rocket state.
#[derive(Debug, Clone)]
pub struct Settings {
    /// sqlx connection string for the SQLite database.
    pub database_url: String,
    /// How often every host is polled.
    pub poll_interval: Duration,
    /// Time limit for one call into a hypervisor (one poll of one host).
    pub call_timeout: Duration,
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
    /// Whether Rocket serves TLS (session cookies are then marked Secure).
    pub tls: bool,
}

/// One configured hypervisor host.
#[derive(Debug, Clone)]
pub struct HostConfig {
    pub name: HostName,
    pub driver: Driver,
    pub uri: HostUri,
}

/// A host name: 1 to 63 characters of `A-Z a-z 0-9 . _ -`, starting with a letter or digit, so it
/// can stand in a URL path segment unescaped.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct HostName(String);

impl HostName {
    pub fn parse(s: &str) -> Result<Self, String> {
        let ok_len = (1..=63).contains(&s.len());
        let ok_first = s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
        let ok_chars = s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if ok_len && ok_first && ok_chars {
            Ok(HostName(s.to_owned()))
        } else {
            Err(format!(
                "{s:?} is not a valid host name (1-63 characters of letters, digits, '.', '_' or '-', starting with a letter or digit)"
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for HostName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Which backend talks to a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Driver {
    Libvirt,
}

impl Driver {
    pub const ALL: &'static [&'static str] = &["libvirt"];

    pub fn as_str(self) -> &'static str {
        match self {
            Driver::Libvirt => "libvirt",
        }
    }
}

/// A hypervisor connection URI. It may carry credentials (`qemu+ssh://user:secret@host/system`),
/// so it is never shown or logged as given: [`HostUri::redacted`] is its public face.
#[derive(Clone)]
pub struct HostUri {
    raw: String,
    redacted: String,
}

impl HostUri {
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.trim() != s || s.is_empty() {
            return Err("must be a non-empty URI without surrounding spaces".into());
        }
        let mut url = url::Url::parse(s).map_err(|e| format!("malformed URI: {e}"))?;
        let driver_part = url.scheme().split('+').next().unwrap_or_default();
        if driver_part.is_empty() {
            return Err("malformed URI: missing the driver (e.g. qemu:///system)".into());
        }
        let had_password = url.password().is_some();
        if had_password {
            // set_password only fails for cannot-be-a-base URLs, which have no password.
            let _ = url.set_password(Some("***"));
        }
        // Query values such as `password=` or `passwd=` are not libvirt parameters, but a URI copied
        // from elsewhere may carry one: mask any parameter whose name suggests a secret.
        let secret_query = url.query_pairs().any(|(k, _)| is_secret_key(&k));
        if secret_query {
            let pairs: Vec<(String, String)> = url
                .query_pairs()
                .map(|(k, v)| {
                    let v = if is_secret_key(&k) { "***".to_string() } else { v.into_owned() };
                    (k.into_owned(), v)
                })
                .collect();
            url.query_pairs_mut().clear().extend_pairs(pairs);
        }
        let redacted = if had_password || secret_query { url.to_string() } else { s.to_string() };
        Ok(HostUri { raw: s.to_string(), redacted })
    }

    /// The URI as configured, credentials included: only for the backend's connection call.
    pub fn expose(&self) -> &str {
        &self.raw
    }

    /// The URI with any password replaced by `***`.
    pub fn redacted(&self) -> &str {
        &self.redacted
    }
}

fn is_secret_key(k: &str) -> bool {
    let k = k.to_ascii_lowercase();
    k.contains("pass") || k.contains("secret") || k.contains("token")
}

impl fmt::Debug for HostUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HostUri({})", self.redacted)
    }
}

/// A configuration error: the key and what is wrong with it.
#[derive(Debug, thiserror::Error)]
#[error("configuration error: {key}: {message}")]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

impl ConfigError {
    fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError { key: key.into(), message: message.into() }
    }
}

/// The keys as they appear in the figment, before validation.
#[derive(Debug, Deserialize)]
struct RawSettings {
    database_url: Option<String>,
    poll_interval_secs: Option<u64>,
    call_timeout_secs: Option<u64>,
    #[serde(default)]
    hosts: Vec<RawHost>,
    session_idle_minutes: Option<u64>,
    session_lifetime_hours: Option<u64>,
    #[serde(default)]
    trusted_proxies: Vec<String>,
    audit_retention_days: Option<u32>,
    confirm_timeout_secs: Option<u64>,
    power_concurrency_per_host: Option<usize>,
    secret_key: Option<serde::de::IgnoredAny>,
    tls: Option<serde::de::IgnoredAny>,
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHost {
    name: Option<String>,
    driver: Option<String>,
    uri: Option<String>,
}

pub const DEFAULT_DATABASE_URL: &str = "sqlite://data/vmdeck.db";
pub const DEFAULT_POLL_INTERVAL_SECS: u64 = 10;
pub const MAX_POLL_INTERVAL_SECS: u64 = 3600;
pub const DEFAULT_CALL_TIMEOUT_SECS: u64 = 20;

impl Settings {
    /// Extracts and validates vmdeck's keys from the figment.
    pub fn from_figment(figment: &Figment) -> Result<Settings, ConfigError> {
        check_config_file()?;
        let raw: RawSettings = figment.extract().map_err(|e| {
            let key = e.path.join(".");
            let key = if key.is_empty() { "Rocket.toml".to_string() } else { key };
            ConfigError::new(key, e.to_string())
        })?;

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

        let mut hosts: Vec<HostConfig> = Vec::with_capacity(raw.hosts.len());
        for (i, h) in raw.hosts.into_iter().enumerate() {
            let key = |field: &str| format!("hosts[{i}].{field}");
            let name = h.name.ok_or_else(|| ConfigError::new(key("name"), "missing"))?;
            let name = HostName::parse(&name).map_err(|m| ConfigError::new(key("name"), m))?;
            if hosts.iter().any(|o| o.name == name) {
                return Err(ConfigError::new(key("name"), format!("duplicate host name {name:?}")));
            }
            let driver = h.driver.ok_or_else(|| ConfigError::new(key("driver"), "missing"))?;
            let driver = match driver.as_str() {
                "libvirt" => Driver::Libvirt,
                other => {
                    return Err(ConfigError::new(
                        key("driver"),
                        format!("unknown driver {other:?} (known: {})", Driver::ALL.join(", ")),
                    ))
                }
            };
            if driver == Driver::Libvirt && !cfg!(feature = "libvirt") {
                return Err(ConfigError::new(
                    key("driver"),
                    "this vmdeck was built without the `libvirt` feature",
                ));
            }
            let uri = h.uri.ok_or_else(|| ConfigError::new(key("uri"), "missing"))?;
            let uri = HostUri::parse(&uri).map_err(|m| ConfigError::new(key("uri"), m))?;
            hosts.push(HostConfig { name, driver, uri });
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
        let confirm =
            ranged("confirm_timeout_secs", raw.confirm_timeout_secs, 120, 5..=3600, "seconds")?;
        let power_concurrency = ranged(
            "power_concurrency_per_host",
            raw.power_concurrency_per_host,
            4,
            1..=64,
            "actions",
        )?;
        let audit_retention_days = match raw.audit_retention_days {
            None | Some(0) => None,
            Some(d) => Some(ranged("audit_retention_days", Some(d), d, 1..=36_500, "days")?),
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
        if raw.secret_key.is_none() && profile != "debug" {
            return Err(ConfigError::new(
                "secret_key",
                format!(
                    "required in the {profile:?} profile: set ROCKET_SECRET_KEY or secret_key in Rocket.toml \
                     (generate one with: openssl rand -base64 32)"
                ),
            ));
        }

        let demo = hosts.is_empty();
        Ok(Settings {
            database_url,
            poll_interval: Duration::from_secs(poll_secs),
            call_timeout: Duration::from_secs(timeout_secs),
            hosts,
            demo,
            session_idle: Duration::from_secs(idle * 60),
            session_lifetime: Duration::from_secs(lifetime * 3600),
            trusted_proxies,
            audit_retention_days,
            confirm_timeout: Duration::from_secs(confirm),
            power_concurrency,
            tls: raw.tls.is_some(),
        })
    }

    /// The directory holding the SQLite file (the demo lab definition is written beside it).
    pub fn data_dir(&self) -> PathBuf {
        sqlite_path(&self.database_url)
            .and_then(|p| p.parent().map(Path::to_path_buf))
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or_else(|| PathBuf::from("."))
    }
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

    #[test]
    fn sqlite_paths_are_found_in_urls() {
        assert_eq!(sqlite_path("sqlite://data/x.db"), Some(PathBuf::from("data/x.db")));
        assert_eq!(sqlite_path("sqlite:///tmp/x.db?mode=rwc"), Some(PathBuf::from("/tmp/x.db")));
        assert_eq!(sqlite_path("sqlite::memory:"), None);
    }
}
