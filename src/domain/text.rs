//! Text rules every layer shares: name globs, and how sentences users read (flash messages, page titles, confirmation questions, audit
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

/// Whether `name` matches the glob `pattern` (`*`: any run of characters, `?`: one character;
/// case-insensitive, the whole name).
pub fn glob_matches(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.to_lowercase().chars().collect();
    let n: Vec<char> = name.to_lowercase().chars().collect();
    // Iterative matching with one backtrack point: linear-ish, no recursion on user input.
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ni));
            pi += 1;
        } else if let Some((sp, sn)) = star {
            pi = sp + 1;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
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
