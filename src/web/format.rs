//! Formatting shared by pages: sizes, rates, times. Values are formatted in Rust (not in Tera)
//! so the templates stay simple and the list page stays fast.

use rocket_dyn_templates::tera;
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

/// `YYYY-MM-DDTHH:MM` (UTC): what a `datetime-local` input holds and the forms send.
pub fn input_time(ms: i64) -> String {
    let a = absolute(ms);
    format!("{}T{}", a.get(0..10).unwrap_or(""), a.get(11..16).unwrap_or(""))
}

/// A period offered as a link beside a custom-range form: its label and its `from` and `to`
/// (`input_time`s; an empty `to` means now).
#[derive(serde::Serialize, Debug, Clone, PartialEq, Eq)]
pub struct Preset {
    pub label: &'static str,
    pub from: String,
    pub to: String,
}

/// The presets seen at `now`: today (since 00:00 UTC), the last 7 days, and last month (the
/// calendar month before this one, UTC).
pub fn presets(now: i64) -> Vec<Preset> {
    const DAY: i64 = 86_400_000;
    let today = now - now.rem_euclid(DAY);
    let month_start = |ms: i64| {
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
            .ok()
            .and_then(|t| t.replace_day(1).ok())
            .map(|t| t.date().midnight().assume_utc().unix_timestamp() * 1000)
            .unwrap_or(ms)
    };
    let this_month = month_start(now);
    let last_month = month_start(this_month - 1);
    vec![
        Preset { label: "Today", from: input_time(today), to: String::new() },
        Preset { label: "Last 7 days", from: input_time(now - 7 * DAY), to: String::new() },
        Preset { label: "Last month", from: input_time(last_month), to: input_time(this_month) },
    ]
}

/// The Tera filter `utc_time`: a time as [`absolute`] writes it (`2026-11-25 21:40:05 UTC`)
/// inside `<time datetime="2026-11-25T21:40:05Z">`, for `static/time.js` to show in the
/// browser's zone (the UTC text stays without JavaScript). Anything else comes out as escaped
/// text. Use it as `{{ t | utc_time | safe }}`.
pub fn utc_time_filter(
    value: &tera::Value,
    _: &std::collections::HashMap<String, tera::Value>,
) -> tera::Result<tera::Value> {
    let text = value.as_str().unwrap_or_default();
    let escaped = tera::escape_html(text);
    let iso = text
        .strip_suffix(" UTC")
        .filter(|t| t.len() == 19 && crate::domain::time::parse_time(t, false).is_some())
        .map(|t| format!("{}T{}Z", &t[..10], &t[11..]));
    Ok(tera::Value::String(match iso {
        Some(iso) => format!("<time datetime=\"{iso}\">{escaped}</time>"),
        None => escaped,
    }))
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
    fn presets_are_today_the_last_week_and_the_calendar_month_before_this_one() {
        // 2026-03-10 15:30 UTC.
        let now = 1_773_156_600_000;
        assert_eq!(input_time(now), "2026-03-10T15:30");
        let p = presets(now);
        assert_eq!(p[0], Preset { label: "Today", from: "2026-03-10T00:00".into(), to: "".into() });
        assert_eq!(p[1].from, "2026-03-03T15:30");
        assert_eq!(
            (p[2].from.as_str(), p[2].to.as_str()),
            ("2026-02-01T00:00", "2026-03-01T00:00")
        );
        // In January, last month is last year's December.
        let p = presets(1_767_830_400_000); // 2026-01-08
        assert_eq!(
            (p[2].from.as_str(), p[2].to.as_str()),
            ("2025-12-01T00:00", "2026-01-01T00:00")
        );
    }

    #[test]
    fn utc_times_become_time_elements_and_anything_else_stays_escaped_text() {
        let f = |s: &str| {
            utc_time_filter(&tera::Value::from(s), &Default::default())
                .unwrap()
                .as_str()
                .unwrap()
                .to_string()
        };
        assert_eq!(
            f("2026-11-25 21:40:05 UTC"),
            "<time datetime=\"2026-11-25T21:40:05Z\">2026-11-25 21:40:05 UTC</time>"
        );
        assert_eq!(f(""), "");
        assert_eq!(f("<b>2026</b> UTC"), "&lt;b&gt;2026&lt;&#x2F;b&gt; UTC");
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
