"""What to replay: the CLI's offset, time, filter and rate arguments, and the ranges they select.

Parsing is pure (unit-tested without a broker); `resolve_ranges` turns the parsed arguments into
one half-open offset range `[start, end)` per partition, times through Kafka's offsets-for-times
(so a record stamped exactly at `--from-time` is in, one stamped exactly at `--to-time` is out).
Every bad argument is a `ReplayInputError` with a message fit for one line.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition

from octollm.moments import parse_moment

#: The keys `--filter` understands, and where each lives in our records (a RoutedTask nests the
#: TaskRequest under `task`, so its tenant and task id are looked up there too).
FILTER_KEYS = {"tenant": "tenant_id", "status": "status", "task": "task_id"}

#: `--from-offset 42` / `--to-offset 42`: the same offset in every partition.
ALL_PARTITIONS = -1


class ReplayInputError(ValueError):
    """A bad replay or reprocess argument (the CLI exits 2 with this message)."""


# --- offsets ---------------------------------------------------------------------------------
def parse_offsets(text: str, *, option: str) -> dict[int, int]:
    """`P:O[,P:O…]` → {P: O}; a bare `O` → {ALL_PARTITIONS: O}. Offsets and partitions ≥ 0."""
    out: dict[int, int] = {}
    parts = [p.strip() for p in text.split(",")]
    if not text.strip() or any(not p for p in parts):
        raise ReplayInputError(f"{option}: expected OFFSET or PARTITION:OFFSET[,…], got {text!r}")
    for part in parts:
        partition_text, sep, offset_text = part.rpartition(":")
        if not sep:
            partition_text, offset_text = str(ALL_PARTITIONS), part
            if len(parts) > 1:
                raise ReplayInputError(
                    f"{option}: a bare offset applies to every partition; "
                    f"use PARTITION:OFFSET to list several, got {text!r}"
                )
        partition = _whole(partition_text, option, "partition", text)
        offset = _whole(offset_text, option, "offset", text)
        if partition in out:
            raise ReplayInputError(f"{option}: partition {partition} given twice in {text!r}")
        out[partition] = offset
    return out


def _whole(value: str, option: str, what: str, text: str) -> int:
    value = value.strip()
    if value == str(ALL_PARTITIONS) and what == "partition":
        return ALL_PARTITIONS
    if not value.isdigit():
        raise ReplayInputError(f"{option}: {what} {value!r} is not a whole number ≥ 0 in {text!r}")
    return int(value)


# --- times -----------------------------------------------------------------------------------
def parse_time(text: str, *, option: str) -> datetime:
    """ISO-8601 with an offset or `Z` (a time without one is taken as UTC), `now`, or a
    duration back from now (15m, 2h, 7d)."""
    try:
        return parse_moment(text)
    except ValueError as exc:
        raise ReplayInputError(f"{option}: {exc}") from None


def to_millis(moment: datetime) -> int:
    """Kafka timestamps are whole milliseconds since the epoch."""
    return int(moment.timestamp() * 1000)


# --- filter ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class RecordFilter:
    """`tenant=a,status=FAILED`: every key must match; a key given twice matches either value."""

    wanted: Mapping[str, frozenset[str]]

    def matches(self, record: Mapping[str, Any]) -> bool:
        return all(
            _field(record, FILTER_KEYS[key]) in values for key, values in self.wanted.items()
        )

    def __str__(self) -> str:
        return ",".join(f"{k}={v}" for k, values in self.wanted.items() for v in sorted(values))


def _field(record: Mapping[str, Any], name: str) -> str | None:
    value = record.get(name)
    if value is None and isinstance(record.get("task"), Mapping):
        value = record["task"].get(name)
    return None if value is None else str(value)


def parse_filter(text: str) -> RecordFilter:
    wanted: dict[str, set[str]] = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key or not value:
            raise ReplayInputError(f"--filter: expected KEY=VALUE[,KEY=VALUE…], got {text!r}")
        if key not in FILTER_KEYS:
            raise ReplayInputError(
                f"--filter: unknown key {key!r}; known: {', '.join(FILTER_KEYS)}"
            )
        wanted.setdefault(key, set()).add(value)
    return RecordFilter({k: frozenset(v) for k, v in wanted.items()})


# --- rate ------------------------------------------------------------------------------------
def parse_rate(text: str) -> float:
    """`500/s` or `500` events per second, > 0."""
    value = text.strip().removesuffix("/s").strip()
    try:
        rate = float(value)
    except ValueError:
        rate = 0.0
    if not rate > 0 or rate == float("inf"):
        raise ReplayInputError(f"--rate: expected events per second such as 500/s, got {text!r}")
    return rate


# --- resolving against the broker -----------------------------------------------------------
@dataclass(frozen=True)
class PartitionRange:
    """Offsets `[start, end)` of one partition; `end` never beyond the high watermark seen when
    the replay started, so a replay into its own topic does not chase its output."""

    partition: int
    start: int
    end: int

    @property
    def size(self) -> int:
        """An upper bound of the records in range (transaction markers take offsets too)."""
        return max(self.end - self.start, 0)


@dataclass(frozen=True)
class RangeArgs:
    from_offset: dict[int, int] | None = None
    from_time: datetime | None = None
    to_offset: dict[int, int] | None = None
    to_time: datetime | None = None

    def check(self) -> None:
        if (self.from_offset is None) == (self.from_time is None):
            raise ReplayInputError("give exactly one of --from-offset and --from-time")
        if self.to_offset is not None and self.to_time is not None:
            raise ReplayInputError("give at most one of --to-offset and --to-time")
        if self.from_time and self.to_time and self.to_time < self.from_time:
            raise ReplayInputError(
                f"--to-time {self.to_time.isoformat()} is before "
                f"--from-time {self.from_time.isoformat()}"
            )

    @property
    def partitions_named(self) -> set[int]:
        """Partitions picked by `P:O` in `--from-offset`; empty = every partition."""
        return {p for p in (self.from_offset or {}) if p != ALL_PARTITIONS}


def watermarks(
    consumer: Consumer, topic: str, partitions: list[int], timeout: float
) -> dict[int, tuple[int, int]]:
    return {
        p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout)
        for p in partitions
    }


def offsets_at(
    consumer: Consumer,
    topic: str,
    partitions: list[int],
    moment: datetime,
    highs: Mapping[int, int],
    timeout: float,
) -> dict[int, int]:
    """The first offset whose timestamp is ≥ `moment` in each partition (the high watermark
    where no record is that late)."""
    millis = to_millis(moment)
    try:
        found = consumer.offsets_for_times(
            [TopicPartition(topic, p, millis) for p in partitions], timeout=timeout
        )
    except KafkaException as exc:
        raise ReplayInputError(f"offsets for {moment.isoformat()}: {exc.args[0]}") from None
    return {tp.partition: tp.offset if tp.offset >= 0 else highs[tp.partition] for tp in found}


def _pick(spec: dict[int, int], partition: int) -> int | None:
    return spec.get(partition, spec.get(ALL_PARTITIONS))


def resolve_ranges(
    consumer: Consumer, topic: str, partitions: list[int], args: RangeArgs, timeout: float
) -> list[PartitionRange]:
    """One `[start, end)` per selected partition, clamped to what the partition holds now."""
    args.check()
    named = args.partitions_named | {p for p in (args.to_offset or {}) if p != ALL_PARTITIONS}
    missing = sorted(named - set(partitions))
    if missing:
        raise ReplayInputError(
            f"{topic} has partitions {partitions[0]}..{partitions[-1]}; "
            f"no partition {', '.join(map(str, missing))}"
        )
    selected = sorted(args.partitions_named) or partitions
    stray = sorted(named - set(selected))
    if stray:
        raise ReplayInputError(
            f"--to-offset names partition {', '.join(map(str, stray))}, "
            "which --from-offset does not select"
        )
    marks = watermarks(consumer, topic, selected, timeout)
    highs = {p: high for p, (_low, high) in marks.items()}
    if args.from_time is not None:
        starts = offsets_at(consumer, topic, selected, args.from_time, highs, timeout)
    else:
        assert args.from_offset is not None
        starts = {p: _pick(args.from_offset, p) or 0 for p in selected}
    ends = dict(highs)
    if args.to_time is not None:
        ends = offsets_at(consumer, topic, selected, args.to_time, highs, timeout)
    elif args.to_offset is not None:
        for p in selected:
            picked = _pick(args.to_offset, p)
            if picked is not None:
                ends[p] = picked
    out = []
    for p in selected:
        low, high = marks[p]
        start = min(max(starts[p], low), high)
        out.append(PartitionRange(p, start, max(start, min(ends[p], high))))
    return out
