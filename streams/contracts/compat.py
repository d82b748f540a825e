"""Schema evolution checks: can the current contracts read what older versions wrote?

    python -m octollm.contracts.compat                 # check every record against its history
    python -m octollm.contracts.compat snapshot NAME   # keep NAME's current schema as history

`check_backward(new, old)` asks Avro's own reader/writer compatibility checker (the `avro`
package, a port of the Java one that schema registries use) whether data written with `old` can
be read with `new`. `schemas/history/<fullname>.v<N>.avsc` holds the earlier versions, each
self-contained; a unit test and this command check every record against all of them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import avro.schema
from avro.compatibility import ReaderWriterCompatibilityChecker, SchemaCompatibilityType

from octollm.contracts.schemas import (
    RECORD_NAMES,
    ContractSchema,
    SchemaLoadError,
    get_schema,
    history,
    schemas_dir,
)


def _parse(schema: dict[str, Any], role: str) -> Any:
    try:
        return avro.schema.parse(json.dumps(schema))
    except Exception as exc:  # avro raises SchemaParseException and friends
        raise SchemaLoadError(f"{role} schema is not valid Avro: {exc}") from exc


def check_backward(new: dict[str, Any], old: dict[str, Any]) -> list[str]:
    """Why `new` (as reader) cannot read data written with `old`; empty when it can.

    Both are self-contained schema documents (JSON as dicts).
    """
    reader, writer = _parse(new, "new"), _parse(old, "old")
    checker = ReaderWriterCompatibilityChecker()  # type: ignore[no-untyped-call]
    result = checker.get_compatibility(reader, writer)
    if result.compatibility is SchemaCompatibilityType.compatible:
        return []
    kinds = sorted({i.value for i in result.incompatibilities})
    where = ", ".join(sorted(result.locations))
    problems = [f"{message} ({', '.join(kinds)} at {where})" for message in sorted(result.messages)]
    return problems or [f"incompatible ({', '.join(kinds)} at {where})"]


def check_history(name: str) -> dict[str, list[str]]:
    """`check_backward(current, old)` for every version of `name` kept in history."""
    current = get_schema(name)
    return {old.version: check_backward(current.raw, old.raw) for old in history(name)}


def _history_path(schema: ContractSchema, version: int) -> Path:
    folder = Path(str(schemas_dir())) / "history"
    return folder / f"{schema.full_name}.v{version}.avsc"


def snapshot(name: str) -> Path | None:
    """Write `name`'s current schema (expanded) as the next history version, unless the newest
    history version already equals it. Run it before editing the record's `.avsc`."""
    schema = get_schema(name)
    versions = history(name)
    if versions and versions[-1].canonical == schema.canonical and versions[-1].raw == schema.raw:
        return None
    number = int(versions[-1].version[1:]) + 1 if versions else 1
    path = _history_path(schema, number)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(schema.raw, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m octollm.contracts.compat",
        description="Check every record's backward compatibility with schemas/history/.",
    )
    sub = parser.add_subparsers(dest="command")
    snap = sub.add_parser("snapshot", help="keep a record's current schema as its next version")
    snap.add_argument("names", nargs="*", metavar="NAME", help="records (default: all)")
    args = parser.parse_args(argv)

    if args.command == "snapshot":
        for name in args.names or RECORD_NAMES:
            path = snapshot(name)
            print(f"{name}: wrote {path}" if path else f"{name}: history is up to date")
        return 0

    broken = 0
    for name in RECORD_NAMES:
        results = check_history(name)
        if not results:
            print(f"{name:12} no history (nothing to check)")
        for version, problems in results.items():
            if problems:
                broken += 1
                print(f"{name:12} reads {version}: INCOMPATIBLE")
                for problem in problems:
                    print(f"{'':14}- {problem}")
            else:
                print(f"{name:12} reads {version}: ok")
    if broken:
        print(f"{broken} incompatible pair(s): see docs/schemas.md, 'Evolution rules'")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
