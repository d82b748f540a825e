//! The streaming path's stateful checks, pure: dedupe, replay generations, rate limits, audit
//! events, dedupe records and Confluent framing through `Pipeline::process_with`.

use apache_avro::types::Value;
use octollm_reflex::avro::{Contracts, DecodeError, RegistryWriter, WriterSchemas};
use octollm_reflex::dedupe::DedupeWindow;
use octollm_reflex::model::{TaskRequest, AUDIT_EVENT, TASK_REQUEST};
use octollm_reflex::pipeline::{
    Decision, DedupeRecord, Gate, Input, Output, Pipeline, Topics, REPLAY_HEADER,
};
use octollm_reflex::ratelimit::{Limit, RateLimiter, RateLimits};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

const NOW: i64 = 1_767_225_700_000;
const H: i64 = 3_600_000;

fn contracts() -> Contracts {
    Contracts::load(&Contracts::default_dir()).unwrap()
}

fn task(id: &str, tenant: &str, goal: &str) -> TaskRequest {
    TaskRequest {
        task_id: id.into(),
        tenant_id: tenant.into(),
        goal: goal.into(),
        constraints: vec![],
        context: String::new(),
        acceptance_criteria: vec![],
        priority: "MEDIUM".into(),
        budget: Default::default(),
        reply_topic: Some("replies".into()),
        created_at: NOW - 1000,
        trace: BTreeMap::new(),
    }
}

fn id(n: u32) -> String {
    format!("6f1c1a3e-0d6b-4f7e-9a51-{n:012}")
}

fn pipeline() -> Pipeline {
    Pipeline::new(contracts(), Topics::new("t1."), false)
}

fn gate(rate: Option<Limit>) -> Gate {
    Gate::new(
        DedupeWindow::new(24 * H, 1000),
        RateLimiter::new(RateLimits {
            default: rate,
            tenants: HashMap::new(),
        }),
    )
}

fn run(
    p: &Pipeline,
    g: &mut Gate,
    payload: &[u8],
    gen: Option<&str>,
    offset: i64,
) -> (Decision, Vec<Output>) {
    let headers = gen
        .map(|v| vec![(REPLAY_HEADER.to_string(), v.as_bytes().to_vec())])
        .unwrap_or_default();
    let input = Input {
        topic: "t1.octo.tasks.v1",
        partition: 2,
        offset,
        key: None,
        payload: Some(payload),
        headers,
    };
    p.process_with(&input, g, NOW)
}

fn audit_of(p: &Pipeline, outs: &[Output]) -> Vec<BTreeMap<String, Value>> {
    outs.iter()
        .filter(|o| o.topic == p.topics.audit)
        .map(|o| {
            let (name, v) = p.contracts.decode(&o.value).unwrap();
            assert_eq!(name, AUDIT_EVENT);
            let Value::Record(f) = v else { panic!() };
            f.into_iter().collect()
        })
        .collect()
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => panic!("{other:?}"),
    }
}

fn topics(outs: &[Output]) -> Vec<&str> {
    outs.iter().map(|o| o.topic.as_str()).collect()
}

#[test]
fn routed_then_duplicate_then_replay() {
    let p = pipeline();
    let mut g = gate(None);
    let bytes = p
        .contracts
        .encode(
            TASK_REQUEST,
            task(&id(1), "acme", "Summarise the notes.").to_value(),
        )
        .unwrap();

    let (d, outs) = run(&p, &mut g, &bytes, None, 10);
    assert!(matches!(d, Decision::Route(_)));
    assert_eq!(
        topics(&outs),
        [
            "t1.octo.tasks.routed.orchestrator",
            "t1.octo.audit.v1",
            "t1.octo.reflex.dedupe"
        ]
    );
    let dd = &outs[2];
    assert_eq!(
        dd.partition,
        Some(2),
        "dedupe record goes to the input's partition"
    );
    assert_eq!(dd.key.as_deref(), Some(id(1).as_bytes()));
    assert_eq!(
        DedupeRecord::decode(&dd.value),
        Some(DedupeRecord {
            generation: 0,
            seen_at: NOW
        })
    );
    assert!(
        outs.iter().all(|o| o.headers.is_empty()),
        "no header for generation 0"
    );
    let [ev] = &audit_of(&p, &outs)[..] else {
        panic!()
    };
    assert_eq!(s(&ev["stage"]), "routed");
    assert_eq!(s(&ev["status"]), "OK");
    assert_eq!(s(&ev["component"]), "reflex");
    assert_eq!(ev["generation"], Value::Int(0));
    g.commit(NOW);

    // the same task id again: only an audit event
    let (d, outs) = run(&p, &mut g, &bytes, None, 11);
    assert!(
        matches!(
            d,
            Decision::Duplicate {
                seen_generation: 0,
                ..
            }
        ),
        "{d:?}"
    );
    assert_eq!(topics(&outs), ["t1.octo.audit.v1"]);
    let [ev] = &audit_of(&p, &outs)[..] else {
        panic!()
    };
    assert_eq!(s(&ev["stage"]), "deduplicated");
    // and a generation that is not higher is a duplicate as well
    let (d, _) = run(&p, &mut g, &bytes, Some("0"), 12);
    assert!(matches!(d, Decision::Duplicate { .. }));

    // a replay (generation 1) is routed again, the generation carried onward
    let (d, outs) = run(&p, &mut g, &bytes, Some("1"), 13);
    assert!(matches!(d, Decision::Route(_)), "{d:?}");
    for o in &outs {
        assert_eq!(
            o.headers,
            vec![(REPLAY_HEADER.to_string(), b"1".to_vec())],
            "{}",
            o.topic
        );
    }
    let [ev] = &audit_of(&p, &outs)[..] else {
        panic!()
    };
    assert_eq!(ev["generation"], Value::Int(1));
    // staged: the replay is visible at once, and gone after a rollback
    let (d, _) = run(&p, &mut g, &bytes, Some("1"), 14);
    assert!(matches!(
        d,
        Decision::Duplicate {
            seen_generation: 1,
            ..
        }
    ));
    g.rollback();
    let (d, _) = run(&p, &mut g, &bytes, Some("1"), 14);
    assert!(matches!(d, Decision::Route(_)));
}

#[test]
fn over_limit_tasks_get_rate_limited_results_only() {
    let p = pipeline();
    let mut g = gate(Limit::new(1.0 / 3600.0, 2.0));
    let mut decisions = vec![];
    for n in 0..5 {
        let bytes = p
            .contracts
            .encode(
                TASK_REQUEST,
                task(&id(n), "acme", "Summarise the notes.").to_value(),
            )
            .unwrap();
        decisions.push(run(&p, &mut g, &bytes, None, n as i64));
    }
    let limited: Vec<_> = decisions
        .iter()
        .filter(|(d, _)| matches!(d, Decision::RateLimited(_)))
        .collect();
    assert_eq!(limited.len(), 3);
    for (d, outs) in limited {
        let Decision::RateLimited(res) = d else {
            unreachable!()
        };
        assert_eq!(res.status, "RATE_LIMITED");
        assert_eq!(res.component, "reflex");
        assert!(res.reason.as_deref().unwrap().contains("acme"));
        assert_eq!(
            topics(outs),
            ["t1.octo.results.v1", "replies", "t1.octo.audit.v1"]
        );
        let [ev] = &audit_of(&p, outs)[..] else {
            panic!()
        };
        assert_eq!(s(&ev["stage"]), "rate_limited");
    }
    // a rate-limited task id is not remembered: a later retry is not a duplicate
    let bytes = p
        .contracts
        .encode(
            TASK_REQUEST,
            task(&id(4), "acme", "Summarise the notes.").to_value(),
        )
        .unwrap();
    let mut open = Gate::new(g.dedupe.clone(), RateLimiter::new(RateLimits::default()));
    assert!(matches!(
        run(&p, &mut open, &bytes, None, 9).0,
        Decision::Route(_)
    ));
}

#[test]
fn audit_details_carry_types_and_counts_never_values() {
    let p = pipeline();
    let mut g = gate(None);
    let email = "jane.doe@example.com";
    let card = "4111 1111 1111 1111";
    let mut t = task(&id(7), "acme", &format!("Mail {email} about card {card}."));
    t.context = format!("also {email}");
    let bytes = p.contracts.encode(TASK_REQUEST, t.to_value()).unwrap();
    let (_, outs) = run(&p, &mut g, &bytes, None, 1);
    let [ev] = &audit_of(&p, &outs)[..] else {
        panic!()
    };
    let Value::Map(details) = &ev["details"] else {
        panic!()
    };
    assert_eq!(s(&details["pii_types"]), "CREDIT_CARD,EMAIL");
    assert_eq!(s(&details["pii.EMAIL"]), "2");
    assert_eq!(s(&details["pii.CREDIT_CARD"]), "1");
    for o in &outs {
        let hay = String::from_utf8_lossy(&o.value);
        assert!(!hay.contains(email) && !hay.contains(card) && !hay.contains("4111111111111111"));
    }
}

#[test]
fn undecodable_values_get_a_dead_letter_and_an_audit_event() {
    let p = pipeline();
    let mut g = gate(None);
    let (d, outs) = run(&p, &mut g, b"\x01garbage", Some("3"), 5);
    assert!(matches!(d, Decision::DeadLetter(_)));
    assert_eq!(topics(&outs), ["t1.octo.dlq", "t1.octo.audit.v1"]);
    let [ev] = &audit_of(&p, &outs)[..] else {
        panic!()
    };
    assert_eq!(s(&ev["stage"]), "dead_lettered");
    assert_eq!(ev["generation"], Value::Int(3));
    // deterministic id: the same record processed again gives the same event id
    let (_, again) = run(&p, &mut g, b"\x01garbage", Some("3"), 5);
    assert_eq!(audit_of(&p, &again)[0]["event_id"], ev["event_id"]);
}

#[test]
fn dead_letter_events_name_the_task_their_key_names() {
    let p = pipeline();
    let mut g = gate(None);
    let good = p
        .contracts
        .encode(TASK_REQUEST, task(&id(30), "acme", "Summarise.").to_value())
        .unwrap();
    let cut = &good[..good.len() - 4];
    let upper = id(30).to_uppercase();
    for (key, want) in [
        (Some(id(30).as_bytes()), id(30)),
        // the canonical form: the one task ids are stored and looked up by
        (Some(upper.as_bytes()), id(30)),
        // not a task id: no id is made up
        (Some(&b"order-17"[..]), String::new()),
        (Some(&b"\xff\xfe"[..]), String::new()),
        (None, String::new()),
    ] {
        let input = Input {
            topic: "t1.octo.tasks.v1",
            partition: 2,
            offset: 40,
            key,
            payload: Some(cut),
            headers: vec![],
        };
        let (d, outs) = p.process_with(&input, &mut g, NOW);
        let Decision::DeadLetter(dl) = &d else {
            panic!("{d:?}")
        };
        assert_eq!(dl.error_class, "TruncatedBody");
        assert_eq!(dl.original_key.as_deref(), key, "the key is kept as read");
        let [ev] = &audit_of(&p, &outs)[..] else {
            panic!()
        };
        assert_eq!(s(&ev["stage"]), "dead_lettered");
        assert_eq!(s(&ev["task_id"]), want, "key {key:?}");
    }
}

/// Writer schemas from a map, standing in for the registry.
#[derive(Debug, Default)]
struct MapSchemas(HashMap<u32, Arc<RegistryWriter>>, Option<String>);

impl WriterSchemas for MapSchemas {
    fn writer(&self, id: u32) -> Result<Arc<RegistryWriter>, DecodeError> {
        if let Some(why) = &self.1 {
            return Err(DecodeError::RegistryUnavailable(why.clone()));
        }
        self.0
            .get(&id)
            .cloned()
            .ok_or(DecodeError::UnknownSchemaId(id))
    }
}

fn confluent(id: u32, single_object: &[u8]) -> Vec<u8> {
    let mut v = vec![0u8];
    v.extend_from_slice(&id.to_be_bytes());
    v.extend_from_slice(&single_object[10..]);
    v
}

#[test]
fn confluent_framing_with_a_registry() {
    let c = contracts();
    let current = c.get(TASK_REQUEST).unwrap().expanded.to_string();
    // an older TaskRequest (no `trace`) as a registry would hold it
    let mut old: serde_json::Value = serde_json::from_str(&current).unwrap();
    old["fields"]
        .as_array_mut()
        .unwrap()
        .retain(|f| f["name"] != "trace");
    let old_writer = RegistryWriter::from_schema_text(&old.to_string()).unwrap();
    let old_schema = old_writer.schema.clone();
    let mut schemas = MapSchemas::default();
    schemas.0.insert(
        7,
        Arc::new(RegistryWriter::from_schema_text(&current).unwrap()),
    );
    schemas.0.insert(8, Arc::new(old_writer));
    let p = pipeline().with_registry(Arc::new(schemas));
    let mut g = gate(None);

    let t = task(&id(20), "acme", "Summarise the notes.");
    let so = p.contracts.encode(TASK_REQUEST, t.to_value()).unwrap();
    let (d, _) = run(&p, &mut g, &confluent(7, &so), None, 1);
    let Decision::Route(rt) = d else {
        panic!("{d:?}")
    };
    assert_eq!(rt.task, t);

    // written with the older schema: resolved to ours (`trace` gets its default)
    let Value::Record(mut fields) = t.to_value() else {
        panic!()
    };
    fields.retain(|(n, _)| n != "trace");
    let t2 = TaskRequest {
        task_id: id(21),
        ..t.clone()
    };
    let Value::Record(mut f2) = t2.to_value() else {
        panic!()
    };
    f2.retain(|(n, _)| n != "trace");
    #[allow(deprecated)]
    let body = apache_avro::to_avro_datum(&old_schema, Value::Record(f2)).unwrap();
    let mut framed = vec![0u8, 0, 0, 0, 8];
    framed.extend_from_slice(&body);
    let (d, _) = run(&p, &mut g, &framed, None, 2);
    let Decision::Route(rt) = d else {
        panic!("{d:?}")
    };
    assert_eq!(rt.task.task_id, id(21));
    assert!(rt.task.trace.is_empty());

    // unknown id, cut header, cut body
    let cases: [(Vec<u8>, &str); 3] = [
        (confluent(99, &so), "UnknownSchemaId"),
        (vec![0, 0, 0], "TruncatedBody"),
        (confluent(7, &so)[..20].to_vec(), "TruncatedBody"),
    ];
    for (bytes, class) in cases {
        let (d, _) = run(&p, &mut g, &bytes, None, 3);
        let Decision::DeadLetter(dl) = d else {
            panic!("{d:?}")
        };
        assert_eq!(dl.error_class, class);
    }

    // registry down: dead-lettered with its payload, class RegistryUnavailable
    let down =
        pipeline().with_registry(Arc::new(MapSchemas(HashMap::new(), Some("refused".into()))));
    let (d, _) = run(&down, &mut g, &confluent(7, &so), None, 4);
    let Decision::DeadLetter(dl) = d else {
        panic!("{d:?}")
    };
    assert_eq!(dl.error_class, "RegistryUnavailable");
    assert_eq!(dl.payload, confluent(7, &so));

    // without a registry: unchanged behaviour
    let (d, _) = run(&pipeline(), &mut g, &confluent(7, &so), None, 5);
    let Decision::DeadLetter(dl) = d else {
        panic!("{d:?}")
    };
    assert_eq!(dl.error_class, "UnsupportedFormat");
}
