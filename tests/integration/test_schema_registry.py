"""A real Confluent-compatible schema registry (Apicurio Registry, from Maven Central) driven by
`octollm.supervisor.registry`, used through Confluent's own Python client and through the codec.

The registry is started once for this module's session on a free port with its own data dir, and
stopped by PID. It never skips: if the registry cannot be provisioned or started, the tests fail.
"""

from __future__ import annotations

import json
import socket
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError
from fastavro.schema import to_parsing_canonical_form

from octollm.contracts.schemas import all_schemas
from octollm.settings import Settings
from octollm.supervisor import registry
from octollm.supervisor.registry import (
    ensure_registry,
    registry_status,
    start_registry,
    stop_registry,
)

pytestmark = pytest.mark.integration

V1 = {
    "type": "record",
    "name": "Sample",
    "namespace": "octollm.test",
    "fields": [
        {"name": "id", "type": "string"},
        {"name": "count", "type": "int"},
    ],
}
#: Adds a field with a default: a reader of V2 can read V1 data (BACKWARD compatible).
V2_COMPATIBLE = {
    **V1,
    "fields": [*V1["fields"], {"name": "note", "type": "string", "default": ""}],
}
#: Changes a field's type and adds one without a default: not BACKWARD compatible.
V2_INCOMPATIBLE = {
    **V1,
    "fields": [
        {"name": "id", "type": "long"},
        {"name": "count", "type": "int"},
        {"name": "extra", "type": "string"},
    ],
}
#: Drops a field without a default: BACKWARD compatible (new readers ignore it), not FORWARD.
V2_DROPS_COUNT = {
    **V2_COMPATIBLE,
    "fields": [V2_COMPATIBLE["fields"][0], V2_COMPATIBLE["fields"][2]],
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def registry_settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """Settings of a real registry running for the session (cache dir shared, data dir not)."""
    settings = Settings(data_dir=tmp_path_factory.mktemp("registry"), registry_port=_free_port())
    try:
        registry.find_java(settings, 21)
    except registry.RegistryError:
        # No Java 21+ here: the 3.0 line runs on Java 17 and serves the same ccompat API.
        settings = settings.model_copy(update={"registry_version": "3.0.9"})
    started = time.monotonic()
    start_registry(settings, settings.registry_port)
    print(f"schema registry up in {time.monotonic() - started:.1f}s")  # shown with -s / -rA
    try:
        yield settings
    finally:
        stop_registry(settings)


@pytest.fixture(scope="session")
def registry_url(registry_settings: Settings) -> str:
    return registry.registry_url(registry_settings.registry_port)


@pytest.fixture
def client(registry_url: str) -> SchemaRegistryClient:
    return SchemaRegistryClient({"url": registry_url})


@pytest.fixture
def subject() -> str:
    """A subject of this test's own (the registry is shared by the session)."""
    return f"t{uuid.uuid4().hex[:10]}-value"


def avro(schema: dict[str, object]) -> Schema:
    return Schema(json.dumps(schema), "AVRO")


def canonical(schema_str: str) -> str:
    return str(to_parsing_canonical_form(json.loads(schema_str)))


# --- the registry through Confluent's client -------------------------------------------------


def test_register_and_get_by_id(client: SchemaRegistryClient, subject: str) -> None:
    schema_id = client.register_schema(subject, avro(V1))
    assert isinstance(schema_id, int) and schema_id > 0

    fetched = client.get_schema(schema_id)
    assert fetched.schema_type == "AVRO"
    assert canonical(fetched.schema_str) == canonical(json.dumps(V1))

    latest = client.get_latest_version(subject)
    assert latest.schema_id == schema_id
    assert latest.version == 1
    assert client.lookup_schema(subject, avro(V1)).schema_id == schema_id
    # Registering the same schema again is idempotent: same id, no new version.
    assert client.register_schema(subject, avro(V1)) == schema_id
    assert client.get_versions(subject) == [1]


def test_same_schema_has_one_id_across_subjects(client: SchemaRegistryClient, subject: str) -> None:
    """Confluent semantics the wire format relies on: the id names the schema, not the subject."""
    first = client.register_schema(subject, avro(V1))
    other = client.register_schema(f"other-{subject}", avro(V1))
    assert first == other


def test_compatibility_of_changed_versions(client: SchemaRegistryClient, subject: str) -> None:
    first_id = client.register_schema(subject, avro(V1))
    # The supervisor starts the registry with Confluent's default level, BACKWARD.
    assert client.test_compatibility(subject, avro(V2_COMPATIBLE)) is True
    assert client.test_compatibility(subject, avro(V2_INCOMPATIBLE)) is False

    with pytest.raises(SchemaRegistryError) as excinfo:
        client.register_schema(subject, avro(V2_INCOMPATIBLE))
    assert excinfo.value.http_status_code == 409

    second_id = client.register_schema(subject, avro(V2_COMPATIBLE))
    assert second_id != first_id
    assert client.get_versions(subject) == [1, 2]
    assert client.get_latest_version(subject).schema_id == second_id

    # A subject-level level applies on top: dropping a field is BACKWARD but not FORWARD
    # compatible. (Relaxing a subject to NONE is where Apicurio versions differ, see
    # docs/schema-registry.md, so it is not asserted here.)
    assert client.test_compatibility(subject, avro(V2_DROPS_COUNT)) is True
    client.set_compatibility(subject, "FORWARD")
    assert client.get_compatibility(subject) == "FORWARD"
    assert client.test_compatibility(subject, avro(V2_DROPS_COUNT)) is False
    assert client.get_compatibility() == "BACKWARD"  # the global level, set by the supervisor


def test_ccompat_subjects_lists_it(
    client: SchemaRegistryClient, registry_url: str, subject: str
) -> None:
    schema_id = client.register_schema(subject, avro(V1))
    with httpx.Client(base_url=registry_url, trust_env=False, timeout=10.0) as http:
        response = http.get("/subjects")
        assert response.status_code == 200
        assert subject in response.json()
        versions = http.get(f"/subjects/{subject}/versions")
        assert versions.status_code == 200 and versions.json() == [1]
        by_id = http.get(f"/schemas/ids/{schema_id}")
        assert by_id.status_code == 200
        assert canonical(by_id.json()["schema"]) == canonical(json.dumps(V1))
        missing = http.get("/schemas/ids/987654321")
        assert missing.status_code == 404
        assert missing.json()["error_code"] == 40403  # Confluent's "schema not found"


def test_every_contract_registers(client: SchemaRegistryClient) -> None:
    """Our real, self-contained contracts (nested records, enums, logical types) are accepted
    and come back with the same Parsing Canonical Form."""
    prefix = f"c{uuid.uuid4().hex[:8]}."
    for contract in all_schemas():
        subject = f"{prefix}{contract.full_name}-value"
        schema_id = client.register_schema(subject, Schema(json.dumps(contract.raw), "AVRO"))
        assert canonical(client.get_schema(schema_id).schema_str) == contract.canonical


# --- the supervisor ----------------------------------------------------------------------------


def test_supervisor_status_and_idempotent_start(
    registry_settings: Settings, registry_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    status = registry_status(registry_settings)
    assert status.running and status.healthy and status.pid is not None
    assert status.url == registry_url
    assert status.port == registry_settings.registry_port
    assert status.rss_kb is not None and status.rss_kb > 0
    assert registry.log_file(registry_settings).is_file()
    assert (registry_settings.data_dir / "run" / "schema-registry.pid").is_file()

    # The distribution is cached: a second ensure (and a start of the running one) runs no Maven.
    def no_maven(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"Maven ran although the registry is cached: {args}")

    monkeypatch.setattr(registry.subprocess, "run", no_maven)
    monkeypatch.setattr(registry.shutil, "which", no_maven)
    home = ensure_registry(registry_settings)
    assert home == registry_settings.cache_dir / f"registry-{registry_settings.registry_version}"
    assert start_registry(registry_settings, registry_settings.registry_port) == registry_url
    assert registry_status(registry_settings).pid == status.pid


def test_start_and_stop_a_second_registry(tmp_path: Path) -> None:
    """start/stop/status of an independent instance: stop is by PID and leaves no pid file."""
    settings = Settings(data_dir=tmp_path, registry_port=_free_port())
    url = start_registry(settings, settings.registry_port)
    try:
        assert httpx.get(f"{url}/subjects", trust_env=False, timeout=10.0).json() == []
    finally:
        assert stop_registry(settings) is True
    after = registry_status(settings)
    assert not after.running and not after.healthy
    assert not (tmp_path / "run" / "schema-registry.pid").exists()
    assert stop_registry(settings) is False


# --- the codec in Confluent wire format --------------------------------------------------------


def test_codec_confluent_round_trip(registry_url: str, client: SchemaRegistryClient) -> None:
    """`octollm.codec` frames records as 0x00 + 4-byte schema id against this real registry,
    reads them back, and interoperates with Confluent's own Avro serde both ways."""
    from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
    from confluent_kafka.serialization import MessageField, SerializationContext

    from octollm.codec import Codec
    from octollm.contracts.models import DeadLetter
    from octollm.contracts.schemas import get_schema
    from octollm.settings import WireFormat

    topic = f"t{uuid.uuid4().hex[:10]}.octo.dlq"
    letter = DeadLetter(
        dead_letter_id=uuid.uuid4(),
        original_topic="octo.tasks",
        original_partition=3,
        original_offset=42,
        original_key=b"k",
        payload=b"\x00\x01not avro",
        headers={"trace": "abc"},
        error_class="TruncatedBody",
        reason="end of data in the body",
        component="orchestrator",
        ts=datetime(2025, 1, 2, 3, 4, 5, 678000, tzinfo=UTC),
    )
    codec = Codec(wire_format=WireFormat.CONFLUENT, registry_url=registry_url)

    data = codec.encode(letter, topic=topic)
    assert data[0] == 0  # Confluent magic byte
    schema_id = int.from_bytes(data[1:5], "big")
    registered = client.get_schema(schema_id)
    assert canonical(registered.schema_str) == get_schema("DeadLetter").canonical
    assert f"{topic}-value" in client.get_subjects()  # TopicNameStrategy
    decoded = codec.decode(data, topic=topic)
    assert decoded.wire_format is WireFormat.CONFLUENT
    assert decoded.schema.full_name == "octollm.v1.DeadLetter"
    assert codec.decode_model(data, topic=topic) == letter
    # A second codec (a consumer elsewhere) knows nothing yet: it fetches the schema by id.
    assert Codec(WireFormat.CONFLUENT, registry_url).decode_model(data, topic=topic) == letter

    # The same record by name and dict encodes to the same bytes.
    assert codec.encode(("DeadLetter", letter.to_avro()), topic=topic) == data

    # Confluent's deserializer reads what the codec wrote...
    ctx = SerializationContext(topic, MessageField.VALUE)
    read = AvroDeserializer(client)(data, ctx)
    assert read is not None
    assert read["reason"] == letter.reason and read["payload"] == letter.payload
    # ...and the codec reads what Confluent's serializer wrote.
    serializer = AvroSerializer(
        client,
        json.dumps(get_schema("DeadLetter").raw),
        to_dict=lambda record, _ctx: record.to_avro(),
    )
    assert codec.decode_model(serializer(letter, ctx), topic=topic) == letter
