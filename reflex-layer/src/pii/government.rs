//! Government identifiers: US_SSN, PASSPORT, DRIVERS_LICENSE.
//!
//! * US_SSN: `123-45-6789` / `123 45 6789` anywhere, a bare 9-digit run only within 32 bytes
//!   after "SSN" / "social security". Area 000, 666 and 900-999, group 00 and serial 0000 are
//!   invalid (SSA rules).
//! * PASSPORT: 6-9 alphanumerics (at most 2 leading letters, then digits) within 32 bytes after
//!   "passport".
//! * DRIVERS_LICENSE: 5-16 alphanumerics with at least 5 digits (optionally `-`/space grouped)
//!   within 32 bytes after "driver's license/licence", "driver license", "driving licence",
//!   "DL" / "DL#" (whole word).

use super::{
    char_at, char_before, find_in, followed_by_sep_digit, is_word_char, keyword_ends, keywords,
    near_keyword, preceded_by_digit_sep, re, Context, Detector, Finding, PiiType,
};
use aho_corasick::AhoCorasick;
use regex::Regex;
use std::sync::LazyLock;

pub struct Government;

static SSN: LazyLock<Regex> = LazyLock::new(|| re(r"\b\d{3}[- ]\d{2}[- ]\d{4}\b"));
static NINE: LazyLock<Regex> = LazyLock::new(|| re(r"\b\d{9}\b"));
static SSN_KW: LazyLock<AhoCorasick> =
    LazyLock::new(|| keywords(&["ssn", "social security", "soc sec", "ss#"]));

static PASSPORT: LazyLock<Regex> = LazyLock::new(|| re(r"\b[A-Z]{0,2}[0-9]{6,9}\b"));
static PASSPORT_KW: LazyLock<AhoCorasick> = LazyLock::new(|| keywords(&["passport"]));

static DL: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"\b(?:[A-Z]{1,3}[0-9]{4,14}|[0-9]{6,14}|[A-Z][0-9]{3}[- ][0-9]{3,4}[- ][0-9]{3,4}(?:[- ][0-9]{1,4})?)\b",
    )
});
static DL_KW: LazyLock<AhoCorasick> = LazyLock::new(|| {
    keywords(&[
        "driver's license",
        "driver’s license",
        "drivers license",
        "driver license",
        "driver's licence",
        "driver’s licence",
        "drivers licence",
        "driver licence",
        "driving licence",
        "driving license",
        "DL",
        "DL#",
        "DLN",
    ])
});

/// SSA validity rules for area/group/serial.
pub fn ssn_valid(area: u32, group: u32, serial: u32) -> bool {
    area != 0 && area != 666 && area < 900 && group != 0 && serial != 0
}

fn num(s: &str) -> u32 {
    s.bytes().fold(0, |a, d| a * 10 + u32::from(d - b'0'))
}

fn isolated(text: &str, s: usize, e: usize) -> bool {
    !is_word_char(char_before(text, s))
        && !is_word_char(char_at(text, e))
        && !preceded_by_digit_sep(text, s, b"-./:")
        && !followed_by_sep_digit(text, e, b"-./:")
}

impl Detector for Government {
    fn name(&self) -> &'static str {
        "government"
    }

    fn detect_in(&self, ctx: &Context, out: &mut Vec<Finding>) {
        let text = ctx.text;
        if ctx.runs.is_empty() {
            return;
        }
        for m in find_in(&SSN, text, ctx.windows(9)) {
            let v = m.as_str();
            if v.as_bytes()[3] != v.as_bytes()[6] || !isolated(text, m.start(), m.end()) {
                continue;
            }
            let (a, g, s) = (num(&v[..3]), num(&v[4..6]), num(&v[7..]));
            if ssn_valid(a, g, s) {
                out.push(Finding::new(PiiType::UsSsn, m.start(), m.end(), 0.9));
            }
        }
        let ssn_kw = keyword_ends(&SSN_KW, text, true);
        if !ssn_kw.is_empty() {
            for m in find_in(&NINE, text, ctx.windows(9)) {
                let v = m.as_str();
                let (a, g, s) = (num(&v[..3]), num(&v[3..5]), num(&v[5..]));
                if near_keyword(&ssn_kw, m.start(), 32)
                    && isolated(text, m.start(), m.end())
                    && ssn_valid(a, g, s)
                {
                    out.push(Finding::new(PiiType::UsSsn, m.start(), m.end(), 0.85));
                }
            }
        }
        let pp_kw = keyword_ends(&PASSPORT_KW, text, false);
        if !pp_kw.is_empty() {
            for m in PASSPORT.find_iter(text) {
                if near_keyword(&pp_kw, m.start(), 32) && isolated(text, m.start(), m.end()) {
                    out.push(Finding::new(PiiType::Passport, m.start(), m.end(), 0.8));
                }
            }
        }
        let dl_kw = keyword_ends(&DL_KW, text, true);
        if !dl_kw.is_empty() {
            for m in DL.find_iter(text) {
                let digits = m.as_str().bytes().filter(u8::is_ascii_digit).count();
                if digits >= 5
                    && near_keyword(&dl_kw, m.start(), 32)
                    && isolated(text, m.start(), m.end())
                {
                    out.push(Finding::new(
                        PiiType::DriversLicense,
                        m.start(),
                        m.end(),
                        0.8,
                    ));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vals(text: &str) -> Vec<(PiiType, String)> {
        let mut v = Vec::new();
        Government.detect(text, &mut v);
        v.iter()
            .map(|f| (f.pii_type, f.value(text).to_string()))
            .collect()
    }

    #[test]
    fn ssn_rules() {
        assert_eq!(
            vals("ssn 123-45-6789"),
            [(PiiType::UsSsn, "123-45-6789".to_string())]
        );
        assert_eq!(vals("SSN: 123456789").len(), 1);
        assert!(vals("order 123456789").is_empty());
        for bad in [
            "000-12-3456",
            "666-12-3456",
            "900-12-3456",
            "123-00-4567",
            "123-45-0000",
            "123-45 6789",
        ] {
            assert!(vals(bad).is_empty(), "{bad}");
        }
    }

    #[test]
    fn context_gated() {
        assert_eq!(vals("Passport number: X12345678")[0].0, PiiType::Passport);
        assert!(vals("ticket X12345678").is_empty());
        assert_eq!(
            vals("driver's license D1234567")[0].0,
            PiiType::DriversLicense
        );
        assert_eq!(vals("DL# 12345678")[0].0, PiiType::DriversLicense);
        assert!(vals("download 12345678").is_empty());
    }
}
