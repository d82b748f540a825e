"""The Avro contracts, loaded once from the `.avsc` files shipped as `octollm.schemas`.

One file per named type, named `<fullname>.avsc`; a type refers to another by its full name and
the reference is resolved from the file of that name (fastavro's `load_schema` convention). Every
schema is expanded here into a self-contained document (the first use of a named type carries its
definition), which is what is parsed, fingerprinted and registered in a schema registry.

`schemas/history/<fullname>.v<N>.avsc` keeps the previous versions of the top-level records,
already self-contained. Their fingerprints are known too, so data written by an older producer
(single-object encoding names its writer schema only by fingerprint) is still decoded.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib.resources import files
from importlib.resources.abc import Traversable
from typing import Any

from fastavro import parse_schema
from fastavro.schema import fingerprint as _fastavro_fingerprint
from fastavro.schema import to_parsing_canonical_form

NAMESPACE = "octollm.v1"

#: The records that travel on topics, in data-path order (the other named types are parts).
RECORD_NAMES: tuple[str, ...] = (
    "TaskRequest",
    "RoutedTask",
    "ArmRequest",
    "ArmResult",
    "TaskResult",
    "AuditEvent",
    "DeadLetter",
)

PRIMITIVES = frozenset(
    {"null", "boolean", "int", "long", "float", "double", "bytes", "string"},
)
_NAMED = frozenset({"record", "enum", "fixed", "error"})
_HISTORY_FILE = re.compile(r"^(?P<full_name>.+)\.v(?P<version>[0-9]+)\.avsc$")


class SchemaLoadError(Exception):
    """A `.avsc` file is missing, unreadable or not a valid Avro schema."""


@dataclass(frozen=True)
class ContractSchema:
    """One Avro named type, parsed and fingerprinted.

    `version` is `"current"` for the schema in `schemas/`, `"v<N>"` for one from `schemas/history/`.
    """

    name: str
    full_name: str
    parsed: dict[str, Any] = field(compare=False, repr=False)
    canonical: str = field(compare=False, repr=False)
    fingerprint: int
    fingerprint_bytes: bytes
    raw: dict[str, Any] = field(compare=False, repr=False)
    version: str = "current"

    @property
    def is_current(self) -> bool:
        return self.version == "current"


def schemas_dir() -> Traversable:
    """The folder holding the `.avsc` files (works from a checkout and from an installed wheel)."""
    return files("octollm.schemas")


def crc64_avro_fingerprint(canonical: str) -> bytes:
    """CRC-64-AVRO ("Rabin") fingerprint of a Parsing Canonical Form, as 8 little-endian bytes."""
    return bytes.fromhex(_fastavro_fingerprint(canonical, "CRC-64-AVRO"))


def _full_name(name: str, namespace: str | None) -> str:
    if "." in name or not namespace:
        return name
    return f"{namespace}.{name}"


def _read_json(item: Traversable) -> dict[str, Any]:
    try:
        doc = json.loads(item.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SchemaLoadError(f"{item.name}: {exc}") from exc
    if not isinstance(doc, dict):
        raise SchemaLoadError(f"{item.name}: expected a JSON object at the top level")
    return doc


def _expand(
    schema: Any,
    namespace: str | None,
    sources: Mapping[str, dict[str, Any]],
    defined: set[str],
    stack: tuple[str, ...],
) -> Any:
    """A copy of `schema` where each reference to a not-yet-defined named type is its definition."""
    if isinstance(schema, str):
        if schema in PRIMITIVES:
            return schema
        full = _full_name(schema, namespace)
        if full in defined:
            return full
        if full not in sources:
            raise SchemaLoadError(f"unknown type {full!r} (no file {full}.avsc)")
        if full in stack:
            raise SchemaLoadError(f"type {full!r} refers to itself through {' -> '.join(stack)}")
        return _expand(sources[full], namespace, sources, defined, (*stack, full))
    if isinstance(schema, list):
        return [_expand(branch, namespace, sources, defined, stack) for branch in schema]
    if not isinstance(schema, dict):
        raise SchemaLoadError(f"not an Avro schema: {schema!r}")
    kind = schema.get("type")
    if kind in _NAMED:
        own_ns = schema.get("namespace", namespace)
        full = _full_name(str(schema["name"]), own_ns)
        if full in defined:
            raise SchemaLoadError(f"type {full!r} is defined twice")
        defined.add(full)
        child_ns = full.rpartition(".")[0] or None
        out = dict(schema)
        if kind in ("record", "error"):
            out["fields"] = [
                {**f, "type": _expand(f["type"], child_ns, sources, defined, stack)}
                for f in schema.get("fields", [])
            ]
        return out
    if kind == "array":
        return {**schema, "items": _expand(schema["items"], namespace, sources, defined, stack)}
    if kind == "map":
        return {**schema, "values": _expand(schema["values"], namespace, sources, defined, stack)}
    if isinstance(kind, str | list | dict):  # {"type": "string", "logicalType": ...} or nested
        if kind in PRIMITIVES:
            return dict(schema)
        return _expand(kind, namespace, sources, defined, stack)
    raise SchemaLoadError(f"not an Avro schema: {schema!r}")


def _make(raw: dict[str, Any], version: str) -> ContractSchema:
    full = _full_name(str(raw["name"]), raw.get("namespace"))
    try:
        parsed = parse_schema(raw, named_schemas={}, _write_hint=True)
        canonical = to_parsing_canonical_form(parsed)
    except Exception as exc:  # fastavro raises several types for a bad schema
        raise SchemaLoadError(f"{full} ({version}): {exc}") from exc
    if not isinstance(parsed, dict):
        raise SchemaLoadError(f"{full} ({version}): not a named type")
    fp_bytes = crc64_avro_fingerprint(canonical)
    return ContractSchema(
        name=full.rpartition(".")[2],
        full_name=full,
        parsed=parsed,
        canonical=canonical,
        fingerprint=int.from_bytes(fp_bytes, "little"),
        fingerprint_bytes=fp_bytes,
        raw=raw,
        version=version,
    )


def expand(schema: dict[str, Any], sources: Mapping[str, dict[str, Any]]) -> dict[str, Any]:
    """`schema` made self-contained, resolving references from `sources` (full name -> JSON)."""
    expanded = _expand(schema, schema.get("namespace"), sources, set(), ())
    assert isinstance(expanded, dict)
    return expanded


@cache
def _sources() -> dict[str, dict[str, Any]]:
    """Every `schemas/*.avsc` as written, by the full name its file is named after."""
    out: dict[str, dict[str, Any]] = {}
    for item in sorted(schemas_dir().iterdir(), key=lambda t: t.name):
        if not item.name.endswith(".avsc"):
            continue
        doc = _read_json(item)
        full = item.name.removesuffix(".avsc")
        declared = _full_name(str(doc.get("name", "")), doc.get("namespace"))
        if declared != full:
            raise SchemaLoadError(f"{item.name} defines {declared!r}; the file must be named so")
        out[full] = doc
    if not out:
        raise SchemaLoadError(f"no .avsc files in {schemas_dir()}")
    return out


@cache
def _current() -> dict[str, ContractSchema]:
    sources = _sources()
    return {full: _make(expand(doc, sources), "current") for full, doc in sources.items()}


@cache
def _history() -> tuple[ContractSchema, ...]:
    folder = schemas_dir() / "history"
    if not folder.is_dir():
        return ()
    out: list[ContractSchema] = []
    for item in sorted(folder.iterdir(), key=lambda t: t.name):
        match = _HISTORY_FILE.match(item.name)
        if match is None:
            continue
        schema = _make(_read_json(item), f"v{match['version']}")
        if schema.full_name != match["full_name"]:
            raise SchemaLoadError(f"history/{item.name} defines {schema.full_name!r}")
        out.append(schema)
    return tuple(out)


@cache
def _by_fingerprint() -> dict[bytes, ContractSchema]:
    table: dict[bytes, ContractSchema] = {}
    for old in _history():  # older versions first, so the current schema wins a tie
        table[old.fingerprint_bytes] = old
    for schema in _current().values():
        table[schema.fingerprint_bytes] = schema
    return table


def get_schema(name: str) -> ContractSchema:
    """The current schema of a named type, by short (`TaskRequest`) or full name."""
    current = _current()
    schema = current.get(name) or current.get(_full_name(name, NAMESPACE))
    if schema is None:
        raise KeyError(f"no Avro contract named {name!r}; known: {', '.join(sorted(current))}")
    return schema


def all_schemas() -> Iterator[ContractSchema]:
    """Every current named type that has its own `.avsc` file, sorted by full name."""
    return iter(_current().values())


def history(name: str) -> tuple[ContractSchema, ...]:
    """The previous versions of a record kept in `schemas/history/`, oldest first."""
    full = get_schema(name).full_name
    versions = [s for s in _history() if s.full_name == full]
    return tuple(sorted(versions, key=lambda s: int(s.version[1:])))


def by_fingerprint(fp_bytes: bytes) -> ContractSchema | None:
    """The schema (current, else a historical version) whose CRC-64-AVRO fingerprint this is."""
    return _by_fingerprint().get(bytes(fp_bytes))


def _main() -> None:
    """`python -m octollm.contracts.schemas`: each record's fingerprint, for cross-checking."""
    for name in RECORD_NAMES:
        schema = get_schema(name)
        fp = schema.fingerprint_bytes.hex()
        print(f"{schema.full_name:28} {fp}  0x{schema.fingerprint:016x}")
    for old in _history():
        print(f"{old.full_name + ' ' + old.version:28} {old.fingerprint_bytes.hex()}  (history)")


if __name__ == "__main__":
    _main()
