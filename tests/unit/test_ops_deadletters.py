"""Dead-letter helpers without a broker: --since, --reason, what a retry sends and audits."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from octollm.codec import Codec
from octollm.contracts.models import DeadLetter
from octollm.kafka.headers import REPLAY_GENERATION
from octollm.ops.deadletters import (
    RETRY_OF,
    STAGE_RETRIED,
    StoredDeadLetter,
    details,
    matches_reason,
    parse_id,
    parse_since,
    payload_preview,
    plan_retry,
)
from octollm.tasks import task_from_dict

pytestmark = pytest.mark.unit

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
TASK_ID = "3f1e2d4c-5b6a-4789-8abc-def012345678"


def letter(payload: bytes, **changes: object) -> StoredDeadLetter:
    fields: dict[str, object] = {
        "dead_letter_id": uuid.UUID("11111111-2222-4333-8444-555555555555"),
        "original_topic": "p.octo.tasks.v1",
        "original_partition": 2,
        "original_offset": 41,
        "original_key": TASK_ID.encode(),
        "payload": payload,
        "headers": {"traceparent": "00-abc", RETRY_OF: "old", REPLAY_GENERATION: "2"},
        "error_class": "RegistryUnavailable",
        "reason": "Schema registry did not answer",
        "component": "reflex",
        "ts": NOW,
    }
    fields.update(changes)
    return StoredDeadLetter(DeadLetter.model_validate(fields), partition=0, offset=7)


def test_since_takes_durations_and_iso_times() -> None:
    assert parse_since("15m", NOW) == NOW - timedelta(minutes=15)
    assert parse_since("2h", NOW) == NOW - timedelta(hours=2)
    assert parse_since("1.5d", NOW) == NOW - timedelta(days=1.5)
    assert parse_since("2026-11-25T10:00:00Z") == datetime(2026, 11, 25, 10, tzinfo=UTC)
    # no offset: UTC, as in every command that takes a time (octollm.moments)
    assert parse_since("2026-11-25T10:00:00") == datetime(2026, 11, 25, 10, tzinfo=UTC)
    with pytest.raises(ValueError, match=r"ISO-8601 time .* or a duration"):
        parse_since("yesterday")


def test_id_must_be_a_uuid() -> None:
    assert str(parse_id(" 11111111-2222-4333-8444-555555555555 ")).startswith("11111111")
    with pytest.raises(ValueError, match="not a dead letter id"):
        parse_id("nope")


def test_reason_matches_error_class_exactly_or_reason_substring_any_case() -> None:
    dl = letter(b"x").letter
    assert matches_reason(dl, "RegistryUnavailable")
    assert not matches_reason(dl, "registryunavailable")  # error class: exact
    assert matches_reason(dl, "REGISTRY DID not")  # reason: substring, any case
    assert not matches_reason(dl, "TruncatedBody")


def test_retry_keeps_key_and_headers_and_marks_the_retry() -> None:
    stored = letter(b"\xc3\x01raw bytes")
    retry = plan_retry(stored, now=NOW)
    assert retry.topic == "p.octo.tasks.v1"
    assert retry.key == TASK_ID.encode()
    assert retry.value == b"\xc3\x01raw bytes"
    headers = dict(retry.headers)
    assert headers["traceparent"] == b"00-abc"
    assert headers[RETRY_OF] == stored.id.encode()  # replaced, not duplicated
    assert [k for k, _ in retry.headers].count(RETRY_OF) == 1
    event = retry.audit
    assert event.stage == STAGE_RETRIED and event.component == "cli"
    assert event.task_id == TASK_ID  # undecodable payload: the key tells the task
    assert event.generation == 2
    assert event.details["dead_letter_id"] == stored.id
    assert event.details["origin"] == "p.octo.tasks.v1/2/41"
    assert event.details["target"] == "p.octo.tasks.v1"
    assert event.details["fixed"] == "false"


def test_event_id_is_deterministic_per_dead_letter_and_content() -> None:
    stored = letter(b"same")
    first = plan_retry(stored, now=NOW).audit.event_id
    assert plan_retry(stored, now=NOW + timedelta(hours=1)).audit.event_id == first
    assert plan_retry(stored, fixed=b"other", now=NOW).audit.event_id != first
    other = letter(b"same", dead_letter_id=uuid.uuid4())
    assert plan_retry(other, now=NOW).audit.event_id != first


def test_fixed_payload_is_sent_and_its_task_is_found() -> None:
    task = task_from_dict({"task_id": TASK_ID, "tenant_id": "acme", "goal": "add two numbers"})
    fixed = Codec().encode(task)
    retry = plan_retry(letter(b"broken", original_key=None), fixed=fixed, now=NOW)
    assert retry.value == fixed and retry.fixed
    assert retry.audit.task_id == TASK_ID and retry.audit.tenant_id == "acme"
    assert retry.audit.details["fixed"] == "true"


def test_preview_shows_hex_and_text_when_it_is_text() -> None:
    assert payload_preview(b"hi") == {"bytes": 2, "hex": "68 69", "utf8": "hi", "truncated": False}
    binary = payload_preview(b"\xff" * 300, limit=4)
    assert binary["utf8"] is None and binary["hex"] == "ff ff ff ff" and binary["truncated"]
    shown = details(letter(b"\x00\x01"))
    assert shown["key"] == TASK_ID and shown["payload_hex"] == "0001"
    assert shown["dlq"] == {"partition": 0, "offset": 7}
