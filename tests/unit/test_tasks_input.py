from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from octollm.contracts.models import Priority, TaskRequest
from octollm.kafka.consumer import RangeTracker, StartPosition
from octollm.tasks import TaskInputError, parse_jsonl, task_from_dict

pytestmark = pytest.mark.unit


def test_missing_id_and_time_are_filled() -> None:
    task = task_from_dict({"tenant_id": "t", "goal": "g"})
    assert isinstance(task, TaskRequest)
    assert isinstance(task.task_id, uuid.UUID)
    assert task.created_at.tzinfo is not None
    assert abs((datetime.now(UTC) - task.created_at).total_seconds()) < 60
    assert task.priority is Priority.MEDIUM


def test_given_id_is_kept() -> None:
    tid = "1b4e28ba-2fa1-11d2-883f-0016d3cca427"
    assert str(task_from_dict({"task_id": tid, "tenant_id": "t", "goal": "g"}).task_id) == tid


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('{"tenant_id": "t"}', "line 2: field 'goal'"),
        ('{"tenant_id": "t", "goal": "g", "priority": "URGENT"}', "line 2: field 'priority'"),
        (
            '{"tenant_id": "t", "goal": "g", "budget": {"max_tokens": "many"}}',
            "line 2: field 'budget.max_tokens'",
        ),
        ('{"tenant_id": "t", "goal": "g", "task_id": "not-a-uuid"}', "line 2: field 'task_id'"),
        ('{"tenant_id": "t", "goal": "g", "surprise": 1}', "line 2: field 'surprise'"),
        ('{"tenant_id": "t", "goal": ', "line 2: invalid JSON"),
        ("[1, 2]", "line 2: expected a JSON object"),
    ],
)
def test_bad_line_names_line_and_field(line: str, expected: str) -> None:
    lines = ['{"tenant_id": "t", "goal": "fine"}', line, '{"tenant_id": "t", "goal": "after"}']
    with pytest.raises(TaskInputError, match=expected):
        list(parse_jsonl(lines))


def test_blank_lines_are_skipped_and_numbering_kept() -> None:
    parsed = list(parse_jsonl(["", '{"tenant_id": "t", "goal": "g"}', "  "]))
    assert [p.line_no for p in parsed] == [2]


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("beginning", "beginning"),
        ("end", "end"),
        ("42", "offset"),
        ("-10", "offset"),
        ("2026-11-25T10:00:00Z", "time"),
        ("2026-11-25T10:00:00+01:00", "time"),
    ],
)
def test_start_positions(text: str, kind: str) -> None:
    assert StartPosition.parse(text).kind == kind


@pytest.mark.parametrize("text", ["yesterday", "2026-11-25T10:00:00", "1.5", ""])
def test_bad_start_positions(text: str) -> None:
    with pytest.raises(ValueError):
        StartPosition.parse(text)


def test_range_tracker_uses_positions_past_transaction_markers() -> None:
    from confluent_kafka import TopicPartition

    tracker = RangeTracker({0: 0, 1: 5}, {0: 3, 1: 5})
    assert tracker.pending == {0}  # partition 1 starts at its end: nothing to read
    assert tracker.admit(0, 1)  # offset 2 is a commit marker a read_committed reader never sees
    assert not tracker.done
    assert tracker.passed([TopicPartition("t", 0, -1001)]) == []  # position unknown
    assert not tracker.done
    assert tracker.passed([TopicPartition("t", 0, 3)]) == [0]
    assert tracker.done


def test_range_tracker_ends_a_partition_with_its_last_record_and_drops_later_ones() -> None:
    tracker = RangeTracker({0: 0}, {0: 2})
    assert tracker.admit(0, 0) and tracker.admit(0, 1)
    assert tracker.done
    assert not tracker.admit(0, 2)  # arrived after the read began
    follow = RangeTracker({0: 0}, None)
    assert follow.admit(0, 10**9) and not follow.done
