"""Wire formats: round trips, framing bytes, every error class, and fuzzing for raw exceptions."""

from __future__ import annotations

import contextlib
import io
import json
import random
import struct
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import fastavro
import pytest
from confluent_kafka.schema_registry import Schema, SchemaRegistryError

from octollm.codec import Codec, Decoded
from octollm.codec.confluent import UNKNOWN_ID_TTL_S, ConfluentDeserializer, LazyRegistry
from octollm.codec.errors import (
    BodyTooLarge,
    CodecError,
    EmptyPayload,
    InvalidUtf8,
    RegistryUnavailable,
    SchemaMismatch,
    TrailingBytes,
    TruncatedBody,
    UnknownFingerprint,
    UnknownFormat,
    UnknownSchemaId,
    WrongTypes,
)
from octollm.contracts.models import (
    ArmRequest,
    ArmResult,
    ArmStatus,
    AuditEvent,
    AvroModel,
    Budget,
    DeadLetter,
    InjectionVerdict,
    PiiFinding,
    Priority,
    RoutedTask,
    Severity,
    StepSummary,
    TaskRequest,
    TaskResult,
    TaskStatus,
    Usage,
)
from octollm.contracts.schemas import RECORD_NAMES, get_schema
from octollm.settings import WireFormat

pytestmark = pytest.mark.unit

TOPIC = "octo.tasks.v1"
T0 = datetime(2026, 3, 4, 5, 6, 7, 890000, tzinfo=UTC)


class InMemoryRegistry:
    """STAND-IN for a Confluent schema registry, for unit tests only: not a registry.

    It implements just the two `SchemaRegistryClient` calls the codec makes (`register_schema`,
    `get_schema`) with the registry's observable behaviour: one id per distinct schema across
    subjects, a 404 `SchemaRegistryError` for an unknown id. It checks no compatibility. The
    integration tests run the codec against a real registry.
    """

    def __init__(self) -> None:
        self.schemas: dict[int, Schema] = {}
        self.subjects: dict[str, list[int]] = {}
        self.calls: list[str] = []
        self.fail_with: Exception | None = None

    def register_schema(
        self, subject_name: str, schema: Schema, normalize_schemas: bool = False
    ) -> int:
        self.calls.append(f"register {subject_name}")
        if self.fail_with is not None:
            raise self.fail_with
        schema_id = next(
            (i for i, s in self.schemas.items() if s.schema_str == schema.schema_str),
            len(self.schemas) + 1,
        )
        self.schemas[schema_id] = schema
        if schema_id not in self.subjects.setdefault(subject_name, []):
            self.subjects[subject_name].append(schema_id)
        return schema_id

    def get_schema(
        self, schema_id: int, subject_name: str | None = None, fmt: str | None = None
    ) -> Schema:
        self.calls.append(f"get {schema_id}")
        if self.fail_with is not None:
            raise self.fail_with
        if schema_id not in self.schemas:
            raise SchemaRegistryError(404, 40403, "Schema not found")
        return self.schemas[schema_id]


def examples() -> dict[str, AvroModel]:
    """One realistic instance of every top-level record, optional parts filled in."""
    task = TaskRequest(
        task_id=uuid.UUID("3f1e2d4c-5b6a-4789-8abc-def012345678"),
        tenant_id="acme",
        goal="Write add(a, b) in Python — with tests. 日本語 too.",
        constraints=["python 3.11", "no dependencies"],
        context="Earlier answer: def add(a, b): return a + b",
        acceptance_criteria=["add(2, 3) == 5"],
        priority=Priority.HIGH,
        budget=Budget(max_tokens=4000, max_cost_usd=0.25, deadline_ms=60_000),
        reply_topic="acme.replies",
        created_at=T0,
        trace={"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
    )
    return {
        "TaskRequest": task,
        "RoutedTask": RoutedTask(
            task=task,
            route="priority",
            tags=["code", "pii-redacted"],
            pii_findings=[
                PiiFinding(
                    pii_type="EMAIL",
                    field="context",
                    start=3,
                    end=20,
                    confidence=0.75,
                    placeholder="<EMAIL_1>",
                )
            ],
            injection=InjectionVerdict(score=0.25, severity=Severity.LOW, categories=["x"]),
            reflex_version="0.1.0",
            received_at=T0 + timedelta(milliseconds=3),
            processing_us=412,
        ),
        "ArmRequest": ArmRequest(
            request_id=uuid.uuid4(),
            task_id=task.task_id,
            tenant_id="acme",
            step_id="s1",
            arm="coder",
            instruction="implement add",
            inputs={"plan": "1. write it"},
            attempt=2,
            deadline_at=T0 + timedelta(seconds=30),
            max_tokens=1000,
            created_at=T0,
        ),
        "ArmResult": ArmResult(
            request_id=uuid.uuid4(),
            task_id=task.task_id,
            step_id="s1",
            arm="coder",
            status=ArmStatus.OK,
            output="def add(a, b):\n    return a + b\n",
            artifacts={"language": "python"},
            usage=Usage(prompt_tokens=120, completion_tokens=30, cost_usd=0.0015),
            worker="coder-1",
            started_at=T0,
            finished_at=T0 + timedelta(seconds=2),
        ),
        "TaskResult": TaskResult(
            task_id=task.task_id,
            tenant_id="acme",
            status=TaskStatus.SUCCEEDED,
            output="def add(a, b): ...",
            steps=[StepSummary(step_id="s1", arm="coder", status="OK", duration_ms=2000)],
            usage=Usage(prompt_tokens=120, completion_tokens=30, cost_usd=0.0015),
            created_at=T0,
            completed_at=T0 + timedelta(seconds=5),
            component="orchestrator",
        ),
        "AuditEvent": AuditEvent(
            event_id="e-1",
            task_id=str(task.task_id),
            tenant_id="acme",
            stage="completed",
            component="orchestrator",
            ts=T0,
            status="SUCCEEDED",
            duration_ms=5000,
            details={"route": "priority"},
        ),
        "DeadLetter": DeadLetter(
            dead_letter_id=uuid.uuid4(),
            original_topic=TOPIC,
            original_partition=3,
            original_offset=2**40,
            original_key=b"\x00\xffkey",
            payload=b"\xc3\x01garbage",
            headers={"h": "v"},
            error_class="TruncatedBody",
            reason="the body ends early",
            component="reflex",
            ts=T0,
        ),
    }


EXAMPLES = examples()


@pytest.fixture
def registry() -> InMemoryRegistry:
    return InMemoryRegistry()


@pytest.fixture(params=[WireFormat.AVRO, WireFormat.CONFLUENT], ids=["single-object", "confluent"])
def codec(request: pytest.FixtureRequest, registry: InMemoryRegistry) -> Codec:
    return Codec(request.param, registry_client=registry)


@pytest.fixture
def avro() -> Codec:
    return Codec()


@pytest.fixture
def confluent(registry: InMemoryRegistry) -> Codec:
    return Codec(WireFormat.CONFLUENT, registry_client=registry)


# --- round trips -------------------------------------------------------------------------------


def test_examples_cover_every_record() -> None:
    assert set(EXAMPLES) == set(RECORD_NAMES)


@pytest.mark.parametrize("name", RECORD_NAMES)
def test_round_trip_every_record(codec: Codec, name: str) -> None:
    model = EXAMPLES[name]
    data = codec.encode(model, topic=TOPIC)
    decoded = codec.decode(data, topic=TOPIC)
    assert isinstance(decoded, Decoded)
    assert decoded.schema is get_schema(name)
    assert decoded.wire_format is codec.wire_format
    assert decoded.record == model.to_avro()
    assert codec.decode_model(data) == model
    assert type(codec.decode_model(data)) is type(model)


@pytest.mark.parametrize("name", RECORD_NAMES)
def test_dict_and_model_encode_to_the_same_bytes(codec: Codec, name: str) -> None:
    model = EXAMPLES[name]
    as_dict = (name, model.to_avro())
    assert codec.encode(as_dict, topic=TOPIC) == codec.encode(model, topic=TOPIC)
    full = (f"octollm.v1.{name}", model.to_avro())
    assert codec.encode(full, topic=TOPIC) == codec.encode(model, topic=TOPIC)


def test_dict_may_leave_out_fields_with_defaults(codec: Codec) -> None:
    task = {"task_id": str(uuid.uuid4()), "tenant_id": "t", "goal": "g", "created_at": T0}
    decoded = codec.decode(codec.encode(("TaskRequest", task), topic=TOPIC))
    assert decoded.record["priority"] == "MEDIUM"
    assert decoded.record["budget"] == {
        "max_tokens": None,
        "max_cost_usd": None,
        "deadline_ms": None,
    }
    assert decoded.record["task_id"] == uuid.UUID(task["task_id"])


def test_decode_reads_both_formats_whatever_the_codec_writes(registry: InMemoryRegistry) -> None:
    task = EXAMPLES["TaskRequest"]
    reader = Codec(WireFormat.AVRO, registry_client=registry)
    for fmt in WireFormat:
        data = Codec(fmt, registry_client=registry).encode(task, topic=TOPIC)
        assert reader.decode(data).wire_format is fmt
        assert reader.decode_model(data) == task


def test_decode_accepts_bytearray_and_memoryview(avro: Codec) -> None:
    data = avro.encode(EXAMPLES["TaskRequest"])
    assert avro.decode(bytearray(data)).record == avro.decode(memoryview(data)).record


# --- framing ----------------------------------------------------------------------------------


def test_single_object_framing(avro: Codec) -> None:
    schema = get_schema("TaskRequest")
    data = avro.encode(EXAMPLES["TaskRequest"])
    assert data[:2] == b"\xc3\x01"
    assert data[2:10] == schema.fingerprint_bytes
    assert int.from_bytes(data[2:10], "little") == schema.fingerprint
    body = fastavro.schemaless_reader(io.BytesIO(data[10:]), schema.parsed)
    assert body == EXAMPLES["TaskRequest"].to_avro()


def test_confluent_framing_and_registry_use(confluent: Codec, registry: InMemoryRegistry) -> None:
    data = confluent.encode(EXAMPLES["TaskRequest"], topic=TOPIC)
    assert data[0] == 0
    schema_id = struct.unpack(">I", data[1:5])[0]
    assert registry.subjects == {f"{TOPIC}-value": [schema_id]}
    registered = json.loads(registry.schemas[schema_id].schema_str)
    assert registered == get_schema("TaskRequest").raw  # the full schema, docs and defaults
    assert registry.schemas[schema_id].schema_type == "AVRO"
    for _ in range(3):  # ids are cached: one registration per (topic, record), one fetch per id
        confluent.encode(EXAMPLES["TaskRequest"], topic=TOPIC)
        confluent.decode(data)
    assert registry.calls == [f"register {TOPIC}-value", f"get {schema_id}"]
    confluent.encode(EXAMPLES["TaskRequest"], topic="other")
    assert registry.calls[-1] == "register other-value"


def test_confluent_encode_needs_a_topic(confluent: Codec) -> None:
    with pytest.raises(ValueError, match="topic"):
        confluent.encode(EXAMPLES["TaskRequest"])


def test_confluent_codec_needs_a_registry() -> None:
    with pytest.raises(ValueError, match="registry"):
        Codec(WireFormat.CONFLUENT)
    Codec(WireFormat.CONFLUENT, registry_url="http://127.0.0.1:8081")  # created lazily


def test_confluent_writer_with_an_older_schema_is_resolved(
    confluent: Codec, registry: InMemoryRegistry
) -> None:
    """An upstream producer still on a version without `trace` and `reply_topic`."""
    old = json.loads(json.dumps(get_schema("TaskRequest").raw))
    old["fields"] = [f for f in old["fields"] if f["name"] not in ("trace", "reply_topic")]
    schema_id = registry.register_schema(f"{TOPIC}-value", Schema(json.dumps(old), "AVRO"))
    record = {
        k: v
        for k, v in EXAMPLES["TaskRequest"].to_avro().items()
        if k in {f["name"] for f in old["fields"]}
    }
    buf = io.BytesIO()
    buf.write(b"\x00" + struct.pack(">I", schema_id))
    fastavro.schemaless_writer(buf, fastavro.parse_schema(old, named_schemas={}), record)
    decoded = confluent.decode(buf.getvalue())
    assert decoded.schema is get_schema("TaskRequest")
    assert decoded.record["trace"] == {} and decoded.record["reply_topic"] is None
    assert decoded.record["goal"] == EXAMPLES["TaskRequest"].goal  # type: ignore[attr-defined]


def test_single_object_writer_from_history_is_resolved(avro: Codec) -> None:
    """Data written with a version kept in schemas/history/ decodes to the current schema."""
    current = get_schema("TaskRequest")
    old = json.loads(json.dumps(current.raw))
    old["fields"] = [f for f in old["fields"] if f["name"] != "trace"]
    old_parsed = fastavro.parse_schema(old, named_schemas={})
    fp = fastavro.schema.fingerprint(
        fastavro.schema.to_parsing_canonical_form(old_parsed), "CRC-64-AVRO"
    )
    fingerprint = bytes.fromhex(fp)
    deserializer = avro._by_magic[0xC3]
    # what loading a schemas/history/ file adds to the table
    deserializer._table[fingerprint] = (old_parsed, current.parsed, current)  # type: ignore[attr-defined]
    record = {k: v for k, v in EXAMPLES["TaskRequest"].to_avro().items() if k != "trace"}
    buf = io.BytesIO(b"\xc3\x01" + fingerprint)
    buf.seek(10)
    fastavro.schemaless_writer(buf, old_parsed, record)
    decoded = avro.decode(buf.getvalue())
    assert decoded.schema is current and decoded.record["trace"] == {}


# --- errors ------------------------------------------------------------------------------------


def test_error_classes_are_machine_names() -> None:
    for cls in (
        EmptyPayload,
        UnknownFormat,
        TruncatedBody,
        UnknownFingerprint,
        UnknownSchemaId,
        SchemaMismatch,
        BodyTooLarge,
        InvalidUtf8,
        TrailingBytes,
        RegistryUnavailable,
    ):
        assert issubclass(cls, CodecError)
        assert cls.error_class == cls.__name__
    assert WrongTypes is SchemaMismatch
    assert CodecError.error_class == "CodecError"


def expect(error: type[CodecError], call: Callable[[], object]) -> CodecError:
    with pytest.raises(CodecError) as info:
        call()
    assert type(info.value) is error, f"{type(info.value).__name__}: {info.value}"
    assert str(info.value)
    return info.value


def _body(name: str) -> bytes:
    return Codec().encode(EXAMPLES[name])[10:]


def test_empty_payload(codec: Codec) -> None:
    expect(EmptyPayload, lambda: codec.decode(b""))
    expect(EmptyPayload, lambda: codec.decode(None))


def test_unknown_format(codec: Codec) -> None:
    expect(UnknownFormat, lambda: codec.decode(b'{"task_id": 1}'))
    expect(UnknownFormat, lambda: codec.decode(b"\xc3\x02" + bytes(20)))
    expect(UnknownFormat, lambda: codec.decode(b"\xc3\x02"))
    expect(UnknownFormat, lambda: codec.decode(b"\x01"))


def test_truncated(codec: Codec) -> None:
    expect(TruncatedBody, lambda: codec.decode(b"\xc3"))
    expect(TruncatedBody, lambda: codec.decode(b"\xc3\x01" + bytes(7)))
    expect(TruncatedBody, lambda: codec.decode(b"\x00\x00\x00\x01"))
    data = codec.encode(EXAMPLES["TaskRequest"], topic=TOPIC)
    expect(TruncatedBody, lambda: codec.decode(data[:-1]))
    expect(TruncatedBody, lambda: codec.decode(data[: len(data) // 2]))


def test_unknown_fingerprint(codec: Codec) -> None:
    expect(UnknownFingerprint, lambda: codec.decode(b"\xc3\x01" + bytes(8) + _body("TaskRequest")))


def test_unknown_schema_id(confluent: Codec, registry: InMemoryRegistry) -> None:
    data = b"\x00" + struct.pack(">I", 999) + _body("TaskRequest")
    expect(UnknownSchemaId, lambda: confluent.decode(data))
    expect(UnknownSchemaId, lambda: confluent.decode(data))
    assert registry.calls == ["get 999"]  # the 404 is remembered for a while


def test_unknown_schema_id_is_asked_again_later(registry: InMemoryRegistry) -> None:
    now = [0.0]
    deserializer = ConfluentDeserializer(LazyRegistry(client=registry), clock=lambda: now[0])
    data = b"\x00" + struct.pack(">I", 1) + _body("TaskRequest")
    expect(UnknownSchemaId, lambda: deserializer.deserialize(data))
    registry.register_schema("t-value", Schema(json.dumps(get_schema("TaskRequest").raw), "AVRO"))
    expect(UnknownSchemaId, lambda: deserializer.deserialize(data))
    now[0] += UNKNOWN_ID_TTL_S + 1
    assert deserializer.deserialize(data).schema.name == "TaskRequest"


def test_registry_unavailable(registry: InMemoryRegistry) -> None:
    data = Codec(WireFormat.CONFLUENT, registry_client=registry).encode(
        EXAMPLES["TaskRequest"], topic=TOPIC
    )
    fresh = Codec(WireFormat.CONFLUENT, registry_client=registry)
    registry.fail_with = ConnectionError("connection refused")
    expect(RegistryUnavailable, lambda: fresh.decode(data))
    expect(RegistryUnavailable, lambda: fresh.encode(EXAMPLES["TaskRequest"], topic="new-topic"))
    registry.fail_with = SchemaRegistryError(500, 50001, "store error")
    expect(RegistryUnavailable, lambda: fresh.decode(data))
    registry.fail_with = None
    assert fresh.decode(data).schema.name == "TaskRequest"
    # a codec without any registry meets a Confluent-framed value
    expect(RegistryUnavailable, lambda: Codec().decode(data))


def test_registry_schema_that_is_not_ours(confluent: Codec, registry: InMemoryRegistry) -> None:
    foreign = {
        "type": "record",
        "name": "com.example.Other",
        "fields": [{"name": "a", "type": "int"}],
    }
    schema_id = registry.register_schema("x-value", Schema(json.dumps(foreign), "AVRO"))
    data = b"\x00" + struct.pack(">I", schema_id) + b"\x02"
    expect(SchemaMismatch, lambda: confluent.decode(data))
    expect(SchemaMismatch, lambda: confluent.decode(data))
    assert registry.calls.count(f"get {schema_id}") == 1
    json_id = registry.register_schema("y-value", Schema('{"type": "object"}', "JSON"))
    expect(SchemaMismatch, lambda: confluent.decode(b"\x00" + struct.pack(">I", json_id) + b"\x02"))


def test_registry_rejecting_a_schema(confluent: Codec, registry: InMemoryRegistry) -> None:
    registry.fail_with = SchemaRegistryError(409, 409, "incompatible with an earlier schema")
    expect(SchemaMismatch, lambda: confluent.encode(EXAMPLES["TaskRequest"], topic=TOPIC))


def test_body_too_large(registry: InMemoryRegistry) -> None:
    small = Codec(max_bytes=64)
    data = Codec().encode(EXAMPLES["TaskRequest"])
    expect(BodyTooLarge, lambda: small.decode(data))
    expect(BodyTooLarge, lambda: small.encode(EXAMPLES["TaskRequest"]))
    big = EXAMPLES["TaskRequest"].model_copy(update={"context": "x" * (1 << 20)})
    expect(BodyTooLarge, lambda: Codec().encode(big))
    expect(BodyTooLarge, lambda: Codec().decode(b"\xc3\x01" + bytes((1 << 20) - 1)))


def test_invalid_utf8_in_a_string_field(codec: Codec) -> None:
    model = EXAMPLES["TaskRequest"].model_copy(update={"tenant_id": "ACME"})
    data = codec.encode(model, topic=TOPIC)
    assert data.count(b"ACME") == 1
    bad = data.replace(b"ACME", b"AC\xff\xfe")
    expect(InvalidUtf8, lambda: codec.decode(bad))
    expect(
        InvalidUtf8,
        lambda: codec.encode(("TaskRequest", {**model.to_avro(), "goal": "\udc80"}), topic=TOPIC),
    )


def test_trailing_bytes(codec: Codec) -> None:
    data = codec.encode(EXAMPLES["AuditEvent"], topic=TOPIC)
    expect(TrailingBytes, lambda: codec.decode(data + b"\x00"))
    expect(TrailingBytes, lambda: codec.decode(data + b"more"))


def test_decode_wrong_types(avro: Codec) -> None:
    head = b"\xc3\x01" + get_schema("ArmResult").fingerprint_bytes
    body = bytearray(_body("ArmResult"))
    # request_id is the first field: a 36-char string; make it a non-UUID of the same length
    assert body[0] == 72  # zigzag(36)
    body[1:37] = b"x" * 36
    expect(SchemaMismatch, lambda: avro.decode(head + bytes(body)))
    # status (enum) index out of range: rebuild the body with index 9
    record = EXAMPLES["ArmResult"].to_avro()
    parsed = get_schema("ArmResult").parsed
    good = io.BytesIO()
    fastavro.schemaless_writer(good, parsed, record)
    prefix = io.BytesIO()
    fastavro.schemaless_writer(
        prefix, {"type": "record", "name": "P", "fields": parsed["fields"][:4]}, record
    )
    cut = len(prefix.getvalue())
    raw = good.getvalue()
    assert raw[cut] == 0  # OK is symbol 0
    expect(SchemaMismatch, lambda: avro.decode(head + raw[:cut] + b"\x12" + raw[cut + 1 :]))
    # a timestamp too far in the future for datetime
    audit = Codec().encode(("AuditEvent", {**EXAMPLES["AuditEvent"].to_avro(), "ts": 2**62}))
    expect(SchemaMismatch, lambda: avro.decode(audit))


def test_decode_model_rejects_what_the_model_forbids(avro: Codec) -> None:
    data = avro.encode(EXAMPLES["ArmRequest"])
    record = avro.decode(data).record
    assert record["attempt"] == 2
    # written by a non-Python producer that ignored int's 32-bit range
    parsed = get_schema("ArmRequest").parsed
    buf = io.BytesIO(data[:10])
    buf.seek(10)
    fastavro.schemaless_writer(buf, parsed, {**record, "attempt": 2**40})
    wide = buf.getvalue()
    assert avro.decode(wide).record["attempt"] == 2**40
    expect(SchemaMismatch, lambda: avro.decode_model(wide))


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"goal": 5}, "goal"),
        ({"priority": "URGENT"}, "URGENT"),
        ({"task_id": "not-a-uuid"}, "not a UUID"),
        ({"created_at": datetime(2026, 1, 1)}, "naive"),
        ({"created_at": "yesterday"}, "created_at"),
        ({"budget": {"max_tokens": "many"}}, "max_tokens"),
        ({"budget": {"unknown": 1}}, "unknown"),
        ({"surplus": 1}, "surplus"),
        ({"goal": None}, "goal"),
        ({"budget": {"max_tokens": 1.5}}, "expected an int"),
        ({"budget": {"deadline_ms": True}}, "expected an int"),
        ({"budget": {"max_tokens": 2**63}}, "max_tokens"),
        ({"created_at": 1.5e12}, "created_at"),
    ],
)
def test_encode_dict_that_does_not_match(codec: Codec, changes: dict[str, Any], match: str) -> None:
    record = {**EXAMPLES["TaskRequest"].to_avro(), **changes}
    error = expect(SchemaMismatch, lambda: codec.encode(("TaskRequest", record), topic=TOPIC))
    assert match in str(error)


def test_encode_int_out_of_32_bit_range(codec: Codec) -> None:
    record = {**EXAMPLES["ArmRequest"].to_avro(), "attempt": 2**31}
    error = expect(SchemaMismatch, lambda: codec.encode(("ArmRequest", record), topic=TOPIC))
    assert "32-bit" in str(error)
    record["attempt"] = 2**31 - 1
    assert (
        codec.decode(codec.encode(("ArmRequest", record), topic=TOPIC)).record["attempt"]
        == 2**31 - 1
    )


def test_encode_errors_name_the_nested_field(avro: Codec) -> None:
    routed = EXAMPLES["RoutedTask"].to_avro()
    routed["task"]["task_id"] = "zz"
    error = expect(SchemaMismatch, lambda: avro.encode(("RoutedTask", routed)))
    assert str(error).startswith("RoutedTask.task.task_id: 'zz' is not a UUID")
    routed = EXAMPLES["RoutedTask"].to_avro()
    routed["pii_findings"][0]["start"] = 2**40
    error = expect(SchemaMismatch, lambda: avro.encode(("RoutedTask", routed)))
    assert str(error).startswith("RoutedTask.pii_findings[0].start: ")


def test_encode_missing_required_field(codec: Codec) -> None:
    record = EXAMPLES["TaskRequest"].to_avro()
    del record["goal"]
    expect(SchemaMismatch, lambda: codec.encode(("TaskRequest", record), topic=TOPIC))


def test_encode_unknown_record_or_type(codec: Codec) -> None:
    expect(SchemaMismatch, lambda: codec.encode(("Nope", {}), topic=TOPIC))
    with pytest.raises(TypeError):
        codec.encode({"task_id": "x"}, topic=TOPIC)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        codec.encode(Priority.HIGH, topic=TOPIC)  # type: ignore[arg-type]


# --- fuzzing: nothing but CodecError may come out of decode -----------------------------------


def _decode_only_codec_errors(codec: Codec, payloads: list[bytes]) -> dict[str, int]:
    seen: dict[str, int] = {}
    for payload in payloads:
        try:
            codec.decode(payload)
            seen["ok"] = seen.get("ok", 0) + 1
        except CodecError as exc:
            seen[exc.error_class] = seen.get(exc.error_class, 0) + 1
        except BaseException as exc:  # pragma: no cover - the failure being tested for
            pytest.fail(f"{type(exc).__name__} escaped decode({payload.hex()}): {exc}")
    return seen


@pytest.fixture
def fuzz_codec(registry: InMemoryRegistry) -> Codec:
    """A codec whose registry knows every record (ids 1..7), so 0x00 payloads get to the body."""
    writer = Codec(WireFormat.CONFLUENT, registry_client=registry)
    for model in EXAMPLES.values():
        writer.encode(model, topic=TOPIC)
    return Codec(registry_client=registry)


def _valid_payloads(registry: InMemoryRegistry) -> list[bytes]:
    out = []
    for fmt in WireFormat:
        writer = Codec(fmt, registry_client=registry)
        out += [writer.encode(model, topic=TOPIC) for model in EXAMPLES.values()]
    return out


def test_fuzz_random_bytes(fuzz_codec: Codec) -> None:
    rng = random.Random(20260304)
    heads = [b"", b"\xc3", b"\xc3\x01", b"\x00", b"\x00\x00\x00\x00"]
    heads += [b"\xc3\x01" + get_schema(n).fingerprint_bytes for n in RECORD_NAMES]
    heads += [b"\x00" + struct.pack(">I", i) for i in range(1, 9)]
    payloads = [rng.choice(heads) + rng.randbytes(rng.randrange(0, 300)) for _ in range(20_000)]
    seen = _decode_only_codec_errors(fuzz_codec, payloads)
    assert {"TruncatedBody", "UnknownFormat", "UnknownFingerprint"} <= set(seen)


def test_fuzz_truncations_at_every_length(fuzz_codec: Codec, registry: InMemoryRegistry) -> None:
    for payload in _valid_payloads(registry):
        cuts = [payload[:n] for n in range(len(payload))]
        seen = _decode_only_codec_errors(fuzz_codec, cuts)
        assert set(seen) == {"EmptyPayload", "TruncatedBody"}, seen


def test_fuzz_bit_flips(fuzz_codec: Codec, registry: InMemoryRegistry) -> None:
    for payload in _valid_payloads(registry):
        flipped = []
        for bit in range(len(payload) * 8):
            copy = bytearray(payload)
            copy[bit // 8] ^= 1 << (bit % 8)
            flipped.append(bytes(copy))
        _decode_only_codec_errors(fuzz_codec, flipped)


def test_fuzz_decode_model(fuzz_codec: Codec, registry: InMemoryRegistry) -> None:
    rng = random.Random(7)
    for payload in _valid_payloads(registry):
        for _ in range(300):
            copy = bytearray(payload)
            copy[rng.randrange(len(copy))] = rng.randrange(256)
            with contextlib.suppress(CodecError):  # anything else fails the test
                fuzz_codec.decode_model(bytes(copy))
