"""The Avro contracts: loading, canonical forms and fingerprints, and the generated models."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import fastavro
import pytest
from pydantic import ValidationError

from octollm.contracts import codegen
from octollm.contracts.models import ENUMS, MODELS, AvroModel, Priority, TaskRequest
from octollm.contracts.schemas import (
    RECORD_NAMES,
    ContractSchema,
    all_schemas,
    by_fingerprint,
    get_schema,
    schemas_dir,
)

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]


# --- an independent CRC-64-AVRO and Parsing Canonical Form, straight from the Avro spec --------

EMPTY64 = 0xC15D213AA4D7A795


def _fp_table() -> list[int]:
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (EMPTY64 & -(fp & 1))
        table.append(fp)
    return table


FP_TABLE = _fp_table()


def crc64_avro(data: bytes) -> int:
    """The spec's "fingerprint64" (Schema Fingerprints section), as an unsigned 64-bit int."""
    fp = EMPTY64
    for byte in data:
        fp = (fp >> 8) ^ FP_TABLE[(fp ^ byte) & 0xFF]
    return fp


PRIMITIVE = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}
KEEP = ("name", "type", "fields", "symbols", "items", "values", "size")  # [STRIP] and [ORDER]


def canonical(schema: Any, namespace: str = "", seen: set[str] | None = None) -> str:
    """Parsing Canonical Form, applying [PRIMITIVES] [FULLNAMES] [STRIP] [ORDER] [STRINGS]
    [INTEGERS] [WHITESPACE] as the spec lists them."""
    seen = set() if seen is None else seen
    if isinstance(schema, list):
        return "[" + ",".join(canonical(s, namespace, seen) for s in schema) + "]"
    if isinstance(schema, str):
        if schema in PRIMITIVE or "." in schema or not namespace:
            return json.dumps(schema)
        return json.dumps(f"{namespace}.{schema}")
    kind = schema["type"]
    if kind in PRIMITIVE:  # [PRIMITIVES]: {"type": "long", "logicalType": ...} -> "long"
        return json.dumps(kind)
    if not isinstance(kind, str) or kind not in ("record", "enum", "fixed", "array", "map"):
        return canonical(kind, namespace, seen)
    parts: list[str] = []
    if kind in ("record", "enum", "fixed"):
        name = schema["name"]
        ns = schema.get("namespace", namespace)
        full = name if "." in name or not ns else f"{ns}.{name}"
        if full in seen:
            return json.dumps(full)
        seen.add(full)
        namespace = full.rpartition(".")[0]
        parts.append(f'"name":{json.dumps(full)}')
    for key in KEEP[1:]:
        if key not in schema:
            continue
        value = schema[key]
        if key == "type":
            parts.append(f'"type":{json.dumps(value)}')
        elif key == "fields":
            fields = [
                f'{{"name":{json.dumps(f["name"])},"type":{canonical(f["type"], namespace, seen)}}}'
                for f in value
            ]
            parts.append(f'"fields":[{",".join(fields)}]')
        elif key == "symbols":
            parts.append(f'"symbols":[{",".join(json.dumps(s) for s in value)}]')
        elif key in ("items", "values"):
            parts.append(f'"{key}":{canonical(value, namespace, seen)}')
        elif key == "size":
            parts.append(f'"size":{int(value)}')
    return "{" + ",".join(parts) + "}"


@pytest.mark.parametrize(
    ("canonical_form", "signed"),
    [  # Avro's share/test/data/schema-tests.txt publishes fingerprints as signed 64-bit ints
        ('"null"', 7195948357588979594),
        ('"boolean"', -6970731678124411036),
        ('"int"', 8247732601305521295),
        ('{"name":"foo","type":"fixed","size":15}', 1756455273707447556),
    ],
)
def test_crc64_matches_the_avro_test_vectors(canonical_form: str, signed: int) -> None:
    assert crc64_avro(canonical_form.encode()) == signed & (2**64 - 1)


# --- loading -----------------------------------------------------------------------------------


def test_record_names_are_the_seven_top_level_records() -> None:
    assert RECORD_NAMES == (
        "TaskRequest",
        "RoutedTask",
        "ArmRequest",
        "ArmResult",
        "TaskResult",
        "AuditEvent",
        "DeadLetter",
    )
    for name in RECORD_NAMES:
        schema = get_schema(name)
        assert isinstance(schema, ContractSchema)
        assert schema.name == name
        assert schema.full_name == f"octollm.v1.{name}"
        assert schema.parsed["type"] == "record"
        assert schema.is_current
        assert get_schema(schema.full_name) is schema  # cached, by either name


def test_every_avsc_file_loads_and_is_named_after_its_type() -> None:
    files = sorted(p.name for p in schemas_dir().iterdir() if p.name.endswith(".avsc"))
    assert files == sorted(f"{s.full_name}.avsc" for s in all_schemas())
    assert len(files) == 12


def test_schemas_are_found_through_importlib_resources() -> None:
    folder = schemas_dir()
    assert (folder / "octollm.v1.TaskRequest.avsc").is_file()
    assert Path(str(folder)).resolve() == (REPO / "schemas").resolve()


def test_raw_is_self_contained() -> None:
    for name in RECORD_NAMES:
        raw = get_schema(name).raw
        # parses alone, with no other named types known
        fastavro.parse_schema(raw, named_schemas={})


def test_unknown_name_raises_key_error() -> None:
    with pytest.raises(KeyError, match="NoSuchRecord"):
        get_schema("NoSuchRecord")


@pytest.mark.parametrize("name", RECORD_NAMES)
def test_canonical_form_and_fingerprint_match_the_spec(name: str) -> None:
    schema = get_schema(name)
    assert schema.canonical == canonical(schema.raw)
    expected = crc64_avro(schema.canonical.encode("utf-8"))
    assert schema.fingerprint == expected
    assert schema.fingerprint_bytes == expected.to_bytes(8, "little")
    assert len(schema.fingerprint_bytes) == 8


def test_canonical_form_strips_logical_types_docs_and_defaults() -> None:
    text = get_schema("TaskRequest").canonical
    for absent in ("logicalType", "doc", "default", "namespace", " "):
        assert absent not in text
    assert '"name":"octollm.v1.TaskRequest"' in text
    assert '{"name":"created_at","type":"long"}' in text


def test_fingerprint_table_in_the_docs_is_current() -> None:
    """docs/wire-formats.md lists every fingerprint for other implementations to check against."""
    docs = REPO / "docs" / "wire-formats.md"
    text = docs.read_text(encoding="utf-8")
    for name in RECORD_NAMES:
        schema = get_schema(name)
        row = f"| `{schema.full_name}`"
        line = next((ln for ln in text.splitlines() if ln.startswith(row)), None)
        assert line is not None, f"no row for {schema.full_name} in {docs}"
        assert f"`{schema.fingerprint_bytes.hex()}`" in line, line
        assert f"`0x{schema.fingerprint:016x}`" in line, line


def test_by_fingerprint() -> None:
    for name in RECORD_NAMES:
        schema = get_schema(name)
        assert by_fingerprint(schema.fingerprint_bytes) is schema
    assert by_fingerprint(b"\x00" * 8) is None
    assert by_fingerprint(b"short") is None


# --- generated models ----------------------------------------------------------------------------


def test_committed_models_match_the_generator() -> None:
    generated = codegen.generate()
    committed = codegen.MODELS_PATH.read_text(encoding="utf-8")
    assert generated == committed, "models.py is stale: run python -m octollm.contracts.codegen"


def test_codegen_check_mode(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert codegen.main(["--check"]) == 0
    stale = tmp_path / "models.py"
    stale.write_text("# old\n", encoding="utf-8")
    assert codegen.main(["--check", "--output", str(stale)]) == 1
    assert "out of date" in capsys.readouterr().err
    assert codegen.main(["--output", str(stale)]) == 0
    assert stale.read_text(encoding="utf-8") == codegen.generate()


def test_models_header() -> None:
    first = codegen.MODELS_PATH.read_text(encoding="utf-8").splitlines()[0]
    expected = "GENERATED by python -m octollm.contracts.codegen from schemas/*.avsc — do not edit"
    assert expected in first


def _ruff() -> str | None:
    local = Path(sys.executable).with_name("ruff")
    return str(local) if local.exists() else shutil.which("ruff")


def test_models_are_ruff_clean() -> None:
    ruff = _ruff()
    assert ruff is not None, "ruff (a dev dependency) is not installed: run `make setup`"
    path = str(codegen.MODELS_PATH)
    for args in (["format", "--check", path], ["check", path]):
        done = subprocess.run([ruff, *args], cwd=REPO, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr


def _definitions() -> dict[str, dict[str, Any]]:
    """Every named type (also inline ones such as StepSummary) by full name."""
    found: dict[str, dict[str, Any]] = {}

    def walk(node: Any) -> None:
        if isinstance(node, list):
            for item in node:
                walk(item)
        elif isinstance(node, dict):
            if node.get("type") in ("record", "enum"):
                found.setdefault(str(node["name"]), node)
                for f in node.get("fields", []):
                    walk(f["type"])
            for key in ("items", "values"):
                if key in node:
                    walk(node[key])
            if isinstance(node.get("type"), dict | list):
                walk(node["type"])

    for schema in all_schemas():
        walk(schema.parsed)
    return found


DEFS = _definitions()
WHEN = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)


def sample(schema: Any, counter: list[int]) -> Any:
    """A value of `schema` with every optional part present, as fastavro writes it."""
    counter[0] += 1
    n = counter[0]
    if isinstance(schema, list):
        return sample(next(b for b in schema if b != "null"), counter)
    if isinstance(schema, str):
        if schema in DEFS:
            return sample(DEFS[schema], counter)
        return {
            "string": f"text-{n}-é",
            "int": -(2**31) + n,
            "long": 2**62 + n,
            "float": 0.5,
            "double": 1.25 + n,
            "boolean": True,
            "bytes": bytes([0, 255, n % 256]),
        }[schema]
    logical = schema.get("logicalType")
    if logical == "uuid":
        return uuid.UUID(int=n)
    if logical == "timestamp-millis":
        return WHEN + timedelta(milliseconds=n)
    kind = schema["type"]
    if kind == "record":
        return {f["name"]: sample(f["type"], counter) for f in schema["fields"]}
    if kind == "enum":
        return schema["symbols"][-1]
    if kind == "array":
        return [sample(schema["items"], counter), sample(schema["items"], counter)]
    if kind == "map":
        return {"a": sample(schema["values"], counter), "b": sample(schema["values"], counter)}
    return sample(kind, counter)


def _fields(full_name: str) -> list[dict[str, Any]]:
    return list(DEFS[full_name]["fields"])


def test_every_named_type_has_a_model() -> None:
    records = {n for n, d in DEFS.items() if d["type"] == "record"}
    enums = {n for n, d in DEFS.items() if d["type"] == "enum"}
    assert set(MODELS) == records
    assert set(ENUMS) == enums
    for full_name, model in MODELS.items():
        assert model.__avro_name__ == full_name
        assert model.__name__ == full_name.rpartition(".")[2]
        assert model.__doc__ == DEFS[full_name].get("doc")
        assert model.model_config.get("extra") == "forbid"
    for full_name, enum in ENUMS.items():
        assert enum.__avro_name__ == full_name  # type: ignore[attr-defined]
        assert [m.value for m in enum] == DEFS[full_name]["symbols"]


@pytest.mark.parametrize("full_name", sorted(MODELS))
def test_model_fields_line_up_with_the_schema(full_name: str) -> None:
    model = MODELS[full_name]
    fields = _fields(full_name)
    assert list(model.model_fields) == [f["name"] for f in fields]
    for f in fields:
        info = model.model_fields[f["name"]]
        assert info.description == f.get("doc")
        assert info.is_required() == ("default" not in f), f["name"]


@pytest.mark.parametrize("full_name", sorted(MODELS))
def test_model_round_trips_through_fastavro(full_name: str) -> None:
    model = MODELS[full_name]
    parsed = fastavro.parse_schema(DEFS[full_name], named_schemas={})
    value = sample(DEFS[full_name], [0])
    instance = model.from_avro(value)
    out = instance.to_avro()
    assert set(out) == {f["name"] for f in _fields(full_name)}
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, parsed, out, strict=True)  # exactly the schema's fields
    buf.seek(0)
    back = fastavro.schemaless_reader(buf, parsed)
    assert back == value
    assert model.from_avro(back) == instance


@pytest.mark.parametrize("full_name", sorted(MODELS))
def test_model_defaults_are_the_schema_defaults(full_name: str) -> None:
    model = MODELS[full_name]
    fields = _fields(full_name)
    full = sample(DEFS[full_name], [0])
    required = {f["name"]: full[f["name"]] for f in fields if "default" not in f}
    out = model.from_avro(required).to_avro()
    for f in fields:
        if "default" in f:
            assert out[f["name"]] == f["default"], f["name"]


@pytest.mark.parametrize("full_name", sorted(MODELS))
def test_model_optionality_matches_unions(full_name: str) -> None:
    model = MODELS[full_name]
    full = sample(DEFS[full_name], [0])
    for f in _fields(full_name):
        nullable = isinstance(f["type"], list) and "null" in f["type"]
        data = {**full, f["name"]: None}
        if nullable:
            assert model.from_avro(data).to_avro()[f["name"]] is None
        else:
            with pytest.raises(ValidationError):
                model.from_avro(data)


def _task(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "task_id": str(uuid.uuid4()),
        "tenant_id": "acme",
        "goal": "write add(a, b)",
        "created_at": WHEN,
    }
    return {**base, **changes}


def test_task_request_model_behaviour() -> None:
    task = TaskRequest.model_validate(_task())
    assert isinstance(task, AvroModel)
    assert task.priority is Priority.MEDIUM
    assert task.budget.max_tokens is None
    assert task.constraints == [] and task.trace == {}
    assert task.to_avro()["priority"] == "MEDIUM"
    assert type(task.to_avro()["priority"]) is str
    other = TaskRequest.model_validate(_task())
    assert other.constraints is not task.constraints  # default_factory, not a shared list
    with pytest.raises(ValidationError, match="extra"):
        TaskRequest.model_validate(_task(unknown=1))
    with pytest.raises(ValidationError):
        TaskRequest.model_validate(_task(task_id="not-a-uuid"))
    with pytest.raises(ValidationError):
        TaskRequest.model_validate(_task(priority="URGENT"))


def test_timestamps_are_aware_utc_milliseconds() -> None:
    plus2 = timezone(timedelta(hours=2))
    task = TaskRequest.model_validate(
        _task(created_at=datetime(2026, 1, 2, 5, 4, 5, 678901, tzinfo=plus2))
    )
    assert task.created_at == datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    assert task.created_at.tzinfo is UTC
    with pytest.raises(ValidationError, match="timezone"):
        TaskRequest.model_validate(_task(created_at=datetime(2026, 1, 2, 3, 4, 5)))


def test_int_fields_are_range_checked() -> None:
    from octollm.contracts.models import ArmRequest

    base = sample(DEFS["octollm.v1.ArmRequest"], [0])
    ArmRequest.from_avro({**base, "attempt": 2**31 - 1})
    with pytest.raises(ValidationError):
        ArmRequest.from_avro({**base, "attempt": 2**31})
