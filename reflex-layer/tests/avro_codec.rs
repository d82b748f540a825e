//! The Avro contracts and single-object codec against docs/wire-formats.md and the Python codec.

use octollm_reflex::avro::{canonical_form, crc64_avro, Contracts, DecodeError};
use octollm_reflex::model::{TaskRequest, TASK_REQUEST};
use std::path::Path;

fn contracts() -> Contracts {
    Contracts::load(&Contracts::default_dir()).expect("schemas load")
}

/// `(record, bytes on the wire)` rows of the "Fingerprints" table in docs/wire-formats.md.
fn doc_table() -> Vec<(String, String)> {
    let doc = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/wire-formats.md"),
    )
    .expect("docs/wire-formats.md");
    doc.lines()
        .filter(|l| l.starts_with("| `octollm.v1."))
        .map(|l| {
            let cells: Vec<&str> = l.split('|').map(|c| c.trim().trim_matches('`')).collect();
            (cells[1].to_string(), cells[2].to_string())
        })
        .collect()
}

#[test]
fn fingerprints_match_the_wire_format_table() {
    let c = contracts();
    let table = doc_table();
    assert!(table.len() >= 7, "table not found: {table:?}");
    for (name, hex) in table {
        let contract = c.get(&name).unwrap_or_else(|| panic!("{name} not loaded"));
        let wire: String = contract
            .fingerprint
            .to_le_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            wire, hex,
            "fingerprint of {name}; canonical form {}",
            contract.canonical
        );
    }
}

#[test]
fn canonical_form_reduces_logical_types_and_spec_vectors() {
    // spec: the empty string's fingerprint is the seed; a few PCF rules
    assert_eq!(crc64_avro(b""), 0xc15d_213a_a4d7_a795);
    let j: serde_json::Value =
        serde_json::from_str(r#"{"type":"long","logicalType":"timestamp-millis"}"#).unwrap();
    assert_eq!(canonical_form(&j), r#""long""#);
    let j: serde_json::Value = serde_json::from_str(
        r#"{"type":"record","name":"R","namespace":"a.b","doc":"x","fields":[{"name":"f","type":{"type":"enum","name":"E","symbols":["A"]},"default":"A"}]}"#,
    )
    .unwrap();
    assert_eq!(
        canonical_form(&j),
        r#"{"name":"a.b.R","type":"record","fields":[{"name":"f","type":{"name":"a.b.E","type":"enum","symbols":["A"]}}]}"#
    );
    // Java/spec test vector: fingerprint64 of "int"
    assert_eq!(crc64_avro(br#""int""#), 0x7275_d51a_3f39_5c8f);
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data")
            .join(name),
    )
    .expect("fixture")
}

#[test]
fn decodes_a_task_written_by_the_python_codec() {
    let c = contracts();
    let data = fixture("task_request.python.bin");
    let (name, value) = c.decode(&data).expect("decodes");
    assert_eq!(name, TASK_REQUEST);
    let t = TaskRequest::from_value(&value).unwrap();
    assert_eq!(t.task_id, "6f1c1a3e-0d6b-4f7e-9a51-2b7c3d4e5f60");
    assert_eq!(t.tenant_id, "acme");
    assert_eq!(
        t.goal,
        "Write a python function that adds two numbers; mail me at jane.doe@example.com"
    );
    assert_eq!(
        t.constraints,
        vec!["no imports".to_string(), "café ✓".to_string()]
    );
    assert_eq!(t.priority, "HIGH");
    assert_eq!(t.budget.max_tokens, Some(1000));
    assert_eq!(t.reply_topic.as_deref(), Some("replies"));
    assert_eq!(t.created_at, 1_767_225_600_000);
    assert_eq!(
        t.trace.get("traceparent").map(String::as_str),
        Some("00-abc-def-01")
    );
    // and our encoding of it is byte-identical to Python's
    let again = c.encode(TASK_REQUEST, t.to_value()).unwrap();
    assert_eq!(again, data);
}

/// A schemas dir whose TaskRequest lacks `trace` (an "older" version), and one that keeps that
/// version in history/ next to the real current one.
fn old_and_new_dirs() -> (tempfile::TempDir, tempfile::TempDir) {
    let src = Contracts::default_dir();
    let old = tempfile::tempdir().unwrap();
    let new = tempfile::tempdir().unwrap();
    std::fs::create_dir(new.path().join("history")).unwrap();
    for e in std::fs::read_dir(&src).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "avsc") {
            let name = p.file_name().unwrap();
            std::fs::copy(&p, new.path().join(name)).unwrap();
            let mut j: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
            if j["name"] == "TaskRequest" {
                let fields = j["fields"].as_array_mut().unwrap();
                fields.retain(|f| f["name"] != "trace");
                let text = serde_json::to_string_pretty(&j).unwrap();
                std::fs::write(
                    new.path().join("history/octollm.v1.TaskRequest.v0.avsc"),
                    &text,
                )
                .unwrap();
                std::fs::write(old.path().join(name), text).unwrap();
            } else {
                std::fs::copy(&p, old.path().join(name)).unwrap();
            }
        }
    }
    (old, new)
}

#[test]
fn a_writer_from_history_is_resolved_to_the_current_schema() {
    let (old_dir, new_dir) = old_and_new_dirs();
    let old = Contracts::load(old_dir.path()).unwrap();
    let new = Contracts::load(new_dir.path()).unwrap();
    assert_ne!(
        old.get(TASK_REQUEST).unwrap().fingerprint,
        new.get(TASK_REQUEST).unwrap().fingerprint
    );
    // the old writer's bytes: TaskRequest without trace
    let c = contracts();
    let (_, v) = c.decode(&fixture("task_request.python.bin")).unwrap();
    let apache_avro::types::Value::Record(mut fields) = v else {
        panic!()
    };
    fields.retain(|(n, _)| n != "trace");
    let data = old
        .encode(TASK_REQUEST, apache_avro::types::Value::Record(fields))
        .unwrap();
    // unknown to the real contracts, resolved by the ones with the history file
    assert_eq!(c.decode(&data).unwrap_err().class(), "UnknownFingerprint");
    let (name, value) = new.decode(&data).unwrap();
    assert_eq!(name, TASK_REQUEST);
    let t = TaskRequest::from_value(&value).unwrap();
    assert!(t.trace.is_empty());
    assert_eq!(t.tenant_id, "acme");
}

#[test]
fn bad_bytes_are_classified() {
    let c = contracts();
    let good = fixture("task_request.python.bin");
    assert_eq!(c.decode(b"").unwrap_err(), DecodeError::EmptyPayload);
    assert_eq!(
        c.decode(b"{\"json\":1}").unwrap_err().class(),
        "UnknownFormat"
    );
    assert_eq!(
        c.decode(&[0xC3, 0x02, 0, 0]).unwrap_err().class(),
        "UnknownFormat"
    );
    assert_eq!(
        c.decode(&[0x00, 0, 0, 0, 1, 2]).unwrap_err().class(),
        "UnsupportedFormat"
    );
    assert_eq!(c.decode(&good[..6]).unwrap_err().class(), "TruncatedBody");
    let mut unknown = good.clone();
    unknown[2] ^= 0xff;
    assert_eq!(
        c.decode(&unknown).unwrap_err().class(),
        "UnknownFingerprint"
    );
    for cut in 10..good.len() {
        assert_eq!(
            c.decode(&good[..cut]).unwrap_err().class(),
            "TruncatedBody",
            "cut at {cut}: {:?}",
            c.decode(&good[..cut])
        );
    }
    let mut trailing = good.clone();
    trailing.push(0);
    assert_eq!(c.decode(&trailing).unwrap_err().class(), "TrailingBytes");
    let big = vec![0xC3; (1 << 20) + 1];
    assert_eq!(c.decode(&big).unwrap_err().class(), "BodyTooLarge");
    // every single-bit flip: never a panic, always either a record or a known class
    for i in 0..good.len() * 8 {
        let mut b = good.clone();
        b[i / 8] ^= 1 << (i % 8);
        let _ = c.decode(&b);
    }
}

#[test]
fn invalid_utf8_and_bad_uuid_are_classified() {
    let c = contracts();
    let good = fixture("task_request.python.bin");
    // body starts with task_id: varint length 72 (36 chars) then the UUID text
    assert_eq!(good[10], 72);
    let mut bad_uuid = good.clone();
    bad_uuid[11] = b'z';
    assert_eq!(c.decode(&bad_uuid).unwrap_err().class(), "SchemaMismatch");
    // tenant_id "acme" follows the uuid: make it invalid UTF-8
    let t = 11 + 36;
    assert_eq!(good[t], 8);
    let mut bad_utf8 = good.clone();
    bad_utf8[t + 1] = 0xff;
    assert_eq!(c.decode(&bad_utf8).unwrap_err().class(), "InvalidUtf8");
}

/// Every enum named `name` in the `.avsc` files of `dir`, as its symbol list.
fn enum_symbols(dir: &Path, name: &str) -> Vec<String> {
    fn walk(v: &serde_json::Value, name: &str, out: &mut Vec<Vec<String>>) {
        match v {
            serde_json::Value::Object(map) => {
                if map.get("type").and_then(|t| t.as_str()) == Some("enum")
                    && map.get("name").and_then(|n| n.as_str()) == Some(name)
                {
                    let symbols = map["symbols"].as_array().expect("symbols");
                    out.push(
                        symbols
                            .iter()
                            .map(|s| s.as_str().unwrap().to_string())
                            .collect(),
                    );
                }
                map.values().for_each(|x| walk(x, name, out));
            }
            serde_json::Value::Array(items) => items.iter().for_each(|x| walk(x, name, out)),
            _ => {}
        }
    }
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).expect("schemas dir") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "avsc") {
            let text = std::fs::read_to_string(&path).expect("read avsc");
            walk(
                &serde_json::from_str(&text).expect("json"),
                name,
                &mut found,
            );
        }
    }
    found.dedup();
    assert_eq!(
        found.len(),
        1,
        "enum {name} defined once in {}",
        dir.display()
    );
    found.pop().unwrap()
}

/// The symbol lists model.rs writes by index must be the schemas' own, in order.
#[test]
fn enum_symbols_in_model_match_the_schemas() {
    use octollm_reflex::model::{PRIORITIES, SEVERITIES, TASK_STATUSES, VERIFICATION_METHODS};
    let dir = Contracts::default_dir();
    assert_eq!(enum_symbols(&dir, "Priority"), PRIORITIES);
    assert_eq!(enum_symbols(&dir, "Severity"), SEVERITIES);
    assert_eq!(enum_symbols(&dir, "TaskStatus"), TASK_STATUSES);
    assert_eq!(
        enum_symbols(&dir, "VerificationMethod"),
        VERIFICATION_METHODS
    );
}

/// The reflex layer's results (QUARANTINED, REJECTED, RATE_LIMITED) are written with the current
/// TaskResult schema and say that nothing checked an answer: `verification` NONE, no checks.
#[test]
fn task_results_the_reflex_writes_say_nothing_verified_them() {
    use apache_avro::types::Value;
    use octollm_reflex::model::{TaskResult, TASK_RESULT};
    let c = contracts();
    let result = TaskResult {
        task_id: "6f1c1a3e-0d6b-4f7e-9a51-2b7c3d4e5f60".into(),
        tenant_id: "acme".into(),
        status: "QUARANTINED".into(),
        output: None,
        reason: Some("prompt injection".into()),
        created_at: 1_767_225_600_000,
        completed_at: 1_767_225_600_001,
        component: "reflex".into(),
    };
    let bytes = c.encode(TASK_RESULT, result.to_value()).expect("encodes");
    let (name, value) = c.decode(&bytes).expect("decodes");
    assert_eq!(name, TASK_RESULT);
    let Value::Record(fields) = value else {
        panic!("not a record")
    };
    let (_, verification) = fields
        .iter()
        .find(|(n, _)| n == "verification")
        .expect("verification field");
    let Value::Record(v) = verification else {
        panic!("verification is not a record")
    };
    assert!(
        matches!(&v[0], (n, Value::Enum(0, s)) if n == "method" && s == "NONE"),
        "{v:?}"
    );
    assert!(
        matches!(&v[1], (n, Value::Array(a)) if n == "checks" && a.is_empty()),
        "{v:?}"
    );
}
