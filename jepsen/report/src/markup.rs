//! Escaping for hand-written HTML and SVG, and number formatting that never prints NaN.

use ratify_check::Valid;

/// `text` made safe for XML/HTML text and for attribute values in double or single quotes.
/// Control characters that XML 1.0 forbids (a log name or an error may hold anything) become
/// U+FFFD, so the SVG files stay well-formed.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{7f}' || c == '\u{fffe}' || c == '\u{ffff}' => {
                out.push('\u{fffd}')
            }
            c => out.push(c),
        }
    }
    out
}

/// A relative path (segments separated by `/`) percent-encoded for an `href`: everything but
/// RFC 3986's unreserved characters and the separators is encoded, so a file named `a b#c?.log`
/// still links to itself.
pub fn href(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for b in path.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'/' => {
                out.push(b as char)
            }
            b => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// A coordinate with one decimal; non-finite values (which the plotting code should never
/// produce) become 0 so the file stays parseable.
pub fn coord(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.1}")
    } else {
        "0".to_string()
    }
}

/// A number for people: `digits` decimals, `-` when not finite.
pub fn num(v: f64, digits: usize) -> String {
    if v.is_finite() {
        format!("{v:.digits$}")
    } else {
        "-".to_string()
    }
}

/// The word for a verdict.
pub fn verdict_word(v: Valid) -> &'static str {
    match v {
        Valid::True => "valid",
        Valid::False => "INVALID",
        Valid::Unknown => "unknown",
    }
}

/// CSS class for a verdict (`index.html` and the store index share the style sheet).
pub fn verdict_class(v: Option<Valid>) -> &'static str {
    match v {
        Some(Valid::True) => "v-true",
        Some(Valid::False) => "v-false",
        Some(Valid::Unknown) => "v-unknown",
        None => "v-none",
    }
}

/// Style sheet shared by the run page and the store index.
pub const CSS: &str = "\
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:1.5em;color:#222;max-width:1200px}
h1{font-size:1.4em;margin:.2em 0}h2{font-size:1.15em;margin-top:1.5em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5em 0}th,td{border:1px solid #ddd;padding:.25em .6em;text-align:left;vertical-align:top}
th{background:#f4f4f4}td.n{text-align:right;font-variant-numeric:tabular-nums}
pre{background:#f7f7f7;padding:.5em;overflow-x:auto;white-space:pre-wrap;margin:.2em 0}
code{background:#f4f4f4;padding:0 .2em}
.banner{padding:.8em 1em;border-radius:4px;color:#fff;font-size:1.2em;font-weight:bold}
.v-true{background:#2e7d32;color:#fff}.v-false{background:#c62828;color:#fff}
.v-unknown{background:#ef6c00;color:#fff}.v-none{background:#757575;color:#fff}
span.v-true,span.v-false,span.v-unknown,span.v-none{padding:.1em .5em;border-radius:3px;font-weight:bold}
img{max-width:100%;border:1px solid #eee}
.muted{color:#777}
";

#[cfg(test)]
mod tests {
    use super::*;

    /// Markup characters and forbidden control characters never reach the output raw.
    #[test]
    fn escape_markup_and_controls() {
        assert_eq!(
            escape(r#"<a href="x">&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;&lt;/a&gt;"
        );
        assert_eq!(escape("a\u{0}b\u{1b}c\nd"), "a\u{fffd}b\u{fffd}c\nd");
        assert_eq!(escape("plain ünïcode"), "plain ünïcode");
    }

    /// Link targets keep separators and encode everything unsafe.
    #[test]
    fn href_percent_encodes() {
        assert_eq!(href("logs/node-1.log"), "logs/node-1.log");
        assert_eq!(href("logs/a b#c?&<.log"), "logs/a%20b%23c%3F%26%3C.log");
        assert_eq!(href("é"), "%C3%A9");
    }

    /// Non-finite numbers never reach a file.
    #[test]
    fn numbers_are_finite() {
        assert_eq!(coord(f64::NAN), "0");
        assert_eq!(coord(1.26), "1.3");
        assert_eq!(num(f64::INFINITY, 2), "-");
        assert_eq!(num(2.0, 2), "2.00");
    }
}
