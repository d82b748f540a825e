//! `octollm-reflex scan`: JSONL in, JSONL out, one line per line, flushed per line.
//!
//! Input line: `{"id": <any JSON>, "text": "<string>"}`.
//! Output line: `{"id", "pii": [{"type", "start", "end", "confidence"}], "injection":
//! {"score", "severity", "categories"}, "redacted"}` where `start`/`end` are Unicode
//! code-point offsets into `text` (Python `text[start:end]`). A malformed line yields
//! `{"id": null, "error": "..."}` (or the id, when it could be read) and scanning continues.

use crate::injection::{self, Verdict};
use crate::pii::{self, Finding, PiiType};
use crate::redact::{redact, Placeholders};
use serde::Serialize;
use std::io::{self, BufRead, Write};

/// One PII hit in the output, with code-point offsets.
#[derive(Debug, Clone, Serialize)]
pub struct PiiOut {
    #[serde(rename = "type")]
    pub pii_type: PiiType,
    pub start: usize,
    pub end: usize,
    pub confidence: f32,
}

/// One output line for a well-formed input line.
#[derive(Debug, Clone, Serialize)]
pub struct ScanResult {
    pub id: serde_json::Value,
    pub pii: Vec<PiiOut>,
    pub injection: Verdict,
    pub redacted: String,
    /// With `scan --explain`: rule hits and the strongest n-gram features behind the verdict.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub explain: Option<injection::Explanation>,
}

#[derive(Serialize)]
struct ErrorLine<'a> {
    id: &'a serde_json::Value,
    error: String,
}

/// Convert byte-offset findings (sorted or not) into code-point offsets into `text`.
pub fn to_codepoint_offsets(text: &str, findings: &[Finding]) -> Vec<PiiOut> {
    let mut bounds: Vec<usize> = findings.iter().flat_map(|f| [f.start, f.end]).collect();
    bounds.sort_unstable();
    bounds.dedup();
    let mut map = std::collections::HashMap::with_capacity(bounds.len());
    let mut it = bounds.iter().peekable();
    let byte_offsets = text
        .char_indices()
        .map(|(b, _)| b)
        .chain(std::iter::once(text.len()));
    for (cp, byte) in byte_offsets.enumerate() {
        while let Some(&&b) = it.peek() {
            if b > byte {
                break;
            }
            map.insert(b, cp);
            it.next();
        }
    }
    findings
        .iter()
        .map(|f| PiiOut {
            pii_type: f.pii_type,
            start: map[&f.start],
            end: map[&f.end],
            confidence: f.confidence,
        })
        .collect()
}

/// Scan one text: PII findings (code-point offsets), injection verdict, redacted text.
pub fn scan_text(id: serde_json::Value, text: &str) -> ScanResult {
    let findings = pii::detect(text);
    let mut ph = Placeholders::new();
    let redacted = redact(text, &findings, &mut ph);
    ScanResult {
        id,
        pii: to_codepoint_offsets(text, &findings),
        injection: injection::assess(text),
        redacted,
        explain: None,
    }
}

/// [`scan_text`] plus the explanation of the injection verdict (`top` features).
pub fn scan_text_explained(id: serde_json::Value, text: &str, top: usize) -> ScanResult {
    let model = injection::model::installed();
    let a = injection::analyse(text, model);
    let mut r = scan_text(id, text);
    r.explain = Some(a.explain(model, top));
    r
}

/// Process one raw input line into one output JSON line (no trailing newline).
pub fn scan_line(line: &[u8]) -> String {
    scan_line_with(line, None)
}

/// The `text` of one input line, or the error line to print instead.
fn read_line(line: &[u8]) -> Result<(serde_json::Value, String), String> {
    let null = serde_json::Value::Null;
    let err = |id: &serde_json::Value, e: String| {
        serde_json::to_string(&ErrorLine { id, error: e })
            .unwrap_or_else(|_| r#"{"id":null,"error":"unserialisable error"}"#.to_string())
    };
    let v: serde_json::Value = match serde_json::from_slice(line) {
        Ok(v) => v,
        Err(e) => return Err(err(&null, format!("invalid JSON: {e}"))),
    };
    let serde_json::Value::Object(mut obj) = v else {
        return Err(err(
            &null,
            "expected a JSON object with \"id\" and \"text\"".to_string(),
        ));
    };
    let id = obj.remove("id").unwrap_or(serde_json::Value::Null);
    match obj.remove("text") {
        Some(serde_json::Value::String(s)) => Ok((id, s)),
        Some(_) => Err(err(&id, "\"text\" must be a string".to_string())),
        None => Err(err(&id, "missing \"text\"".to_string())),
    }
}

/// One `octollm-reflex features` output line: the learned stage's hashed features of the text
/// (sorted buckets `idx`, their counts `cnt`, the total `n`), the rule score and whether the
/// rules saw only meta/quoted hits (`meta`), so the trainer
/// never re-implements normalisation, decoding or hashing.
pub fn features_line(line: &[u8]) -> String {
    let (id, text) = match read_line(line) {
        Ok(x) => x,
        Err(e) => return e,
    };
    let a = injection::analyse(&text, None);
    let (counts, n) = injection::model::counts(a.model_texts());
    let idx: Vec<u32> = counts.iter().map(|c| c.0).collect();
    let cnt: Vec<u32> = counts.iter().map(|c| c.1).collect();
    serde_json::json!({"id": id, "idx": idx, "cnt": cnt, "n": n, "rule": a.rule_score, "meta": a.meta}).to_string()
}

/// [`scan_line`], with an explanation of `top` features when `explain` is set.
pub fn scan_line_with(line: &[u8], explain: Option<usize>) -> String {
    let (id, text) = match read_line(line) {
        Ok(x) => x,
        Err(e) => return e,
    };
    let res = match explain {
        Some(top) => scan_text_explained(id.clone(), &text, top),
        None => scan_text(id.clone(), &text),
    };
    serde_json::to_string(&res).unwrap_or_else(|e| {
        serde_json::json!({"id": id, "error": format!("serialise: {e}")}).to_string()
    })
}

/// Read JSONL from `input`, write one JSON line per non-blank input line to `output`, flushing
/// after each line.
pub fn run<R: BufRead, W: Write>(input: R, output: W) -> io::Result<()> {
    run_lines(input, output, scan_line)
}

/// The JSONL loop of `scan` and `features`: `f` turns each non-blank line into one output line.
pub fn run_lines<R: BufRead, W: Write>(
    mut input: R,
    mut output: W,
    f: impl Fn(&[u8]) -> String,
) -> io::Result<()> {
    let mut buf = Vec::with_capacity(4096);
    loop {
        buf.clear();
        if input.read_until(b'\n', &mut buf)? == 0 {
            return Ok(());
        }
        let line = buf.trim_ascii();
        if line.is_empty() {
            continue;
        }
        let out = f(line);
        output.write_all(out.as_bytes())?;
        output.write_all(b"\n")?;
        output.flush()?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codepoint_offsets_after_multibyte() {
        let text = "héllo 😀 mail bob@example.com";
        let r = scan_text(serde_json::json!(7), text);
        assert_eq!(r.pii.len(), 1);
        let (s, e) = (r.pii[0].start, r.pii[0].end);
        let got: String = text.chars().skip(s).take(e - s).collect();
        assert_eq!(got, "bob@example.com");
        assert_eq!(r.redacted, "héllo 😀 mail <EMAIL_1>");
    }

    #[test]
    fn malformed_lines() {
        let out = scan_line(b"{not json");
        assert!(out.starts_with(r#"{"id":null,"error":"#));
        let out = scan_line(br#"{"id": "a", "text": 5}"#);
        assert!(out.starts_with(r#"{"id":"a","error":"#));
        let out = scan_line(b"[1,2]");
        assert!(out.contains("error"));
        let out = scan_line(&[0xff, 0xfe]);
        assert!(out.contains("error"));
    }
}
