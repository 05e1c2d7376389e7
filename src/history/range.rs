//! The time range a VM page or its CSV shows: a named one (`1h` … `1y`) or a custom from/to
//! (UTC, read by the shared parser in `domain::time`). Anything wrong becomes a notice and the
//! last 24 hours, never an error page.

use rocket::form::FromForm;

use crate::domain::time;
use crate::web::format as view;

/// Longest custom range: ten years.
const MAX_SPAN_MS: i64 = 10 * 366 * 86_400_000;

/// The ranges offered, by their query value.
pub const RANGES: [(&str, &str, i64); 5] = [
    ("1h", "1 hour", 3_600_000),
    ("24h", "24 hours", 86_400_000),
    ("7d", "7 days", 7 * 86_400_000),
    ("30d", "30 days", 30 * 86_400_000),
    ("1y", "1 year", 365 * 86_400_000),
];

/// The range a page or CSV asked for.
pub struct RangeChoice {
    pub start: i64,
    pub end: i64,
    pub label: String,
    /// The range's key (`24h`, `custom`...), to mark it in the page.
    pub chosen: String,
    pub notices: Vec<String>,
    pub from_text: String,
    pub to_text: String,
}

/// `?range=…&from=…&to=…` as given.
#[derive(Debug, Default, FromForm)]
pub struct RangeQuery<'r> {
    pub range: Option<&'r str>,
    pub from: Option<&'r str>,
    pub to: Option<&'r str>,
}

impl RangeQuery<'_> {
    /// The range this asks for, seen at `now`.
    pub fn read(&self, now: i64) -> RangeChoice {
        parse_range(self.range, self.from, self.to, now)
    }
}

/// Reads `range` (a named range or `custom`) and `from`/`to` (UTC); anything wrong becomes a
/// notice and the last 24 hours.
fn parse_range(range: Option<&str>, from: Option<&str>, to: Option<&str>, now: i64) -> RangeChoice {
    let mut notices = Vec::new();
    let (mut start, mut end, mut label) = (now - 86_400_000, now, "24 hours".to_string());
    let chosen = range.unwrap_or("24h");
    match RANGES.iter().find(|(k, ..)| *k == chosen) {
        Some((_, l, ms)) => {
            start = now - ms;
            label = l.to_string();
        }
        None if chosen == "custom" => {}
        None => notices.push(format!("Unknown range {chosen:?}: showing 24 hours.")),
    }
    let (from_text, to_text) =
        (from.unwrap_or("").trim().to_string(), to.unwrap_or("").trim().to_string());
    if chosen == "custom" || !from_text.is_empty() || !to_text.is_empty() {
        // Each field read on its own, so a message can name the one that is wrong.
        let mut read = |label: &str, text: &str| match time::parse_time(text, false) {
            _ if text.is_empty() => Some(None),
            Some(t) => Some(Some(t)),
            None => {
                notices.push(format!(
                    "Cannot read the custom range's {label} time {text:?} (use {}): showing 24 hours.",
                    time::FORMATS
                ));
                None
            }
        };
        let (from, to) = (read("from", &from_text), read("to", &to_text));
        let parsed = match (from, to) {
            (Some(Some(a)), Some(b)) => (Some(a), Some(b.unwrap_or(now))),
            (Some(None), Some(_)) => {
                notices.push("The custom range needs a from time: showing 24 hours.".into());
                (None, None)
            }
            _ => (None, None),
        };
        match parsed {
            (Some(a), Some(b))
                if a < b && b - a <= MAX_SPAN_MS && a >= 0 && b <= time::LATEST_MS =>
            {
                start = a;
                end = b;
                label = format!("{} to {}", view::absolute(a), view::absolute(b));
            }
            (Some(a), Some(b)) if a >= b => {
                notices.push("The custom range ends before it starts: showing 24 hours.".into())
            }
            (Some(a), Some(_)) if a < 0 => {
                notices.push("The custom range starts before 1970: showing 24 hours.".into())
            }
            (Some(_), Some(_)) => {
                notices.push("The custom range is longer than ten years: showing 24 hours.".into())
            }
            _ => {} // already said why
        }
    }

    RangeChoice { start, end, label, chosen: chosen.to_string(), notices, from_text, to_text }
}
