"""Avro single-object encoding (Avro specification, "Single-object encoding"); no registry needed.

    C3 01 | 8-byte CRC-64-AVRO fingerprint of the writer schema (little-endian) | Avro binary body

The fingerprint is taken over the writer schema's Parsing Canonical Form. Decoding looks it up
among our current schemas and the versions kept in `schemas/history/`; data written with an older
version is resolved to the current one (Avro schema resolution, fastavro's `reader_schema`).
"""

from __future__ import annotations

from collections.abc import Mapping
from io import BytesIO
from typing import Any

from octollm.codec.base import (
    NO_CONTEXT,
    Decoded,
    Deserializer,
    SerializationContext,
    Serializer,
    read_body,
    write_body,
)
from octollm.codec.errors import TruncatedBody, UnknownFingerprint, UnknownFormat
from octollm.contracts.schemas import RECORD_NAMES, ContractSchema, all_schemas, history
from octollm.settings import WireFormat

MAGIC = b"\xc3\x01"
HEADER_SIZE = len(MAGIC) + 8


def header(schema: ContractSchema) -> bytes:
    """The 10 bytes that precede a body written with `schema`."""
    return MAGIC + schema.fingerprint_bytes


class SingleObjectSerializer(Serializer):
    wire_format = WireFormat.AVRO

    def __init__(self) -> None:
        self._headers: dict[str, bytes] = {}

    def serialize(
        self,
        schema: ContractSchema,
        record: Mapping[str, Any],
        ctx: SerializationContext = NO_CONTEXT,
        *,
        trusted: bool = False,
    ) -> bytes:
        head = self._headers.get(schema.full_name)
        if head is None:
            head = self._headers[schema.full_name] = header(schema)
        buf = BytesIO()
        buf.write(head)
        write_body(buf, schema, record, trusted=trusted)
        return buf.getvalue()


# fingerprint -> (writer schema, reader schema or None when it is the writer, reported schema)
_Entry = tuple[dict[str, Any], dict[str, Any] | None, ContractSchema]


def _fingerprint_table() -> dict[bytes, _Entry]:
    table: dict[bytes, _Entry] = {}
    current_by_name = {s.full_name: s for s in all_schemas()}
    for name in RECORD_NAMES:
        for old in history(name):
            current = current_by_name[old.full_name]
            table[old.fingerprint_bytes] = (old.parsed, current.parsed, current)
    for schema in all_schemas():
        table[schema.fingerprint_bytes] = (schema.parsed, None, schema)
    return table


class SingleObjectDeserializer(Deserializer):
    wire_format = WireFormat.AVRO
    magic_byte = MAGIC[0]

    def __init__(self) -> None:
        self._table = _fingerprint_table()

    def deserialize(self, data: bytes, ctx: SerializationContext = NO_CONTEXT) -> Decoded:
        if len(data) < HEADER_SIZE:
            if len(data) >= 2 and data[1] != MAGIC[1]:
                raise UnknownFormat(f"bytes {data[:2].hex()} are not a single-object header")
            raise TruncatedBody(f"{len(data)} bytes: shorter than the {HEADER_SIZE}-byte header")
        if data[1] != MAGIC[1]:
            raise UnknownFormat(f"bytes {data[:2].hex()} are not a single-object header (c301)")
        fingerprint = data[2:HEADER_SIZE]
        entry = self._table.get(fingerprint)
        if entry is None:
            raise UnknownFingerprint(f"no contract has the schema fingerprint {fingerprint.hex()}")
        writer, reader, schema = entry
        record = read_body(data, HEADER_SIZE, writer, reader, schema.name)
        return Decoded(schema, record, WireFormat.AVRO)
