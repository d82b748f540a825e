"""Schema evolution: every record reads every version kept in schemas/history/, and the checker
really catches breaking changes."""

from __future__ import annotations

import copy
import io
import json
from typing import Any

import avro.schema
import fastavro
import pytest

from octollm.contracts import compat
from octollm.contracts.compat import check_backward, check_history
from octollm.contracts.schemas import RECORD_NAMES, get_schema, history, schemas_dir

pytestmark = pytest.mark.unit

HISTORY = [(name, old.version) for name in RECORD_NAMES for old in history(name)]


def test_every_record_has_history() -> None:
    for name in RECORD_NAMES:
        assert history(name), f"schemas/history/ has no version of {name}"
        assert history(name)[0].version == "v1"


def test_history_files_are_self_contained() -> None:
    folder = schemas_dir() / "history"
    files = [p for p in folder.iterdir() if p.name.endswith(".avsc")]
    assert len(files) == sum(len(history(n)) for n in RECORD_NAMES)
    for path in files:
        doc = json.loads(path.read_text(encoding="utf-8"))
        fastavro.parse_schema(doc, named_schemas={})  # no other file needed
        avro.schema.parse(json.dumps(doc))
        assert path.name.startswith(f"{doc['namespace']}.{doc['name']}.v")


@pytest.mark.parametrize(("name", "version"), HISTORY)
def test_current_schema_reads_every_historical_version(name: str, version: str) -> None:
    assert check_history(name)[version] == []


@pytest.mark.parametrize(("name", "version"), HISTORY)
def test_data_written_with_history_decodes_with_the_current_schema(name: str, version: str) -> None:
    """Not just the checker's word: resolve real data, written with the old schema."""
    old = next(o for o in history(name) if o.version == version)
    current = get_schema(name)
    record = _minimal(old.raw, {})
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, old.parsed, record)
    buf.seek(0)
    back = fastavro.schemaless_reader(buf, old.parsed, current.parsed)
    assert isinstance(back, dict) and set(back) == {f["name"] for f in current.raw["fields"]}


def test_a_task_result_written_before_verification_reads_as_nothing_checked_it() -> None:
    """TaskResult v1 (reflex layers and orchestrators not yet upgraded) has no `verification`:
    the reader fills NONE with no checks, never a claim that something was checked."""
    old = next(o for o in history("TaskResult") if o.version == "v1")
    assert "verification" not in {f["name"] for f in old.raw["fields"]}
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, old.parsed, _minimal(old.raw, {}))
    buf.seek(0)
    back = fastavro.schemaless_reader(buf, old.parsed, get_schema("TaskResult").parsed)
    assert back["verification"] == {"method": "NONE", "checks": []}


def _minimal(schema: Any, named: dict[str, Any]) -> Any:
    """A smallest valid value of `schema` (nulls, empty strings, first symbols, zeros)."""
    if isinstance(schema, list):
        return None if "null" in schema else _minimal(schema[0], named)
    if isinstance(schema, str):
        if schema in named:
            return _minimal(named[schema], named)
        return {"string": "", "bytes": b"", "int": 0, "long": 0, "float": 0.0, "double": 0.0,
                "boolean": False, "null": None}.get(schema, "")  # fmt: skip
    kind = schema["type"]
    if schema.get("logicalType") == "uuid":
        return "00000000-0000-0000-0000-000000000000"
    if kind == "record":
        named[schema["name"]] = schema
        if "namespace" in schema:
            named[f"{schema['namespace']}.{schema['name']}"] = schema
        return {f["name"]: _minimal(f["type"], named) for f in schema["fields"]}
    if kind == "enum":
        named[schema["name"]] = schema
        if "namespace" in schema:
            named[f"{schema['namespace']}.{schema['name']}"] = schema
        return schema["symbols"][0]
    if kind == "array":
        return []
    if kind == "map":
        return {}
    return _minimal(kind, named)


# --- the checker catches breaking changes -----------------------------------------------


def _task() -> dict[str, Any]:
    return copy.deepcopy(get_schema("TaskRequest").raw)


def _field(schema: dict[str, Any], name: str) -> dict[str, Any]:
    return next(f for f in schema["fields"] if f["name"] == name)


def test_identical_schemas_are_compatible() -> None:
    assert check_backward(_task(), _task()) == []


def test_adding_a_field_with_a_default_is_compatible() -> None:
    new = _task()
    new["fields"].append(
        {"name": "labels", "type": {"type": "map", "values": "string"}, "default": {}}
    )
    assert check_backward(new, _task()) == []


def test_adding_a_field_without_a_default_breaks() -> None:
    new = _task()
    new["fields"].append({"name": "owner", "type": "string"})
    problems = check_backward(new, _task())
    assert problems and "owner" in problems[0]
    assert "reader_field_missing_default_value" in problems[0]


def test_changing_a_type_breaks() -> None:
    new = _task()
    _field(new, "tenant_id")["type"] = "int"
    problems = check_backward(new, _task())
    assert problems and "type_mismatch" in problems[0]


def test_promotable_type_change_is_compatible() -> None:
    old = {"type": "record", "name": "R", "fields": [{"name": "n", "type": "int"}]}
    new = {"type": "record", "name": "R", "fields": [{"name": "n", "type": "long"}]}
    assert check_backward(new, old) == []
    assert check_backward(old, new) != []  # long -> int is not a promotion


def test_removing_an_enum_symbol_breaks() -> None:
    new = _task()
    priority = _field(new, "priority")["type"]
    priority["symbols"] = [s for s in priority["symbols"] if s != "CRITICAL"]
    priority.pop("default")  # without an enum default, an unknown symbol cannot be read
    problems = check_backward(new, _task())
    assert problems and "CRITICAL" in problems[0]


def test_removing_a_default_breaks_against_a_version_without_the_field() -> None:
    """v2 added `labels` with a default; v3 dropping that default can no longer read v1 data
    (v1 never wrote the field). This is why history keeps every version, not just the last."""
    v1 = _task()
    v2 = _task()
    v2["fields"].append(
        {"name": "labels", "type": {"type": "array", "items": "string"}, "default": []}
    )
    v3 = copy.deepcopy(v2)
    del _field(v3, "labels")["default"]
    assert check_backward(v2, v1) == []
    assert check_backward(v3, v2) == []  # v2 data always has labels
    problems = check_backward(v3, v1)
    assert problems and "labels" in problems[0]


def test_renaming_the_record_breaks() -> None:
    new = _task()
    new["name"] = "Task"
    assert check_backward(new, _task()) != []


def test_invalid_schema_is_reported() -> None:
    with pytest.raises(compat.SchemaLoadError):
        check_backward(
            {"type": "record", "name": "R", "fields": [{"name": "x", "type": "nope"}]}, _task()
        )


# --- the command ---------------------------------------------------------------------------


def test_main_reports_all_compatible(capsys: pytest.CaptureFixture[str]) -> None:
    assert compat.main([]) == 0
    out = capsys.readouterr().out
    for name in RECORD_NAMES:
        assert f"{name}" in out
    assert "INCOMPATIBLE" not in out


def test_main_exits_non_zero_on_a_break(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken(name: str) -> dict[str, list[str]]:
        if name == "TaskRequest":
            new = _task()
            new["fields"].append({"name": "owner", "type": "string"})
            return {"v1": check_backward(new, _task())}
        return {}

    monkeypatch.setattr(compat, "check_history", broken)
    assert compat.main([]) == 1
    out = capsys.readouterr().out
    assert "TaskRequest  reads v1: INCOMPATIBLE" in out and "owner" in out


def test_snapshot_is_a_no_op_while_history_is_current() -> None:
    for name in RECORD_NAMES:
        assert compat.snapshot(name) is None
