//! Financial: CREDIT_CARD (Luhn + issuer prefix/length) and IBAN (mod-97 + country length).

use super::{
    char_at, char_before, find_in, followed_by_sep_digit, is_word_char, preceded_by_digit_sep, re,
    Context, Detector, Finding, PiiType,
};
use regex::Regex;
use std::sync::LazyLock;

pub struct Financial;

static CARD: LazyLock<Regex> = LazyLock::new(|| {
    re(concat!(
        r"\b(?:\d{13,19}",
        r"|\d{4} \d{4} \d{4} \d{1,7}|\d{4}-\d{4}-\d{4}-\d{1,7}",
        r"|\d{4} \d{6} \d{4,5}|\d{4}-\d{6}-\d{4,5}",
        r")\b"
    ))
});

static IBAN: LazyLock<Regex> =
    LazyLock::new(|| re(r"\b[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b"));

/// Luhn checksum over ASCII digits.
pub fn luhn(digits: &[u8]) -> bool {
    let mut sum = 0u32;
    for (i, d) in digits.iter().rev().enumerate() {
        let mut v = u32::from(d - b'0');
        if i % 2 == 1 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    sum.is_multiple_of(10)
}

/// Known issuer prefix and length (Visa, Mastercard, Amex, Discover, JCB, Diners Club).
pub fn issuer(digits: &[u8]) -> Option<&'static str> {
    let n = digits.len();
    let p = |k: usize| -> u32 {
        digits[..k.min(n)]
            .iter()
            .fold(0, |a, d| a * 10 + u32::from(d - b'0'))
    };
    if digits[0] == b'4' && matches!(n, 13 | 16 | 19) {
        return Some("visa");
    }
    if n == 16 && ((51..=55).contains(&p(2)) || (2221..=2720).contains(&p(4))) {
        return Some("mastercard");
    }
    if n == 15 && matches!(p(2), 34 | 37) {
        return Some("amex");
    }
    if (16..=19).contains(&n)
        && (p(4) == 6011
            || p(2) == 65
            || (644..=649).contains(&p(3))
            || (622126..=622925).contains(&p(6)))
    {
        return Some("discover");
    }
    if (16..=19).contains(&n) && (3528..=3589).contains(&p(4)) {
        return Some("jcb");
    }
    if (14..=19).contains(&n) && ((300..=305).contains(&p(3)) || matches!(p(2), 36 | 38 | 39)) {
        return Some("diners");
    }
    None
}

/// IBAN lengths per country (SWIFT registry, common subset).
pub fn iban_length(cc: &str) -> Option<usize> {
    Some(match cc {
        "AD" => 24,
        "AE" => 23,
        "AL" => 28,
        "AT" => 20,
        "AZ" => 28,
        "BA" => 20,
        "BE" => 16,
        "BG" => 22,
        "BH" => 22,
        "BR" => 29,
        "CH" => 21,
        "CR" => 22,
        "CY" => 28,
        "CZ" => 24,
        "DE" => 22,
        "DK" => 18,
        "DO" => 28,
        "EE" => 20,
        "EG" => 29,
        "ES" => 24,
        "FI" => 18,
        "FO" => 18,
        "FR" => 27,
        "GB" => 22,
        "GE" => 22,
        "GI" => 23,
        "GL" => 18,
        "GR" => 27,
        "GT" => 28,
        "HR" => 21,
        "HU" => 28,
        "IE" => 22,
        "IL" => 23,
        "IS" => 26,
        "IT" => 27,
        "JO" => 30,
        "KW" => 30,
        "KZ" => 20,
        "LB" => 28,
        "LI" => 21,
        "LT" => 20,
        "LU" => 20,
        "LV" => 21,
        "MC" => 27,
        "MD" => 24,
        "ME" => 22,
        "MK" => 19,
        "MR" => 27,
        "MT" => 31,
        "MU" => 30,
        "NL" => 18,
        "NO" => 15,
        "PK" => 24,
        "PL" => 28,
        "PS" => 29,
        "PT" => 25,
        "QA" => 29,
        "RO" => 24,
        "RS" => 22,
        "SA" => 24,
        "SE" => 24,
        "SI" => 19,
        "SK" => 24,
        "SM" => 27,
        "TN" => 24,
        "TR" => 26,
        "UA" => 29,
        "VG" => 24,
        "XK" => 20,
        _ => return None,
    })
}

/// ISO 13616 mod-97 check on a compact (no spaces) uppercase IBAN.
pub fn iban_mod97(iban: &[u8]) -> bool {
    let mut rem = 0u32;
    for &c in iban[4..].iter().chain(&iban[..4]) {
        let v = match c {
            b'0'..=b'9' => u32::from(c - b'0'),
            b'A'..=b'Z' => u32::from(c - b'A') + 10,
            _ => return false,
        };
        rem = if v >= 10 {
            (rem * 100 + v) % 97
        } else {
            (rem * 10 + v) % 97
        };
    }
    rem == 1
}

fn isolated(text: &str, s: usize, e: usize) -> bool {
    !is_word_char(char_before(text, s))
        && !is_word_char(char_at(text, e))
        && !preceded_by_digit_sep(text, s, b"-./:")
        && !followed_by_sep_digit(text, e, b"-./:")
}

impl Detector for Financial {
    fn name(&self) -> &'static str {
        "financial"
    }

    fn detect_in(&self, ctx: &Context, out: &mut Vec<Finding>) {
        let text = ctx.text;
        let b = text.as_bytes();
        for m in find_in(&CARD, text, ctx.windows(13)) {
            if !isolated(text, m.start(), m.end()) {
                continue;
            }
            let digits: Vec<u8> = m.as_str().bytes().filter(u8::is_ascii_digit).collect();
            if (13..=19).contains(&digits.len()) && luhn(&digits) && issuer(&digits).is_some() {
                out.push(Finding::new(PiiType::CreditCard, m.start(), m.end(), 0.97));
            }
        }
        let starts = (0..b.len().saturating_sub(3)).filter(|&i| {
            b[i].is_ascii_uppercase()
                && b[i + 1].is_ascii_uppercase()
                && b[i + 2].is_ascii_digit()
                && b[i + 3].is_ascii_digit()
                && (i == 0 || !b[i - 1].is_ascii_alphanumeric())
        });
        let window_end = |i: usize| {
            let mut e = (i + 48).min(b.len());
            while !text.is_char_boundary(e) {
                e -= 1;
            }
            e
        };
        let ibans = find_in(&IBAN, text, starts.map(|i| (i, window_end(i))));
        for m in ibans {
            let Some(len) = iban_length(&m.as_str()[..2]) else {
                continue;
            };
            // Take exactly `len` alphanumerics (the greedy regex may run into a following word).
            let mut compact = Vec::with_capacity(len);
            let mut end = m.start();
            for (i, &c) in b[m.start()..m.end()].iter().enumerate() {
                if c != b' ' {
                    compact.push(c);
                    end = m.start() + i + 1;
                    if compact.len() == len {
                        break;
                    }
                }
            }
            if compact.len() != len || is_word_char(char_at(text, end)) {
                continue;
            }
            if iban_mod97(&compact) && !is_word_char(char_before(text, m.start())) {
                out.push(Finding::new(PiiType::Iban, m.start(), end, 0.97));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vals(text: &str) -> Vec<(PiiType, String)> {
        let mut v = Vec::new();
        Financial.detect(text, &mut v);
        v.iter()
            .map(|f| (f.pii_type, f.value(text).to_string()))
            .collect()
    }

    #[test]
    fn cards() {
        for c in [
            "4111111111111111",
            "4111 1111 1111 1111",
            "5555-5555-5555-4444",
            "2223003122003222",
            "378282246310005",
            "3782 822463 10005",
            "6011111111111117",
            "3530111333300000",
            "30569309025904",
        ] {
            assert_eq!(
                vals(&format!("card {c} ok")),
                [(PiiType::CreditCard, c.to_string())],
                "{c}"
            );
        }
        for n in [
            "4111111111111112",
            "1234567812345678",
            "order 0000000000000000",
        ] {
            assert!(vals(n).is_empty(), "{n}");
        }
    }

    #[test]
    fn ibans() {
        for i in [
            "DE89370400440532013000",
            "GB82 WEST 1234 5698 7654 32",
            "FR1420041010050500013M02606",
        ] {
            assert_eq!(
                vals(&format!("pay {i} now")),
                [(PiiType::Iban, i.to_string())],
                "{i}"
            );
        }
        assert!(vals("DE89370400440532013001").is_empty());
        assert!(vals("GB82 WEST 1234 5698 7654 33").is_empty());
    }
}
