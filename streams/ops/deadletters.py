"""Dead letters on `octo.dlq`: read, filter, and send back to where they came from.

A retry resends the payload (as read, or a fixed version) to its original topic with its
original key and headers plus `octo-dlq-retry-of: <dead_letter_id>`, and records one
`AuditEvent` (stage `dlq_retried`) in the same Kafka transaction: the audit never shows a retry
that did not happen, nor misses one that did. The event id is derived from the dead letter id
and the sha-256 of the bytes sent, so running the same retry twice is stored once by the sink.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import KafkaException, Producer

from octollm.codec import Codec
from octollm.codec.errors import CodecError
from octollm.contracts.models import AuditEvent, DeadLetter
from octollm.kafka.consumer import StartPosition, read_range
from octollm.kafka.exceptions import ProduceFailed
from octollm.kafka.headers import REPLAY_GENERATION, generation_of
from octollm.kafka.producer import producer_config
from octollm.moments import parse_moment
from octollm.settings import Settings
from octollm.topics import AUDIT, DLQ, full_name

log = logging.getLogger("octollm.ops.deadletters")

RETRY_OF = "octo-dlq-retry-of"
STAGE_RETRIED = "dlq_retried"
#: uuid5 namespace of `dlq_retried` audit event ids.
EVENT_NAMESPACE = uuid.UUID("0c8e2a51-7d43-5b9e-a1f6-3e2d9c4b7a10")
#: A dead letter keeps a payload that may be bigger than a task; read them whatever their size.
MAX_DLQ_BYTES = 64 << 20


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """`--since`: an ISO-8601 time (no offset: UTC) or a duration back from now (90s, 15m, 2h,
    7d, 1w). Raises ValueError with a message fit for the user."""
    return parse_moment(text, now=now)


def parse_id(text: str) -> uuid.UUID:
    try:
        return uuid.UUID(text.strip())
    except ValueError:
        raise ValueError(f"{text!r} is not a dead letter id (a UUID)") from None


@dataclass(frozen=True)
class StoredDeadLetter:
    """A dead letter and where it sits on the DLQ topic."""

    letter: DeadLetter
    partition: int
    offset: int

    @property
    def id(self) -> str:
        return str(self.letter.dead_letter_id)


def matches_reason(letter: DeadLetter, wanted: str) -> bool:
    """`--reason`: the error class exactly, or a case-insensitive substring of the reason."""
    return letter.error_class == wanted or wanted.casefold() in letter.reason.casefold()


def read_dead_letters(
    settings: Settings, *, since: datetime | None = None, reason: str | None = None
) -> list[StoredDeadLetter]:
    """The dead letters on the DLQ (from `since`, matching `reason`), oldest first per
    partition, sorted by time."""
    topic = full_name(settings, DLQ)
    codec = Codec(max_bytes=MAX_DLQ_BYTES)
    position = StartPosition("time", time=since) if since else StartPosition("beginning")
    found = []
    for msg in read_range(settings, topic, position, client_id="octollm-dlq"):
        try:
            letter = codec.decode_model(msg.value(), topic=topic)
        except CodecError as exc:
            log.warning(
                "%s %s@%s is not a DeadLetter: %s", topic, msg.partition(), msg.offset(), exc
            )
            continue
        if not isinstance(letter, DeadLetter):
            log.warning("%s %s@%s holds a %s", topic, msg.partition(), msg.offset(), type(letter))
            continue
        if since is not None and letter.ts < since:
            continue
        if reason is not None and not matches_reason(letter, reason):
            continue
        found.append(StoredDeadLetter(letter, msg.partition() or 0, msg.offset() or 0))
    return sorted(found, key=lambda d: (d.letter.ts, d.partition, d.offset))


def find_dead_letter(settings: Settings, dead_letter_id: uuid.UUID) -> StoredDeadLetter | None:
    for stored in read_dead_letters(settings):
        if stored.letter.dead_letter_id == dead_letter_id:
            return stored
    return None


# --- presentation ---------------------------------------------------------------------------


def _text_or_hex(data: bytes | None) -> str | None:
    if data is None:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return "0x" + data.hex()


def payload_preview(payload: bytes, limit: int = 256) -> dict[str, Any]:
    """The payload's size, its first `limit` bytes in hex, and as UTF-8 when it is text."""
    try:
        text: str | None = payload.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    return {
        "bytes": len(payload),
        "hex": payload[:limit].hex(" "),
        "utf8": text[: limit * 4] if text is not None else None,
        "truncated": len(payload) > limit,
    }


def summary(stored: StoredDeadLetter) -> dict[str, Any]:
    """One row of `dlq list`."""
    letter = stored.letter
    return {
        "id": stored.id,
        "when": letter.ts.isoformat(),
        "component": letter.component,
        "origin": {
            "topic": letter.original_topic,
            "partition": letter.original_partition,
            "offset": letter.original_offset,
        },
        "error_class": letter.error_class,
        "reason": letter.reason,
    }


def details(stored: StoredDeadLetter) -> dict[str, Any]:
    """Everything `dlq show` knows about one dead letter."""
    letter = stored.letter
    return {
        **summary(stored),
        "key": _text_or_hex(letter.original_key),
        "headers": dict(letter.headers),
        "payload": payload_preview(letter.payload),
        "payload_hex": letter.payload.hex(),
        "dlq": {"partition": stored.partition, "offset": stored.offset},
    }


# --- retry ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Retry:
    """What a retry sends: the record for the origin topic and its audit event."""

    dead_letter: StoredDeadLetter
    topic: str
    key: bytes | None
    value: bytes
    headers: list[tuple[str, str | bytes | None]]
    fixed: bool
    audit: AuditEvent = field(repr=False)


def _task_of(letter: DeadLetter, value: bytes, codec: Codec) -> tuple[str, str]:
    """The (task_id, tenant_id) the payload is about, when it can tell (else the key)."""
    try:
        record = codec.decode(value).record
    except CodecError:
        record = {}
    task_id = record.get("task_id") if isinstance(record, dict) else None
    tenant_id = record.get("tenant_id") if isinstance(record, dict) else None
    if not task_id and letter.original_key:
        key = letter.original_key.decode("utf-8", "replace")
        task_id = key if _is_uuid(key) else None
    return str(task_id or ""), str(tenant_id or "")


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


def plan_retry(
    stored: StoredDeadLetter,
    *,
    fixed: bytes | None = None,
    codec: Codec | None = None,
    now: datetime | None = None,
) -> Retry:
    """The record a retry sends and the audit event that records it (nothing is sent here)."""
    letter = stored.letter
    value = letter.payload if fixed is None else fixed
    digest = hashlib.sha256(value).hexdigest()
    headers: list[tuple[str, str | bytes | None]] = [
        (k, v.encode()) for k, v in letter.headers.items() if k != RETRY_OF
    ]
    headers.append((RETRY_OF, stored.id.encode()))
    task_id, tenant_id = _task_of(letter, value, codec or Codec(max_bytes=MAX_DLQ_BYTES))
    origin = f"{letter.original_topic}/{letter.original_partition}/{letter.original_offset}"
    event = AuditEvent(
        event_id=str(uuid.uuid5(EVENT_NAMESPACE, f"{STAGE_RETRIED}/{stored.id}/{digest}")),
        task_id=task_id,
        tenant_id=tenant_id,
        stage=STAGE_RETRIED,
        component="cli",
        ts=now or datetime.now(UTC),
        status="OK",
        duration_ms=None,
        generation=generation_of(letter.headers),
        details={
            "dead_letter_id": stored.id,
            "origin": origin,
            "target": letter.original_topic,
            "error_class": letter.error_class,
            "fixed": "true" if fixed is not None else "false",
            "sha256": digest,
        },
    )
    return Retry(
        dead_letter=stored,
        topic=letter.original_topic,
        key=letter.original_key,
        value=value,
        headers=headers,
        fixed=fixed is not None,
        audit=event,
    )


def send_retries(settings: Settings, retries: list[Retry]) -> None:
    """Send every retry and its audit event in one Kafka transaction (all or nothing)."""
    if not retries:
        return
    codec = Codec.from_settings(settings)
    audit_topic = full_name(settings, AUDIT)
    producer = Producer(
        producer_config(
            settings,
            client_id="octollm-dlq-retry",
            **{"transactional.id": f"octollm-dlq-retry-{uuid.uuid4()}"},
        )
    )
    try:
        producer.init_transactions(settings.connect_timeout_s * 6)
        producer.begin_transaction()
        for retry in retries:
            producer.produce(retry.topic, retry.value, key=retry.key, headers=retry.headers)
            event = codec.encode(retry.audit, topic=audit_topic)
            key = retry.audit.task_id.encode() or None
            generation: list[tuple[str, str | bytes | None]] = [
                (REPLAY_GENERATION, str(retry.audit.generation).encode())
            ]
            producer.produce(audit_topic, event, key=key, headers=generation)
        producer.commit_transaction(60)
    except KafkaException as exc:
        error = exc.args[0]
        # If this fails too, the broker aborts the unfinished transaction on its own timeout.
        with contextlib.suppress(KafkaException):
            producer.abort_transaction(10)
        raise ProduceFailed(f"retry not sent: {error.str()}") from None
