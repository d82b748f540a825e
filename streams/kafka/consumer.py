"""Consumers and start positions (`beginning`, `end`, an offset, or a point in time)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from confluent_kafka import Consumer, TopicPartition

from octollm.settings import Settings


def consumer_config(
    settings: Settings, *, group_id: str | None = None, client_id: str = "octollm", **overrides: Any
) -> dict[str, Any]:
    return {
        **settings.kafka_client_config(),
        "client.id": client_id,
        # librdkafka wants a group even for manual assignment; a throwaway one commits nothing.
        "group.id": group_id or f"octollm-reader-{uuid.uuid4()}",
        "enable.auto.commit": group_id is not None,
        "auto.offset.reset": "earliest",
        # Never show records of aborted or open transactions (the reflex layer is transactional).
        "isolation.level": "read_committed",
        "enable.partition.eof": False,
        **overrides,
    }


@dataclass(frozen=True)
class StartPosition:
    """Where a reader starts in every partition, like kcat's `-o`."""

    kind: Literal["beginning", "end", "offset", "time"]
    offset: int = 0  # for "offset": >= 0 absolute; < 0 counts back from the end
    time: datetime | None = None

    @classmethod
    def parse(cls, text: str) -> StartPosition:
        value = text.strip()
        if value in ("beginning", "end"):
            return cls(kind=value)  # type: ignore[arg-type]
        try:
            return cls(kind="offset", offset=int(value))
        except ValueError:
            pass
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(
                f"expected beginning, end, an offset or an ISO-8601 time, got {text!r}"
            ) from None
        if moment.tzinfo is None:
            raise ValueError(f"time {text!r} needs a UTC offset, e.g. {value}Z or {value}+00:00")
        return cls(kind="time", time=moment)


def start_offsets(
    consumer: Consumer, topic: str, partitions: list[int], start: StartPosition, timeout: float
) -> list[TopicPartition]:
    """Resolve `start` to a concrete offset in each partition (never a symbolic one)."""
    marks = {
        p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout)
        for p in partitions
    }
    if start.kind == "time":
        assert start.time is not None
        millis = int(start.time.timestamp() * 1000)
        found = consumer.offsets_for_times(
            [TopicPartition(topic, p, millis) for p in partitions], timeout=timeout
        )
        # -1 means no record at or after that time: start at the end of that partition.
        return [
            TopicPartition(
                topic, tp.partition, tp.offset if tp.offset >= 0 else marks[tp.partition][1]
            )
            for tp in found
        ]
    resolved = []
    for p, (low, high) in marks.items():
        if start.kind == "beginning":
            wanted = low
        elif start.kind == "end":
            wanted = high
        else:
            wanted = start.offset if start.offset >= 0 else high + start.offset
        resolved.append(TopicPartition(topic, p, min(max(wanted, low), high)))
    return resolved


def end_offsets(
    consumer: Consumer, topic: str, partitions: list[int], timeout: float
) -> dict[int, int]:
    """The high watermark of each partition now: where a bounded read stops."""
    return {
        p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout)[1]
        for p in partitions
    }


class EndTracker:
    """Tells a bounded read when every partition has reached the end seen when it started.

    It trusts consumer positions, not just the last offset seen, because transaction markers
    occupy offsets that a read_committed consumer never receives.
    """

    def __init__(self, assignment: list[TopicPartition], ends: dict[int, int]) -> None:
        self._ends = ends
        self._positions = {tp.partition: tp.offset for tp in assignment}

    def seen(self, partition: int, offset: int) -> None:
        self._positions[partition] = max(self._positions.get(partition, 0), offset + 1)

    def update(self, positions: list[TopicPartition]) -> None:
        for tp in positions:
            if tp.offset >= 0:  # negative: not fetched yet, position unknown
                self._positions[tp.partition] = tp.offset

    @property
    def pending(self) -> list[int]:
        return [p for p, end in self._ends.items() if self._positions.get(p, 0) < end]

    @property
    def done(self) -> bool:
        return not self.pending
