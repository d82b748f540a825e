//! Contact details: EMAIL and PHONE.
//!
//! Phone rules (deliberately conservative, plain digit runs are never phones):
//! * international: `+` (or `00`, then at least one separator) country code, then digits with optional single separators
//!   (space, `-`, `.`, parentheses); 8..=15 digits in total (E.164 maximum);
//! * NANP national: `(415) 555-0100`, `415-555-0100`, `415.555.0100`, `415 555 0100`,
//!   optional leading `1-`; area code and exchange must start with 2-9;
//! * trunk-prefix national (UK/EU style): `020 7946 0958`, `0151-496-0000`: starts with `0`,
//!   at least one separator, 10 or 11 digits.
//!
//! A candidate glued to letters, digits, `-`, `.`, `:` or `/` followed by more digits (UUIDs,
//! timestamps, dotted versions, paths) is rejected.

use super::{
    char_at, char_before, find_in, followed_by_sep_digit, is_word_char, preceded_by_digit_sep, re,
    Context, Detector, Finding, PiiType,
};
use regex::Regex;
use std::sync::LazyLock;

pub struct Contact;

/// Domain part of an address, matched anchored right after the `@`.
static EMAIL_DOMAIN: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"^[a-zA-Z0-9](?:[a-zA-Z0-9\-]{0,61}[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9\-]{0,61}[a-zA-Z0-9])?)*\.[a-zA-Z]{2,24}\b",
    )
});

fn local_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '.' | '_' | '%' | '+' | '-')
}

/// Emails are found from each `@` outwards (memchr-fast): the local part is walked back over
/// Unicode alphanumerics and `._%+-` (max 64 chars), the ASCII domain is matched anchored.
fn emails(text: &str, out: &mut Vec<Finding>) {
    let b = text.as_bytes();
    let mut last_end = 0;
    for at in memchr_iter(b'@', b) {
        if at < last_end {
            continue;
        }
        let mut start = at;
        for (n, (i, c)) in text[..at].char_indices().rev().enumerate() {
            if n >= 64 || !local_char(c) {
                break;
            }
            start = i;
        }
        // the local part starts with an alphanumeric / `_` and does not end with `.`
        while start < at && matches!(b[start], b'.' | b'%' | b'+' | b'-') {
            start += 1;
        }
        if start == at || b[at - 1] == b'.' || start < last_end {
            continue;
        }
        // `scheme://user@host` is a URL user, not an address; `user:pass@host` is
        // URL_CREDENTIALS' job. A leading `:` is fine (e.g. "mailto:").
        if char_before(text, start) == Some('/') {
            continue;
        }
        let Some(m) = EMAIL_DOMAIN.find(&text[at + 1..]) else {
            continue;
        };
        let end = at + 1 + m.end();
        out.push(Finding::new(PiiType::Email, start, end, 0.95));
        last_end = end;
    }
}

fn memchr_iter(needle: u8, hay: &[u8]) -> impl Iterator<Item = usize> + '_ {
    hay.iter()
        .enumerate()
        .filter(move |(_, &c)| c == needle)
        .map(|(i, _)| i)
}

static PHONE: LazyLock<Regex> = LazyLock::new(|| {
    re(concat!(
        // international (`+` or `00` exit code)
        r"\+[1-9]\d{0,3}(?:[ .\-]?\(?\d{1,5}\)?){1,6}",
        r"|\b00[1-9]\d{0,3}(?:[ .\-]\(?\d{1,6}\)?){1,6}\b",
        // NANP
        r"|(?:\b1[ .\-]?)?(?:\(\d{3}\)[ .\-]?|\b\d{3}[ .\-])\d{3}[ .\-]\d{4}\b",
        // trunk prefix 0
        r"|\b0\d{1,4}[ \-]\d{2,4}[ \-]?\d{3,4}\b",
    ))
});

fn bad_neighbour(text: &str, start: usize, end: usize) -> bool {
    let before = char_before(text, start);
    let after = char_at(text, end);
    if is_word_char(before) || is_word_char(after) {
        return true;
    }
    if matches!(before, Some('/' | '\\' | '#' | '$' | '€' | '£' | '=')) {
        return true;
    }
    preceded_by_digit_sep(text, start, b"-.:/")
        || followed_by_sep_digit(text, end, b"-.:/")
        || before == Some('-') && start >= 2 && text.as_bytes()[start - 2].is_ascii_alphanumeric()
}

fn phone_ok(cand: &str) -> bool {
    let digits = cand.bytes().filter(u8::is_ascii_digit).count();
    if cand.contains("  ") || cand.contains("--") || cand.contains("..") {
        return false;
    }
    let opens = cand.matches('(').count();
    if opens != cand.matches(')').count() || opens > 1 {
        return false;
    }
    if cand.starts_with('+') {
        return (8..=15).contains(&digits);
    }
    if cand.starts_with("00") {
        return (8..=15).contains(&(digits - 2));
    }
    let d: Vec<u8> = cand.bytes().filter(u8::is_ascii_digit).collect();
    if d[0] == b'0' {
        return (10..=11).contains(&digits);
    }
    // NANP: strip the optional leading 1.
    let n = if digits == 11 && d[0] == b'1' {
        &d[1..]
    } else {
        &d[..]
    };
    n.len() == 10 && n[0] >= b'2' && n[3] >= b'2'
}

impl Detector for Contact {
    fn name(&self) -> &'static str {
        "contact"
    }

    fn detect_in(&self, ctx: &Context, out: &mut Vec<Finding>) {
        let text = ctx.text;
        emails(text, out);
        for m in find_in(&PHONE, text, ctx.windows(8)) {
            let (mut s, mut e) = (m.start(), m.end());
            let cand = m.as_str();
            // trim an unbalanced trailing ")" / leading "(" from the greedy international form
            let mut c = cand;
            while c.ends_with(['(', ' ', '.', '-']) || (c.ends_with(')') && !c.contains('(')) {
                c = &c[..c.len() - 1];
                e -= 1;
            }
            if c.starts_with('(') && !c.contains(')') {
                c = &c[1..];
                s += 1;
            }
            if c.is_empty() || bad_neighbour(text, s, e) || !phone_ok(c) {
                continue;
            }
            let conf = if c.starts_with('+') || c.starts_with("00") {
                0.85
            } else {
                0.8
            };
            out.push(Finding::new(PiiType::Phone, s, e, conf));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vals(text: &str, t: PiiType) -> Vec<String> {
        let mut v = Vec::new();
        Contact.detect(text, &mut v);
        v.iter()
            .filter(|f| f.pii_type == t)
            .map(|f| f.value(text).to_string())
            .collect()
    }

    #[test]
    fn emails() {
        assert_eq!(
            vals("mail jane.doe+x@example.co.uk now", PiiType::Email),
            ["jane.doe+x@example.co.uk"]
        );
        assert!(vals("not@an email", PiiType::Email).is_empty());
        assert!(vals("user@localhost", PiiType::Email).is_empty());
    }

    #[test]
    fn phones() {
        for p in [
            "+14155550100",
            "+1 415 555 0100",
            "(415) 555-0100",
            "415-555-0100",
            "020 7946 0958",
            "+44 20 7946 0958",
            "1-800-555-0199",
        ] {
            assert_eq!(vals(&format!("call {p} today"), PiiType::Phone), [p], "{p}");
        }
        for n in [
            "4155550100",
            "2026-11-25",
            "12:30:45",
            "550e8400-e29b-41d4-a716-446655440000",
            "v1.2.3.4",
            "123-456-7890",
            "+12345",
            "415-555-01000",
        ] {
            assert!(vals(&format!("x {n} y"), PiiType::Phone).is_empty(), "{n}");
        }
    }
}
