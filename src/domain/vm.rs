//! Naming a VM: the host it lives on and its UUID; and where its IP addresses were learned.

use std::fmt;

use rocket::form::{self, FromFormField, ValueField};
use rocket::request::FromParam;
use serde::{Deserialize, Serialize};

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

/// A path segment that is not a host name is handed back as given (the route words the error).
impl<'a> FromParam<'a> for HostName {
    type Error = &'a str;

    fn from_param(param: &'a str) -> Result<Self, &'a str> {
        HostName::parse(param).map_err(|_| param)
    }
}

/// A VM's UUID as libvirt and VirtualBox print it: 32 to 36 hex digits and dashes. Parsed at
/// the edges (paths, forms), so a value of this type is always safe in a URL or a query.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct VmUuid(String);

impl VmUuid {
    pub fn parse(s: &str) -> Result<VmUuid, String> {
        let ok =
            (32..=36).contains(&s.len()) && s.chars().all(|c| c.is_ascii_hexdigit() || c == '-');
        if ok {
            Ok(VmUuid(s.to_string()))
        } else {
            Err(VmUuid::not_a_uuid(s))
        }
    }

    /// What is wrong with `given`, for the user.
    pub fn not_a_uuid(given: &str) -> String {
        format!("{given:?} is not a VM identifier (a UUID).")
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for VmUuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A path segment that is not a UUID is handed back as given (the route words the error).
impl<'a> FromParam<'a> for VmUuid {
    type Error = &'a str;

    fn from_param(param: &'a str) -> Result<Self, &'a str> {
        VmUuid::parse(param).map_err(|_| param)
    }
}

/// One VM across hosts: its host's name and its UUID. Written `host/uuid` in forms (the bulk
/// form's checkboxes) and `/vms/host/uuid` as a page.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VmKey {
    pub host: HostName,
    pub uuid: VmUuid,
}

impl VmKey {
    pub fn new(host: HostName, uuid: VmUuid) -> VmKey {
        VmKey { host, uuid }
    }

    /// Parses `host/uuid`.
    pub fn parse(s: &str) -> Result<VmKey, String> {
        let (host, uuid) =
            s.split_once('/').ok_or_else(|| format!("{s:?} is not a VM (host/uuid)"))?;
        Ok(VmKey { host: HostName::parse(host)?, uuid: VmUuid::parse(uuid)? })
    }

    /// The VM's page.
    pub fn href(&self) -> String {
        format!("/vms/{}/{}", self.host, self.uuid)
    }
}

impl fmt::Display for VmKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.host, self.uuid)
    }
}

#[rocket::async_trait]
impl<'v> FromFormField<'v> for VmKey {
    fn from_value(field: ValueField<'v>) -> form::Result<'v, Self> {
        VmKey::parse(field.value).map_err(|e| form::Error::validation(e).into())
    }
}

/// Where an IP address was learned. Stored as its snake_case name.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, sqlx::Type,
)]
#[serde(rename_all = "snake_case")]
#[sqlx(rename_all = "snake_case")]
pub enum AddrSource {
    GuestAgent,
    DhcpLease,
    Arp,
    GuestAdditions,
}

impl AddrSource {
    /// Words for people: "from the {label}".
    pub fn label(self) -> &'static str {
        match self {
            AddrSource::GuestAgent => "guest agent",
            AddrSource::DhcpLease => "DHCP lease",
            AddrSource::Arp => "ARP table",
            AddrSource::GuestAdditions => "guest additions",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_uuids_and_valid_host_names_make_a_vm_key() {
        let k = VmKey::parse("lab/6695eb01-f6a4-8304-79aa-97f2502e193f").unwrap();
        assert_eq!(k.to_string(), "lab/6695eb01-f6a4-8304-79aa-97f2502e193f");
        assert_eq!(k.href(), "/vms/lab/6695eb01-f6a4-8304-79aa-97f2502e193f");
        for bad in [
            "lab",
            "lab/x",
            "/6695eb01f6a4830479aa97f2502e193f",
            "l b/6695eb01f6a4830479aa97f2502e193f",
            "lab/../../etc/passwd",
        ] {
            assert!(VmKey::parse(bad).is_err(), "{bad:?}");
        }
        assert!(VmUuid::parse("6695eb01f6a4830479aa97f2502e193f").is_ok());
        assert!(VmUuid::parse("6695eb01-f6a4-8304-79aa-97f2502e193g").is_err());
    }
}
