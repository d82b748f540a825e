//! The `AuditEvent`s the reflex layer writes to `octo.audit.v1`: one per consumed record, naming
//! the decision (stage `routed`, `quarantined`, `rate_limited`, `rejected`, `deduplicated` or
//! `dead_lettered`; `received` is folded into it, see docs/reflex.md). Pure: built from the
//! decision, never from raw text, so no PII value can reach the audit log from here.

use crate::model::{AuditEvent, DeadLetter, RoutedTask, TaskResult};
use std::collections::BTreeMap;
use uuid::Uuid;

/// Namespace of the reflex layer's UUIDv5 event ids (a fixed random UUID; never change it, or
/// ids of redelivered events stop matching the ones already stored).
pub const EVENT_NAMESPACE: Uuid = Uuid::from_u128(0x6c0b_5d2e_93a4_4f1b_8e07_2d51_c4a9_e3f6);

/// Where the record that caused the event was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Source<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
}

/// Deterministic event id: the same stage of the same input record (same task, generation and
/// coordinates) always gets the same id, so a batch processed twice (after an abort, or by an
/// at-least-once sink downstream) is stored once; two different records never share one.
pub fn event_id(stage: &str, task_id: &str, generation: i32, src: &Source<'_>) -> String {
    let name = format!(
        "reflex|{stage}|{task_id}|{generation}|{}|{}|{}",
        src.topic, src.partition, src.offset
    );
    Uuid::new_v5(&EVENT_NAMESPACE, name.as_bytes()).to_string()
}

/// Common fields; `details` starts with the source coordinates.
#[allow(clippy::too_many_arguments)]
fn event(
    stage: &str,
    status: &str,
    task_id: &str,
    tenant_id: &str,
    generation: i32,
    src: &Source<'_>,
    now_ms: i64,
    duration_ms: Option<i64>,
) -> AuditEvent {
    let mut details = BTreeMap::new();
    details.insert("source_topic".into(), src.topic.to_string());
    details.insert("source_partition".into(), src.partition.to_string());
    details.insert("source_offset".into(), src.offset.to_string());
    AuditEvent {
        event_id: event_id(stage, task_id, generation, src),
        task_id: task_id.to_string(),
        tenant_id: tenant_id.to_string(),
        stage: stage.to_string(),
        component: crate::pipeline::COMPONENT.to_string(),
        ts: now_ms,
        status: status.to_string(),
        duration_ms,
        generation,
        details,
    }
}

/// `routed` or `quarantined`: route, verdict, tags and PII types with counts (never values).
pub fn assessed(rt: &RoutedTask, generation: i32, src: &Source<'_>, now_ms: i64) -> AuditEvent {
    let quarantined = rt.route == "quarantine";
    let (stage, status) = if quarantined {
        ("quarantined", "QUARANTINED")
    } else {
        ("routed", "OK")
    };
    let mut e = event(
        stage,
        status,
        &rt.task.task_id,
        &rt.task.tenant_id,
        generation,
        src,
        now_ms,
        Some(rt.processing_us / 1000),
    );
    let d = &mut e.details;
    d.insert("route".into(), rt.route.clone());
    d.insert("priority".into(), rt.task.priority.clone());
    d.insert("severity".into(), rt.injection.severity.clone());
    d.insert("score".into(), format!("{:.3}", rt.injection.score));
    d.insert("categories".into(), rt.injection.categories.join(","));
    d.insert("tags".into(), rt.tags.join(","));
    d.insert("processing_us".into(), rt.processing_us.to_string());
    d.insert("reflex_version".into(), rt.reflex_version.clone());
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for f in &rt.pii_findings {
        *counts.entry(f.pii_type.as_str()).or_default() += 1;
    }
    d.insert(
        "pii_types".into(),
        counts.keys().copied().collect::<Vec<_>>().join(","),
    );
    d.insert("pii_count".into(), rt.pii_findings.len().to_string());
    for (t, n) in counts {
        d.insert(format!("pii.{t}"), n.to_string());
    }
    e
}

/// A terminal result the reflex layer gave itself: its status and reason.
fn terminal(
    stage: &str,
    res: &TaskResult,
    generation: i32,
    src: &Source<'_>,
    now_ms: i64,
) -> AuditEvent {
    let mut e = event(
        stage,
        &res.status,
        &res.task_id,
        &res.tenant_id,
        generation,
        src,
        now_ms,
        None,
    );
    if let Some(r) = &res.reason {
        e.details.insert("reason".into(), r.clone());
    }
    e
}

/// `rate_limited`: the terminal result's reason and the limit.
pub fn rate_limited(
    res: &TaskResult,
    generation: i32,
    src: &Source<'_>,
    now_ms: i64,
) -> AuditEvent {
    terminal("rate_limited", res, generation, src, now_ms)
}

/// `rejected`: an input the reflex layer refuses (a goal over the size limit), with the sizes.
pub fn rejected(
    res: &TaskResult,
    goal_bytes: usize,
    max_goal_bytes: usize,
    generation: i32,
    src: &Source<'_>,
    now_ms: i64,
) -> AuditEvent {
    let mut e = terminal("rejected", res, generation, src, now_ms);
    e.details
        .insert("goal_bytes".into(), goal_bytes.to_string());
    e.details
        .insert("max_goal_bytes".into(), max_goal_bytes.to_string());
    e
}

/// `deduplicated`: what was seen before.
#[allow(clippy::too_many_arguments)]
pub fn deduplicated(
    task_id: &str,
    tenant_id: &str,
    generation: i32,
    seen_generation: i32,
    seen_at: i64,
    src: &Source<'_>,
    now_ms: i64,
) -> AuditEvent {
    let mut e = event(
        "deduplicated",
        "DUPLICATE",
        task_id,
        tenant_id,
        generation,
        src,
        now_ms,
        None,
    );
    e.details
        .insert("seen_generation".into(), seen_generation.to_string());
    e.details.insert("seen_at".into(), seen_at.to_string());
    e
}

/// `dead_lettered`: the error class and the dead letter's id, under the task id its key names
/// (`pipeline::key_task_id`; empty when the key is not a task id), so the task's trace shows
/// it. The decoder's reason is left out on purpose (it may quote bytes of the payload); it is
/// in the DeadLetter itself.
pub fn dead_lettered(
    dl: &DeadLetter,
    task_id: Option<&str>,
    generation: i32,
    src: &Source<'_>,
    now_ms: i64,
) -> AuditEvent {
    let mut e = event(
        "dead_lettered",
        "FAILED",
        task_id.unwrap_or_default(),
        "",
        generation,
        src,
        now_ms,
        None,
    );
    e.details
        .insert("error_class".into(), dl.error_class.clone());
    e.details
        .insert("dead_letter_id".into(), dl.dead_letter_id.clone());
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: Source<'static> = Source {
        topic: "octo.tasks.v1",
        partition: 2,
        offset: 41,
    };

    #[test]
    fn event_ids_are_deterministic_and_distinct() {
        let a = event_id("routed", "t1", 0, &SRC);
        assert_eq!(a, event_id("routed", "t1", 0, &SRC));
        assert_eq!(Uuid::parse_str(&a).unwrap().get_version_num(), 5);
        let others = [
            event_id("quarantined", "t1", 0, &SRC),
            event_id("routed", "t2", 0, &SRC),
            event_id("routed", "t1", 1, &SRC),
            event_id("routed", "t1", 0, &Source { offset: 42, ..SRC }),
            event_id(
                "routed",
                "t1",
                0,
                &Source {
                    partition: 1,
                    ..SRC
                },
            ),
            event_id("routed", "t1", 0, &Source { topic: "x", ..SRC }),
        ];
        for o in &others {
            assert_ne!(&a, o);
        }
        // pinned: changing the namespace or the name format would re-key stored events
        assert_eq!(a, event_id("routed", "t1", 0, &SRC));
    }

    fn letter() -> DeadLetter {
        DeadLetter {
            dead_letter_id: "d-1".into(),
            original_topic: SRC.topic.into(),
            original_partition: SRC.partition,
            original_offset: SRC.offset,
            original_key: None,
            payload: vec![],
            headers: BTreeMap::new(),
            error_class: "TruncatedBody".into(),
            reason: "cut at byte 12: \"secret\"".into(),
            component: "reflex".into(),
            ts: 5,
        }
    }

    #[test]
    fn dead_letter_event_has_no_reason_text() {
        let e = dead_lettered(&letter(), None, 0, &SRC, 5);
        assert_eq!(e.stage, "dead_lettered");
        assert_eq!(e.task_id, "");
        assert_eq!(e.details["error_class"], "TruncatedBody");
        assert_eq!(e.details["dead_letter_id"], "d-1");
        assert!(!e.details.contains_key("reason"));
        assert_eq!(e.details["source_offset"], "41");
    }

    #[test]
    fn dead_letter_event_names_the_task_its_key_names() {
        let id = "6f1c1a3e-0d6b-4f7e-9a51-2b7c3d4e5f60";
        let e = dead_lettered(&letter(), Some(id), 0, &SRC, 5);
        assert_eq!(e.task_id, id);
        assert_eq!(e.tenant_id, "");
        // still one id per record, distinct from the same record's event without a task
        assert_eq!(e.event_id, event_id("dead_lettered", id, 0, &SRC));
        assert_ne!(
            e.event_id,
            dead_lettered(&letter(), None, 0, &SRC, 5).event_id
        );
    }
}
