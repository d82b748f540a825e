//! Redaction: replace each finding with a stable placeholder `<TYPE_N>`.
//!
//! One [`Placeholders`] table is shared by all fields of one task (goal, context, constraints),
//! so the same value gets the same placeholder everywhere in the task and different values of
//! a type get increasing N (`<EMAIL_1>`, `<EMAIL_2>`, ...). Values are compared after a light
//! normalisation: emails case-insensitively, numbers (cards, phones, IBANs, SSNs) ignoring
//! separators, everything else exactly.
//!
//! Leak guard: once a value has been detected in a task, every other literal occurrence of it
//! (at least 6 bytes long) in this or any later field of the task is replaced too, even where
//! the detectors did not fire on it (e.g. the same card number glued to a letter).

use crate::pii::{self, Finding, PiiType};
use std::collections::HashMap;

/// Per-task placeholder table.
#[derive(Debug, Default, Clone)]
pub struct Placeholders {
    by_value: HashMap<(PiiType, String), String>,
    counters: HashMap<PiiType, usize>,
    /// Raw detected values (for the leak guard), in first-seen order, deduplicated.
    raw: Vec<(PiiType, String)>,
    raw_seen: std::collections::HashSet<String>,
    /// Automaton over `raw`, rebuilt lazily when `raw` grew.
    guard: Option<(usize, aho_corasick::AhoCorasick)>,
}

/// Minimum length (bytes) of a value for the leak guard to chase other occurrences of it.
pub const LEAK_GUARD_MIN_LEN: usize = 6;

fn normalise(t: PiiType, v: &str) -> String {
    match t {
        PiiType::Email | PiiType::MacAddress | PiiType::Ipv6 | PiiType::EthAddress => {
            v.to_lowercase()
        }
        PiiType::CreditCard | PiiType::Phone | PiiType::Iban | PiiType::UsSsn => v
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '+')
            .map(|c| c.to_ascii_uppercase())
            .collect(),
        _ => v.to_string(),
    }
}

impl Placeholders {
    pub fn new() -> Self {
        Self::default()
    }

    /// The placeholder for `value` of type `t`, allocating the next number if new.
    pub fn placeholder(&mut self, t: PiiType, value: &str) -> &str {
        let key = (t, normalise(t, value));
        let counters = &mut self.counters;
        self.by_value.entry(key).or_insert_with(|| {
            let n = counters.entry(t).or_insert(0);
            *n += 1;
            format!("<{}_{}>", t.as_str(), n)
        })
    }

    fn remember(&mut self, t: PiiType, value: &str) {
        if value.len() >= LEAK_GUARD_MIN_LEN && self.raw_seen.insert(value.to_string()) {
            self.raw.push((t, value.to_string()));
        }
    }

    /// Number of distinct values seen so far.
    pub fn len(&self) -> usize {
        self.by_value.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_value.is_empty()
    }

    /// `(placeholder, type)` pairs, e.g. for audit logs (never the values themselves).
    pub fn placeholders(&self) -> impl Iterator<Item = (&str, PiiType)> {
        self.by_value.iter().map(|((t, _), p)| (p.as_str(), *t))
    }
}

/// Replace every finding in `text` with its placeholder. `findings` must be non-overlapping
/// byte spans on char boundaries (what [`pii::detect`] returns); they need not be sorted.
/// Spans that are out of range, not on char boundaries or overlap an earlier one are skipped.
pub fn redact(text: &str, findings: &[Finding], placeholders: &mut Placeholders) -> String {
    let mut spans: Vec<(usize, usize, PiiType)> = Vec::with_capacity(findings.len());
    let mut sorted: Vec<&Finding> = findings.iter().collect();
    sorted.sort_by_key(|f| (f.start, f.end));
    let mut pos = 0;
    for f in sorted {
        if f.start < pos
            || f.end <= f.start
            || f.end > text.len()
            || !text.is_char_boundary(f.start)
            || !text.is_char_boundary(f.end)
        {
            continue;
        }
        placeholders.remember(f.pii_type, &text[f.start..f.end]);
        spans.push((f.start, f.end, f.pii_type));
        pos = f.end;
    }
    // Leak guard: other literal occurrences of any value detected so far in the task.
    if !placeholders.raw.is_empty() {
        let n = placeholders.raw.len();
        if placeholders
            .guard
            .as_ref()
            .is_none_or(|(built, _)| *built != n)
        {
            placeholders.guard = aho_corasick::AhoCorasick::builder()
                .match_kind(aho_corasick::MatchKind::LeftmostLongest)
                .kind(Some(aho_corasick::AhoCorasickKind::ContiguousNFA))
                .build(placeholders.raw.iter().map(|(_, v)| v.as_str()))
                .ok()
                .map(|ac| (n, ac));
        }
        if let Some((_, ac)) = &placeholders.guard {
            let mut extra = Vec::new();
            for m in ac.find_iter(text) {
                let overlaps = spans.iter().any(|&(s, e, _)| m.start() < e && s < m.end());
                if !overlaps {
                    extra.push((
                        m.start(),
                        m.end(),
                        placeholders.raw[m.pattern().as_usize()].0,
                    ));
                }
            }
            if !extra.is_empty() {
                spans.extend(extra);
                spans.sort_unstable_by_key(|s| s.0);
            }
        }
    }
    let mut out = String::with_capacity(text.len());
    let mut pos = 0;
    for (s, e, t) in spans {
        out.push_str(&text[pos..s]);
        out.push_str(placeholders.placeholder(t, &text[s..e]));
        pos = e;
    }
    out.push_str(&text[pos..]);
    out
}

/// Convenience wrapper: detect + redact with one task-wide placeholder table.
#[derive(Debug, Default)]
pub struct Redactor {
    pub placeholders: Placeholders,
}

impl Redactor {
    pub fn new() -> Self {
        Self::default()
    }

    /// Detect PII in `text` and return the redacted text and the findings (byte offsets into
    /// the original `text`).
    pub fn redact_text(&mut self, text: &str) -> (String, Vec<Finding>) {
        let findings = pii::detect(text);
        let red = redact(text, &findings, &mut self.placeholders);
        (red, findings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_value_same_placeholder_across_fields() {
        let mut r = Redactor::new();
        let (goal, _) = r.redact_text("mail a@example.com and b@example.com");
        let (ctx, _) = r.redact_text("again A@example.com, card 4111 1111 1111 1111");
        let (cons, _) = r.redact_text("card 4111-1111-1111-1111 and b@example.com");
        assert_eq!(goal, "mail <EMAIL_1> and <EMAIL_2>");
        assert_eq!(ctx, "again <EMAIL_1>, card <CREDIT_CARD_1>");
        assert_eq!(cons, "card <CREDIT_CARD_1> and <EMAIL_2>");
        assert_eq!(r.placeholders.len(), 3);
    }

    #[test]
    fn bad_spans_are_skipped() {
        let mut p = Placeholders::new();
        let f = [
            Finding::new(PiiType::Email, 1, 2, 1.0),
            Finding::new(PiiType::Email, 0, 100, 1.0),
            Finding::new(PiiType::Email, 1, 3, 1.0),
        ];
        assert_eq!(redact("é!", &f, &mut p), "é!");
    }

    #[test]
    fn leak_guard_catches_undetected_copies() {
        let mut r = Redactor::new();
        let (a, _) = r.redact_text("card 4111111111111111 on file");
        let (b, _) = r.redact_text("copy x4111111111111111y and 4111111111111111");
        assert_eq!(a, "card <CREDIT_CARD_1> on file");
        assert_eq!(b, "copy x<CREDIT_CARD_1>y and <CREDIT_CARD_1>");
    }
}
