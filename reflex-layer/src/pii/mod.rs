//! PII detection.
//!
//! Every PII family lives in its own module and implements [`Detector`]. A detector scans the
//! whole text with pre-compiled regexes (compiled once, in `LazyLock`s), validates each candidate
//! (checksums, range rules, context keywords) and pushes [`Finding`]s with **byte** offsets.
//! [`detect`] runs every detector and resolves overlaps (highest confidence, then longest, wins),
//! returning non-overlapping findings sorted by start.
//!
//! Adding a type: add a variant to [`PiiType`] (and to [`PiiType::ALL`] / [`PiiType::as_str`]),
//! implement it in the family module (or a new module implementing [`Detector`]) and register the
//! detector in [`DETECTORS`]. See `docs/reflex.md`.

use serde::{Deserialize, Serialize};

pub mod contact;
pub mod crypto;
pub mod financial;
pub mod government;
pub mod network;
pub mod personal;
pub mod secrets;

/// The kinds of PII the reflex layer knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PiiType {
    Email,
    Phone,
    UsSsn,
    Passport,
    DriversLicense,
    CreditCard,
    Iban,
    Ipv4,
    Ipv6,
    MacAddress,
    AwsAccessKey,
    GithubToken,
    SlackToken,
    StripeKey,
    Jwt,
    PrivateKey,
    UrlCredentials,
    BtcAddress,
    EthAddress,
    DateOfBirth,
}

impl PiiType {
    /// Every type, in declaration order.
    pub const ALL: [PiiType; 20] = [
        PiiType::Email,
        PiiType::Phone,
        PiiType::UsSsn,
        PiiType::Passport,
        PiiType::DriversLicense,
        PiiType::CreditCard,
        PiiType::Iban,
        PiiType::Ipv4,
        PiiType::Ipv6,
        PiiType::MacAddress,
        PiiType::AwsAccessKey,
        PiiType::GithubToken,
        PiiType::SlackToken,
        PiiType::StripeKey,
        PiiType::Jwt,
        PiiType::PrivateKey,
        PiiType::UrlCredentials,
        PiiType::BtcAddress,
        PiiType::EthAddress,
        PiiType::DateOfBirth,
    ];

    /// The UPPER_SNAKE name (same as the serde name), e.g. `CREDIT_CARD`.
    pub fn as_str(self) -> &'static str {
        match self {
            PiiType::Email => "EMAIL",
            PiiType::Phone => "PHONE",
            PiiType::UsSsn => "US_SSN",
            PiiType::Passport => "PASSPORT",
            PiiType::DriversLicense => "DRIVERS_LICENSE",
            PiiType::CreditCard => "CREDIT_CARD",
            PiiType::Iban => "IBAN",
            PiiType::Ipv4 => "IPV4",
            PiiType::Ipv6 => "IPV6",
            PiiType::MacAddress => "MAC_ADDRESS",
            PiiType::AwsAccessKey => "AWS_ACCESS_KEY",
            PiiType::GithubToken => "GITHUB_TOKEN",
            PiiType::SlackToken => "SLACK_TOKEN",
            PiiType::StripeKey => "STRIPE_KEY",
            PiiType::Jwt => "JWT",
            PiiType::PrivateKey => "PRIVATE_KEY",
            PiiType::UrlCredentials => "URL_CREDENTIALS",
            PiiType::BtcAddress => "BTC_ADDRESS",
            PiiType::EthAddress => "ETH_ADDRESS",
            PiiType::DateOfBirth => "DATE_OF_BIRTH",
        }
    }

    /// Parse an UPPER_SNAKE name.
    pub fn from_name(name: &str) -> Option<PiiType> {
        PiiType::ALL.iter().copied().find(|t| t.as_str() == name)
    }
}

impl std::fmt::Display for PiiType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One detected PII span. `start..end` are **byte** offsets into the scanned text (always on
/// char boundaries).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Finding {
    pub pii_type: PiiType,
    pub start: usize,
    pub end: usize,
    pub confidence: f32,
}

impl Finding {
    pub fn new(pii_type: PiiType, start: usize, end: usize, confidence: f32) -> Self {
        Finding {
            pii_type,
            start,
            end,
            confidence,
        }
    }

    /// The matched text.
    pub fn value<'a>(&self, text: &'a str) -> &'a str {
        &text[self.start..self.end]
    }
}

/// A family of PII detectors.
pub trait Detector: Sync {
    /// Short name of the family (for docs / debugging).
    fn name(&self) -> &'static str;
    /// Append every candidate finding in `ctx.text` to `out` (overlaps are allowed; [`detect`]
    /// resolves them).
    fn detect_in(&self, ctx: &Context, out: &mut Vec<Finding>);
    /// Convenience: run this detector alone on `text`.
    fn detect(&self, text: &str, out: &mut Vec<Finding>) {
        self.detect_in(&Context::new(text), out)
    }
}

/// A maximal run of ASCII digits where consecutive digits are separated by at most two bytes
/// of ` -.()`, e.g. `(415) 555-0100`, `4111 1111 1111 1111`, `192.168.1.20`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NumRun {
    /// Byte offset of the first digit.
    pub start: usize,
    /// Byte offset just after the last digit.
    pub end: usize,
    /// Number of digits in the run.
    pub digits: usize,
}

/// Per-text precomputation shared by all detectors (one cheap byte pass). Number-shaped
/// detectors (phone, SSN, card, IPv4) run their regexes only inside long-enough [`NumRun`]s
/// instead of over the whole text: prose with few numbers costs almost nothing.
pub struct Context<'a> {
    pub text: &'a str,
    pub runs: Vec<NumRun>,
}

impl<'a> Context<'a> {
    pub fn new(text: &'a str) -> Self {
        let b = text.as_bytes();
        let mut runs = Vec::new();
        let mut i = 0;
        while i < b.len() {
            if !b[i].is_ascii_digit() {
                i += 1;
                continue;
            }
            let start = i;
            let mut end = i;
            let mut digits = 0;
            loop {
                while i < b.len() && b[i].is_ascii_digit() {
                    i += 1;
                    digits += 1;
                }
                end = end.max(i);
                let mut j = i;
                while j < b.len() && j - i < 2 && matches!(b[j], b' ' | b'-' | b'.' | b'(' | b')') {
                    j += 1;
                }
                if j > i && j < b.len() && b[j].is_ascii_digit() {
                    i = j;
                } else {
                    break;
                }
            }
            runs.push(NumRun { start, end, digits });
            i = end;
        }
        Context { text, runs }
    }

    /// Byte windows around runs with at least `min_digits` digits, extended back over up to two
    /// leading `+` / `(` (for `+1 ...` and `(415) ...`).
    pub fn windows(&self, min_digits: usize) -> impl Iterator<Item = (usize, usize)> + '_ {
        let b = self.text.as_bytes();
        self.runs
            .iter()
            .filter(move |r| r.digits >= min_digits)
            .map(move |r| {
                let mut s = r.start;
                while s > 0 && r.start - s < 2 && matches!(b[s - 1], b'+' | b'(') {
                    s -= 1;
                }
                (s, r.end)
            })
    }
}

/// Every registered detector, in the order they run.
pub static DETECTORS: &[&dyn Detector] = &[
    &secrets::Secrets,
    &contact::Contact,
    &government::Government,
    &financial::Financial,
    &network::Network,
    &crypto::Crypto,
    &personal::Personal,
];

/// Run every detector and return non-overlapping findings sorted by start offset.
pub fn detect(text: &str) -> Vec<Finding> {
    let ctx = Context::new(text);
    let mut raw = Vec::new();
    for d in DETECTORS {
        d.detect_in(&ctx, &mut raw);
    }
    resolve_overlaps(raw)
}

/// Keep the best of overlapping findings: highest confidence first, then longest, then earliest.
pub fn resolve_overlaps(mut raw: Vec<Finding>) -> Vec<Finding> {
    if raw.len() <= 1 {
        return raw;
    }
    raw.sort_by(|a, b| {
        b.confidence
            .total_cmp(&a.confidence)
            .then((b.end - b.start).cmp(&(a.end - a.start)))
            .then(a.start.cmp(&b.start))
    });
    // kept spans by start; neighbours in the map are the only possible overlaps
    let mut kept: std::collections::BTreeMap<usize, Finding> = std::collections::BTreeMap::new();
    for f in raw {
        let prev_ok = kept
            .range(..=f.start)
            .next_back()
            .is_none_or(|(_, k)| k.end <= f.start);
        let next_ok = kept
            .range(f.start..)
            .next()
            .is_none_or(|(_, k)| k.start >= f.end);
        if prev_ok && next_ok {
            kept.insert(f.start, f);
        }
    }
    kept.into_values().collect()
}

// ---------------------------------------------------------------------------------------------
// Shared helpers for detectors.
// ---------------------------------------------------------------------------------------------

/// The char just before byte offset `i` (None at start).
pub(crate) fn char_before(text: &str, i: usize) -> Option<char> {
    text[..i].chars().next_back()
}

/// The char at byte offset `i` (None at end).
pub(crate) fn char_at(text: &str, i: usize) -> Option<char> {
    text[i..].chars().next()
}

/// True if the char after byte offset `i` is `c1` followed by an ASCII digit (e.g. `.5`).
pub(crate) fn followed_by_sep_digit(text: &str, i: usize, seps: &[u8]) -> bool {
    let b = text.as_bytes();
    i + 1 < b.len() && seps.contains(&b[i]) && b[i + 1].is_ascii_digit()
}

/// True if the char before byte offset `i` is an ASCII digit preceded... i.e. `5.` right before.
pub(crate) fn preceded_by_digit_sep(text: &str, i: usize, seps: &[u8]) -> bool {
    let b = text.as_bytes();
    i >= 2 && seps.contains(&b[i - 1]) && b[i - 2].is_ascii_digit()
}

/// A token boundary for number-like PII: the neighbour is not alphanumeric and not `_`.
pub(crate) fn is_word_char(c: Option<char>) -> bool {
    matches!(c, Some(c) if c.is_alphanumeric() || c == '_')
}

/// Byte offsets where case-insensitive keyword matches END, using an aho-corasick automaton.
/// If `whole_word`, the keyword must not be glued to letters/digits on either side.
pub(crate) fn keyword_ends(
    ac: &aho_corasick::AhoCorasick,
    text: &str,
    whole_word: bool,
) -> Vec<usize> {
    let mut ends = Vec::new();
    for m in ac.find_overlapping_iter(text) {
        if whole_word
            && (is_word_char(char_before(text, m.start())) || is_word_char(char_at(text, m.end())))
        {
            continue;
        }
        ends.push(m.end());
    }
    ends.sort_unstable();
    ends
}

/// True if some keyword ends within `window` bytes before `start` (and not after it).
/// `ends` must be sorted (as [`keyword_ends`] returns them).
pub(crate) fn near_keyword(ends: &[usize], start: usize, window: usize) -> bool {
    let i = ends.partition_point(|&e| e <= start);
    i > 0 && start - ends[i - 1] <= window
}

/// Build a case-insensitive aho-corasick automaton.
pub(crate) fn keywords(words: &[&str]) -> aho_corasick::AhoCorasick {
    aho_corasick::AhoCorasick::builder()
        .ascii_case_insensitive(true)
        .build(words)
        .expect("keyword automaton")
}

/// All matches of `re` inside the given byte windows of `text`, with full-text offsets (the
/// regex sees the real text before the window for look-behind such as `\b`).
pub(crate) fn find_in<'t>(
    re: &regex::Regex,
    text: &'t str,
    windows: impl Iterator<Item = (usize, usize)>,
) -> Vec<regex::Match<'t>> {
    let mut out = Vec::new();
    for (s, e) in windows {
        let hay = &text[..e];
        let mut pos = s;
        while pos < e {
            let Some(m) = re.find_at(hay, pos) else { break };
            pos = if m.end() > m.start() {
                m.end()
            } else {
                m.end() + 1
            };
            out.push(m);
        }
    }
    out
}

/// Compile a regex (call from a `LazyLock`, so once per process).
///
/// Every `\b` is rewritten to the ASCII word boundary `(?-u:\b)`: a Unicode `\b` makes the
/// regex crate's lazy DFA give up on any non-ASCII haystack and fall back to a ~50x slower
/// engine. Detectors check Unicode neighbours themselves where it matters.
pub(crate) fn re(pattern: &str) -> regex::Regex {
    regex::Regex::new(&pattern.replace(r"\b", r"(?-u:\b)")).expect("valid PII regex")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlap_keeps_highest_confidence_then_longest() {
        let raw = vec![
            Finding::new(PiiType::Phone, 0, 10, 0.8),
            Finding::new(PiiType::CreditCard, 0, 19, 0.99),
            Finding::new(PiiType::Email, 30, 40, 0.9),
            Finding::new(PiiType::UrlCredentials, 25, 40, 0.9),
        ];
        let out = resolve_overlaps(raw);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].pii_type, PiiType::CreditCard);
        assert_eq!(out[1].pii_type, PiiType::UrlCredentials);
    }

    #[test]
    fn num_runs() {
        let c = Context::new("call (415) 555-0100, v1.2 and 4111 1111 1111 1111. x 12  34");
        let got: Vec<(&str, usize)> = c
            .runs
            .iter()
            .map(|r| (&c.text[r.start..r.end], r.digits))
            .collect();
        assert_eq!(
            got,
            [
                ("415) 555-0100", 10),
                ("1.2", 2),
                ("4111 1111 1111 1111", 16),
                ("12  34", 4)
            ]
        );
        let w: Vec<&str> = c.windows(10).map(|(s, e)| &c.text[s..e]).collect();
        assert_eq!(w, ["(415) 555-0100", "4111 1111 1111 1111"]);
    }

    #[test]
    fn names_roundtrip() {
        for t in PiiType::ALL {
            assert_eq!(PiiType::from_name(t.as_str()), Some(t));
            assert_eq!(
                serde_json::to_string(&t).unwrap(),
                format!("\"{}\"", t.as_str())
            );
        }
    }
}
