//! The pure part of schedules: when a schedule's slots fall (UTC), which slot is due, what a
//! scheduled snapshot is called, which VM names a pattern matches, and which of a schedule's
//! snapshots retention keeps. No clock and no database here: every function takes `now`.

use serde::Serialize;

const MINUTE: i64 = 60_000;
const HOUR: i64 = 60 * MINUTE;
const DAY: i64 = 24 * HOUR;
const WEEK: i64 = 7 * DAY;
/// 1970-01-01 (day 0) was a Thursday, so the first Monday is day 4.
const FIRST_MONDAY: i64 = 4 * DAY;

/// The days of the week, Monday first, as stored (`weekday` 0–6) and shown.
pub const WEEKDAYS: [&str; 7] =
    ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"];

/// When a schedule runs, in UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Frequency {
    /// Every hour at minute `minute`.
    Hourly { minute: u8 },
    /// Every day at `hour`:`minute`.
    Daily { hour: u8, minute: u8 },
    /// Every week on `weekday` (0 = Monday) at `hour`:`minute`.
    Weekly { weekday: u8, hour: u8, minute: u8 },
}

impl Frequency {
    /// The word used in snapshot names and stored (`hourly`, `daily`, `weekly`).
    pub fn word(self) -> &'static str {
        match self {
            Frequency::Hourly { .. } => "hourly",
            Frequency::Daily { .. } => "daily",
            Frequency::Weekly { .. } => "weekly",
        }
    }

    /// In words: "hourly at :15", "daily at 03:00 UTC", "weekly on Sunday at 02:30 UTC".
    pub fn describe(self) -> String {
        match self {
            Frequency::Hourly { minute } => format!("hourly at :{minute:02}"),
            Frequency::Daily { hour, minute } => format!("daily at {hour:02}:{minute:02} UTC"),
            Frequency::Weekly { weekday, hour, minute } => format!(
                "weekly on {} at {hour:02}:{minute:02} UTC",
                WEEKDAYS.get(weekday as usize).unwrap_or(&"?")
            ),
        }
    }

    /// The period between slots and the offset of a slot within it (ms).
    fn period_and_offset(self) -> (i64, i64) {
        let hm = |h: u8, m: u8| h as i64 * HOUR + m as i64 * MINUTE;
        match self {
            Frequency::Hourly { minute } => (HOUR, minute as i64 * MINUTE),
            Frequency::Daily { hour, minute } => (DAY, hm(hour, minute)),
            Frequency::Weekly { weekday, hour, minute } => {
                (WEEK, FIRST_MONDAY + weekday as i64 * DAY + hm(hour, minute))
            }
        }
    }

    /// The latest slot at or before `now` (ms).
    pub fn latest_slot(self, now: i64) -> i64 {
        let (period, offset) = self.period_and_offset();
        (now - offset).div_euclid(period) * period + offset
    }

    /// The first slot after `now` (ms).
    pub fn next_slot(self, now: i64) -> i64 {
        let (period, _) = self.period_and_offset();
        self.latest_slot(now) + period
    }
}

/// The slot to run now, if any: the latest slot at or before `now`, when it is after the last
/// slot run (or, for a schedule never run, not before its creation). However many slots were
/// missed (vmdeck stopped), only the latest is due: a missed run runs once.
pub fn due_slot(freq: Frequency, now: i64, last_slot: Option<i64>, created_at: i64) -> Option<i64> {
    let slot = freq.latest_slot(now);
    let due = match last_slot {
        Some(last) => slot > last,
        None => slot >= created_at,
    };
    due.then_some(slot)
}

/// `2026-12-01T03:00Z` for a slot (ms).
pub fn slot_label(slot: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(slot as i128 * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}Z",
        t.year(),
        t.month() as u8,
        t.day(),
        t.hour(),
        t.minute()
    )
}

/// The name a schedule gives the snapshot of `slot`: `vmdeck-daily-2026-12-01T03:00Z`.
pub fn snapshot_name(freq: Frequency, slot: i64) -> String {
    format!("vmdeck-{}-{}", freq.word(), slot_label(slot))
}

/// The slot a scheduled snapshot's name records (`vmdeck-<frequency>-<slot>`), if it is one.
pub fn slot_of_name(name: &str) -> Option<i64> {
    let rest = name.strip_prefix("vmdeck-")?;
    let (_, label) = rest.split_once('-')?;
    let label = label.strip_suffix('Z')?;
    if label.len() != 16 {
        return None;
    }
    crate::domain::time::parse_time(label, false)
}

pub use crate::domain::glob_matches;

/// How many of its snapshots a schedule keeps; at least one rule is set, each at least 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Retention {
    /// Keep the newest N.
    pub keep_last: Option<u32>,
    /// Keep the newest of each of the last D days (UTC; today is the first).
    pub keep_daily: Option<u32>,
}

impl Retention {
    /// In words: "keep the last 3 and one a day for 7 days".
    pub fn describe(self) -> String {
        let last = self.keep_last.map(|n| format!("the last {n}"));
        let daily = self.keep_daily.map(|d| {
            if d == 1 {
                "one for today".to_string()
            } else {
                format!("one a day for {d} days")
            }
        });
        match (last, daily) {
            (Some(l), Some(d)) => format!("keep {l} and {d}"),
            (Some(l), None) => format!("keep {l}"),
            (None, Some(d)) => format!("keep {d}"),
            (None, None) => "keep everything".into(),
        }
    }

    /// Of `snaps` (an id and the slot each was taken for), the ids retention lets go at `now`,
    /// oldest first. Kept: the newest `keep_last`, and the newest of each UTC day among the
    /// last `keep_daily` days (today included). A snapshot either rule keeps is kept.
    pub fn to_prune<T: Clone>(self, snaps: &[(T, i64)], now: i64) -> Vec<T> {
        let mut order: Vec<usize> = (0..snaps.len()).collect();
        // Newest first; equal times keep their given order.
        order.sort_by_key(|&i| std::cmp::Reverse(snaps[i].1));
        let mut keep = vec![false; snaps.len()];
        if let Some(n) = self.keep_last {
            for &i in order.iter().take(n as usize) {
                keep[i] = true;
            }
        }
        if let Some(d) = self.keep_daily {
            let today = now.div_euclid(DAY);
            let mut seen_days = std::collections::HashSet::new();
            for &i in &order {
                let day = snaps[i].1.div_euclid(DAY);
                if day <= today && day > today - d as i64 && seen_days.insert(day) {
                    keep[i] = true;
                }
            }
        }
        let mut out: Vec<usize> = order.into_iter().filter(|&i| !keep[i]).collect();
        out.reverse();
        out.into_iter().map(|i| snaps[i].0.clone()).collect()
    }
}

/// A per-VM result of a run as [`streaks`] reads it: (run id, host, uuid, VM name, outcome,
/// error).
pub type RunResultRow = (i64, String, String, String, String, Option<String>);

/// A VM failing in a row: (VM name, host, runs, newest error).
pub type Streak = (String, String, i64, String);

/// Failure streaks from a schedule's newest runs' per-VM results, given newest run first as
/// (run id, host, uuid, VM name, outcome, error): for each VM whose newest result failed, how
/// many of its newest results in a row failed, and the newest error, as (VM name, host, runs,
/// error), in the order the VMs first appear.
pub fn streaks(rows: &[RunResultRow]) -> Vec<Streak> {
    let mut order: Vec<(&str, &str)> = Vec::new();
    let mut state: std::collections::HashMap<(&str, &str), (String, i64, bool, String)> =
        std::collections::HashMap::new();
    for (_, host, uuid, name, outcome, error) in rows {
        let key = (host.as_str(), uuid.as_str());
        let failed = outcome == "failed";
        match state.get_mut(&key) {
            None => {
                order.push(key);
                let error = error.clone().unwrap_or_default();
                state.insert(key, (name.clone(), failed as i64, failed, error));
            }
            Some(s) => {
                // Still in a streak: count it; the first success ends it.
                if s.2 && failed {
                    s.1 += 1;
                } else {
                    s.2 = false;
                }
            }
        }
    }
    order
        .into_iter()
        .filter_map(|key| {
            let (name, count, _, error) = state.remove(&key)?;
            (count > 0).then(|| (name, key.0.to_string(), count, error))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> i64 {
        crate::domain::time::parse_time(s, false).expect(s)
    }

    #[test]
    fn hourly_slots_fall_at_their_minute_and_the_edge_belongs_to_the_new_slot() {
        let f = Frequency::Hourly { minute: 15 };
        assert_eq!(f.latest_slot(t("2026-12-01T03:15")), t("2026-12-01T03:15"));
        assert_eq!(f.latest_slot(t("2026-12-01T03:14:59")), t("2026-12-01T02:15"));
        assert_eq!(f.latest_slot(t("2026-12-01T00:05")), t("2026-11-30T23:15"));
        assert_eq!(f.next_slot(t("2026-12-01T03:15")), t("2026-12-01T04:15"));
    }

    #[test]
    fn daily_slots_cross_midnight_month_and_year_ends() {
        let f = Frequency::Daily { hour: 3, minute: 0 };
        assert_eq!(f.latest_slot(t("2026-12-01T03:00")), t("2026-12-01T03:00"));
        assert_eq!(f.latest_slot(t("2026-12-01T02:59:59")), t("2026-11-30T03:00"));
        assert_eq!(f.latest_slot(t("2027-01-01T01:00")), t("2026-12-31T03:00"));
        assert_eq!(f.next_slot(t("2026-12-31T23:00")), t("2027-01-01T03:00"));
    }

    #[test]
    fn weekly_slots_fall_on_their_weekday() {
        // 2026-12-06 is a Sunday.
        let f = Frequency::Weekly { weekday: 6, hour: 2, minute: 30 };
        assert_eq!(f.latest_slot(t("2026-12-06T02:30")), t("2026-12-06T02:30"));
        assert_eq!(f.latest_slot(t("2026-12-06T02:29")), t("2026-11-29T02:30"));
        assert_eq!(f.latest_slot(t("2026-12-10T12:00")), t("2026-12-06T02:30"));
        assert_eq!(f.next_slot(t("2026-12-06T02:30")), t("2026-12-13T02:30"));
        // Monday: 2026-11-30.
        let m = Frequency::Weekly { weekday: 0, hour: 0, minute: 0 };
        assert_eq!(m.latest_slot(t("2026-12-01T00:00")), t("2026-11-30T00:00"));
    }

    #[test]
    fn a_slot_runs_once_and_missed_slots_collapse_into_the_latest() {
        let f = Frequency::Daily { hour: 3, minute: 0 };
        let created = t("2026-11-20T12:00");
        // Before the first slot after creation: nothing (the slot of the creation day has passed).
        assert_eq!(due_slot(f, t("2026-11-21T02:00"), None, created), None);
        assert_eq!(due_slot(f, t("2026-11-21T03:00"), None, created), Some(t("2026-11-21T03:00")));
        // Run: the same slot is not due again.
        let last = Some(t("2026-11-21T03:00"));
        assert_eq!(due_slot(f, t("2026-11-21T09:00"), last, created), None);
        // Down for ten days: one run, for the latest slot.
        assert_eq!(due_slot(f, t("2026-12-01T04:00"), last, created), Some(t("2026-12-01T03:00")));
        // A last slot in the future (clock went back): nothing.
        assert_eq!(due_slot(f, t("2026-11-21T09:00"), Some(t("2026-11-25T03:00")), created), None);
    }

    #[test]
    fn names_carry_frequency_and_slot_and_read_back() {
        let slot = t("2026-12-01T03:00");
        let name = snapshot_name(Frequency::Daily { hour: 3, minute: 0 }, slot);
        assert_eq!(name, "vmdeck-daily-2026-12-01T03:00Z");
        assert_eq!(slot_of_name(&name), Some(slot));
        assert_eq!(slot_of_name("vmdeck-hourly-2026-12-01T03:15Z"), Some(t("2026-12-01T03:15")));
        assert_eq!(slot_of_name("before-upgrade"), None);
        assert_eq!(slot_of_name("vmdeck-daily-yesterday"), None);
    }

    #[test]
    fn globs_match_whole_names_case_insensitively() {
        assert!(glob_matches("db-*", "db-01"));
        assert!(glob_matches("DB-??", "db-01"));
        assert!(glob_matches("*web*", "frontend-web-2"));
        assert!(glob_matches("*", ""));
        assert!(!glob_matches("db-*", "mydb-01"));
        assert!(!glob_matches("db-?", "db-01"));
        assert!(glob_matches("a*b*c", "aXXbYYc"));
        assert!(!glob_matches("a*b*c", "aXXbYY"));
    }

    #[test]
    fn streaks_count_the_newest_failures_in_a_row_per_vm() {
        let row = |run: i64, vm: &str, outcome: &str| {
            let error = (outcome == "failed").then(|| format!("run {run}: disk full"));
            (run, "lab".to_string(), vm.to_string(), vm.to_string(), outcome.to_string(), error)
        };
        let rows = vec![
            row(5, "db-01", "failed"),
            row(5, "web", "taken"),
            row(5, "cache", "failed"),
            row(4, "db-01", "failed"),
            row(4, "web", "failed"),
            row(4, "cache", "taken"),
            row(3, "db-01", "failed"),
            row(3, "cache", "failed"),
            row(2, "db-01", "taken"),
            row(1, "db-01", "failed"),
        ];
        assert_eq!(
            streaks(&rows),
            vec![
                ("db-01".into(), "lab".into(), 3, "run 5: disk full".into()),
                ("cache".into(), "lab".into(), 1, "run 5: disk full".into()),
            ]
        );
    }

    fn days(n: i64) -> Vec<(i64, i64)> {
        // One snapshot a day at 03:00 for n days ending 2026-12-10, id = day number.
        (1..=n).map(|d| (d, t("2026-11-30T03:00") + d * DAY)).collect()
    }

    #[test]
    fn keep_last_keeps_the_newest_n() {
        let r = Retention { keep_last: Some(3), keep_daily: None };
        assert_eq!(r.to_prune(&days(10), t("2026-12-10T04:00")), vec![1, 2, 3, 4, 5, 6, 7]);
        assert!(r.to_prune(&days(3), t("2026-12-10T04:00")).is_empty());
    }

    #[test]
    fn keep_daily_keeps_one_per_day_for_d_days() {
        let now = t("2026-12-10T04:00");
        let mut snaps = days(10);
        // A second one on day 10 (a manual re-run): only the newest of the day is kept.
        snaps.push((11, t("2026-12-10T03:30")));
        let r = Retention { keep_last: None, keep_daily: Some(2) };
        assert_eq!(r.to_prune(&snaps, now), vec![1, 2, 3, 4, 5, 6, 7, 8, 10]);
    }

    #[test]
    fn both_rules_keep_the_union() {
        let now = t("2026-12-10T04:00");
        // Hourly snapshots over the last two days plus a daily one for ten days.
        let mut snaps = days(10);
        for h in 0..4 {
            snaps.push((100 + h, t("2026-12-10T00:00") + h * HOUR));
        }
        let r = Retention { keep_last: Some(2), keep_daily: Some(5) };
        let pruned = r.to_prune(&snaps, now);
        // Last 2: day 10 at 03:00 and 03:00 hourly (100+3); daily for 5 days: days 6..10
        // (day 10's newest is the 03:00 one, the hourly at 03:00 ties and comes later).
        for kept in [10, 9, 8, 7, 6, 103] {
            assert!(!pruned.contains(&kept), "{kept} should be kept: {pruned:?}");
        }
        for gone in [1, 2, 3, 4, 5, 100, 101, 102] {
            assert!(pruned.contains(&gone), "{gone} should be pruned: {pruned:?}");
        }
    }

    #[test]
    fn a_daily_schedule_keeping_three_over_ten_days_holds_exactly_the_last_three() {
        let f = Frequency::Daily { hour: 3, minute: 0 };
        let r = Retention { keep_last: Some(3), keep_daily: None };
        let mut held: Vec<(i64, i64)> = Vec::new();
        let mut last = None;
        let start = t("2026-12-01T00:00");
        for hour in 0..(10 * 24) {
            let now = start + hour * HOUR + 5 * MINUTE;
            if let Some(slot) = due_slot(f, now, last, start) {
                last = Some(slot);
                held.push((slot, slot));
                let gone = r.to_prune(&held, now);
                held.retain(|(id, _)| !gone.contains(id));
            }
        }
        let slots: Vec<i64> = held.iter().map(|(s, _)| *s).collect();
        assert_eq!(
            slots,
            vec![t("2026-12-08T03:00"), t("2026-12-09T03:00"), t("2026-12-10T03:00")]
        );
    }
}
