//! Text from outside (IMDS and ARM answers, the agent's output, token claims, environment bytes)
//! made harmless before it reaches a log line or the result line: no control character, escape
//! sequence or line separator can start a fake log line or recolour the terminal.

use std::borrow::Cow;

/// Whether `c` must not reach a log line (or a setting) as itself: C0/C1 controls (ESC, CR, LF,
/// tab, NEL U+0085 …), DEL, and the Unicode line/paragraph separators U+2028/U+2029.
pub fn is_control_or_separator(c: char) -> bool {
    c.is_control() || c == '\u{2028}' || c == '\u{2029}'
}

/// `s` with every unsafe character written as an escape (`\n`, `\r`, `\t`, else `\u{..}`).
/// Backslashes are kept as they are (Windows paths and JSON escapes stay readable): an escape can
/// look like an original backslash sequence, which is harmless for a log reader.
pub fn escape_remote(s: &str) -> Cow<'_, str> {
    if !s.chars().any(is_control_or_separator) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if is_control_or_separator(c) => out.push_str(&format!("\\u{{{:04x}}}", c as u32)),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Remote text that may hold several lines (an agent's error output): each line escaped, joined
/// with `\n` plus an indent, so a continuation line can never look like a new log line.
pub fn escape_remote_lines(s: &str) -> String {
    s.lines()
        .map(|l| escape_remote(l).into_owned())
        .collect::<Vec<_>>()
        .join("\n    ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_borrowed_unchanged() {
        assert!(matches!(
            escape_remote("Identity not found (östlich)"),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn controls_escapes_and_line_separators_are_escaped() {
        let e = escape_remote("a\nERROR x\x1b[31m\r\u{85}\u{2028}\u{2029}\u{7f}\0b");
        assert_eq!(
            e,
            "a\\nERROR x\\u{001b}[31m\\r\\u{0085}\\u{2028}\\u{2029}\\u{007f}\\u{0000}b"
        );
        assert!(!e.chars().any(is_control_or_separator));
    }

    #[test]
    fn multi_line_text_gets_indented_continuations() {
        assert_eq!(
            escape_remote_lines("one\ntwo\x1b[0m\nERROR three"),
            "one\n    two\\u{001b}[0m\n    ERROR three"
        );
    }
}
