"""Decoded records -> audit table rows, and undecodable records -> dead letters. Pure functions.

Each row ends with the Kafka coordinates the sink read it from (`src_topic`, `src_partition`,
`src_offset`), so a stored row can be traced back to its record. The columns follow
`infra/clickhouse/migrations/0001_audit_tables.sql`; `inserted_at` is filled by ClickHouse.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from octollm.codec import Decoded
from octollm.codec.errors import CodecError
from octollm.contracts.models import DeadLetter
from octollm.kafka.headers import HeadersLike, generation_of

COMPONENT = "audit"
_SRC = ("src_topic", "src_partition", "src_offset")

AUDIT_EVENTS = "audit_events"
TASK_RESULTS = "task_results"
DEAD_LETTERS = "dead_letters"

COLUMNS: dict[str, tuple[str, ...]] = {
    AUDIT_EVENTS: (
        *("event_id", "task_id", "tenant_id", "stage", "component", "ts", "status"),
        *("duration_ms", "generation", "details", *_SRC),
    ),
    TASK_RESULTS: (
        *("task_id", "generation", "tenant_id", "status", "reason", "output", "steps"),
        *("prompt_tokens", "completion_tokens", "cost_usd", "created_at", "completed_at"),
        *("component", *_SRC),
    ),
    DEAD_LETTERS: (
        *("dead_letter_id", "original_topic", "original_partition", "original_offset"),
        *("payload_bytes", "payload_sha256", "headers", "error_class", "reason", "component"),
        *("ts", *_SRC),
    ),
}

Row = tuple[Any, ...]

#: Dead letters the sink writes get ids derived from the record's coordinates, so a record
#: dead-lettered again after a crash or redelivery is the same dead letter (stored once).
_DEAD_LETTER_NS = uuid.UUID("6f1c1c1e-6a55-4c55-9d1b-0c7a0d7e5a11")


class UnexpectedRecord(CodecError):
    """A well-formed record of a type the audit does not store (e.g. a TaskRequest)."""


@dataclass(frozen=True)
class Source:
    """Where the sink read a record."""

    topic: str
    partition: int
    offset: int

    def columns(self) -> tuple[str, int, int]:
        return (self.topic, self.partition, self.offset)


def audit_event_row(record: Mapping[str, Any], src: Source) -> Row:
    # The event carries its own generation: the emitter copied it from the record that caused it.
    return (
        record["event_id"],
        record["task_id"],
        record["tenant_id"],
        record["stage"],
        record["component"],
        record["ts"],
        record["status"],
        record["duration_ms"],
        record["generation"],
        record["details"],
        *src.columns(),
    )


def task_result_row(record: Mapping[str, Any], src: Source, generation: int) -> Row:
    # A result has no generation field: a replayed task's result carries it as a header.
    usage = record["usage"]
    return (
        str(record["task_id"]),
        generation,
        record["tenant_id"],
        str(record["status"]),
        record["reason"],
        record["output"],
        json.dumps(record["steps"], separators=(",", ":"), ensure_ascii=False),
        usage["prompt_tokens"],
        usage["completion_tokens"],
        usage["cost_usd"],
        record["created_at"],
        record["completed_at"],
        record["component"],
        *src.columns(),
    )


def dead_letter_row(record: Mapping[str, Any], src: Source) -> Row:
    # The raw payload may hold unredacted PII (it failed before redaction): only its size and
    # hash are stored; the bytes stay on the DLQ topic for `octollm dlq show/retry`.
    payload: bytes = record["payload"]
    return (
        str(record["dead_letter_id"]),
        record["original_topic"],
        record["original_partition"],
        record["original_offset"],
        len(payload),
        hashlib.sha256(payload).hexdigest(),
        record["headers"],
        record["error_class"],
        record["reason"],
        record["component"],
        record["ts"],
        *src.columns(),
    )


def to_row(decoded: Decoded, src: Source, headers: HeadersLike = None) -> tuple[str, Row]:
    """The (table, row) of a decoded record; `UnexpectedRecord` for a type the audit ignores."""
    name = decoded.schema.name
    record = decoded.record
    try:
        if name == "AuditEvent":
            return AUDIT_EVENTS, audit_event_row(record, src)
        if name == "TaskResult":
            return TASK_RESULTS, task_result_row(record, src, generation_of(headers))
        if name == "DeadLetter":
            return DEAD_LETTERS, dead_letter_row(record, src)
    except (KeyError, TypeError) as exc:  # a record whose fields do not fit its table
        raise UnexpectedRecord(f"{name} at {src.topic}: {type(exc).__name__}: {exc}") from None
    raise UnexpectedRecord(f"a {name} on {src.topic} is not an audit record")


def _header_text(headers: HeadersLike) -> dict[str, str]:
    if not headers:
        return {}
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    return {
        str(k): (v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v or ""))
        for k, v in pairs
    }


def dead_letter_for(
    src: Source,
    key: bytes | None,
    value: bytes | None,
    headers: HeadersLike,
    error: CodecError,
    now: datetime | None = None,
) -> DeadLetter:
    """The DeadLetter for a record the sink could not store (sent to the DLQ topic)."""
    return DeadLetter(
        dead_letter_id=uuid.uuid5(_DEAD_LETTER_NS, f"{src.topic}/{src.partition}/{src.offset}"),
        original_topic=src.topic,
        original_partition=src.partition,
        original_offset=src.offset,
        original_key=key,
        payload=value or b"",
        headers=_header_text(headers),
        error_class=error.error_class,
        reason=str(error),
        component=COMPONENT,
        ts=now or datetime.now(UTC),
    )
