//! The streaming path's pure part: one consumed record in, the records to produce out.
//! No Kafka here: [`Pipeline::process`] is what `stream.rs` calls per record inside a
//! transaction, and what the unit tests call directly.

use crate::avro::{Contracts, DecodeError};
use crate::injection::{self, Severity};
use crate::model::{
    DeadLetter, InjectionVerdict, PiiFinding, RoutedTask, TaskRequest, TaskResult, DEAD_LETTER,
    ROUTED_TASK, TASK_REQUEST, TASK_RESULT,
};
use crate::pii;
use crate::redact::{redact, Placeholders};
use crate::scan::to_codepoint_offsets;
use regex::Regex;
use std::collections::BTreeMap;
use std::sync::OnceLock;

/// What `component` says in everything the reflex layer writes.
pub const COMPONENT: &str = "reflex";
pub const REFLEX_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Topic names, with the environment prefix applied (`OCTO_TOPIC_PREFIX`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    pub tasks: String,
    pub routed_prefix: String,
    pub quarantine: String,
    pub results: String,
    pub dlq: String,
}

impl Topics {
    pub fn new(prefix: &str) -> Topics {
        Topics {
            tasks: format!("{prefix}octo.tasks.v1"),
            routed_prefix: format!("{prefix}octo.tasks.routed."),
            quarantine: format!("{prefix}octo.tasks.quarantine"),
            results: format!("{prefix}octo.results.v1"),
            dlq: format!("{prefix}octo.dlq"),
        }
    }

    pub fn routed(&self, route: &str) -> String {
        format!("{}{route}", self.routed_prefix)
    }
}

/// One consumed record, as the pipeline sees it.
#[derive(Debug, Clone, Default)]
pub struct Input<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<&'a [u8]>,
    pub payload: Option<&'a [u8]>,
    pub headers: Vec<(String, Vec<u8>)>,
}

/// One record to produce.
#[derive(Debug, Clone, PartialEq)]
pub struct Output {
    pub topic: String,
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Onto `octo.tasks.routed.<route>`.
    Route(RoutedTask),
    /// Onto `octo.tasks.quarantine`, plus the terminal result.
    Quarantine(RoutedTask, TaskResult),
    DeadLetter(DeadLetter),
}

fn code_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(
            r"(?i)\b(code|coding|function|functions|python|rust|javascript|typescript|java|golang|sql|script|program|programming|compile|compiler|bug|debug|refactor|unit tests?|regex|class|method|api)\b",
        )
        .expect("valid regex")
    })
}

fn retrieval_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(
            r"(?i)\b(cite|cites|citation|citations|docs|documentation|search|sources?|references?|look up|lookup)\b",
        )
        .expect("valid regex")
    })
}

fn severity_name(s: Severity) -> &'static str {
    match s {
        Severity::None => "NONE",
        Severity::Low => "LOW",
        Severity::Medium => "MEDIUM",
        Severity::High => "HIGH",
        Severity::Critical => "CRITICAL",
    }
}

/// Detect and redact one field with the task's shared placeholder table.
fn redact_field(
    name: &str,
    text: &str,
    ph: &mut Placeholders,
    out: &mut Vec<PiiFinding>,
) -> String {
    let findings = pii::detect(text);
    let redacted = redact(text, &findings, ph);
    let cps = to_codepoint_offsets(text, &findings);
    for (f, cp) in findings.iter().zip(cps) {
        let placeholder = ph.placeholder(f.pii_type, f.value(text)).to_string();
        out.push(PiiFinding {
            pii_type: f.pii_type.as_str().to_string(),
            field: name.to_string(),
            start: cp.start as i32,
            end: cp.end as i32,
            confidence: f.confidence,
            placeholder,
        });
    }
    redacted
}

/// The checks on a decoded task: PII redaction (goal, context, each constraint; one
/// placeholder table), injection assessment (original text), tags, route or quarantine.
/// `now_ms` is used for `received_at` and a quarantine result's `completed_at`.
pub fn assess_task(task: TaskRequest, now_ms: i64, passthrough: bool) -> Decision {
    let started = std::time::Instant::now();
    if passthrough {
        return Decision::Route(RoutedTask {
            task,
            route: "orchestrator".into(),
            tags: vec![],
            pii_findings: vec![],
            injection: InjectionVerdict {
                score: 0.0,
                severity: "NONE".into(),
                categories: vec![],
            },
            reflex_version: REFLEX_VERSION.into(),
            received_at: now_ms,
            processing_us: started.elapsed().as_micros() as i64,
        });
    }
    // injection on the original text of every field the model will read
    let mut full = String::with_capacity(task.goal.len() + task.context.len() + 64);
    full.push_str(&task.goal);
    if !task.context.is_empty() {
        full.push('\n');
        full.push_str(&task.context);
    }
    for c in &task.constraints {
        full.push('\n');
        full.push_str(c);
    }
    let verdict = injection::assess(&full);

    let mut ph = Placeholders::new();
    let mut findings = Vec::new();
    let mut redacted = task.clone();
    redacted.goal = redact_field("goal", &task.goal, &mut ph, &mut findings);
    redacted.context = redact_field("context", &task.context, &mut ph, &mut findings);
    redacted.constraints = task
        .constraints
        .iter()
        .enumerate()
        .map(|(i, c)| redact_field(&format!("constraints[{i}]"), c, &mut ph, &mut findings))
        .collect();

    let mut tags = Vec::new();
    if code_re().is_match(&task.goal) {
        tags.push("code".to_string());
    }
    if retrieval_re().is_match(&task.goal) {
        tags.push("retrieval".to_string());
    }
    if !findings.is_empty() {
        tags.push("pii-redacted".to_string());
    }
    if verdict.severity > Severity::None {
        tags.push(format!(
            "injection-{}",
            severity_name(verdict.severity).to_lowercase()
        ));
    }
    let quarantine = verdict.severity >= Severity::High;
    let route = if quarantine {
        "quarantine"
    } else if matches!(task.priority.as_str(), "HIGH" | "CRITICAL") {
        "priority"
    } else {
        "orchestrator"
    };
    let injection = InjectionVerdict {
        score: verdict.score,
        severity: severity_name(verdict.severity).into(),
        categories: verdict.categories.clone(),
    };
    let routed = RoutedTask {
        task: redacted,
        route: route.into(),
        tags,
        pii_findings: findings,
        injection,
        reflex_version: REFLEX_VERSION.into(),
        received_at: now_ms,
        processing_us: started.elapsed().as_micros() as i64,
    };
    if quarantine {
        let cats = if verdict.categories.is_empty() {
            "no category".to_string()
        } else {
            verdict.categories.join(", ")
        };
        let result = TaskResult {
            task_id: task.task_id.clone(),
            tenant_id: task.tenant_id.clone(),
            status: "QUARANTINED".into(),
            output: None,
            reason: Some(format!(
                "quarantined as a prompt injection (severity {}, score {:.2}): {cats}",
                severity_name(verdict.severity),
                verdict.score
            )),
            created_at: task.created_at,
            completed_at: now_ms,
            component: COMPONENT.into(),
        };
        Decision::Quarantine(routed, result)
    } else {
        Decision::Route(routed)
    }
}

/// A fresh random UUID (v4) as text.
fn new_uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// The dead letter for `input`, which failed with `error_class`/`reason`.
pub fn dead_letter(input: &Input<'_>, error_class: &str, reason: &str, now_ms: i64) -> DeadLetter {
    let headers: BTreeMap<String, String> = input
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned()))
        .collect();
    DeadLetter {
        dead_letter_id: new_uuid(),
        original_topic: input.topic.to_string(),
        original_partition: input.partition,
        original_offset: input.offset,
        original_key: input.key.map(<[u8]>::to_vec),
        payload: input.payload.map(<[u8]>::to_vec).unwrap_or_default(),
        headers,
        error_class: error_class.to_string(),
        reason: reason.to_string(),
        component: COMPONENT.into(),
        ts: now_ms,
    }
}

/// Decoder + checks + encoder, configured once per process.
#[derive(Debug, Clone)]
pub struct Pipeline {
    pub contracts: Contracts,
    pub topics: Topics,
    pub passthrough: bool,
}

impl Pipeline {
    pub fn new(contracts: Contracts, topics: Topics, passthrough: bool) -> Pipeline {
        Pipeline {
            contracts,
            topics,
            passthrough,
        }
    }

    /// Decode the record's value as a TaskRequest.
    pub fn decode_task(&self, payload: Option<&[u8]>) -> Result<TaskRequest, DecodeError> {
        let data = payload.unwrap_or_default();
        let (name, value) = self.contracts.decode(data)?;
        if name != TASK_REQUEST {
            return Err(DecodeError::SchemaMismatch(format!(
                "expected {TASK_REQUEST}, got {name}"
            )));
        }
        TaskRequest::from_value(&value).map_err(DecodeError::SchemaMismatch)
    }

    /// What to do with one consumed record. Never panics on bad input.
    pub fn decide(&self, input: &Input<'_>, now_ms: i64) -> Decision {
        match self.decode_task(input.payload) {
            Ok(task) => assess_task(task, now_ms, self.passthrough),
            Err(e) => Decision::DeadLetter(dead_letter(input, e.class(), &e.to_string(), now_ms)),
        }
    }

    fn dlq_output(&self, dl: &DeadLetter) -> Output {
        let value = self
            .contracts
            .encode(DEAD_LETTER, dl.to_value())
            .expect("a DeadLetter always encodes");
        Output {
            topic: self.topics.dlq.clone(),
            key: dl.original_key.clone(),
            value,
        }
    }

    /// The records to produce for `decision`. An output that fails to encode turns the
    /// decision into a dead letter of the input.
    pub fn outputs(&self, input: &Input<'_>, decision: &Decision, now_ms: i64) -> Vec<Output> {
        let encoded: Result<Vec<Output>, String> = (|| match decision {
            Decision::DeadLetter(dl) => Ok(vec![self.dlq_output(dl)]),
            Decision::Route(rt) => Ok(vec![Output {
                topic: self.topics.routed(&rt.route),
                key: Some(rt.task.task_id.as_bytes().to_vec()),
                value: self.contracts.encode(ROUTED_TASK, rt.to_value())?,
            }]),
            Decision::Quarantine(rt, res) => {
                let key = Some(rt.task.task_id.as_bytes().to_vec());
                let routed = self.contracts.encode(ROUTED_TASK, rt.to_value())?;
                let result = self.contracts.encode(TASK_RESULT, res.to_value())?;
                let mut out = vec![
                    Output {
                        topic: self.topics.quarantine.clone(),
                        key: key.clone(),
                        value: routed,
                    },
                    Output {
                        topic: self.topics.results.clone(),
                        key: key.clone(),
                        value: result.clone(),
                    },
                ];
                if let Some(reply) = rt.task.reply_topic.as_deref().filter(|t| !t.is_empty()) {
                    out.push(Output {
                        topic: reply.to_string(),
                        key,
                        value: result,
                    });
                }
                Ok(out)
            }
        })();
        match encoded {
            Ok(o) => o,
            Err(e) => {
                let dl = dead_letter(input, "SchemaMismatch", &format!("output: {e}"), now_ms);
                vec![self.dlq_output(&dl)]
            }
        }
    }

    /// decide + outputs.
    pub fn process(&self, input: &Input<'_>, now_ms: i64) -> (Decision, Vec<Output>) {
        let d = self.decide(input, now_ms);
        let o = self.outputs(input, &d, now_ms);
        (d, o)
    }
}
