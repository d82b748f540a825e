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
