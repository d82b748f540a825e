"""Confluent wire format: needs a Confluent-compatible schema registry.

    00 | 4-byte schema id (big-endian) | Avro binary body

Encoding registers our schema under the subject `<topic>-value` (TopicNameStrategy) once per
topic and record type and keeps the id; decoding fetches the writer schema by id once and keeps
it. The hot path is then two dict lookups and no registry call. The writer schema comes from the
registry, the reader schema is ours, so data written with an older compatible version decodes.
"""

from __future__ import annotations

import json
import struct
import threading
import time
from collections.abc import Callable, Mapping
from io import BytesIO
from typing import Any, Protocol

from fastavro import parse_schema
from fastavro.schema import to_parsing_canonical_form

from octollm.codec.base import (
    NO_CONTEXT,
    Decoded,
    Deserializer,
    SerializationContext,
    Serializer,
    read_body,
    write_body,
)
from octollm.codec.errors import (
    CodecError,
    RegistryUnavailable,
    SchemaMismatch,
    TruncatedBody,
    UnknownSchemaId,
)
from octollm.contracts.schemas import ContractSchema, get_schema
from octollm.settings import WireFormat

MAGIC_BYTE = 0x00
HEADER_SIZE = 5
_ID = struct.Struct(">I")
#: How long an id the registry said it does not know is answered from memory.
UNKNOWN_ID_TTL_S = 30.0


class RegistryClient(Protocol):
    """The part of `confluent_kafka.schema_registry.SchemaRegistryClient` the codec uses."""

    def register_schema(
        self, subject_name: str, schema: Any, normalize_schemas: bool = False
    ) -> int:
        """Register `schema` (a `confluent_kafka.schema_registry.Schema`) and return its id."""
        ...

    def get_schema(
        self, schema_id: int, subject_name: str | None = None, fmt: str | None = None
    ) -> Any:
        """The `Schema` with this id."""
        ...


def subject_for(topic: str) -> str:
    """TopicNameStrategy: the value schema of topic T is registered under `T-value`."""
    return f"{topic}-value"


def header(schema_id: int) -> bytes:
    return bytes([MAGIC_BYTE]) + _ID.pack(schema_id)


class LazyRegistry:
    """Creates the `SchemaRegistryClient` on first use, so a codec that never meets the Confluent
    format never needs a registry, and says clearly when none is configured."""

    def __init__(self, url: str | None = None, client: RegistryClient | None = None) -> None:
        self.url = url
        self._client = client
        self._lock = threading.Lock()

    @property
    def configured(self) -> bool:
        return self._client is not None or bool(self.url)

    def get(self) -> RegistryClient:
        if self._client is None:
            if not self.url:
                raise RegistryUnavailable(
                    "Confluent wire format needs a schema registry (OCTO_SCHEMA_REGISTRY_URL)"
                )
            with self._lock:
                if self._client is None:
                    from confluent_kafka.schema_registry import SchemaRegistryClient

                    client: RegistryClient = SchemaRegistryClient({"url": self.url})
                    self._client = client
        return self._client


def _registry_error(exc: Exception, what: str) -> CodecError:
    """Translate what the registry client raised into our errors."""
    status = getattr(exc, "http_status_code", None)
    if status == 404:
        return UnknownSchemaId(f"{what}: {exc}")
    if status in (409, 422):
        return SchemaMismatch(f"{what}: the registry rejected the schema: {exc}")
    return RegistryUnavailable(f"{what}: {type(exc).__name__}: {exc}")


class ConfluentSerializer(Serializer):
    wire_format = WireFormat.CONFLUENT

    def __init__(self, registry: LazyRegistry) -> None:
        self._registry = registry
        self._headers: dict[tuple[str, str], bytes] = {}  # (topic, record full name) -> header

    def _register(self, topic: str, schema: ContractSchema) -> bytes:
        from confluent_kafka.schema_registry import Schema

        subject = subject_for(topic)
        client = self._registry.get()
        try:
            schema_id = client.register_schema(subject, Schema(json.dumps(schema.raw), "AVRO"))
        except Exception as exc:
            raise _registry_error(exc, f"registering {schema.full_name} under {subject}") from exc
        head = header(int(schema_id))
        self._headers[(topic, schema.full_name)] = head
        return head

    def serialize(
        self,
        schema: ContractSchema,
        record: Mapping[str, Any],
        ctx: SerializationContext = NO_CONTEXT,
        *,
        trusted: bool = False,
    ) -> bytes:
        if ctx.topic is None:
            raise ValueError("the Confluent wire format needs topic= (subject <topic>-value)")
        head = self._headers.get((ctx.topic, schema.full_name))
        if head is None:
            head = self._register(ctx.topic, schema)
        buf = BytesIO()
        buf.write(head)
        write_body(buf, schema, record, trusted=trusted)
        return buf.getvalue()


# schema id -> (writer schema, reader schema or None when identical, our schema)
_Entry = tuple[dict[str, Any], dict[str, Any] | None, ContractSchema]


def resolve_writer(schema_str: str, schema_type: str | None) -> _Entry:
    """Match a registry schema with our contract of the same full name."""
    if (schema_type or "AVRO").upper() != "AVRO":
        raise SchemaMismatch(f"the registry schema is {schema_type}, not AVRO")
    try:
        doc = json.loads(schema_str)
        writer = parse_schema(doc, named_schemas={}, _write_hint=True)
    except Exception as exc:  # JSON or schema errors, e.g. references we do not follow
        raise SchemaMismatch(f"cannot use the registry schema: {exc}") from None
    if not isinstance(writer, dict) or writer.get("type") != "record":
        raise SchemaMismatch("the registry schema is not a record")
    full_name = str(writer["name"])
    try:
        ours = get_schema(full_name)
    except KeyError:
        raise SchemaMismatch(f"{full_name} is not one of our contracts") from None
    if to_parsing_canonical_form(writer) == ours.canonical:
        return ours.parsed, None, ours
    return writer, ours.parsed, ours


class ConfluentDeserializer(Deserializer):
    wire_format = WireFormat.CONFLUENT
    magic_byte = MAGIC_BYTE

    def __init__(self, registry: LazyRegistry, clock: Callable[[], float] = time.monotonic) -> None:
        self._registry = registry
        self._clock = clock
        self._by_id: dict[int, _Entry] = {}
        self._bad_ids: dict[int, str] = {}  # permanent: an id never changes its schema
        self._unknown_until: dict[int, float] = {}  # the registry said 404, until then

    def _fetch(self, schema_id: int) -> _Entry:
        if schema_id in self._bad_ids:
            raise SchemaMismatch(self._bad_ids[schema_id])
        until = self._unknown_until.get(schema_id)
        if until is not None and self._clock() < until:
            raise UnknownSchemaId(f"schema id {schema_id} is not in the registry")
        client = self._registry.get()
        try:
            found = client.get_schema(schema_id)
        except Exception as exc:
            error = _registry_error(exc, f"fetching schema id {schema_id}")
            if isinstance(error, UnknownSchemaId):
                self._unknown_until[schema_id] = self._clock() + UNKNOWN_ID_TTL_S
            raise error from exc
        try:
            entry = resolve_writer(found.schema_str, getattr(found, "schema_type", "AVRO"))
        except SchemaMismatch as exc:
            self._bad_ids[schema_id] = f"schema id {schema_id}: {exc}"
            raise SchemaMismatch(self._bad_ids[schema_id]) from None
        self._by_id[schema_id] = entry
        self._unknown_until.pop(schema_id, None)
        return entry

    def deserialize(self, data: bytes, ctx: SerializationContext = NO_CONTEXT) -> Decoded:
        if len(data) < HEADER_SIZE:
            raise TruncatedBody(f"{len(data)} bytes: shorter than the {HEADER_SIZE}-byte header")
        schema_id = _ID.unpack_from(data, 1)[0]
        entry = self._by_id.get(schema_id)
        if entry is None:
            entry = self._fetch(schema_id)
        writer, reader, schema = entry
        record = read_body(data, HEADER_SIZE, writer, reader, schema.name)
        return Decoded(schema, record, WireFormat.CONFLUENT)
