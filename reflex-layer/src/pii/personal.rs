//! Personal data: DATE_OF_BIRTH, only when a date follows (within 32 bytes) a keyword such as
//! "DOB", "D.O.B.", "date of birth", "birth date", "birthday", "born". A bare date is never
//! reported (dates are everywhere: deadlines, logs, timestamps).

use super::{
    char_at, keyword_ends, keywords, near_keyword, re, Context, Detector, Finding, PiiType,
};
use aho_corasick::AhoCorasick;
use regex::Regex;
use std::sync::LazyLock;

pub struct Personal;

static KW: LazyLock<AhoCorasick> = LazyLock::new(|| {
    keywords(&[
        "dob",
        "d.o.b",
        "date of birth",
        "birth date",
        "birthdate",
        "birthday",
        "born",
        "geboren",
        "né le",
        "née le",
        "fecha de nacimiento",
    ])
});

static DATE: LazyLock<Regex> = LazyLock::new(|| {
    re(concat!(
        r"(?i)\b(?:",
        r"(?P<y1>\d{4})[-/.](?P<m1>\d{1,2})[-/.](?P<d1>\d{1,2})",
        r"|(?P<a2>\d{1,2})[-/.](?P<b2>\d{1,2})[-/.](?P<y2>\d{4}|\d{2})",
        r"|(?:jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec)[a-z]*\.? \d{1,2}(?:st|nd|rd|th)?,? \d{4}",
        r"|\d{1,2}(?:st|nd|rd|th)? (?:of )?(?:jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec)[a-z]*\.?,? \d{4}",
        r")\b"
    ))
});

fn numeric_ok(c: &regex::Captures) -> bool {
    let n = |k: &str| c.name(k).and_then(|m| m.as_str().parse::<u32>().ok());
    if let (Some(m), Some(d)) = (n("m1"), n("d1")) {
        return (1..=12).contains(&m) && (1..=31).contains(&d);
    }
    if let (Some(a), Some(b)) = (n("a2"), n("b2")) {
        // either day/month or month/day
        return (1..=31).contains(&a) && (1..=31).contains(&b) && (a <= 12 || b <= 12);
    }
    true
}

impl Detector for Personal {
    fn name(&self) -> &'static str {
        "personal"
    }

    fn detect_in(&self, ctx: &Context, out: &mut Vec<Finding>) {
        let text = ctx.text;
        let ends = keyword_ends(&KW, text, true);
        if ends.is_empty() {
            return;
        }
        for c in DATE.captures_iter(text) {
            let m = c.get(0).unwrap();
            // ISO timestamps (`2026-11-25T10:00:00Z`) are not birth dates
            if matches!(char_at(text, m.end()), Some('T' | ':')) {
                continue;
            }
            if numeric_ok(&c) && near_keyword(&ends, m.start(), 32) {
                out.push(Finding::new(PiiType::DateOfBirth, m.start(), m.end(), 0.85));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vals(text: &str) -> Vec<String> {
        let mut v = Vec::new();
        Personal.detect(text, &mut v);
        v.iter().map(|f| f.value(text).to_string()).collect()
    }

    #[test]
    fn dob() {
        assert_eq!(vals("DOB: 1985-03-14"), ["1985-03-14"]);
        assert_eq!(vals("born on March 3, 1990 in Ohio"), ["March 3, 1990"]);
        assert_eq!(vals("Date of birth 14/03/1985"), ["14/03/1985"]);
        assert!(vals("deadline 2026-11-25").is_empty());
        assert!(vals("dob updated at 2026-11-25T10:00:00Z").is_empty());
        assert!(vals("DOB 13/13/1985").is_empty());
    }
}
