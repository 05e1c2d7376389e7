//! Notification targets as vmdeck understands them: an Alertmanager, a webhook or an SMTP
//! server, with a name, a least severity and whether they are on. One parser
//! ([`TargetFields::parse`]) serves the targets page's form and the configuration file's
//! `[[alert_targets]]` tables; its errors name the field.

use std::fmt;

use lettre::transport::smtp::client::{Certificate, TlsParameters};
use serde::{Deserialize, Serialize};

use crate::alerts::rules::{check_name, err, FieldError, Severity};
use crate::domain::quoted;

/// Longest URL, token or password, SMTP host, address; most recipients.
pub const MAX_URL: usize = 2_000;
pub const MAX_SECRET: usize = 4_096;
pub const MAX_HOST: usize = 253;
pub const MAX_ADDRESS: usize = 320;
pub const MAX_RECIPIENTS: usize = 50;
/// Largest CA certificate file (`ca_file`), and longest path to it.
pub const MAX_CA_FILE: u64 = 1024 * 1024;
pub const MAX_PATH: usize = 4_096;

/// A bearer token or SMTP password: never printed (its Debug is `***`), never serialized.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }

    /// The secret itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// How the SMTP connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tls {
    /// Plain connection upgraded with STARTTLS (required), port 587 by default.
    Starttls,
    /// TLS from the first byte ("SMTPS"), port 465 by default.
    Tls,
    /// No encryption (a relay on the same machine or network), port 25 by default.
    None,
}

impl Tls {
    pub fn as_str(self) -> &'static str {
        match self {
            Tls::Starttls => "starttls",
            Tls::Tls => "tls",
            Tls::None => "none",
        }
    }

    fn default_port(self) -> u16 {
        match self {
            Tls::Starttls => 587,
            Tls::Tls => 465,
            Tls::None => 25,
        }
    }
}

/// An e-mail target's settings (the password is the target's secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Email {
    pub smtp_host: String,
    pub smtp_port: u16,
    pub tls: Tls,
    #[serde(default)]
    pub username: String,
    pub from: String,
    pub to: Vec<String>,
    /// A PEM file of CA certificates trusted for this server besides the webpki roots
    /// (an internal CA); read again at every send.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
}

/// Where a target's notifications go (stored as `kind` and the JSON `settings`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// An Alertmanager's v2 API at this base URL.
    Alertmanager {
        url: String,
    },
    /// Alertmanager's webhook JSON (version 4), posted to this URL.
    Webhook {
        url: String,
    },
    Email(Email),
}

impl Kind {
    pub const NAMES: [&'static str; 3] = ["alertmanager", "webhook", "email"];

    pub fn name(&self) -> &'static str {
        match self {
            Kind::Alertmanager { .. } => "alertmanager",
            Kind::Webhook { .. } => "webhook",
            Kind::Email(_) => "email",
        }
    }

    /// The JSON stored in `alert_targets.settings` (no secret).
    pub fn settings_json(&self) -> String {
        match self {
            Kind::Alertmanager { url } | Kind::Webhook { url } => {
                serde_json::json!({ "url": url }).to_string()
            }
            Kind::Email(e) => serde_json::to_string(e).unwrap_or_else(|_| "{}".into()),
        }
    }

    /// Reads the stored columns back; None when they make no sense to this version.
    pub fn from_columns(kind: &str, settings: &str) -> Option<Kind> {
        #[derive(Deserialize)]
        struct Url {
            url: String,
        }
        match kind {
            "alertmanager" => serde_json::from_str::<Url>(settings)
                .ok()
                .map(|u| Kind::Alertmanager { url: u.url }),
            "webhook" => {
                serde_json::from_str::<Url>(settings).ok().map(|u| Kind::Webhook { url: u.url })
            }
            "email" => serde_json::from_str::<Email>(settings).ok().map(Kind::Email),
            _ => None,
        }
    }

    /// Where it sends, in words (no secret).
    pub fn describe(&self) -> String {
        match self {
            Kind::Alertmanager { url } => format!("Alertmanager at {url}"),
            Kind::Webhook { url } => format!("webhook {url}"),
            Kind::Email(e) => format!(
                "e-mail to {} via {}:{} ({}{})",
                e.to.join(", "),
                e.smtp_host,
                e.smtp_port,
                e.tls.as_str(),
                e.ca_file.as_ref().map(|f| format!(", CA file {f}")).unwrap_or_default()
            ),
        }
    }
}

/// A validated target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetSpec {
    pub name: String,
    pub enabled: bool,
    pub min_severity: Severity,
    pub kind: Kind,
    /// The bearer token (Alertmanager, webhook) or SMTP password; None: none given (on a
    /// page edit: keep the stored one).
    pub secret: Option<Secret>,
}

/// A target as typed: the page's form fields and the configuration file's keys, all text, so
/// every mistake is reported in words.
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetFields {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub enabled: Option<bool>,
    /// "alertmanager", "webhook" or "email".
    #[serde(default)]
    pub kind: String,
    /// "info" (default), "warning" or "critical".
    #[serde(default)]
    pub min_severity: String,
    /// Alertmanager's base URL or the webhook's URL.
    #[serde(default)]
    pub url: String,
    /// A bearer token (Alertmanager, webhook; optional).
    #[serde(default)]
    pub token: String,
    #[serde(default)]
    pub smtp_host: String,
    #[serde(default, deserialize_with = "text_or_number")]
    pub smtp_port: String,
    /// "starttls" (default), "tls" or "none".
    #[serde(default)]
    pub tls: String,
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub password: String,
    #[serde(default)]
    pub from: String,
    /// Recipients: a list (file) or text separated by commas or line breaks (page).
    #[serde(default, deserialize_with = "list_or_text")]
    pub to: Vec<String>,
    /// E-mail: a PEM file of CA certificates to trust besides the webpki roots (optional).
    #[serde(default)]
    pub ca_file: String,
}

impl fmt::Debug for TargetFields {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TargetFields")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("url", &self.url)
            .field("token", &"***")
            .field("smtp_host", &self.smtp_host)
            .field("password", &"***")
            .field("ca_file", &self.ca_file)
            .finish_non_exhaustive()
    }
}

fn text_or_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum TextOrNumber {
        Text(String),
        Int(i64),
    }
    Ok(match TextOrNumber::deserialize(d)? {
        TextOrNumber::Text(s) => s,
        TextOrNumber::Int(i) => i.to_string(),
    })
}

fn list_or_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum ListOrText {
        List(Vec<String>),
        Text(String),
    }
    Ok(match ListOrText::deserialize(d)? {
        ListOrText::List(l) => l,
        ListOrText::Text(s) => split_addresses(&s),
    })
}

/// Recipients as typed in one text field: separated by commas, semicolons or line breaks.
pub fn split_addresses(s: &str) -> Vec<String> {
    s.split([',', ';', '\n', '\r'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

fn shown(s: &str) -> String {
    quoted(&s.chars().take(80).collect::<String>())
}

/// An http(s) URL without credentials in it (those go in the token).
fn check_url(s: &str) -> Result<String, FieldError> {
    let s = s.trim();
    if s.is_empty() {
        return Err(err("url", "give the URL, e.g. http://alertmanager.example:9093"));
    }
    if s.len() > MAX_URL {
        return Err(err("url", format!("at most {MAX_URL} characters")));
    }
    let url =
        url::Url::parse(s).map_err(|e| err("url", format!("{} is not a URL ({e})", shown(s))))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(err("url", "only http:// and https:// URLs"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(err("url", "the URL needs a host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(err("url", "no user or password in the URL; give a token instead"));
    }
    Ok(s.to_string())
}

fn check_secret(field: &'static str, s: &str) -> Result<Option<Secret>, FieldError> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(None);
    }
    if s.len() > MAX_SECRET || s.chars().any(char::is_control) {
        return Err(err(field, format!("at most {MAX_SECRET} characters, on one line")));
    }
    Ok(Some(Secret::new(s)))
}

fn check_address(field: &'static str, s: &str) -> Result<String, FieldError> {
    let s = s.trim();
    if s.len() > MAX_ADDRESS || s.parse::<lettre::message::Mailbox>().is_err() {
        return Err(err(field, format!("{} is not an e-mail address", shown(s))));
    }
    Ok(s.to_string())
}

impl TargetFields {
    /// Validates every field; the first mistake is returned in words, naming its field.
    pub fn parse(&self) -> Result<TargetSpec, FieldError> {
        let name = check_name(&self.name, "a target")?;
        let min_severity = match self.min_severity.trim() {
            "" => Severity::Info,
            s => Severity::parse(s)
                .ok_or_else(|| err("min_severity", "choose info, warning or critical"))?,
        };
        let (kind, secret) = match self.kind.trim() {
            "alertmanager" => (
                Kind::Alertmanager { url: check_url(&self.url)? },
                check_secret("token", &self.token)?,
            ),
            "webhook" => {
                (Kind::Webhook { url: check_url(&self.url)? }, check_secret("token", &self.token)?)
            }
            "email" => (Kind::Email(self.email()?), check_secret("password", &self.password)?),
            "" => return Err(err("kind", "choose alertmanager, webhook or email")),
            other => {
                return Err(err(
                    "kind",
                    format!(
                        "{} is not a kind; choose alertmanager, webhook or email",
                        shown(other)
                    ),
                ))
            }
        };
        Ok(TargetSpec {
            name: name.to_string(),
            enabled: self.enabled.unwrap_or(true),
            min_severity,
            kind,
            secret,
        })
    }

    fn email(&self) -> Result<Email, FieldError> {
        let host = self.smtp_host.trim();
        if host.is_empty() {
            return Err(err("smtp_host", "name the SMTP server"));
        }
        if host.len() > MAX_HOST
            || !host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'))
        {
            return Err(err("smtp_host", format!("{} is not a host name or address", shown(host))));
        }
        let tls = match self.tls.trim() {
            "" | "starttls" => Tls::Starttls,
            "tls" => Tls::Tls,
            "none" => Tls::None,
            _ => return Err(err("tls", "choose starttls, tls or none")),
        };
        let smtp_port = match self.smtp_port.trim() {
            "" => tls.default_port(),
            p => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| err("smtp_port", "a port number from 1 to 65535"))?,
        };
        let username = self.username.trim();
        if username.chars().count() > MAX_ADDRESS || username.chars().any(char::is_control) {
            return Err(err("username", format!("at most {MAX_ADDRESS} characters, on one line")));
        }
        let from = check_address("from", &self.from)?;
        let mut to = Vec::new();
        for a in self.to.iter().map(|a| a.trim()).filter(|a| !a.is_empty()) {
            let a = check_address("to", a)?;
            if !to.contains(&a) {
                to.push(a);
            }
        }
        if to.is_empty() {
            return Err(err("to", "give at least one recipient"));
        }
        if to.len() > MAX_RECIPIENTS {
            return Err(err("to", format!("at most {MAX_RECIPIENTS} recipients")));
        }
        let ca_file = match self.ca_file.trim() {
            "" => None,
            _ if tls == Tls::None => {
                return Err(err("ca_file", "a CA file needs tls = starttls or tls"))
            }
            path => {
                if path.len() > MAX_PATH
                    || path.chars().any(char::is_control)
                    || !std::path::Path::new(path).is_absolute()
                {
                    return Err(err("ca_file", "give the CA file's absolute path, on one line"));
                }
                tls_parameters(host, Some(path)).map_err(|e| err("ca_file", e))?;
                Some(path.to_string())
            }
        };
        Ok(Email {
            smtp_host: host.to_string(),
            smtp_port,
            tls,
            username: username.into(),
            from,
            to,
            ca_file,
        })
    }
}

/// Reads a PEM file of CA certificates (at most [`MAX_CA_FILE`] bytes, at least one
/// certificate); the error says what is wrong in words (never the file's content).
pub fn read_ca_file(path: &str) -> Result<Certificate, String> {
    use std::io::Read;
    let shown = shown(path);
    let file =
        std::fs::File::open(path).map_err(|e| format!("cannot read the CA file {shown}: {e}"))?;
    let meta = file.metadata().map_err(|e| format!("cannot read the CA file {shown}: {e}"))?;
    if !meta.is_file() {
        return Err(format!("the CA file {shown} is not a file"));
    }
    let mut pem = Vec::new();
    file.take(MAX_CA_FILE + 1)
        .read_to_end(&mut pem)
        .map_err(|e| format!("cannot read the CA file {shown}: {e}"))?;
    if pem.len() as u64 > MAX_CA_FILE {
        return Err(format!("the CA file {shown} is larger than 1 MiB"));
    }
    let not_pem =
        || format!("the CA file {shown} holds no PEM certificate (-----BEGIN CERTIFICATE-----)");
    if !pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") {
        return Err(not_pem());
    }
    Certificate::from_pem(&pem)
        .map_err(|_| format!("the CA file {shown} holds a PEM certificate that cannot be decoded"))
}

/// The TLS settings for an SMTP server: the webpki roots, plus the certificates of `ca_file`.
pub fn tls_parameters(host: &str, ca_file: Option<&str>) -> Result<TlsParameters, String> {
    let mut builder = TlsParameters::builder(host.to_string());
    if let Some(path) = ca_file {
        builder = builder.add_root_certificate(read_ca_file(path)?);
    }
    builder.build().map_err(|e| match ca_file {
        Some(path) => format!("the CA file {} is not usable: {e}", shown(path)),
        None => format!("TLS settings for {}: {e}", shown(host)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(kind: &str) -> TargetFields {
        TargetFields { name: "t".into(), kind: kind.into(), ..TargetFields::default() }
    }

    #[test]
    fn a_webhook_needs_an_http_url_without_credentials() {
        let mut f = fields("webhook");
        assert_eq!(f.parse().unwrap_err().field, "url");
        for bad in ["ftp://x/", "not a url", "http://u:p@x/", "file:///etc/passwd"] {
            f.url = bad.into();
            assert_eq!(f.parse().unwrap_err().field, "url", "{bad}");
        }
        f.url = "https://hooks.example/alerts".into();
        f.token = "s3cret-token".into();
        let spec = f.parse().unwrap();
        assert_eq!(spec.kind, Kind::Webhook { url: "https://hooks.example/alerts".into() });
        assert_eq!(format!("{:?}", spec.secret), "Some(***)");
        assert!(!format!("{spec:?}").contains("s3cret"));
    }

    #[test]
    fn email_fields_are_checked_and_ports_default_by_tls() {
        let mut f = fields("email");
        assert_eq!(f.parse().unwrap_err().field, "smtp_host");
        f.smtp_host = "mail.example".into();
        assert_eq!(f.parse().unwrap_err().field, "from");
        f.from = "vmdeck@example.org".into();
        assert_eq!(f.parse().unwrap_err().field, "to");
        f.to = split_addresses("ops@example.org, bad address");
        assert_eq!(f.parse().unwrap_err().field, "to");
        f.to = split_addresses("ops@example.org\nlead@example.org");
        f.tls = "tls".into();
        let Kind::Email(e) = f.parse().unwrap().kind else { panic!("not email") };
        assert_eq!((e.smtp_port, e.to.len()), (465, 2));
        f.tls = "smtps".into();
        assert_eq!(f.parse().unwrap_err().field, "tls");
        f.tls = "none".into();
        f.smtp_port = "70000".into();
        assert_eq!(f.parse().unwrap_err().field, "smtp_port");
    }

    #[test]
    fn kinds_and_severities_are_closed_lists() {
        assert_eq!(fields("pager").parse().unwrap_err().field, "kind");
        let mut f = fields("alertmanager");
        f.url = "http://am:9093".into();
        f.min_severity = "urgent".into();
        assert_eq!(f.parse().unwrap_err().field, "min_severity");
        f.min_severity = "critical".into();
        assert_eq!(f.parse().unwrap().min_severity, Severity::Critical);
    }

    /// A throwaway CA certificate made with /usr/bin/openssl.
    fn ca_pem(dir: &std::path::Path) -> String {
        let (key, pem) = (dir.join("ca.key"), dir.join("ca.pem"));
        let out = std::process::Command::new("/usr/bin/openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"])
            .args(["-nodes", "-days", "2", "-subj", "/CN=vmdeck unit test CA", "-keyout"])
            .args([&key, std::path::Path::new("-out"), &pem])
            .output()
            .expect("/usr/bin/openssl runs");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        pem.display().to_string()
    }

    #[test]
    fn a_ca_file_must_be_a_readable_pem_certificate_file_of_bounded_size() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = fields("email");
        f.smtp_host = "mail.internal".into();
        f.from = "a@b.c".into();
        f.to = vec!["d@e.f".into()];
        let refused = |f: &TargetFields| {
            let e = f.parse().unwrap_err();
            assert_eq!(e.field, "ca_file", "{e}");
            e.message
        };
        f.ca_file = dir.path().join("missing.pem").display().to_string();
        assert!(refused(&f).contains("cannot read the CA file"));
        f.ca_file = "ca.pem".into();
        assert!(refused(&f).contains("absolute path"));
        f.ca_file = dir.path().display().to_string();
        assert!(refused(&f).contains("is not a file"));
        let write = |name: &str, text: &[u8]| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            p.display().to_string()
        };
        f.ca_file =
            write("key.pem", b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n");
        assert!(refused(&f).contains("holds no PEM certificate"));
        f.ca_file =
            write("bad.pem", b"-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n");
        assert!(refused(&f).contains("cannot be decoded"));
        // Good base64, but not a certificate.
        f.ca_file = write(
            "hello.pem",
            b"-----BEGIN CERTIFICATE-----\naGVsbG8gd29ybGQ=\n-----END CERTIFICATE-----\n",
        );
        assert!(refused(&f).contains("is not usable"));
        let mut big = vec![b'#'; MAX_CA_FILE as usize];
        big.extend_from_slice(b"-----BEGIN CERTIFICATE-----");
        f.ca_file = write("big.pem", &big);
        assert!(refused(&f).contains("larger than 1 MiB"));

        let ca = ca_pem(dir.path());
        f.ca_file = format!("  {ca}  ");
        let Kind::Email(e) = f.parse().unwrap().kind else { panic!("not email") };
        assert_eq!(e.ca_file.as_deref(), Some(ca.as_str()));
        assert!(Kind::Email(e.clone()).describe().contains(&format!("CA file {ca}")));
        assert_eq!(
            Kind::from_columns("email", &Kind::Email(e.clone()).settings_json()),
            Some(Kind::Email(e))
        );
        f.tls = "tls".into();
        assert!(f.parse().is_ok());
        // Plain SMTP has no certificate to check.
        f.tls = "none".into();
        assert!(refused(&f).contains("starttls or tls"));
    }

    #[test]
    fn settings_stored_before_ca_files_existed_still_read() {
        let old = r#"{"smtp_host":"mx","smtp_port":25,"tls":"none","username":"","from":"a@b.c","to":["d@e.f"]}"#;
        let Some(Kind::Email(e)) = Kind::from_columns("email", old) else { panic!("unreadable") };
        assert_eq!(e.ca_file, None);
        assert!(!Kind::Email(e).settings_json().contains("ca_file"));
    }

    #[test]
    fn settings_round_trip_through_their_columns() {
        let mut f = fields("email");
        f.smtp_host = "mx".into();
        f.from = "a@b.c".into();
        f.to = vec!["d@e.f".into()];
        f.password = "pw".into();
        let kind = f.parse().unwrap().kind;
        let json = kind.settings_json();
        assert!(!json.contains("pw"));
        assert_eq!(Kind::from_columns("email", &json), Some(kind));
    }
}
