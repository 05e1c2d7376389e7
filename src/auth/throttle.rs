//! Login throttling: after a few failures, further attempts for the same account or from the
//! same client address are refused for a delay that doubles with each failure (capped), whether
//! or not the account exists.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failures allowed before delays start.
const FREE_FAILURES: u32 = 3;
/// Longest delay.
const MAX_DELAY: Duration = Duration::from_secs(15 * 60);
/// Entries idle this long are forgotten.
const FORGET_AFTER: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug, Clone, Copy)]
struct Record {
    failures: u32,
    blocked_until: Option<Instant>,
    last: Instant,
}

#[derive(Debug, Hash, PartialEq, Eq, Clone)]
enum Key {
    Account(String),
    Addr(IpAddr),
}

/// The throttle state, shared by all login requests of this process.
#[derive(Default)]
pub struct Throttle {
    records: Mutex<HashMap<Key, Record>>,
}

impl Throttle {
    /// None if an attempt is allowed now, else how long to wait.
    pub fn check(&self, account: &str, addr: Option<IpAddr>) -> Option<Duration> {
        let now = Instant::now();
        let records = self.records.lock().ok()?;
        keys(account, addr)
            .iter()
            .filter_map(|k| records.get(k)?.blocked_until)
            .filter(|until| *until > now)
            .map(|until| until - now)
            .max()
    }

    /// Records a failed attempt and returns the delay it caused, if any.
    pub fn failure(&self, account: &str, addr: Option<IpAddr>) {
        let now = Instant::now();
        let Ok(mut records) = self.records.lock() else { return };
        if records.len() > 100_000 {
            records.retain(|_, r| now - r.last < FORGET_AFTER);
        }
        for key in keys(account, addr) {
            let r = records.entry(key).or_insert(Record {
                failures: 0,
                blocked_until: None,
                last: now,
            });
            r.failures += 1;
            r.last = now;
            if r.failures > FREE_FAILURES {
                let exp = (r.failures - FREE_FAILURES - 1).min(16);
                r.blocked_until = Some(now + Duration::from_secs(1u64 << exp).min(MAX_DELAY));
            }
        }
    }

    /// A successful login clears the account's record (the address keeps its history).
    pub fn success(&self, account: &str) {
        if let Ok(mut records) = self.records.lock() {
            records.remove(&Key::Account(account.to_lowercase()));
        }
    }
}

fn keys(account: &str, addr: Option<IpAddr>) -> Vec<Key> {
    let mut k = vec![Key::Account(account.to_lowercase())];
    if let Some(a) = addr {
        k.push(Key::Addr(a));
    }
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_start_after_a_few_failures_and_grow() {
        let t = Throttle::default();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..FREE_FAILURES {
            assert!(t.check("alice", Some(ip)).is_none());
            t.failure("alice", Some(ip));
        }
        assert!(t.check("alice", Some(ip)).is_none(), "still free");
        t.failure("alice", Some(ip));
        let first = t.check("ALICE", None).expect("blocked, case-insensitively");
        t.failure("alice", Some(ip));
        let second = t.check("alice", None).unwrap();
        assert!(second > first, "the delay grows: {first:?} then {second:?}");
        assert!(t.check("bob", Some(ip)).is_some(), "the address is throttled for every account");
        assert!(t.check("bob", None).is_none());
        t.success("alice");
        assert!(t.check("alice", None).is_none());
    }
}
