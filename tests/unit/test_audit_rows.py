"""Decoded records -> audit rows: columns line up, generation from the header, no raw payload."""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import UTC, datetime

import pytest

from octollm.audit.rows import (
    AUDIT_EVENTS,
    COLUMNS,
    DEAD_LETTERS,
    TASK_RESULTS,
    Source,
    UnexpectedRecord,
    dead_letter_for,
    to_row,
)
from octollm.codec import Codec
from octollm.codec.errors import UnknownFormat
from octollm.contracts.models import (
    AuditEvent,
    DeadLetter,
    StepSummary,
    TaskRequest,
    TaskResult,
    TaskStatus,
    Usage,
)
from octollm.kafka.headers import REPLAY_GENERATION

pytestmark = pytest.mark.unit

NOW = datetime(2026, 11, 25, 10, 0, 0, 123000, tzinfo=UTC)
SRC = Source("p.octo.audit.v1", 2, 41)
codec = Codec()


def row_of(model: object, headers: object = None) -> tuple[str, dict[str, object]]:
    decoded = codec.decode(codec.encode(model))  # type: ignore[arg-type]
    table, row = to_row(decoded, SRC, headers)  # type: ignore[arg-type]
    assert len(row) == len(COLUMNS[table])
    return table, dict(zip(COLUMNS[table], row, strict=True))


def test_audit_event_row() -> None:
    event = AuditEvent(
        event_id="e-1",
        task_id="t-1",
        tenant_id="acme",
        stage="planned",
        component="orchestrator",
        ts=NOW,
        status="OK",
        duration_ms=12,
        generation=2,
        details={"arm": "planner"},
    )
    table, row = row_of(event, [(REPLAY_GENERATION, b"5")])
    assert table == AUDIT_EVENTS
    assert row["event_id"] == "e-1" and row["stage"] == "planned" and row["ts"] == NOW
    # The event's own generation wins: its emitter copied it from the record that caused it.
    assert row["generation"] == 2
    assert row["details"] == {"arm": "planner"}
    assert (row["src_topic"], row["src_partition"], row["src_offset"]) == (SRC.topic, 2, 41)


def result(**changes: object) -> TaskResult:
    fields: dict[str, object] = {
        "task_id": uuid.UUID(int=7),
        "tenant_id": "acme",
        "status": TaskStatus.FAILED,
        "reason": "judge said no",
        "steps": [StepSummary(step_id="s1", arm="coder", status="FAILED", attempts=2)],
        "usage": Usage(prompt_tokens=10, completion_tokens=5, cost_usd=0.25),
        "created_at": NOW,
        "completed_at": NOW,
        "component": "orchestrator",
    }
    return TaskResult.model_validate({**fields, **changes})


@pytest.mark.parametrize(
    ("headers", "generation"),
    [
        (None, 0),
        ([(REPLAY_GENERATION, b"3")], 3),
        ({REPLAY_GENERATION: "1"}, 1),
        ([(REPLAY_GENERATION, b"not a number")], 0),
    ],
)
def test_task_result_generation_from_header(headers: object, generation: int) -> None:
    table, row = row_of(result(), headers)
    assert table == TASK_RESULTS
    assert row["generation"] == generation


def test_task_result_row() -> None:
    _, row = row_of(result())
    assert row["task_id"] == str(uuid.UUID(int=7)) and row["status"] == "FAILED"
    assert (row["prompt_tokens"], row["completion_tokens"], row["cost_usd"]) == (10, 5, 0.25)
    steps = json.loads(str(row["steps"]))
    assert steps == [
        {
            "step_id": "s1",
            "arm": "coder",
            "status": "FAILED",
            "attempts": 2,
            "duration_ms": 0,
            "reason": None,
        }
    ]


def test_dead_letter_row_keeps_size_and_hash_not_the_payload() -> None:
    payload = b"mail jane.doe@example.com, card 4111 1111 1111 1111"
    letter = DeadLetter(
        dead_letter_id=uuid.UUID(int=9),
        original_topic="octo.tasks.v1",
        original_partition=1,
        original_offset=99,
        original_key=b"jane.doe@example.com",
        payload=payload,
        headers={"h": "v"},
        error_class="TruncatedBody",
        reason="the body ends early",
        component="reflex",
        ts=NOW,
    )
    table, row = row_of(letter)
    assert table == DEAD_LETTERS
    assert row["payload_bytes"] == len(payload)
    assert row["payload_sha256"] == hashlib.sha256(payload).hexdigest()
    assert set(COLUMNS[DEAD_LETTERS]).isdisjoint({"payload", "original_key"})
    flat = repr(row)
    assert "jane.doe" not in flat and "4111" not in flat


def test_other_record_types_are_unexpected() -> None:
    task = TaskRequest(task_id=uuid.uuid4(), tenant_id="a", goal="g", created_at=NOW)
    with pytest.raises(UnexpectedRecord, match="TaskRequest"):
        to_row(codec.decode(codec.encode(task)), SRC)
    assert UnexpectedRecord("x").error_class == "UnexpectedRecord"


def test_dead_letter_for_is_deterministic_per_record() -> None:
    error = UnknownFormat("first byte 0x67")
    one = dead_letter_for(SRC, b"k", b"garbage", [("a", b"1")], error, now=NOW)
    again = dead_letter_for(SRC, b"k", b"garbage", [("a", b"1")], error)
    other = dead_letter_for(Source(SRC.topic, 2, 42), None, b"garbage", None, error)
    assert one.dead_letter_id == again.dead_letter_id != other.dead_letter_id
    assert (one.original_topic, one.original_partition, one.original_offset) == (SRC.topic, 2, 41)
    assert one.payload == b"garbage" and one.headers == {"a": "1"}
    assert (one.error_class, one.component) == ("UnknownFormat", "audit")
    # It is itself a valid record: the sink sends it to the DLQ topic, and stores it from there.
    table, row = to_row(codec.decode(codec.encode(one)), SRC)
    assert table == DEAD_LETTERS and "garbage" not in repr(row)
