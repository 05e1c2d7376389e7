//! The vocabulary every layer shares: host names, VM identifiers, power states and actions,
//! snapshot actions, where an IP address came from, audit kinds and outcomes, roles, times and periods, and history resolutions.
//!
//! Each value crosses the database (`sqlx::Type`), forms and query strings (`FromFormField`,
//! `FromParam`) and templates (`Serialize`, `label()`) through its type, once: nothing below
//! the web layer parses a state or an action from a string by hand.

mod audit;
mod power;
mod request;
mod snapshot;
mod text;
pub mod time;
mod user;
mod vm;

pub use audit::{Actor, AuditKind, AuditOutcome};
pub use power::{Offer, PowerAction, PowerState, Why};
pub use request::RequestAction;
pub use snapshot::{AfterRevert, SnapshotAction};
pub use text::{glob_matches, quoted};
pub use time::Resolution;
pub use user::{CurrentUser, Role, SYSTEM_USER};
pub use vm::{AddrSource, HostName, VmKey, VmUuid};
