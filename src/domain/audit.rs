//! The audit log's vocabulary: what kind of event an entry records, its outcome, and who did it.

use serde::Serialize;

/// Who did something, from where.
#[derive(Debug, Clone, Default)]
pub struct Actor {
    pub user: Option<String>,
    pub addr: Option<String>,
}

/// What an audit entry records. Stored as its snake_case name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, sqlx::Type)]
#[serde(rename_all = "snake_case")]
#[sqlx(rename_all = "snake_case")]
pub enum AuditKind {
    Power,
    /// A snapshot request (take, revert, delete): the same lifecycle as a power request.
    Snapshot,
    /// A browser console opened, closed or refused: each entry settled when written.
    Console,
    /// An alert acknowledged, or an alert rule, notification target or silence changed.
    Alert,
    Login,
    LoginFailed,
    Logout,
    CsrfRefused,
    AccessDenied,
    UserAdded,
    UserRemoved,
    RoleChanged,
    PasswordChanged,
}

impl AuditKind {
    pub const ALL: [AuditKind; 13] = [
        AuditKind::Power,
        AuditKind::Snapshot,
        AuditKind::Console,
        AuditKind::Alert,
        AuditKind::Login,
        AuditKind::LoginFailed,
        AuditKind::Logout,
        AuditKind::CsrfRefused,
        AuditKind::AccessDenied,
        AuditKind::UserAdded,
        AuditKind::UserRemoved,
        AuditKind::RoleChanged,
        AuditKind::PasswordChanged,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AuditKind::Power => "power",
            AuditKind::Snapshot => "snapshot",
            AuditKind::Console => "console",
            AuditKind::Alert => "alert",
            AuditKind::Login => "login",
            AuditKind::LoginFailed => "login_failed",
            AuditKind::Logout => "logout",
            AuditKind::CsrfRefused => "csrf_refused",
            AuditKind::AccessDenied => "access_denied",
            AuditKind::UserAdded => "user_added",
            AuditKind::UserRemoved => "user_removed",
            AuditKind::RoleChanged => "role_changed",
            AuditKind::PasswordChanged => "password_changed",
        }
    }

    pub fn parse(s: &str) -> Option<AuditKind> {
        AuditKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// An audit entry's outcome (`status` column). Power requests move from requested through
/// sent and accepted to failed, confirmed or unconfirmed, or are superseded by a forced action
/// (power off, reset) asked for while they were pending; other events are settled at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, sqlx::Type)]
#[serde(rename_all = "snake_case")]
#[sqlx(rename_all = "snake_case")]
pub enum AuditOutcome {
    Requested,
    Sent,
    Accepted,
    Failed,
    Confirmed,
    Unconfirmed,
    Ok,
    Refused,
    /// A graceful power request overruled, while pending, by a forced one (migrations/0007).
    Superseded,
}

impl AuditOutcome {
    pub const ALL: [AuditOutcome; 9] = [
        AuditOutcome::Requested,
        AuditOutcome::Sent,
        AuditOutcome::Accepted,
        AuditOutcome::Failed,
        AuditOutcome::Confirmed,
        AuditOutcome::Unconfirmed,
        AuditOutcome::Ok,
        AuditOutcome::Refused,
        AuditOutcome::Superseded,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AuditOutcome::Requested => "requested",
            AuditOutcome::Sent => "sent",
            AuditOutcome::Accepted => "accepted",
            AuditOutcome::Failed => "failed",
            AuditOutcome::Confirmed => "confirmed",
            AuditOutcome::Unconfirmed => "unconfirmed",
            AuditOutcome::Ok => "ok",
            AuditOutcome::Refused => "refused",
            AuditOutcome::Superseded => "superseded",
        }
    }

    pub fn parse(s: &str) -> Option<AuditOutcome> {
        AuditOutcome::ALL.into_iter().find(|o| o.as_str() == s)
    }

    /// Still in flight: requested, sent or accepted.
    pub fn is_pending(self) -> bool {
        matches!(self, AuditOutcome::Requested | AuditOutcome::Sent | AuditOutcome::Accepted)
    }
}
