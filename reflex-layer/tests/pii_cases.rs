//! Runs every labelled case in `tests/data/pii_cases.jsonl` and reports per-type precision and
//! recall (`cargo test --test pii_cases -- --nocapture`). Asserts >= 0.95 overall.

use octollm_reflex::pii::{detect, PiiType};
use std::collections::BTreeMap;

#[derive(serde::Deserialize)]
struct Expect {
    #[serde(rename = "type")]
    pii_type: String,
    value: String,
}

#[derive(serde::Deserialize)]
struct Case {
    text: String,
    expect: Vec<Expect>,
}

#[derive(Default)]
struct Counts {
    tp: usize,
    fp: usize,
    fn_: usize,
}

#[test]
fn labelled_cases() {
    let data = include_str!("data/pii_cases.jsonl");
    let mut per: BTreeMap<String, Counts> = BTreeMap::new();
    let mut failures = Vec::new();
    let mut n = 0;
    for (lineno, line) in data.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        n += 1;
        let case: Case =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("line {}: {e}", lineno + 1));
        let mut expected: Vec<(String, String)> = case
            .expect
            .iter()
            .map(|e| (e.pii_type.clone(), e.value.clone()))
            .collect();
        for (t, _) in &expected {
            assert!(
                PiiType::from_name(t).is_some(),
                "line {}: unknown type {t}",
                lineno + 1
            );
        }
        let found: Vec<(String, String)> = detect(&case.text)
            .iter()
            .map(|f| {
                (
                    f.pii_type.as_str().to_string(),
                    f.value(&case.text).to_string(),
                )
            })
            .collect();
        for f in &found {
            if let Some(i) = expected.iter().position(|e| e == f) {
                expected.remove(i);
                per.entry(f.0.clone()).or_default().tp += 1;
            } else {
                per.entry(f.0.clone()).or_default().fp += 1;
                failures.push(format!(
                    "line {}: FP {} {:?} in {:?}",
                    lineno + 1,
                    f.0,
                    f.1,
                    case.text
                ));
            }
        }
        for e in expected {
            per.entry(e.0.clone()).or_default().fn_ += 1;
            failures.push(format!(
                "line {}: FN {} {:?} in {:?}",
                lineno + 1,
                e.0,
                e.1,
                case.text
            ));
        }
    }
    let ratio = |a: usize, b: usize| if b == 0 { 1.0 } else { a as f64 / b as f64 };
    println!("{n} cases");
    println!(
        "{:<16} {:>4} {:>4} {:>4} {:>9} {:>7}",
        "type", "tp", "fp", "fn", "precision", "recall"
    );
    let (mut tp, mut fp, mut fn_) = (0, 0, 0);
    for (t, c) in &per {
        println!(
            "{:<16} {:>4} {:>4} {:>4} {:>9.3} {:>7.3}",
            t,
            c.tp,
            c.fp,
            c.fn_,
            ratio(c.tp, c.tp + c.fp),
            ratio(c.tp, c.tp + c.fn_)
        );
        tp += c.tp;
        fp += c.fp;
        fn_ += c.fn_;
    }
    let (p, r) = (ratio(tp, tp + fp), ratio(tp, tp + fn_));
    println!(
        "{:<16} {:>4} {:>4} {:>4} {:>9.3} {:>7.3}",
        "OVERALL", tp, fp, fn_, p, r
    );
    for f in &failures {
        println!("{f}");
    }
    assert!(n >= 200, "need at least 200 cases, have {n}");
    for t in PiiType::ALL {
        assert!(
            per.get(t.as_str()).is_some_and(|c| c.tp > 0),
            "no true positive for {t}"
        );
    }
    assert!(p >= 0.95, "overall precision {p:.3} < 0.95");
    assert!(r >= 0.95, "overall recall {r:.3} < 0.95");
}

fn kb(seed: &str) -> String {
    let mut s = String::new();
    while s.len() < 1024 {
        s.push_str(seed);
    }
    let mut cut = 1024;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    s.truncate(cut);
    s
}

/// Timing (run optimised: `cargo test --release --test pii_cases -- --ignored --nocapture`).
#[test]
#[ignore]
fn timing_per_kb() {
    let clean = kb("Summarise the quarterly report for the team: revenue grew 12% to 3.4 million \
        in Q3 2026, churn fell to 2.1%, and the deploy of v1.2.3.4 on 2026-11-25T10:00:00Z went fine. \
        Next steps: review the backlog (about 120 items), schedule the retro at 10:30, and update the \
        roadmap. Café naïve résumé — keep the tone friendly and concise. ");
    let heavy = kb("Contact jane.doe@example.com or +1 415 555 0100, SSN 123-45-6789, card \
        4111 1111 1111 1111, IBAN DE89370400440532013000, host 192.168.1.20, mac 00:1A:2B:3C:4D:5E, \
        key AKIAIOSFODNN7EXAMPLE, 2001:db8::8a2e:370:7334, DOB: 1985-03-14, \
        postgres://admin:s3cr3t@db.example.com, 1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNa. ");
    for (name, text) in [("clean", &clean), ("pii-heavy", &heavy)] {
        let _ = detect(text);
        let iters = 20_000;
        let t = std::time::Instant::now();
        let mut n = 0;
        for _ in 0..iters {
            n += std::hint::black_box(detect(std::hint::black_box(text))).len();
        }
        let us = t.elapsed().as_secs_f64() * 1e6 / iters as f64;
        let mut ph = octollm_reflex::redact::Placeholders::new();
        let t = std::time::Instant::now();
        for _ in 0..iters {
            let f = detect(text);
            std::hint::black_box(octollm_reflex::redact::redact(text, &f, &mut ph));
        }
        let us_r = t.elapsed().as_secs_f64() * 1e6 / iters as f64;
        println!(
            "{name}: {} bytes, {} findings, detect {us:.2} µs/KB, detect+redact {us_r:.2} µs/KB",
            text.len(),
            n / iters
        );
        for d in octollm_reflex::pii::DETECTORS {
            let t = std::time::Instant::now();
            let mut v = Vec::new();
            for _ in 0..2000 {
                v.clear();
                d.detect(std::hint::black_box(text), &mut v);
            }
            println!(
                "    {:<12} {:.2} µs",
                d.name(),
                t.elapsed().as_secs_f64() * 1e6 / 2000.0
            );
        }
    }
}
