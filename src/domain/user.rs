//! Who is asking: roles and the logged-in user of a request. The guards that produce a
//! [`CurrentUser`] live in `auth`; every page reads it through the web chrome.

use std::net::IpAddr;

use serde::Serialize;

use super::Actor;

/// What a user may do. Ordered by privilege: each role can do everything the previous one can.
/// Stored as its lowercase name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, sqlx::Type)]
#[serde(rename_all = "lowercase")]
#[sqlx(rename_all = "lowercase")]
pub enum Role {
    Viewer,
    Operator,
    Admin,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Viewer, Role::Operator, Role::Admin];

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

/// The logged-in user of a request.
#[derive(Debug, Clone, Serialize)]
pub struct CurrentUser {
    pub id: i64,
    pub name: String,
    pub role: Role,
    /// This session's CSRF token, for forms.
    pub csrf: String,
    #[serde(skip)]
    pub addr: Option<IpAddr>,
    /// The session's id as stored (its SHA-256): what a console ticket is bound to.
    #[serde(skip)]
    pub session: String,
}

impl CurrentUser {
    pub fn actor(&self) -> Actor {
        Actor { user: Some(self.name.clone()), addr: self.addr.map(|a| a.to_string()) }
    }

    pub fn can(&self, role: Role) -> bool {
        self.role >= role
    }
}

/// The user vmdeck's own background work (snapshot schedules) is audited as. No account can
/// take this name (`auth::users::check_name`), so an entry by "system" is always vmdeck's.
pub const SYSTEM_USER: &str = "system";
