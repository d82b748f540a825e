"""`octollm dlq` on a real broker: list, filter, show, retry (records and audit), bad input."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Message, TopicPartition

from octollm.codec import Codec
from octollm.contracts.models import AuditEvent, DeadLetter
from octollm.kafka.admin import ensure_topics
from octollm.kafka.consumer import consumer_config
from octollm.kafka.producer import Producer
from octollm.ops.deadletters import RETRY_OF
from octollm.settings import Settings
from octollm.tasks import task_from_dict
from octollm.topics import AUDIT, DLQ, QUARANTINE, TASKS, full_name, topic_specs
from tests.conftest import OCTOLLM, cli_env

pytestmark = pytest.mark.integration

TASK_ID = str(uuid.uuid4())


def octollm(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [OCTOLLM, *args], env=cli_env(settings), capture_output=True, text=True, timeout=120
    )


def ends(settings: Settings, topic: str) -> dict[int, int]:
    consumer = Consumer(consumer_config(settings))
    try:
        parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in parts
        }
    finally:
        consumer.close()


def read(settings: Settings, topic: str, expected: int) -> list[Message]:
    """The committed records of `topic` (read_committed), once `expected` have arrived."""
    consumer = Consumer(consumer_config(settings))
    parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, 0) for p in parts])
    found: list[Message] = []
    deadline = time.monotonic() + 30
    try:
        while len(found) < expected and time.monotonic() < deadline:
            found += [m for m in consumer.consume(100, timeout=0.5) if m.error() is None]
        # a little longer, so a record too many would be seen
        found += [m for m in consumer.consume(100, timeout=1.0) if m.error() is None]
    finally:
        consumer.close()
    return found


@pytest.fixture
def dlq(isolated: Settings) -> dict[str, DeadLetter]:
    """Three dead letters on the isolated DLQ: a good task held back, two bad payloads."""
    ensure_topics(isolated, topic_specs(isolated))
    codec = Codec()
    task = task_from_dict({"task_id": TASK_ID, "tenant_id": "acme", "goal": "add two numbers"})
    now = datetime.now(UTC)

    def make(
        payload: bytes, error_class: str, reason: str, topic: str, **extra: object
    ) -> DeadLetter:
        return DeadLetter.model_validate(
            {
                "dead_letter_id": uuid.uuid4(),
                "original_topic": full_name(isolated, topic),
                "original_partition": 1,
                "original_offset": 17,
                "original_key": TASK_ID.encode(),
                "payload": payload,
                "headers": {"traceparent": "00-abc-01"},
                "error_class": error_class,
                "reason": reason,
                "component": "reflex",
                "ts": now,
                **extra,
            }
        )

    letters = {
        "registry": make(
            codec.encode(task), "RegistryUnavailable", "registry did not answer", TASKS
        ),
        "truncated": make(b"\xc3\x01\x00\x01", "TruncatedBody", "body ends at byte 4", TASKS),
        "unknown": make(
            b"\xff\xfe", "UnknownFingerprint", "Fingerprint 0xABC Not Known", QUARANTINE
        ),
    }
    producer = Producer(isolated)
    for dl in letters.values():
        producer.produce(full_name(isolated, DLQ), codec.encode(dl), key=str(dl.dead_letter_id))
    producer.flush()
    return letters


def test_list_filters_by_reason_and_since(isolated: Settings, dlq: dict[str, DeadLetter]) -> None:
    listed = octollm(isolated, "dlq", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert {r["id"] for r in rows} == {str(d.dead_letter_id) for d in dlq.values()}
    row = next(r for r in rows if r["error_class"] == "TruncatedBody")
    assert row["origin"] == {"topic": full_name(isolated, TASKS), "partition": 1, "offset": 17}
    assert row["component"] == "reflex"

    exact = json.loads(
        octollm(isolated, "dlq", "list", "--reason", "TruncatedBody", "--json").stdout
    )
    assert [r["id"] for r in exact] == [str(dlq["truncated"].dead_letter_id)]
    substring = json.loads(
        octollm(isolated, "dlq", "list", "--reason", "not KNOWN", "--json").stdout
    )
    assert [r["id"] for r in substring] == [str(dlq["unknown"].dead_letter_id)]

    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert json.loads(octollm(isolated, "dlq", "list", "--since", future, "--json").stdout) == []
    recent = json.loads(octollm(isolated, "dlq", "list", "--since", "1h", "--json").stdout)
    assert len(recent) == 3

    table = octollm(isolated, "dlq", "list")
    assert table.returncode == 0 and "3 dead letter(s)" in table.stdout
    assert "UnknownFingerprint" in table.stdout

    bad = octollm(isolated, "dlq", "list", "--since", "last tuesday")
    assert bad.returncode == 2
    assert bad.stderr.strip().count("\n") == 0 and "--since" in bad.stderr


def test_show_everything_and_unknown_ids(isolated: Settings, dlq: dict[str, DeadLetter]) -> None:
    dl = dlq["unknown"]
    shown = octollm(isolated, "dlq", "show", str(dl.dead_letter_id), "--json")
    assert shown.returncode == 0, shown.stderr
    info = json.loads(shown.stdout)
    assert info["headers"] == {"traceparent": "00-abc-01"}
    assert info["key"] == TASK_ID
    assert info["payload_hex"] == "fffe" and info["payload"]["utf8"] is None
    assert info["reason"] == "Fingerprint 0xABC Not Known"
    human = octollm(isolated, "dlq", "show", str(dl.dead_letter_id))
    assert "ff fe" in human.stdout and "traceparent=00-abc-01" in human.stdout

    missing = octollm(isolated, "dlq", "show", str(uuid.uuid4()))
    assert missing.returncode == 1
    assert missing.stderr.startswith("octollm: error: no dead letter with id")
    assert missing.stderr.strip().count("\n") == 0
    assert octollm(isolated, "dlq", "show", "not-an-id").returncode == 2


def test_retry_resends_original_bytes_and_audits_once(
    isolated: Settings, dlq: dict[str, DeadLetter]
) -> None:
    dl = dlq["registry"]
    tasks, audit = full_name(isolated, TASKS), full_name(isolated, AUDIT)
    done = octollm(isolated, "dlq", "retry", str(dl.dead_letter_id))
    assert done.returncode == 0, done.stderr
    assert "1 dead letter(s) resent" in done.stdout

    [resent] = read(isolated, tasks, 1)
    assert resent.value() == dl.payload
    assert resent.key() == TASK_ID.encode()
    headers = {k: v for k, v in resent.headers() or []}
    assert headers[RETRY_OF] == str(dl.dead_letter_id).encode()
    assert headers["traceparent"] == b"00-abc-01"

    [record] = read(isolated, audit, 1)
    event = Codec().decode_model(record.value())
    assert isinstance(event, AuditEvent)
    assert (event.stage, event.component, event.task_id) == ("dlq_retried", "cli", TASK_ID)
    assert event.tenant_id == "acme"
    assert event.details["dead_letter_id"] == str(dl.dead_letter_id)
    assert event.details["origin"] == f"{tasks}/1/17"
    assert event.details["target"] == tasks


def test_retry_with_a_fixed_file_and_by_reason(
    isolated: Settings, dlq: dict[str, DeadLetter], tmp_path: Path
) -> None:
    fixed = tmp_path / "fixed.bin"
    fixed.write_bytes(b"\xc3\x01fixed-by-hand")
    dl = dlq["truncated"]
    done = octollm(isolated, "dlq", "retry", str(dl.dead_letter_id), "--fixed-file", str(fixed))
    assert done.returncode == 0, done.stderr
    [resent] = read(isolated, full_name(isolated, TASKS), 1)
    assert resent.value() == b"\xc3\x01fixed-by-hand"

    dry = octollm(isolated, "dlq", "retry", "--reason", "not known", "--dry-run")
    assert dry.returncode == 0 and "would resend" in dry.stdout
    assert sum(ends(isolated, full_name(isolated, QUARANTINE)).values()) == 0
    by_reason = octollm(isolated, "dlq", "retry", "--reason", "UnknownFingerprint")
    assert by_reason.returncode == 0, by_reason.stderr
    [again] = read(isolated, full_name(isolated, QUARANTINE), 1)
    assert again.value() == b"\xff\xfe"
    assert len(read(isolated, full_name(isolated, AUDIT), 2)) == 2


def test_bad_invocations_send_nothing(
    isolated: Settings, dlq: dict[str, DeadLetter], tmp_path: Path
) -> None:
    topics = [full_name(isolated, t) for t in (TASKS, QUARANTINE, AUDIT)]
    before = {t: ends(isolated, t) for t in topics}
    some_id = str(dlq["registry"].dead_letter_id)
    fixed = tmp_path / "f.bin"
    fixed.write_bytes(b"x")
    for args, code in [
        (["dlq", "retry"], 2),
        (["dlq", "retry", some_id, "--reason", "TruncatedBody"], 2),
        (["dlq", "retry", "--reason", "TruncatedBody", "--fixed-file", str(fixed)], 2),
        (["dlq", "retry", some_id, "--fixed-file", str(tmp_path / "missing.bin")], 2),
        (["dlq", "retry", "nope"], 2),
        (["dlq", "retry", str(uuid.uuid4())], 1),
        (["dlq", "retry", "--reason", "no such reason anywhere"], 1),
    ]:
        result = octollm(isolated, *args)
        assert result.returncode == code, (args, result.stderr)
        assert result.stderr.startswith("octollm: error: "), (args, result.stderr)
        assert result.stderr.strip().count("\n") == 0, (args, result.stderr)
    assert {t: ends(isolated, t) for t in topics} == before
