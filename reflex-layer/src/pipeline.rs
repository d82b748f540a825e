//! The streaming path's pure part: one consumed record in, the records to produce out.
//! No Kafka here: [`Pipeline::process`] is what `stream.rs` calls per record inside a
//! transaction, and what the unit tests call directly.

use crate::audit::{self, Source};
use crate::avro::{Contracts, DecodeError, WriterSchemas};
use crate::dedupe::{Check, DedupeWindow};
use crate::injection::{self, Severity};
use crate::model::{
    AuditEvent, DeadLetter, InjectionVerdict, PiiFinding, RoutedTask, TaskRequest, TaskResult,
    AUDIT_EVENT, DEAD_LETTER, ROUTED_TASK, TASK_REQUEST, TASK_RESULT,
};
use crate::pii;
use crate::ratelimit::{RateLimiter, RateLimits};
use crate::redact::{redact, Placeholders};
use crate::scan::to_codepoint_offsets;
use regex::Regex;
use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

/// What `component` says in everything the reflex layer writes.
pub const COMPONENT: &str = "reflex";
pub const REFLEX_VERSION: &str = env!("CARGO_PKG_VERSION");
/// Header naming the replay generation of an event (absent = 0, the original).
pub const REPLAY_HEADER: &str = "octo-replay-generation";
/// Default `--max-goal-bytes`: far above any real goal, far below what a model can read, so a
/// pasted dump is refused here instead of being cut silently by the arms downstream.
pub const DEFAULT_MAX_GOAL_BYTES: usize = 64 * 1024;

/// Topic names, with the environment prefix applied (`OCTO_TOPIC_PREFIX`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    pub tasks: String,
    pub routed_prefix: String,
    pub quarantine: String,
    pub results: String,
    pub dlq: String,
    pub audit: String,
    /// Compacted topic of admitted task ids (dedupe state that survives a restart).
    pub dedupe: String,
}

impl Topics {
    pub fn new(prefix: &str) -> Topics {
        Topics {
            tasks: format!("{prefix}octo.tasks.v1"),
            routed_prefix: format!("{prefix}octo.tasks.routed."),
            quarantine: format!("{prefix}octo.tasks.quarantine"),
            results: format!("{prefix}octo.results.v1"),
            dlq: format!("{prefix}octo.dlq"),
            audit: format!("{prefix}octo.audit.v1"),
            dedupe: format!("{prefix}octo.reflex.dedupe"),
        }
    }

    /// Every topic the stream writes to, except the dedupe topic (created by the binary) and
    /// tasks' own reply topics.
    pub fn outputs(&self) -> Vec<String> {
        vec![
            self.routed("orchestrator"),
            self.routed("priority"),
            self.quarantine.clone(),
            self.results.clone(),
            self.dlq.clone(),
            self.audit.clone(),
        ]
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

impl Input<'_> {
    /// The replay generation from the `octo-replay-generation` header (0 when absent or not a
    /// non-negative decimal integer).
    pub fn generation(&self) -> i32 {
        self.headers
            .iter()
            .rev()
            .find(|(k, _)| k == REPLAY_HEADER)
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
            .and_then(|v| v.trim().parse::<i32>().ok())
            .filter(|g| *g >= 0)
            .unwrap_or(0)
    }

    fn source(&self) -> Source<'_> {
        Source {
            topic: self.topic,
            partition: self.partition,
            offset: self.offset,
        }
    }
}

/// One record to produce.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Output {
    pub topic: String,
    /// `None`: the producer's partitioner (murmur2 of the key) picks it.
    pub partition: Option<i32>,
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
    pub headers: Vec<(String, Vec<u8>)>,
}

/// Value of a record on the dedupe topic (key: the task id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DedupeRecord {
    pub generation: i32,
    pub seen_at: i64,
}

impl DedupeRecord {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("serialises")
    }

    pub fn decode(value: &[u8]) -> Option<DedupeRecord> {
        serde_json::from_slice(value).ok()
    }
}

/// The per-process state the checks keep between records: the dedupe window and the rate
/// limiter. Changes are staged per transaction: `commit` after the Kafka commit, `rollback`
/// after an abort.
#[derive(Debug, Clone)]
pub struct Gate {
    pub dedupe: DedupeWindow,
    pub limiter: RateLimiter,
}

impl Gate {
    pub fn new(dedupe: DedupeWindow, limiter: RateLimiter) -> Gate {
        Gate { dedupe, limiter }
    }

    /// No dedupe, no limits.
    pub fn open() -> Gate {
        Gate::new(
            DedupeWindow::new(0, 1),
            RateLimiter::new(RateLimits::default()),
        )
    }

    pub fn commit(&mut self, now_ms: i64) {
        self.dedupe.commit(now_ms);
        self.limiter.commit(now_ms);
    }

    pub fn rollback(&mut self) {
        self.dedupe.rollback();
        self.limiter.rollback();
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Onto `octo.tasks.routed.<route>`.
    Route(RoutedTask),
    /// Onto `octo.tasks.quarantine`, plus the terminal result.
    Quarantine(RoutedTask, TaskResult),
    /// Over the tenant's rate limit: the terminal result (on results + reply topic) only.
    RateLimited(TaskResult),
    /// Refused as invalid (a goal over `--max-goal-bytes`): the terminal REJECTED result only.
    Rejected(TaskResult),
    /// The task id was admitted within the dedupe window at this generation or a higher one:
    /// only an audit event.
    Duplicate {
        task_id: String,
        tenant_id: String,
        seen_generation: i32,
        seen_at: i64,
    },
    DeadLetter(DeadLetter),
}

impl Decision {
    /// The label used in metrics and logs (= the audit stage).
    pub fn label(&self) -> &'static str {
        match self {
            Decision::Route(_) => "routed",
            Decision::Quarantine(..) => "quarantined",
            Decision::RateLimited(_) => "rate_limited",
            Decision::Rejected(_) => "rejected",
            Decision::Duplicate { .. } => "deduplicated",
            Decision::DeadLetter(_) => "dead_lettered",
        }
    }
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

/// The terminal RATE_LIMITED result of a task.
pub fn rate_limited_result(task: &TaskRequest, limits: &RateLimits, now_ms: i64) -> TaskResult {
    let limit = match limits.limit_for(&task.tenant_id) {
        Some(l) => format!("{}/s, burst {}", l.per_sec, l.burst),
        None => "none".into(),
    };
    TaskResult {
        task_id: task.task_id.clone(),
        tenant_id: task.tenant_id.clone(),
        status: "RATE_LIMITED".into(),
        output: None,
        reason: Some(format!(
            "rate limited by the reflex layer: tenant {:?} is over its limit ({limit}); \
             submit again later",
            task.tenant_id
        )),
        created_at: task.created_at,
        completed_at: now_ms,
        component: COMPONENT.into(),
    }
}

/// The terminal REJECTED result of a task whose goal is over `max_goal_bytes` (0 = no limit),
/// or `None` when it fits.
pub fn oversize_result(
    task: &TaskRequest,
    max_goal_bytes: usize,
    now_ms: i64,
) -> Option<TaskResult> {
    let n = task.goal.len();
    if max_goal_bytes == 0 || n <= max_goal_bytes {
        return None;
    }
    Some(TaskResult {
        task_id: task.task_id.clone(),
        tenant_id: task.tenant_id.clone(),
        status: "REJECTED".into(),
        output: None,
        reason: Some(format!(
            "input too large: {n} bytes of goal (limit {max_goal_bytes}); \
             send a shorter goal or put the material in a retrievable document"
        )),
        created_at: task.created_at,
        completed_at: now_ms,
        component: COMPONENT.into(),
    })
}

/// The task id a record's key names: a UUID (as every task id is), in its canonical form.
/// Anything else names no task (`None`): an id is never made up from a stray key.
pub fn key_task_id(key: Option<&[u8]>) -> Option<String> {
    let text = std::str::from_utf8(key?).ok()?;
    uuid::Uuid::try_parse(text.trim())
        .ok()
        .map(|u| u.hyphenated().to_string())
}

/// Decoder + checks + encoder, configured once per process.
#[derive(Debug, Clone)]
pub struct Pipeline {
    pub contracts: Contracts,
    pub topics: Topics,
    pub passthrough: bool,
    /// Writer schemas of Confluent-framed values; `None`: such values are dead-lettered
    /// (`UnsupportedFormat`).
    pub registry: Option<Arc<dyn WriterSchemas>>,
    /// A goal longer than this (bytes of UTF-8) is REJECTED; 0 = no limit.
    pub max_goal_bytes: usize,
}

impl Pipeline {
    pub fn new(contracts: Contracts, topics: Topics, passthrough: bool) -> Pipeline {
        Pipeline {
            contracts,
            topics,
            passthrough,
            registry: None,
            max_goal_bytes: DEFAULT_MAX_GOAL_BYTES,
        }
    }

    pub fn with_registry(mut self, registry: Arc<dyn WriterSchemas>) -> Pipeline {
        self.registry = Some(registry);
        self
    }

    /// `--max-goal-bytes` (0 = no limit).
    pub fn with_max_goal_bytes(mut self, max_goal_bytes: usize) -> Pipeline {
        self.max_goal_bytes = max_goal_bytes;
        self
    }

    /// Decode the record's value as a TaskRequest.
    pub fn decode_task(&self, payload: Option<&[u8]>) -> Result<TaskRequest, DecodeError> {
        let data = payload.unwrap_or_default();
        let (name, value) = match (&self.registry, data.first()) {
            (Some(reg), Some(0x00)) => self.contracts.decode_confluent(data, reg.as_ref())?,
            _ => self.contracts.decode(data)?,
        };
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
            Ok(task) if !self.passthrough => {
                match oversize_result(&task, self.max_goal_bytes, now_ms) {
                    Some(res) => Decision::Rejected(res),
                    None => assess_task(task, now_ms, false),
                }
            }
            Ok(task) => assess_task(task, now_ms, true),
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
            ..Output::default()
        }
    }

    fn audit_output(&self, ev: &AuditEvent, key: Option<Vec<u8>>) -> Output {
        let value = self
            .contracts
            .encode(AUDIT_EVENT, ev.to_value())
            .expect("an AuditEvent always encodes");
        Output {
            topic: self.topics.audit.clone(),
            key,
            value,
            ..Output::default()
        }
    }

    /// The terminal result on octo.results.v1 and, if set, the task's reply topic.
    fn result_outputs(&self, res: &TaskResult, reply: Option<&str>) -> Result<Vec<Output>, String> {
        let key = Some(res.task_id.as_bytes().to_vec());
        let value = self.contracts.encode(TASK_RESULT, res.to_value())?;
        let mut out = vec![Output {
            topic: self.topics.results.clone(),
            key: key.clone(),
            value: value.clone(),
            ..Output::default()
        }];
        if let Some(reply) = reply.filter(|t| !t.is_empty()) {
            out.push(Output {
                topic: reply.to_string(),
                key,
                value,
                ..Output::default()
            });
        }
        Ok(out)
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
                ..Output::default()
            }]),
            Decision::Quarantine(rt, res) => {
                let key = Some(rt.task.task_id.as_bytes().to_vec());
                let routed = self.contracts.encode(ROUTED_TASK, rt.to_value())?;
                let mut out = vec![Output {
                    topic: self.topics.quarantine.clone(),
                    key,
                    value: routed,
                    ..Output::default()
                }];
                out.extend(self.result_outputs(res, rt.task.reply_topic.as_deref())?);
                Ok(out)
            }
            // the reply topic is not in the result; `process_with` adds it
            Decision::RateLimited(res) | Decision::Rejected(res) => self.result_outputs(res, None),
            Decision::Duplicate { .. } => Ok(vec![]),
        })();
        match encoded {
            Ok(o) => o,
            Err(e) => {
                let dl = dead_letter(input, "SchemaMismatch", &format!("output: {e}"), now_ms);
                vec![self.dlq_output(&dl)]
            }
        }
    }

    /// decide + outputs, with no dedupe, no rate limits and no audit events.
    pub fn process(&self, input: &Input<'_>, now_ms: i64) -> (Decision, Vec<Output>) {
        let d = self.decide(input, now_ms);
        let o = self.outputs(input, &d, now_ms);
        (d, o)
    }

    /// The streaming path per record: decode, dedupe, rate limit, checks, then the outputs plus
    /// one audit event, a dedupe record for an admitted task, and the replay generation header
    /// on every output. `gate` is changed (staged) as the record is admitted.
    ///
    /// `--passthrough` skips all of it (decode and forward only: the benchmark baseline).
    pub fn process_with(
        &self,
        input: &Input<'_>,
        gate: &mut Gate,
        now_ms: i64,
    ) -> (Decision, Vec<Output>) {
        if self.passthrough {
            return self.process(input, now_ms);
        }
        let generation = input.generation();
        let src = input.source();
        let task = match self.decode_task(input.payload) {
            Ok(t) => t,
            Err(e) => {
                let dl = dead_letter(input, e.class(), &e.to_string(), now_ms);
                let ev = audit::dead_lettered(
                    &dl,
                    key_task_id(input.key).as_deref(),
                    generation,
                    &src,
                    now_ms,
                );
                let key = dl.original_key.clone();
                let d = Decision::DeadLetter(dl);
                let mut out = self.outputs(input, &d, now_ms);
                out.push(self.audit_output(&ev, key));
                return (d, with_generation(out, generation));
            }
        };
        let key = Some(task.task_id.as_bytes().to_vec());
        if let Check::Duplicate {
            seen_generation,
            seen_at,
        } = gate.dedupe.check(&task.task_id, generation, now_ms)
        {
            let ev = audit::deduplicated(
                &task.task_id,
                &task.tenant_id,
                generation,
                seen_generation,
                seen_at,
                &src,
                now_ms,
            );
            let out = vec![self.audit_output(&ev, key)];
            let d = Decision::Duplicate {
                task_id: task.task_id,
                tenant_id: task.tenant_id,
                seen_generation,
                seen_at,
            };
            return (d, with_generation(out, generation));
        }
        // before the rate limit: a goal that can never be processed costs the tenant no token,
        // and its sender learns at once that sending it again will not help
        if let Some(res) = oversize_result(&task, self.max_goal_bytes, now_ms) {
            let ev = audit::rejected(
                &res,
                task.goal.len(),
                self.max_goal_bytes,
                generation,
                &src,
                now_ms,
            );
            let mut out = match self.result_outputs(&res, task.reply_topic.as_deref()) {
                Ok(out) => out,
                Err(e) => return self.encode_failed(input, &e, generation, now_ms),
            };
            out.push(self.audit_output(&ev, key.clone()));
            // remembered like a routed task: a redelivery must not get a second terminal result
            out.extend(self.admit(gate, input, &task.task_id, key, generation, now_ms));
            return (Decision::Rejected(res), with_generation(out, generation));
        }
        if !gate.limiter.try_acquire(&task.tenant_id, now_ms) {
            let res = rate_limited_result(&task, gate.limiter.limits(), now_ms);
            let ev = audit::rate_limited(&res, generation, &src, now_ms);
            let out = match self.result_outputs(&res, task.reply_topic.as_deref()) {
                Ok(mut out) => {
                    out.push(self.audit_output(&ev, key));
                    out
                }
                Err(e) => return self.encode_failed(input, &e, generation, now_ms),
            };
            return (Decision::RateLimited(res), with_generation(out, generation));
        }
        let d = assess_task(task, now_ms, false);
        let rt = match &d {
            Decision::Route(rt) | Decision::Quarantine(rt, _) => rt,
            _ => unreachable!("assess_task routes or quarantines"),
        };
        let ev = audit::assessed(rt, generation, &src, now_ms);
        let mut out = self.outputs(input, &d, now_ms);
        if out.iter().any(|o| o.topic == self.topics.dlq) {
            // an output failed to encode: `outputs` dead-lettered the input instead
            return self.encode_failed(input, "output did not encode", generation, now_ms);
        }
        out.push(self.audit_output(&ev, key.clone()));
        out.extend(self.admit(gate, input, &rt.task.task_id, key, generation, now_ms));
        (d, with_generation(out, generation))
    }

    /// Stage the task id as admitted and return its dedupe record (none with dedupe off).
    fn admit(
        &self,
        gate: &mut Gate,
        input: &Input<'_>,
        task_id: &str,
        key: Option<Vec<u8>>,
        generation: i32,
        now_ms: i64,
    ) -> Option<Output> {
        if !gate.dedupe.enabled() {
            return None;
        }
        gate.dedupe.admit(task_id, generation, now_ms);
        Some(Output {
            topic: self.topics.dedupe.clone(),
            // the input's partition: a restarted instance reloads exactly the dedupe
            // partitions whose task partitions it was assigned
            partition: Some(input.partition),
            key,
            value: DedupeRecord {
                generation,
                seen_at: now_ms,
            }
            .encode(),
            headers: vec![],
        })
    }

    fn encode_failed(
        &self,
        input: &Input<'_>,
        why: &str,
        generation: i32,
        now_ms: i64,
    ) -> (Decision, Vec<Output>) {
        let dl = dead_letter(input, "SchemaMismatch", &format!("output: {why}"), now_ms);
        let ev = audit::dead_lettered(
            &dl,
            key_task_id(input.key).as_deref(),
            generation,
            &input.source(),
            now_ms,
        );
        let key = dl.original_key.clone();
        let out = vec![self.dlq_output(&dl), self.audit_output(&ev, key)];
        (Decision::DeadLetter(dl), with_generation(out, generation))
    }
}

/// Carry a replay's generation onward as a header on everything it caused.
fn with_generation(mut out: Vec<Output>, generation: i32) -> Vec<Output> {
    if generation > 0 {
        let v = generation.to_string().into_bytes();
        for o in &mut out {
            o.headers.push((REPLAY_HEADER.to_string(), v.clone()));
        }
    }
    out
}
