//! Reading configuration keys with errors that name them: [`ConfigError`], and [`HostKeys`],
//! which hands a `[[hosts]]` table's driver keys to that driver's settings type. Backends'
//! settings use these; they import nothing above them.

use rocket::figment::value::Value;
use rocket::figment::Figment;

/// A configuration error: the key and what is wrong with it.
#[derive(Debug, thiserror::Error)]
#[error("configuration error: {key}: {message}")]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError { key: key.into(), message: message.into() }
    }
}

/// The keys of one `[[hosts]]` table besides `name` and `driver`, handed to the settings type of
/// the driver the table names ([`DriverConfig::from_keys`]). Its errors name keys as the file
/// does (`hosts[0].command_prefix[1]`), with the same wording figment gives the other keys.
pub struct HostKeys<'a> {
    figment: &'a Figment,
    index: usize,
    table: &'a Value,
    rest: Value,
}

impl<'a> HostKeys<'a> {
    pub(super) fn new(figment: &'a Figment, index: usize, table: &'a Value) -> Self {
        let mut rest = table.as_dict().cloned().unwrap_or_default();
        rest.remove("name");
        rest.remove("driver");
        HostKeys { figment, index, table, rest: Value::Dict(table.tag(), rest) }
    }

    /// Reads the keys into `T`, a struct of `Option` fields marked
    /// `#[serde(deny_unknown_fields)]`: a key of the wrong type, or one `T` does not know, is an
    /// error naming that key.
    pub fn extract<T: serde::de::DeserializeOwned>(&self) -> Result<T, ConfigError> {
        T::deserialize(&self.rest).map_err(|e| host_error(self.figment, self.index, self.table, e))
    }

    /// The names of the keys given, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.rest.as_dict().into_iter().flat_map(|d| d.keys().map(String::as_str))
    }

    /// How the configuration reference writes `field` of this host: `hosts[0].uri`.
    pub fn key(&self, field: &str) -> String {
        format!("hosts[{}].{field}", self.index)
    }

    /// An error about `field` of this host.
    pub fn error(&self, field: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::new(self.key(field), message)
    }
}

/// A figment error from reading the table of `hosts[index]` on its own, completed as
/// `Figment::extract` would have reported it: the key from the top, the file it came from.
pub(super) fn host_error(
    figment: &Figment,
    index: usize,
    table: &Value,
    mut e: rocket::figment::Error,
) -> ConfigError {
    // The deepest value on the error's path that exists: its tag knows the source.
    let mut at = table;
    for part in &e.path {
        let next = match at {
            Value::Dict(_, d) => d.get(part),
            Value::Array(_, a) => part.parse::<usize>().ok().and_then(|i| a.get(i)),
            _ => None,
        };
        match next {
            Some(v) => at = v,
            None => break,
        }
    }
    let tag = at.tag();
    e.path.splice(0..0, ["hosts".to_string(), index.to_string()]);
    e.metadata = figment.get_metadata(tag).cloned();
    e.profile = tag.profile().or_else(|| Some(figment.profile().clone()));
    ConfigError::new(figment_error_key(&e), e.to_string())
}

/// The key a figment error is about, written as the configuration reference writes keys:
/// `hosts[0].command_prefix`, including the name of an unknown or missing field.
pub(super) fn figment_error_key(e: &rocket::figment::Error) -> String {
    use rocket::figment::error::Kind;
    let mut key = String::new();
    for part in &e.path {
        if part.parse::<usize>().is_ok() {
            key.push_str(&format!("[{part}]"));
        } else {
            if !key.is_empty() {
                key.push('.');
            }
            key.push_str(part);
        }
    }
    let field = match &e.kind {
        Kind::UnknownField(f, _) => Some(f.as_str()),
        Kind::MissingField(f) => Some(f.as_ref()),
        _ => None,
    };
    if let Some(f) = field.filter(|f| !key.ends_with(&format!(".{f}")) && key != *f) {
        if !key.is_empty() {
            key.push('.');
        }
        key.push_str(f);
    }
    if key.is_empty() {
        "Rocket.toml".to_string()
    } else {
        key
    }
}
