//! Times as people type them into vmdeck's forms and query strings (UTC, `YYYY-MM-DD` or
//! `YYYY-MM-DDTHH:MM[:SS[.fff]]`, with or without a trailing `Z` or ` UTC`: what a
//! `datetime-local` input sends, what JavaScript's `toISOString` writes and what the pages
//! show), and periods made of two of them. One parser and one set of bounds
//! for every page: the audit log, the VM page and the reports.

use time::format_description::FormatItem;
use time::macros::format_description;
use time::{PrimitiveDateTime, Time};

/// The latest time vmdeck accepts: 9999-12-31 23:59:59 UTC, in Unix milliseconds.
pub const LATEST_MS: i64 = 253_402_300_799_000;

/// The formats accepted, in words, for messages.
pub const FORMATS: &str = "YYYY-MM-DD or YYYY-MM-DDTHH:MM, UTC, optionally with a trailing Z";

const DATE_TIME: &[FormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]");
const DATE_TIME_SECS: &[FormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]");
const DATE: &[FormatItem<'static>] = format_description!("[year]-[month]-[day]");

/// Parses `YYYY-MM-DD`, `YYYY-MM-DDTHH:MM[:SS[.fff]]` (or with a space), with or without a
/// trailing `Z` or ` UTC` (the times are UTC either way), as UTC milliseconds. A bare date
/// means its start, or with `end_of_day` its last millisecond. Fractions of a second are
/// dropped.
pub fn parse_time(s: &str, end_of_day: bool) -> Option<i64> {
    let s = s.trim();
    let s = s.strip_suffix(" UTC").or_else(|| s.strip_suffix(['Z', 'z'])).unwrap_or(s);
    // `HH:MM:SS.fff`: the fraction goes (only after a time, never in a date).
    let s = match s.rsplit_once('.') {
        Some((head, frac))
            if head.len() == 19
                && !frac.is_empty()
                && frac.len() <= 9
                && frac.bytes().all(|b| b.is_ascii_digit()) =>
        {
            head
        }
        _ => s,
    };
    if s.ends_with(['Z', 'z']) || s.ends_with(' ') {
        return None; // a doubled suffix
    }
    let s = s.replace(' ', "T");
    let dt = PrimitiveDateTime::parse(&s, DATE_TIME_SECS)
        .or_else(|_| PrimitiveDateTime::parse(&s, DATE_TIME))
        .or_else(|_| {
            time::Date::parse(&s, DATE).map(|d| {
                let t = if end_of_day {
                    Time::from_hms_milli(23, 59, 59, 999).unwrap_or(Time::MIDNIGHT)
                } else {
                    Time::MIDNIGHT
                };
                PrimitiveDateTime::new(d, t)
            })
        })
        .ok()?;
    Some((dt.assume_utc().unix_timestamp_nanos() / 1_000_000) as i64)
}

/// [`parse_time`], keeping only times from 1970 to [`LATEST_MS`].
pub fn parse_bounded(s: &str, end_of_day: bool) -> Option<i64> {
    parse_time(s, end_of_day).filter(|t| (0..=LATEST_MS).contains(t))
}

/// How finely history is read: raw samples (one per poll) or rollups of fixed-length buckets
/// (`history::rollup` maintains them; each has its own retention).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Resolution {
    Raw,
    FiveMinutes,
    Hourly,
    Daily,
}

impl Resolution {
    /// The rollup resolutions, finest first.
    pub const ROLLUPS: [Resolution; 3] =
        [Resolution::FiveMinutes, Resolution::Hourly, Resolution::Daily];

    /// The rollups' bucket lengths in seconds, finest first: the `res` column of `rollups`.
    pub const ROLLUP_SECS: [i64; 3] = [300, 3600, 86_400];

    /// The bucket length in seconds; None for raw samples.
    pub fn bucket_secs(self) -> Option<i64> {
        match self {
            Resolution::Raw => None,
            Resolution::FiveMinutes => Some(300),
            Resolution::Hourly => Some(3600),
            Resolution::Daily => Some(86_400),
        }
    }

    /// The rollup whose buckets last `secs` seconds (the coarsest for anything longer than an
    /// hour that is not a day, which never occurs: `res` only holds [`Self::ROLLUP_SECS`]).
    pub fn from_bucket_secs(secs: i64) -> Resolution {
        match secs {
            ..=300 => Resolution::FiveMinutes,
            301..=3600 => Resolution::Hourly,
            _ => Resolution::Daily,
        }
    }

    /// Where a chart's points come from, in words.
    pub fn label(self) -> &'static str {
        match self {
            Resolution::Raw => "raw samples",
            Resolution::FiveMinutes => "5-minute rollups",
            Resolution::Hourly => "hourly rollups",
            Resolution::Daily => "daily rollups",
        }
    }
}

/// One time field of a form: None when empty, else its time, or an error naming the field
/// (`label`) and saying what it accepts.
pub fn read_field(label: &str, text: &str, end_of_day: bool) -> Result<Option<i64>, String> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    match parse_bounded(text, end_of_day) {
        Some(t) => Ok(Some(t)),
        None => Err(format!("Cannot read the {label} time {text:?} (use {FORMATS})")),
    }
}

/// One time parameter: None when empty. One that cannot be read is reported in `notices`
/// ([`read_field`]'s message), saying what is shown `instead`, and read as None.
pub fn time_param(
    label: &str,
    text: &str,
    end_of_day: bool,
    instead: &str,
    notices: &mut Vec<String>,
) -> Option<i64> {
    read_field(label, text, end_of_day).unwrap_or_else(|e| {
        notices.push(format!("{e}: {instead}."));
        None
    })
}

/// A period from two optional times: `from` (a date means its start) and `to` (a date means
/// its end, so `to=2026-11-30` includes that day).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Period {
    pub from: Option<i64>,
    pub to: Option<i64>,
    /// The texts as given (swapped with the times when the period was reversed), to echo into
    /// the form.
    pub from_text: String,
    pub to_text: String,
}

impl Period {
    /// Reads the two parameters. Unreadable ones are reported and left out (`instead` says what
    /// is shown in their place); a reversed period is swapped, with a notice.
    pub fn read(from: &str, to: &str, instead: [&str; 2], notices: &mut Vec<String>) -> Period {
        let mut p = Period {
            from: time_param("from", from, false, instead[0], notices),
            to: time_param("to", to, true, instead[1], notices),
            from_text: from.trim().to_string(),
            to_text: to.trim().to_string(),
        };
        if let (Some(a), Some(b)) = (p.from, p.to) {
            if a > b {
                notices.push("The period was reversed: swapped.".into());
                p.from = Some(b);
                p.to = Some(a);
                std::mem::swap(&mut p.from_text, &mut p.to_text);
            }
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_as_utc_with_dates_covering_whole_days() {
        assert_eq!(parse_time("1970-01-02", false), Some(86_400_000));
        assert_eq!(parse_time("1970-01-01", true), Some(86_399_999));
        assert_eq!(parse_time("1970-01-01T00:01", false), Some(60_000));
        assert_eq!(parse_time("1970-01-01 00:00:05", false), Some(5_000));
        for bad in ["", "yesterday", "2026-13-01", "2026-02-30", "1970-01-01T25:00"] {
            assert_eq!(parse_time(bad, false), None, "{bad:?}");
        }
        assert_eq!(parse_bounded("1969-12-31", false), None);
        assert_eq!(parse_bounded("9999-12-31T23:59:59", false), Some(LATEST_MS));
        assert_eq!(parse_bounded("9999-12-31", true), None, "past the last second");
    }

    #[test]
    fn a_trailing_z_and_what_datetime_local_inputs_send_are_read_as_utc() {
        let t = parse_time("2026-11-30T10:00", false).unwrap();
        assert_eq!(t % 60_000, 0);
        for same in [
            "2026-11-30T10:00Z",
            "2026-11-30T10:00z",
            "2026-11-30T10:00:00Z",
            "2026-11-30T10:00:00.000Z", // JavaScript's toISOString
            "2026-11-30 10:00:00 UTC",  // as the pages show times
            " 2026-11-30T10:00 ",
        ] {
            assert_eq!(parse_time(same, false), Some(t), "{same:?}");
        }
        assert_eq!(parse_time("2026-11-30Z", true), parse_time("2026-11-30", true));
        assert_eq!(parse_time("2026-11-30T10:00:00.5Z", false), Some(t), "fraction dropped");
        for bad in ["2026-11-30T10:00ZZ", "Z", "2026-11-30T10:00+01:00", "2026-11-30.5", "10:00Z"] {
            assert_eq!(parse_time(bad, false), None, "{bad:?}");
        }
    }

    #[test]
    fn a_time_that_cannot_be_read_is_an_error_naming_its_field() {
        assert_eq!(read_field("from", "", false), Ok(None));
        assert_eq!(read_field("from", "1970-01-01T00:01Z", false), Ok(Some(60_000)));
        let e = read_field("to", "next tuesday", true).unwrap_err();
        assert!(e.starts_with("Cannot read the to time \"next tuesday\""), "{e}");
        assert!(e.contains("YYYY-MM-DDTHH:MM") && e.contains('Z'), "says what it accepts: {e}");
        let mut notices = Vec::new();
        assert_eq!(time_param("from", "2026-02-30", false, "using now", &mut notices), None);
        assert_eq!(notices.len(), 1);
        assert!(
            notices[0].starts_with("Cannot read the from time")
                && notices[0].ends_with("using now.")
        );
    }

    #[test]
    fn periods_report_what_they_could_not_read_and_swap_reversed_ends() {
        let mut notices = Vec::new();
        let p = Period::read("1970-01-03", "1970-01-01", ["ignored", "ignored"], &mut notices);
        // The times swap as read: the end of the 1st, the start of the 3rd.
        assert_eq!((p.from, p.to), (Some(86_400_000 - 1), Some(2 * 86_400_000)));
        assert_eq!((p.from_text.as_str(), p.to_text.as_str()), ("1970-01-01", "1970-01-03"));
        assert_eq!(notices, vec!["The period was reversed: swapped."]);
        notices.clear();
        let p = Period::read("soon", "", ["ignored", "now"], &mut notices);
        assert_eq!((p.from, p.to), (None, None));
        assert_eq!(notices.len(), 1);
        assert!(notices[0].starts_with("Cannot read the from time \"soon\""), "{notices:?}");
    }

    #[test]
    fn rollup_resolutions_round_trip_through_their_bucket_lengths() {
        for (r, secs) in Resolution::ROLLUPS.into_iter().zip(Resolution::ROLLUP_SECS) {
            assert_eq!(r.bucket_secs(), Some(secs));
            assert_eq!(Resolution::from_bucket_secs(secs), r);
        }
        assert_eq!(Resolution::Raw.bucket_secs(), None);
        assert_eq!(Resolution::Hourly.label(), "hourly rollups");
    }
}
