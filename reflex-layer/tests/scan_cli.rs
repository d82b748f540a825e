//! Runs the built `octollm-reflex` binary.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_octollm-reflex");

fn run_scan(input: &str) -> Vec<serde_json::Value> {
    let mut child = Command::new(BIN)
        .arg("scan")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("valid JSON line"))
        .collect()
}

fn py_slice(text: &str, start: u64, end: u64) -> String {
    text.chars()
        .skip(start as usize)
        .take((end - start) as usize)
        .collect()
}

#[test]
fn scan_reports_codepoint_offsets_and_redacts() {
    let text = "Zoë 😀🇫🇷 café — écris à jane@example.com, card 4111 1111 1111 1111, again jane@example.com";
    let input = format!(
        "{}\n{}\n\n{}\n",
        serde_json::json!({"id": 42, "text": text}),
        serde_json::json!({"id": {"task": "t-1"}, "text": "nothing here"}),
        serde_json::json!({"id": "s", "text": "ssh to 10.0.0.7 with key AKIAIOSFODNN7EXAMPLE"}),
    );
    let out = run_scan(&input);
    assert_eq!(out.len(), 3, "blank lines are skipped");
    let o = &out[0];
    assert_eq!(o["id"], 42);
    let pii = o["pii"].as_array().unwrap();
    let got: Vec<(String, String)> = pii
        .iter()
        .map(|p| {
            let v = py_slice(
                text,
                p["start"].as_u64().unwrap(),
                p["end"].as_u64().unwrap(),
            );
            (p["type"].as_str().unwrap().to_string(), v)
        })
        .collect();
    assert_eq!(
        got,
        [
            ("EMAIL".to_string(), "jane@example.com".to_string()),
            ("CREDIT_CARD".to_string(), "4111 1111 1111 1111".to_string()),
            ("EMAIL".to_string(), "jane@example.com".to_string()),
        ]
    );
    assert_eq!(
        o["redacted"],
        "Zoë 😀🇫🇷 café — écris à <EMAIL_1>, card <CREDIT_CARD_1>, again <EMAIL_1>"
    );
    assert!(o["injection"]["score"].is_number());
    assert!(o["injection"]["severity"].is_string());
    assert!(o["injection"]["categories"].is_array());
    assert!(pii[0]["confidence"].as_f64().unwrap() > 0.5);

    assert_eq!(out[1]["id"], serde_json::json!({"task": "t-1"}));
    assert_eq!(out[1]["pii"].as_array().unwrap().len(), 0);
    assert_eq!(out[1]["redacted"], "nothing here");
    assert_eq!(
        out[2]["redacted"],
        "ssh to <IPV4_1> with key <AWS_ACCESS_KEY_1>"
    );
}

#[test]
fn malformed_lines_give_error_lines_and_continue() {
    let out = run_scan("{oops\n[1]\n{\"id\":1}\n{\"id\":2,\"text\":\"ok\"}\n");
    assert_eq!(out.len(), 4);
    assert_eq!(out[0]["id"], serde_json::Value::Null);
    assert!(out[0]["error"].is_string());
    assert!(out[1]["error"].is_string());
    assert!(out[2]["error"].is_string());
    assert_eq!(out[3]["id"], 2);
    assert!(out[3].get("error").is_none());
}

#[test]
fn line_by_line_interactive() {
    let mut child = Command::new(BIN)
        .arg("scan")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    for i in 0..3 {
        writeln!(
            stdin,
            "{}",
            serde_json::json!({"id": i, "text": "mail a@example.com"})
        )
        .unwrap();
        stdin.flush().unwrap();
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap(); // would hang without per-line flush
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["id"], i);
        assert_eq!(v["redacted"], "mail <EMAIL_1>");
    }
    drop(stdin);
    assert!(child.wait().unwrap().success());
}

#[test]
fn help_and_bad_args() {
    let help = Command::new(BIN).arg("--help").output().unwrap();
    assert!(help.status.success());
    assert!(String::from_utf8_lossy(&help.stdout).contains("scan"));
    let bad = Command::new(BIN).arg("--bogus").output().unwrap();
    assert_eq!(bad.status.code(), Some(2));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.starts_with("error:"));
    let bad = Command::new(BIN)
        .args(["scan", "--bogus"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    let bad = Command::new(BIN).arg("frobnicate").output().unwrap();
    assert_eq!(bad.status.code(), Some(2));
}
