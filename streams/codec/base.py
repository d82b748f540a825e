"""The small interface every wire format implements, and the Avro body both formats share.

A `Serializer` turns a record dict of a known schema into framed bytes; a `Deserializer` turns
framed bytes back into a `Decoded` (schema + dict). The framing differs per format (one module
each); the Avro binary body after the header is the same, written and read by `write_body` and
`read_body` here, which translate every fastavro failure into a `CodecError` subclass.
"""

from __future__ import annotations

import struct
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from io import BytesIO
from typing import Any, ClassVar

from fastavro import schemaless_reader, schemaless_writer

from octollm.codec.errors import (
    CodecError,
    InvalidUtf8,
    SchemaMismatch,
    TrailingBytes,
    TruncatedBody,
)
from octollm.contracts.schemas import PRIMITIVES, ContractSchema
from octollm.settings import WireFormat


@dataclass(frozen=True, slots=True)
class SerializationContext:
    """What a (de)serializer may need to know besides the bytes: the topic, for the registry
    subject (`<topic>-value`) and for error messages."""

    topic: str | None = None


NO_CONTEXT = SerializationContext()


@dataclass(frozen=True, slots=True)
class Decoded:
    """A decoded record: the reader's (our current) schema and the record as fastavro reads it
    (enums as symbol strings, uuid as `uuid.UUID`, timestamps as aware UTC `datetime`)."""

    schema: ContractSchema
    record: dict[str, Any]
    wire_format: WireFormat


class Serializer(ABC):
    """Record dict of `schema` -> framed bytes."""

    wire_format: ClassVar[WireFormat]

    @abstractmethod
    def serialize(
        self,
        schema: ContractSchema,
        record: Mapping[str, Any],
        ctx: SerializationContext = NO_CONTEXT,
        *,
        trusted: bool = False,
    ) -> bytes:
        """`trusted` records (from a validated model's `to_avro()`) skip the extra checks."""


class Deserializer(ABC):
    """Framed bytes -> `Decoded`; every failure raises a `CodecError` subclass."""

    wire_format: ClassVar[WireFormat]
    #: The first byte of this format's framing, which the codec dispatches on.
    magic_byte: ClassVar[int]

    @abstractmethod
    def deserialize(self, data: bytes, ctx: SerializationContext = NO_CONTEXT) -> Decoded: ...


# --- the Avro body ------------------------------------------------------------------------------

_Check = Callable[[Any], None]


class _Bad(Exception):
    """A value failed a pre-write check; `path` is filled in on the way out, innermost first."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        self.path: list[str] = []


def _check_uuid(value: Any) -> None:
    if isinstance(value, str):
        try:
            uuid.UUID(value)
        except ValueError:
            raise _Bad(f"{value[:60]!r} is not a UUID") from None


def _check_timestamp(value: Any) -> None:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise _Bad(f"naive datetime {value}; use a timezone-aware one")
    elif type(value) is not int:
        raise _Bad(f"expected a datetime or int, got {type(value).__name__}")


def _check_int(value: Any) -> None:
    if type(value) is not int:
        raise _Bad(f"expected an int, got {type(value).__name__}")
    if not -(2**31) <= value < 2**31:
        raise _Bad(f"{value} does not fit Avro's 32-bit int")


def _check_long(value: Any) -> None:
    if type(value) is not int:  # fastavro would write 1.5 as 1 and True as 1
        raise _Bad(f"expected an int, got {type(value).__name__}")


_PRIMITIVE_CHECKS: dict[str, _Check] = {"int": _check_int, "long": _check_long}


def _compile(schema: Any, named: dict[str, Any]) -> _Check | None:
    """A check for what fastavro writes without complaint but other readers reject or misread:
    strings that are not UUIDs in uuid fields, naive datetimes (fastavro takes them as local
    time), floats and bools in int/long fields (truncated), ints over 32 bits in int fields.
    None where there is nothing to check. Nulls are skipped (fastavro checks union branches)."""
    if isinstance(schema, str):
        if schema in PRIMITIVES:
            return _PRIMITIVE_CHECKS.get(schema)
        return _compile(named[schema], named) if schema in named else None
    if isinstance(schema, list):
        if len(schema) == 2 and "null" in schema:
            return _compile(next(b for b in schema if b != "null"), named)
        return None  # general unions: fastavro picks the branch by type
    if not isinstance(schema, dict):
        return None
    kind = schema.get("type")
    if kind in ("enum", "fixed"):
        return None
    logical = schema.get("logicalType")
    if logical == "uuid" and kind == "string":
        return _check_uuid
    if logical in ("timestamp-millis", "timestamp-micros") and kind == "long":
        return _check_timestamp
    if isinstance(kind, str) and kind in PRIMITIVES:
        return _PRIMITIVE_CHECKS.get(kind)
    if kind in ("record", "error"):
        named.setdefault(str(schema["name"]), schema)  # parsed schemas carry full names
        checks: list[tuple[str, _Check]] = []
        for f in schema.get("fields", []):
            check = _compile(f["type"], named)
            if check is not None:
                checks.append((f["name"], check))
        if not checks:
            return None

        def check_record(value: Any) -> None:
            if isinstance(value, Mapping):
                for name, check in checks:
                    item = value.get(name)
                    if item is not None:
                        try:
                            check(item)
                        except _Bad as bad:
                            bad.path.append(f".{name}")
                            raise

        return check_record
    if kind in ("array", "map"):
        inner = _compile(schema["items" if kind == "array" else "values"], named)
        if inner is None:
            return None

        def check_items(value: Any) -> None:
            pairs = value.items() if isinstance(value, Mapping) else enumerate(value)
            for key, item in pairs:
                if item is not None:
                    try:
                        inner(item)
                    except _Bad as bad:
                        bad.path.append(f"[{key!r}]")
                        raise

        return check_items
    if isinstance(kind, dict | list) or (isinstance(kind, str) and kind not in PRIMITIVES):
        return _compile(kind, named)
    return None


_checks: dict[str, _Check | None] = {}


def precheck(schema: ContractSchema, record: Mapping[str, Any]) -> None:
    """Raise `SchemaMismatch` for values fastavro would write but other readers would reject or
    misread (see `_compile`)."""
    key = f"{schema.full_name}#{schema.fingerprint}"
    if key not in _checks:
        _checks[key] = _compile(schema.parsed, {})
    check = _checks[key]
    if check is not None:
        try:
            check(record)
        except _Bad as bad:
            where = "".join(reversed(bad.path))
            raise SchemaMismatch(f"{schema.name}{where}: {bad.message}") from None
        except (TypeError, AttributeError) as exc:  # e.g. an array that is not iterable
            raise SchemaMismatch(f"{schema.name}: {exc}") from None


def write_body(
    buf: BytesIO, schema: ContractSchema, record: Mapping[str, Any], *, trusted: bool
) -> None:
    """Append the Avro binary encoding of `record` to `buf`."""
    try:
        if trusted:
            schemaless_writer(buf, schema.parsed, record)
        else:
            if not isinstance(record, Mapping):
                raise SchemaMismatch(f"{schema.name}: expected a dict, got {type(record).__name__}")
            precheck(schema, record)
            schemaless_writer(buf, schema.parsed, record, strict_allow_default=True)
    except CodecError:
        raise
    except UnicodeEncodeError as exc:
        raise InvalidUtf8(f"{schema.name}: a string is not encodable as UTF-8: {exc}") from None
    except Exception as exc:  # fastavro raises ValueError, TypeError, KeyError, OverflowError, ...
        raise SchemaMismatch(f"{schema.name}: {type(exc).__name__}: {exc}") from None


def read_body(
    data: bytes,
    offset: int,
    writer: dict[str, Any],
    reader: dict[str, Any] | None,
    name: str,
) -> dict[str, Any]:
    """Decode the Avro body starting at `offset`, which must run exactly to the end of `data`."""
    buf = BytesIO(data)
    buf.seek(offset)
    try:
        record = schemaless_reader(buf, writer, reader)
    except (EOFError, struct.error) as exc:
        raise TruncatedBody(f"{name}: the body ends early ({exc})") from None
    except UnicodeDecodeError as exc:
        raise InvalidUtf8(f"{name}: a string is not valid UTF-8 ({exc.reason})") from None
    except IndexError as exc:  # fastavro's varint reader at the end of data, or a bad index
        if buf.tell() >= len(data):
            raise TruncatedBody(f"{name}: the body ends inside a number") from None
        raise SchemaMismatch(f"{name}: {type(exc).__name__}: {exc}") from None
    except Exception as exc:  # bad enum/union index, invalid UUID, out-of-range timestamp, ...
        raise SchemaMismatch(f"{name}: {type(exc).__name__}: {exc}") from None
    end = buf.tell()
    if end != len(data):
        raise TrailingBytes(f"{name}: {len(data) - end} bytes after the end of the record")
    if not isinstance(record, dict):
        raise SchemaMismatch(f"{name}: decoded a {type(record).__name__}, not a record")
    return record
