"""Turning what users type (JSON objects) into valid `TaskRequest`s, with precise errors."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from octollm.contracts.models import TaskRequest


class TaskInputError(ValueError):
    """A user-supplied task is not valid; the message names the line and the field."""


def task_from_dict(obj: Any) -> TaskRequest:
    """Validate one task, filling `task_id` and `created_at` when they are missing."""
    if not isinstance(obj, dict):
        raise TaskInputError(f"expected a JSON object, got {type(obj).__name__}")
    data = dict(obj)
    data.setdefault("task_id", str(uuid.uuid4()))
    data.setdefault("created_at", datetime.now(UTC))
    try:
        return TaskRequest.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or "(record)"
        raise TaskInputError(f"field '{field}': {first['msg']}") from None


@dataclass(frozen=True)
class ParsedLine:
    line_no: int
    task: TaskRequest


def parse_jsonl(lines: Iterable[str]) -> Iterator[ParsedLine]:
    """Yield each non-blank line as a task; raise `TaskInputError` naming the first bad line."""
    for line_no, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise TaskInputError(
                f"line {line_no}: invalid JSON: {exc.msg} (column {exc.colno})"
            ) from None
        try:
            yield ParsedLine(line_no, task_from_dict(obj))
        except TaskInputError as exc:
            raise TaskInputError(f"line {line_no}: {exc}") from None
