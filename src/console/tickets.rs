//! One-time console tickets: the console page gets one, the WebSocket upgrade spends it. A
//! ticket is bound to the session that asked for it, its user and one VM, and expires after
//! `console_ticket_secs`; it is gone after one attempt, whether that attempt was allowed or not.
//! Kept in memory (a restart voids them, which only makes a user reload the page), bounded in
//! count per session and in total. The clock is passed in, so expiry is unit tested.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::domain::VmKey;

/// Tickets one session may hold unspent (older ones are dropped first).
pub const PER_SESSION: usize = 8;
/// Tickets held unspent, all sessions together (expired ones are dropped first, then the oldest).
pub const TOTAL: usize = 4096;

/// What a ticket was issued for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticket {
    /// The session's stored id (`CurrentUser::session`).
    pub session: String,
    pub user_id: i64,
    pub vm: VmKey,
    pub issued: Instant,
    pub expires: Instant,
}

/// Why a presented ticket was refused, in words for the audit log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Missing,
    /// Never issued, already used, or dropped (restart, too many unspent).
    Unknown,
    Expired,
    /// Issued to another session (another user, or the same user's other browser).
    OtherSession,
    /// Issued for another VM.
    OtherVm,
}

impl Refusal {
    pub fn words(self) -> &'static str {
        match self {
            Refusal::Missing => "no console ticket presented",
            Refusal::Unknown => "unknown or already used console ticket",
            Refusal::Expired => "expired console ticket",
            Refusal::OtherSession => "console ticket issued to another session",
            Refusal::OtherVm => "console ticket issued for another VM",
        }
    }
}

/// The unspent tickets, by the SHA-256 of their secret.
#[derive(Default)]
pub struct Tickets {
    unspent: HashMap<String, Ticket>,
}

impl Tickets {
    /// Issues a ticket for `vm` to the session `session` of user `user_id`, valid for `ttl`
    /// from `now`; returns its secret.
    pub fn issue(
        &mut self,
        session: &str,
        user_id: i64,
        vm: &VmKey,
        ttl: Duration,
        now: Instant,
    ) -> String {
        self.unspent.retain(|_, t| t.expires > now);
        let mut own: Vec<(Instant, String)> = self
            .unspent
            .iter()
            .filter(|(_, t)| t.session == session)
            .map(|(k, t)| (t.issued, k.clone()))
            .collect();
        if own.len() >= PER_SESSION {
            own.sort();
            for (_, key) in own.iter().take(own.len() + 1 - PER_SESSION) {
                self.unspent.remove(key);
            }
        }
        if self.unspent.len() >= TOTAL {
            if let Some(oldest) =
                self.unspent.iter().min_by_key(|(_, t)| t.issued).map(|(k, _)| k.clone())
            {
                self.unspent.remove(&oldest);
            }
        }
        let secret = crate::auth::new_token();
        let ticket = Ticket {
            session: session.to_string(),
            user_id,
            vm: vm.clone(),
            issued: now,
            expires: now + ttl,
        };
        self.unspent.insert(crate::auth::hash_token(&secret), ticket);
        secret
    }

    /// Spends the ticket `secret` for `vm` on behalf of `session`: Ok with what it was issued
    /// for, or why not. The ticket is gone either way.
    pub fn redeem(
        &mut self,
        secret: Option<&str>,
        session: &str,
        vm: &VmKey,
        now: Instant,
    ) -> Result<Ticket, Refusal> {
        let secret = secret.filter(|s| !s.is_empty()).ok_or(Refusal::Missing)?;
        let ticket =
            self.unspent.remove(&crate::auth::hash_token(secret)).ok_or(Refusal::Unknown)?;
        if ticket.expires <= now {
            Err(Refusal::Expired)
        } else if ticket.session != session {
            Err(Refusal::OtherSession)
        } else if &ticket.vm != vm {
            Err(Refusal::OtherVm)
        } else {
            Ok(ticket)
        }
    }

    /// Unspent tickets (for tests and bounds).
    pub fn len(&self) -> usize {
        self.unspent.len()
    }

    pub fn is_empty(&self) -> bool {
        self.unspent.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{HostName, VmUuid};

    fn vm(n: u8) -> VmKey {
        let uuid = format!("00000000-0000-4000-8000-0000000000{n:02}");
        VmKey::new(HostName::parse("lab").unwrap(), VmUuid::parse(&uuid).unwrap())
    }

    const TTL: Duration = Duration::from_secs(30);

    #[test]
    fn a_ticket_works_once_for_its_session_and_vm() {
        let mut t = Tickets::default();
        let now = Instant::now();
        let s = t.issue("sess-a", 1, &vm(1), TTL, now);
        assert_eq!(t.redeem(Some(&s), "sess-a", &vm(1), now).unwrap().user_id, 1);
        assert_eq!(t.redeem(Some(&s), "sess-a", &vm(1), now), Err(Refusal::Unknown));
    }

    #[test]
    fn expired_foreign_session_other_vm_and_missing_tickets_are_refused_and_spent() {
        let mut t = Tickets::default();
        let now = Instant::now();
        let s = t.issue("sess-a", 1, &vm(1), TTL, now);
        assert_eq!(t.redeem(Some(&s), "sess-a", &vm(1), now + TTL), Err(Refusal::Expired));
        let s = t.issue("sess-a", 1, &vm(1), TTL, now);
        assert_eq!(t.redeem(Some(&s), "sess-b", &vm(1), now), Err(Refusal::OtherSession));
        assert_eq!(t.redeem(Some(&s), "sess-a", &vm(1), now), Err(Refusal::Unknown), "spent");
        let s = t.issue("sess-a", 1, &vm(1), TTL, now);
        assert_eq!(t.redeem(Some(&s), "sess-a", &vm(2), now), Err(Refusal::OtherVm));
        assert_eq!(t.redeem(None, "sess-a", &vm(1), now), Err(Refusal::Missing));
        assert_eq!(t.redeem(Some(""), "sess-a", &vm(1), now), Err(Refusal::Missing));
        assert_eq!(t.redeem(Some("made-up"), "sess-a", &vm(1), now), Err(Refusal::Unknown));
        assert!(t.is_empty());
    }

    #[test]
    fn unspent_tickets_are_bounded_per_session_oldest_dropped_first() {
        let mut t = Tickets::default();
        let start = Instant::now();
        let secrets: Vec<String> = (0..PER_SESSION as u64 + 3)
            .map(|i| t.issue("sess-a", 1, &vm(1), TTL, start + Duration::from_millis(i)))
            .collect();
        assert_eq!(t.len(), PER_SESSION);
        let now = start + Duration::from_secs(1);
        assert_eq!(t.redeem(Some(&secrets[0]), "sess-a", &vm(1), now), Err(Refusal::Unknown));
        assert!(t.redeem(secrets.last().map(String::as_str), "sess-a", &vm(1), now).is_ok());
        // Expired tickets are dropped when the next one is issued.
        t.issue("sess-b", 2, &vm(1), TTL, start + TTL * 2);
        assert_eq!(t.len(), 1);
    }
}
