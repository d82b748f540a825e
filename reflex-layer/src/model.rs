//! Rust views of the Avro records the reflex layer reads and writes (`TaskRequest` in;
//! `RoutedTask`, `TaskResult`, `DeadLetter` out) and their conversion from/to
//! `apache_avro::types::Value`. The schemas themselves are only ever read from `schemas/`.

use apache_avro::types::Value;
use std::collections::BTreeMap;

pub const TASK_REQUEST: &str = "octollm.v1.TaskRequest";
pub const ROUTED_TASK: &str = "octollm.v1.RoutedTask";
pub const TASK_RESULT: &str = "octollm.v1.TaskResult";
pub const DEAD_LETTER: &str = "octollm.v1.DeadLetter";
pub const AUDIT_EVENT: &str = "octollm.v1.AuditEvent";

pub const PRIORITIES: [&str; 4] = ["LOW", "MEDIUM", "HIGH", "CRITICAL"];
pub const SEVERITIES: [&str; 5] = ["NONE", "LOW", "MEDIUM", "HIGH", "CRITICAL"];
pub const TASK_STATUSES: [&str; 6] = [
    "SUCCEEDED",
    "FAILED",
    "REJECTED",
    "QUARANTINED",
    "RATE_LIMITED",
    "TIMED_OUT",
];
pub const VERIFICATION_METHODS: [&str; 4] = ["NONE", "DETERMINISTIC", "LLM_JUDGE", "TESTS"];

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Budget {
    pub max_tokens: Option<i64>,
    pub max_cost_usd: Option<f64>,
    pub deadline_ms: Option<i64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TaskRequest {
    pub task_id: String,
    pub tenant_id: String,
    pub goal: String,
    pub constraints: Vec<String>,
    pub context: String,
    pub acceptance_criteria: Vec<String>,
    /// One of [`PRIORITIES`].
    pub priority: String,
    pub budget: Budget,
    pub reply_topic: Option<String>,
    /// Milliseconds since the epoch.
    pub created_at: i64,
    pub trace: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PiiFinding {
    pub pii_type: String,
    pub field: String,
    pub start: i32,
    pub end: i32,
    pub confidence: f32,
    pub placeholder: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct InjectionVerdict {
    pub score: f32,
    /// One of [`SEVERITIES`].
    pub severity: String,
    pub categories: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RoutedTask {
    pub task: TaskRequest,
    pub route: String,
    pub tags: Vec<String>,
    pub pii_findings: Vec<PiiFinding>,
    pub injection: InjectionVerdict,
    pub reflex_version: String,
    pub received_at: i64,
    pub processing_us: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TaskResult {
    pub task_id: String,
    pub tenant_id: String,
    /// One of [`TASK_STATUSES`].
    pub status: String,
    pub output: Option<String>,
    pub reason: Option<String>,
    pub created_at: i64,
    pub completed_at: i64,
    pub component: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    pub dead_letter_id: String,
    pub original_topic: String,
    pub original_partition: i32,
    pub original_offset: i64,
    pub original_key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    pub headers: BTreeMap<String, String>,
    pub error_class: String,
    pub reason: String,
    pub component: String,
    pub ts: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AuditEvent {
    pub event_id: String,
    pub task_id: String,
    pub tenant_id: String,
    pub stage: String,
    pub component: String,
    pub ts: i64,
    pub status: String,
    pub duration_ms: Option<i64>,
    pub generation: i32,
    /// Already redacted facts; never a raw PII value.
    pub details: BTreeMap<String, String>,
}

// ---------------------------------------------------------------------------------------------
// Value -> Rust

fn field<'a>(fields: &'a [(String, Value)], name: &str) -> Result<&'a Value, String> {
    fields
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v)
        .ok_or_else(|| format!("missing field {name}"))
}

fn unwrap_union(v: &Value) -> &Value {
    match v {
        Value::Union(_, inner) => inner,
        other => other,
    }
}

fn as_string(v: &Value, name: &str) -> Result<String, String> {
    match unwrap_union(v) {
        Value::String(s) => Ok(s.clone()),
        Value::Uuid(u) => Ok(u.to_string()),
        Value::Enum(_, s) => Ok(s.clone()),
        other => Err(format!("{name}: expected a string, got {other:?}")),
    }
}

fn as_opt_string(v: &Value, name: &str) -> Result<Option<String>, String> {
    match unwrap_union(v) {
        Value::Null => Ok(None),
        _ => as_string(v, name).map(Some),
    }
}

fn as_long(v: &Value, name: &str) -> Result<i64, String> {
    match unwrap_union(v) {
        Value::Long(n) | Value::TimestampMillis(n) | Value::TimestampMicros(n) => Ok(*n),
        Value::Int(n) => Ok(*n as i64),
        other => Err(format!("{name}: expected a long, got {other:?}")),
    }
}

fn as_opt_long(v: &Value, name: &str) -> Result<Option<i64>, String> {
    match unwrap_union(v) {
        Value::Null => Ok(None),
        _ => as_long(v, name).map(Some),
    }
}

fn as_opt_double(v: &Value, name: &str) -> Result<Option<f64>, String> {
    match unwrap_union(v) {
        Value::Null => Ok(None),
        Value::Double(d) => Ok(Some(*d)),
        Value::Float(f) => Ok(Some(*f as f64)),
        other => Err(format!("{name}: expected a double, got {other:?}")),
    }
}

fn as_strings(v: &Value, name: &str) -> Result<Vec<String>, String> {
    match v {
        Value::Array(items) => items.iter().map(|i| as_string(i, name)).collect(),
        other => Err(format!("{name}: expected an array, got {other:?}")),
    }
}

fn as_string_map(v: &Value, name: &str) -> Result<BTreeMap<String, String>, String> {
    match v {
        Value::Map(m) => m
            .iter()
            .map(|(k, v)| Ok((k.clone(), as_string(v, name)?)))
            .collect(),
        other => Err(format!("{name}: expected a map, got {other:?}")),
    }
}

impl TaskRequest {
    pub fn from_value(v: &Value) -> Result<TaskRequest, String> {
        let Value::Record(f) = v else {
            return Err("TaskRequest: not a record".into());
        };
        let budget = match field(f, "budget")? {
            Value::Record(b) => Budget {
                max_tokens: as_opt_long(field(b, "max_tokens")?, "max_tokens")?,
                max_cost_usd: as_opt_double(field(b, "max_cost_usd")?, "max_cost_usd")?,
                deadline_ms: as_opt_long(field(b, "deadline_ms")?, "deadline_ms")?,
            },
            other => return Err(format!("budget: expected a record, got {other:?}")),
        };
        Ok(TaskRequest {
            task_id: as_string(field(f, "task_id")?, "task_id")?,
            tenant_id: as_string(field(f, "tenant_id")?, "tenant_id")?,
            goal: as_string(field(f, "goal")?, "goal")?,
            constraints: as_strings(field(f, "constraints")?, "constraints")?,
            context: as_string(field(f, "context")?, "context")?,
            acceptance_criteria: as_strings(
                field(f, "acceptance_criteria")?,
                "acceptance_criteria",
            )?,
            priority: as_string(field(f, "priority")?, "priority")?,
            budget,
            reply_topic: as_opt_string(field(f, "reply_topic")?, "reply_topic")?,
            created_at: as_long(field(f, "created_at")?, "created_at")?,
            trace: as_string_map(field(f, "trace")?, "trace")?,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Rust -> Value

fn uuid_value(s: &str) -> Value {
    match apache_avro::Uuid::parse_str(s) {
        Ok(u) => Value::Uuid(u),
        // left as a string: the writer's validation rejects it with a clear error
        Err(_) => Value::String(s.to_string()),
    }
}

fn enum_value(symbols: &[&str], s: &str) -> Value {
    let idx = symbols.iter().position(|x| *x == s).unwrap_or(0);
    Value::Enum(idx as u32, symbols[idx].to_string())
}

fn opt<T>(v: &Option<T>, f: impl Fn(&T) -> Value) -> Value {
    match v {
        None => Value::Union(0, Box::new(Value::Null)),
        Some(x) => Value::Union(1, Box::new(f(x))),
    }
}

fn strings(v: &[String]) -> Value {
    Value::Array(v.iter().map(|s| Value::String(s.clone())).collect())
}

fn string_map(m: &BTreeMap<String, String>) -> Value {
    Value::Map(
        m.iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect(),
    )
}

fn rec(fields: Vec<(&str, Value)>) -> Value {
    Value::Record(
        fields
            .into_iter()
            .map(|(n, v)| (n.to_string(), v))
            .collect(),
    )
}

impl TaskRequest {
    pub fn to_value(&self) -> Value {
        rec(vec![
            ("task_id", uuid_value(&self.task_id)),
            ("tenant_id", Value::String(self.tenant_id.clone())),
            ("goal", Value::String(self.goal.clone())),
            ("constraints", strings(&self.constraints)),
            ("context", Value::String(self.context.clone())),
            ("acceptance_criteria", strings(&self.acceptance_criteria)),
            ("priority", enum_value(&PRIORITIES, &self.priority)),
            (
                "budget",
                rec(vec![
                    (
                        "max_tokens",
                        opt(&self.budget.max_tokens, |n| Value::Long(*n)),
                    ),
                    (
                        "max_cost_usd",
                        opt(&self.budget.max_cost_usd, |d| Value::Double(*d)),
                    ),
                    (
                        "deadline_ms",
                        opt(&self.budget.deadline_ms, |n| Value::Long(*n)),
                    ),
                ]),
            ),
            (
                "reply_topic",
                opt(&self.reply_topic, |s| Value::String(s.clone())),
            ),
            ("created_at", Value::TimestampMillis(self.created_at)),
            ("trace", string_map(&self.trace)),
        ])
    }
}

impl RoutedTask {
    pub fn to_value(&self) -> Value {
        let findings = self
            .pii_findings
            .iter()
            .map(|f| {
                rec(vec![
                    ("pii_type", Value::String(f.pii_type.clone())),
                    ("field", Value::String(f.field.clone())),
                    ("start", Value::Int(f.start)),
                    ("end", Value::Int(f.end)),
                    ("confidence", Value::Float(f.confidence)),
                    ("placeholder", Value::String(f.placeholder.clone())),
                ])
            })
            .collect();
        rec(vec![
            ("task", self.task.to_value()),
            ("route", Value::String(self.route.clone())),
            ("tags", strings(&self.tags)),
            ("pii_findings", Value::Array(findings)),
            (
                "injection",
                rec(vec![
                    ("score", Value::Float(self.injection.score)),
                    (
                        "severity",
                        enum_value(&SEVERITIES, &self.injection.severity),
                    ),
                    ("categories", strings(&self.injection.categories)),
                ]),
            ),
            ("reflex_version", Value::String(self.reflex_version.clone())),
            ("received_at", Value::TimestampMillis(self.received_at)),
            ("processing_us", Value::Long(self.processing_us)),
        ])
    }
}

impl TaskResult {
    pub fn to_value(&self) -> Value {
        rec(vec![
            ("task_id", uuid_value(&self.task_id)),
            ("tenant_id", Value::String(self.tenant_id.clone())),
            ("status", enum_value(&TASK_STATUSES, &self.status)),
            ("output", opt(&self.output, |s| Value::String(s.clone()))),
            ("reason", opt(&self.reason, |s| Value::String(s.clone()))),
            ("steps", Value::Array(vec![])),
            (
                "usage",
                rec(vec![
                    ("prompt_tokens", Value::Long(0)),
                    ("completion_tokens", Value::Long(0)),
                    ("cost_usd", Value::Double(0.0)),
                ]),
            ),
            ("created_at", Value::TimestampMillis(self.created_at)),
            ("completed_at", Value::TimestampMillis(self.completed_at)),
            ("component", Value::String(self.component.clone())),
            // The reflex layer decides before any answer exists: nothing checked one (NONE).
            (
                "verification",
                rec(vec![
                    ("method", enum_value(&VERIFICATION_METHODS, "NONE")),
                    ("checks", Value::Array(vec![])),
                ]),
            ),
        ])
    }
}

impl DeadLetter {
    pub fn to_value(&self) -> Value {
        rec(vec![
            ("dead_letter_id", uuid_value(&self.dead_letter_id)),
            ("original_topic", Value::String(self.original_topic.clone())),
            ("original_partition", Value::Int(self.original_partition)),
            ("original_offset", Value::Long(self.original_offset)),
            (
                "original_key",
                opt(&self.original_key, |k| Value::Bytes(k.clone())),
            ),
            ("payload", Value::Bytes(self.payload.clone())),
            ("headers", string_map(&self.headers)),
            ("error_class", Value::String(self.error_class.clone())),
            ("reason", Value::String(self.reason.clone())),
            ("component", Value::String(self.component.clone())),
            ("ts", Value::TimestampMillis(self.ts)),
        ])
    }
}

impl AuditEvent {
    pub fn to_value(&self) -> Value {
        rec(vec![
            ("event_id", Value::String(self.event_id.clone())),
            ("task_id", Value::String(self.task_id.clone())),
            ("tenant_id", Value::String(self.tenant_id.clone())),
            ("stage", Value::String(self.stage.clone())),
            ("component", Value::String(self.component.clone())),
            ("ts", Value::TimestampMillis(self.ts)),
            ("status", Value::String(self.status.clone())),
            ("duration_ms", opt(&self.duration_ms, |n| Value::Long(*n))),
            ("generation", Value::Int(self.generation)),
            ("details", string_map(&self.details)),
        ])
    }
}
