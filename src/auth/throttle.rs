//! Login throttling: after a few failures, further attempts are refused for a delay that
//! doubles with each failure (capped), whether or not the account exists.
//!
//! Failures are counted per (account, client) and per client, never per account alone: someone
//! failing against `admin` from one address slows down that address, not the admin logging in
//! from another one. IPv6 clients are grouped by their /64 (one host usually holds a whole /64).
//! The table is bounded: past [`MAX_RECORDS`] the oldest record is forgotten (a queue, no scan
//! under the lock). If the lock is ever poisoned, every attempt is refused (fail closed).

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failures allowed before delays start.
const FREE_FAILURES: u32 = 3;
/// Longest delay.
const MAX_DELAY: Duration = Duration::from_secs(15 * 60);
/// Most records kept; the oldest goes first.
pub const MAX_RECORDS: usize = 100_000;

#[derive(Debug, Clone, Copy)]
struct Record {
    failures: u32,
    blocked_until: Option<Instant>,
}

/// Who is failing: an IPv4 address, or an IPv6 /64 (None when the address is unknown).
#[derive(Debug, Hash, PartialEq, Eq, Clone, Copy)]
struct Client(Option<IpAddr>);

impl Client {
    fn of(addr: Option<IpAddr>) -> Client {
        Client(addr.map(|a| match a {
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => {
                    let mut s = v6.segments();
                    s[4..].fill(0);
                    IpAddr::V6(s.into())
                }
            },
            v4 => v4,
        }))
    }
}

#[derive(Debug, Hash, PartialEq, Eq, Clone)]
enum Key {
    AccountFrom(String, Client),
    From(Client),
}

#[derive(Default)]
struct Table {
    records: HashMap<Key, Record>,
    /// Keys in the order they were first recorded, for eviction without a scan.
    order: VecDeque<Key>,
}

/// The throttle state, shared by all login requests of this process.
#[derive(Default)]
pub struct Throttle {
    table: Mutex<Table>,
}

fn keys(account: &str, addr: Option<IpAddr>) -> [Key; 2] {
    let client = Client::of(addr);
    [Key::AccountFrom(account.to_lowercase(), client), Key::From(client)]
}

impl Throttle {
    /// None if an attempt is allowed now, else how long to wait.
    pub fn check(&self, account: &str, addr: Option<IpAddr>) -> Option<Duration> {
        let now = Instant::now();
        let Ok(table) = self.table.lock() else { return Some(MAX_DELAY) };
        keys(account, addr)
            .iter()
            .filter_map(|k| table.records.get(k)?.blocked_until)
            .filter(|until| *until > now)
            .map(|until| until - now)
            .max()
    }

    /// Records a failed attempt.
    pub fn failure(&self, account: &str, addr: Option<IpAddr>) {
        let now = Instant::now();
        let Ok(mut table) = self.table.lock() else { return };
        for key in keys(account, addr) {
            if !table.records.contains_key(&key) {
                if table.order.len() >= MAX_RECORDS {
                    if let Some(oldest) = table.order.pop_front() {
                        table.records.remove(&oldest);
                    }
                }
                table.order.push_back(key.clone());
            }
            let r = table.records.entry(key).or_insert(Record { failures: 0, blocked_until: None });
            r.failures += 1;
            if r.failures > FREE_FAILURES {
                let exp = (r.failures - FREE_FAILURES - 1).min(16);
                r.blocked_until = Some(now + Duration::from_secs(1u64 << exp).min(MAX_DELAY));
            }
        }
    }

    /// A successful login clears the account's record from that client (the client keeps its
    /// own history).
    pub fn success(&self, account: &str, addr: Option<IpAddr>) {
        if let Ok(mut table) = self.table.lock() {
            let [account_key, _] = keys(account, addr);
            // Its place in `order` goes when it reaches the front (removing a missing key then
            // is harmless); the queue stays bounded by MAX_RECORDS either way.
            table.records.remove(&account_key);
        }
    }

    /// How many records are kept.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.table.lock().map(|t| t.records.len()).unwrap_or(0)
    }
}

/// How long one client's refused attempts (foreign origin, throttled) share one audit entry.
pub const REFUSAL_WINDOW: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy)]
struct Seen {
    since: Instant,
    /// Refused attempts not recorded since `since`.
    unrecorded: u32,
}

/// Which refused login attempts reach the audit log: at most one per client per window, so an
/// anonymous loop of refused requests cannot fill the disk or bury the real entries. The entry
/// after a window says how many were left out. Bounded like [`Throttle`].
pub struct RefusalLog {
    window: Duration,
    table: Mutex<(HashMap<Client, Seen>, VecDeque<Client>)>,
}

impl Default for RefusalLog {
    fn default() -> Self {
        RefusalLog::new(REFUSAL_WINDOW)
    }
}

impl RefusalLog {
    pub fn new(window: Duration) -> Self {
        RefusalLog { window, table: Mutex::default() }
    }

    /// Some(n) when this refused attempt is to be recorded, `n` being how many from the same
    /// client were not recorded before it; None when it is only counted.
    pub fn admit(&self, addr: Option<IpAddr>) -> Option<u32> {
        let now = Instant::now();
        // A poisoned lock records every attempt: visibility over volume in a broken state.
        let Ok(mut table) = self.table.lock() else { return Some(0) };
        let (seen, order) = &mut *table;
        let client = Client::of(addr);
        match seen.get_mut(&client) {
            Some(s) if now.duration_since(s.since) < self.window => {
                s.unrecorded = s.unrecorded.saturating_add(1);
                None
            }
            Some(s) => {
                let n = s.unrecorded;
                *s = Seen { since: now, unrecorded: 0 };
                Some(n)
            }
            None => {
                if order.len() >= MAX_RECORDS {
                    if let Some(oldest) = order.pop_front() {
                        seen.remove(&oldest);
                    }
                }
                order.push_back(client);
                seen.insert(client, Seen { since: now, unrecorded: 0 });
                Some(0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn delays_start_after_a_few_failures_and_grow() {
        let t = Throttle::default();
        let a = ip("192.0.2.1");
        for _ in 0..FREE_FAILURES {
            assert!(t.check("alice", a).is_none());
            t.failure("alice", a);
        }
        assert!(t.check("alice", a).is_none(), "still free");
        t.failure("alice", a);
        let first = t.check("ALICE", a).expect("blocked, case-insensitively");
        t.failure("alice", a);
        let second = t.check("alice", a).unwrap();
        assert!(second > first, "the delay grows: {first:?} then {second:?}");
        assert!(t.check("bob", a).is_some(), "the address is throttled for every account");
        t.success("alice", a);
        assert!(t.check("alice", a).is_some(), "the address keeps its own history");
    }

    #[test]
    fn failures_from_one_address_do_not_lock_the_account_out_elsewhere() {
        let t = Throttle::default();
        for _ in 0..10 {
            t.failure("admin", ip("198.51.100.7"));
        }
        assert!(t.check("admin", ip("198.51.100.7")).is_some());
        assert!(t.check("admin", ip("203.0.113.5")).is_none(), "another address gets in");
        assert!(t.check("admin", ip("2001:db8::1")).is_none());
    }

    #[test]
    fn ipv6_clients_are_one_client_per_64() {
        let t = Throttle::default();
        for i in 0..10 {
            t.failure("admin", ip(&format!("2001:db8:1:2::{i:x}")));
        }
        assert!(t.check("admin", ip("2001:db8:1:2:ffff::1")).is_some(), "same /64");
        assert!(t.check("admin", ip("2001:db8:1:3::1")).is_none(), "another /64");
        assert!(t.check("root", ip("::ffff:192.0.2.9")).is_none());
        for _ in 0..10 {
            t.failure("root", ip("::ffff:192.0.2.9"));
        }
        assert!(t.check("root", ip("192.0.2.9")).is_some(), "IPv4-mapped is the IPv4 client");
    }

    #[test]
    fn the_table_is_bounded_and_forgets_the_oldest_first() {
        let t = Throttle::default();
        for i in 0..(MAX_RECORDS as u32 / 2 + 10) {
            t.failure("x", Some(IpAddr::V4(i.into())));
        }
        assert_eq!(t.len(), MAX_RECORDS, "two records per failing client, capped");
        // The newest client is still known.
        let newest = Some(IpAddr::V4((MAX_RECORDS as u32 / 2 + 9).into()));
        for _ in 0..FREE_FAILURES {
            t.failure("x", newest);
        }
        assert!(t.check("x", newest).is_some());
    }

    #[test]
    fn a_poisoned_lock_refuses_every_attempt() {
        let t = std::sync::Arc::new(Throttle::default());
        let t2 = t.clone();
        let _ = std::thread::spawn(move || {
            let _guard = t2.table.lock().unwrap();
            panic!("poison the lock");
        })
        .join();
        assert_eq!(t.check("anyone", ip("192.0.2.1")), Some(MAX_DELAY), "fail closed");
    }

    #[test]
    fn refused_attempts_are_recorded_once_per_client_per_window_with_a_count() {
        let log = RefusalLog::new(Duration::from_millis(200));
        let a = ip("198.51.100.7");
        assert_eq!(log.admit(a), Some(0), "the first is recorded");
        for _ in 0..50 {
            assert_eq!(log.admit(a), None, "the rest of the window is only counted");
        }
        assert_eq!(log.admit(ip("203.0.113.5")), Some(0), "another client has its own window");
        assert_eq!(log.admit(ip("2001:db8::1")), Some(0));
        assert_eq!(log.admit(ip("2001:db8::2")), None, "same /64");
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(log.admit(a), Some(50), "the next window's entry says how many were left out");
    }
}
