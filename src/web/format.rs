//! Formatting shared by pages: sizes, rates, times. Values are formatted in Rust (not in Tera)
//! so the templates stay simple and the list page stays fast.

use time::format_description::FormatItem;
use time::macros::format_description;
use time::OffsetDateTime;

use crate::domain::PowerState;

const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];

/// Bytes in binary units: `512 MiB`, `1.5 GiB`.
pub fn bytes(n: u64) -> String {
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 || v >= 100.0 || (v - v.round()).abs() < 0.05 {
        format!("{:.0} {}", v, UNITS[unit])
    } else {
        format!("{:.1} {}", v, UNITS[unit])
    }
}

/// A byte rate: `1.2 MiB/s`.
pub fn bytes_per_sec(v: f64) -> String {
    format!("{}/s", bytes(v.max(0.0) as u64))
}

/// A percentage with one decimal.
pub fn percent(v: f64) -> String {
    format!("{v:.1} %")
}

const ABSOLUTE: &[FormatItem<'static>] =
    format_description!("[year]-[month]-[day] [hour]:[minute]:[second] UTC");

/// A Unix-millisecond time as `2026-11-25 21:40:05 UTC`.
pub fn absolute(ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(ABSOLUTE).ok())
        .unwrap_or_else(|| "?".into())
}

/// How long ago `then_ms` was, seen from `now_ms`: `just now`, `42 s ago`, `3 min ago`...
pub fn ago(then_ms: i64, now_ms: i64) -> String {
    let s = (now_ms - then_ms).max(0) / 1000;
    match s {
        0 => "just now".into(),
        1..=59 => format!("{s} s ago"),
        60..=3599 => format!("{} min ago", s / 60),
        3600..=86_399 => format!("{} h ago", s / 3600),
        _ => format!("{} d ago", s / 86_400),
    }
}

/// A duration in words, for "since" columns: `5 min`, `3 h`, `2 d`.
pub fn duration_words(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    match s {
        0..=59 => format!("{s} s"),
        60..=3599 => format!("{} min", s / 60),
        3600..=86_399 => format!("{} h {} min", s / 3600, (s % 3600) / 60),
        _ => format!("{} d {} h", s / 86_400, (s % 86_400) / 3600),
    }
}

/// A VM's state in words, with what the normalized state hides that matters for the next
/// action: a saved VM (VirtualBox's `saved`, libvirt's managed save: shut off, reason `saved`)
/// restores its memory when started, so it reads `shut off (saved)` rather than `shut off`
/// with `saved` only in a tooltip.
pub fn state_words(state: PowerState, raw_state: &str, reason: &str) -> String {
    let saved = match state {
        PowerState::ShutOff => raw_state == "saved" || reason == "saved",
        PowerState::Crashed => raw_state == "aborted-saved",
        _ => false,
    };
    if saved {
        format!("{} (saved)", state.label())
    } else {
        state.label().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_like_people_write_them() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(512 * 1024 * 1024), "512 MiB");
        assert_eq!(bytes(1536 * 1024 * 1024), "1.5 GiB");
        assert_eq!(bytes(40 << 30), "40 GiB");
        assert_eq!(bytes_per_sec(2048.0), "2 KiB/s");
    }

    #[test]
    fn times_are_relative_and_absolute() {
        assert_eq!(ago(0, 500), "just now");
        assert_eq!(ago(0, 42_000), "42 s ago");
        assert_eq!(ago(0, 7_200_000), "2 h ago");
        assert_eq!(absolute(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(duration_words(90_061_000), "1 d 1 h");
    }

    #[test]
    fn a_saved_vm_says_so_beside_its_state() {
        assert_eq!(state_words(PowerState::ShutOff, "saved", "saved"), "shut off (saved)");
        assert_eq!(state_words(PowerState::ShutOff, "shutoff", "saved"), "shut off (saved)");
        assert_eq!(state_words(PowerState::Crashed, "aborted-saved", ""), "crashed (saved)");
        assert_eq!(state_words(PowerState::ShutOff, "poweroff", "powered off"), "shut off");
        assert_eq!(state_words(PowerState::Running, "running", "saved"), "running");
    }
}
