//! How sentences users read (flash messages, page titles, confirmation questions, audit
//! texts, errors shown on pages) quote a name.

/// `name` between typographic quotes, as typed: “it's "x"”, not Rust's debug form
/// `"it's \"x\""`. Control characters (line breaks, tabs…) are written as escapes (`\n`), so
/// a name cannot break a sentence or a log line in two. HTML is the templates' business (they
/// escape it). Logs, configuration errors and panics keep `{:?}`, which shows every hidden
/// character.
pub fn quoted(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 6);
    out.push('\u{201c}');
    for c in name.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out.push('\u{201d}');
    out
}

#[cfg(test)]
mod tests {
    use super::quoted;

    #[test]
    fn names_are_quoted_typographically_without_escaping() {
        assert_eq!(quoted(r#"it's "x""#), "\u{201c}it's \"x\"\u{201d}");
        assert_eq!(quoted("db-01"), "“db-01”");
        assert_eq!(quoted(""), "“”");
        assert_eq!(quoted("a\nb\tc"), "“a\\nb\\tc”", "control characters stay visible");
        assert_eq!(quoted("<b>&"), "“<b>&”", "HTML is escaped by the templates, not here");
    }
}
