//! Network identifiers: IPV4, IPV6, MAC_ADDRESS.
//!
//! Version-string rule for IPv4: a dotted quad is NOT an address when it is
//! (a) glued to a preceding `v`/`V` (`v1.2.3.4`), (b) preceded within 12 bytes by the word
//! "version", "ver", "release", "build" or "v" (optionally followed by `:`/`=`/spaces), e.g.
//! `version 10.0.0.1`, or by a package-pin operator (`==`, `>=`, `<=`, `~=`, `!=`, `^`, `~`),
//! e.g. `pkg==1.2.3.4`, or (c) part of a longer dotted run (`1.2.3.4.5`). Octets must be 0-255
//! without leading zeros. IPv6 candidates are validated with `std::net::Ipv6Addr`.

use super::{char_at, char_before, find_in, is_word_char, re, Context, Detector, Finding, PiiType};
use regex::Regex;
use std::net::Ipv6Addr;
use std::sync::LazyLock;

pub struct Network;

static IPV4: LazyLock<Regex> = LazyLock::new(|| re(r"\b\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}\b"));
static VERSION_BEFORE: LazyLock<Regex> = LazyLock::new(|| {
    re(r"(?i)(?:\b(?:version|ver|release|build|rev|v)\.?[\s:=#]*|[vV]|(?:==|>=|<=|~=|!=|\^|~)\s*)$")
});
static IPV6: LazyLock<Regex> =
    LazyLock::new(|| re(r"(?i)[0-9a-f]{0,4}(?::[0-9a-f]{0,4}){2,7}(?:\.\d{1,3}){0,3}"));
static MAC: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"(?i)\b(?:[0-9a-f]{2}(?::[0-9a-f]{2}){5}|[0-9a-f]{2}(?:-[0-9a-f]{2}){5}|[0-9a-f]{4}\.[0-9a-f]{4}\.[0-9a-f]{4})\b",
    )
});

fn octet_ok(s: &str) -> bool {
    !(s.len() > 1 && s.starts_with('0')) && s.parse::<u16>().is_ok_and(|v| v <= 255)
}

fn version_context(text: &str, start: usize) -> bool {
    let mut from = start.saturating_sub(12);
    while !text.is_char_boundary(from) {
        from -= 1;
    }
    VERSION_BEFORE.is_match(&text[from..start])
}

impl Detector for Network {
    fn name(&self) -> &'static str {
        "network"
    }

    fn detect_in(&self, ctx: &Context, out: &mut Vec<Finding>) {
        let text = ctx.text;
        let b = text.as_bytes();
        if text.contains('.') {
            for m in find_in(&IPV4, text, ctx.windows(4)) {
                let (s, e) = (m.start(), m.end());
                if !m.as_str().split('.').all(octet_ok) {
                    continue;
                }
                let glued_before = s >= 2 && b[s - 1] == b'.' && b[s - 2].is_ascii_alphanumeric();
                let glued_after =
                    e + 1 < b.len() && b[e] == b'.' && b[e + 1].is_ascii_alphanumeric();
                let in_v6 = s >= 2
                    && b[s - 1] == b':'
                    && (b[s - 2].is_ascii_hexdigit() || b[s - 2] == b':');
                if glued_before || glued_after || in_v6 || version_context(text, s) {
                    continue;
                }
                if char_before(text, s).is_some_and(|c| c.is_alphanumeric() || c == '_') {
                    continue;
                }
                out.push(Finding::new(PiiType::Ipv4, s, e, 0.88));
            }
        }
        if text.contains(':') {
            for (rs, re_) in runs(b, b":.", 6, |r| {
                r.iter().filter(|&&c| c == b':').count() >= 2
            }) {
                for m in IPV6.find_iter(&text[rs..re_]) {
                    let (s, mut e) = (rs + m.start(), rs + m.end());
                    let mut cand = m.as_str();
                    // a trailing single ':' (sentence punctuation) is not part of the address
                    if cand.ends_with(':') && !cand.ends_with("::") {
                        cand = &cand[..cand.len() - 1];
                        e -= 1;
                    }
                    let before = char_before(text, s);
                    let after = char_at(text, e);
                    if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':')
                        || after.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':')
                    {
                        continue;
                    }
                    match cand.parse::<Ipv6Addr>() {
                        Ok(a) if !a.is_unspecified() && cand.len() >= 6 => {
                            out.push(Finding::new(PiiType::Ipv6, s, e, 0.9));
                        }
                        _ => {}
                    }
                }
            }
        }
        if text.contains([':', '-', '.']) {
            for (rs, re_) in runs(b, b":-.", 14, |_| true) {
                for m in MAC.find_iter(&text[rs..re_]) {
                    let (s, e) = (rs + m.start(), rs + m.end());
                    let glued = (s >= 1 && matches!(b[s - 1], b':' | b'-' | b'.'))
                        || (e < b.len()
                            && matches!(b[e], b':' | b'-')
                            && e + 1 < b.len()
                            && b[e + 1].is_ascii_hexdigit());
                    if !glued
                        && !is_word_char(char_at(text, e))
                        && !is_word_char(char_before(text, s))
                    {
                        out.push(Finding::new(PiiType::MacAddress, s, e, 0.86));
                    }
                }
            }
        }
    }
}

/// Maximal runs of ASCII hex digits and `extra` bytes, at least `min_len` long, passing `keep`.
/// Cheap byte scan that narrows the hex-heavy IPv6/MAC regexes to plausible tokens.
fn runs<'a>(
    b: &'a [u8],
    extra: &'a [u8],
    min_len: usize,
    keep: impl Fn(&[u8]) -> bool + 'a,
) -> impl Iterator<Item = (usize, usize)> + 'a {
    let mut tab = [false; 256];
    for c in b"0123456789abcdefABCDEF".iter().chain(extra) {
        tab[usize::from(*c)] = true;
    }
    let mut i = 0;
    std::iter::from_fn(move || {
        while i < b.len() {
            while i < b.len() && !tab[usize::from(b[i])] {
                i += 1;
            }
            let s = i;
            while i < b.len() && tab[usize::from(b[i])] {
                i += 1;
            }
            if i - s >= min_len && keep(&b[s..i]) {
                return Some((s, i));
            }
        }
        None
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vals(text: &str) -> Vec<(PiiType, String)> {
        let mut v = Vec::new();
        Network.detect(text, &mut v);
        v.iter()
            .map(|f| (f.pii_type, f.value(text).to_string()))
            .collect()
    }

    #[test]
    fn ipv4() {
        assert_eq!(
            vals("host 192.168.1.20, ok"),
            [(PiiType::Ipv4, "192.168.1.20".to_string())]
        );
        for n in [
            "v1.2.3.4",
            "version 10.0.0.1",
            "256.1.1.1",
            "1.2.3.4.5",
            "01.2.3.4",
            "Version: 4.2.0.1",
        ] {
            assert!(vals(n).is_empty(), "{n}");
        }
    }

    #[test]
    fn ipv6_and_mac() {
        for a in [
            "2001:db8::8a2e:370:7334",
            "fe80::1ff:fe23:4567:890a",
            "2001:0db8:85a3:0000:0000:8a2e:0370:7334",
            "::ffff:192.0.2.1",
        ] {
            assert_eq!(
                vals(&format!("addr {a}.")),
                [(PiiType::Ipv6, a.to_string())],
                "{a}"
            );
        }
        for n in ["12:30:45", "2026-11-25T10:00:00Z", "std::vector", "a::b"] {
            assert!(vals(n).is_empty(), "{n}");
        }
        assert_eq!(vals("mac 00:1A:2B:3C:4D:5E")[0].0, PiiType::MacAddress);
        assert_eq!(vals("mac 00-1a-2b-3c-4d-5e")[0].0, PiiType::MacAddress);
        assert!(vals("00:1A:2B:3C:4D").is_empty());
    }
}
