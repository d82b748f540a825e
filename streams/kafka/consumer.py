"""Consumers, start positions (`beginning`, `end`, an offset, or a point in time) and the one
bounded reader of a topic (`read_range`)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from confluent_kafka import Consumer, Message, TopicPartition

from octollm.kafka.admin import partitions_of
from octollm.kafka.exceptions import KafkaClientError
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


class RangeTracker:
    """Which partitions of a read from `starts` to `ends` (excluded) still have records to give.

    Transaction markers take offsets that a read_committed consumer never receives, so a
    partition is done when its last record arrives or when its position, not just the last
    offset seen, reaches its end. With no `ends` (follow) no partition is ever done.
    """

    def __init__(self, starts: Mapping[int, int], ends: Mapping[int, int] | None) -> None:
        self.ends = ends
        self.pending = {p for p, o in starts.items() if ends is None or o < ends[p]}

    def admit(self, partition: int, offset: int) -> bool:
        """Whether the record at `offset` belongs to the read (one fetched past the end, or
        after its partition was done, does not)."""
        if partition not in self.pending:
            return False
        if self.ends is None:
            return True
        end = self.ends[partition]
        if offset + 1 >= end:
            self.pending.discard(partition)
        return offset < end

    def passed(self, positions: list[TopicPartition]) -> list[int]:
        """Finish the partitions whose position reached their end; returns them."""
        if self.ends is None:
            return []
        finished = [
            tp.partition
            for tp in positions
            if tp.partition in self.pending and 0 <= self.ends[tp.partition] <= tp.offset
        ]
        self.pending.difference_update(finished)
        return finished

    @property
    def done(self) -> bool:
        return self.ends is not None and not self.pending


Bound = StartPosition | Mapping[int, int]


def read_range(
    settings: Settings,
    topic: str,
    start: Bound,
    stop: Bound | None = None,
    *,
    follow: bool = False,
    client_id: str = "octollm-reader",
    stopped: Callable[[], bool] | None = None,
    batch: int = 500,
) -> Generator[Message, None, None]:
    """Every committed record of `topic` from `start` up to `stop` (excluded), in order per
    partition: the one loop behind `tail`, `dlq`, `replay` and the SDK's bounded reads.

    `start` and `stop` are positions (resolved per partition) or offsets per partition; the
    partitions read are those of `start`. `stop=None` is the end of each partition when the
    read starts, so records that arrive later are not part of it; `follow=True` has no end.
    `stopped` is asked between batches (a signal handler's flag). The reader commits nothing.
    A broker error other than a transient one raises `KafkaClientError`.
    """
    consumer = Consumer(consumer_config(settings, client_id=client_id))
    try:
        timeout = settings.connect_timeout_s
        partitions = sorted(start) if isinstance(start, Mapping) else partitions_of(settings, topic)

        def resolve(bound: Bound) -> dict[int, int]:
            if isinstance(bound, Mapping):
                return dict(bound)
            found = start_offsets(consumer, topic, partitions, bound, timeout)
            return {tp.partition: tp.offset for tp in found}

        starts = resolve(start)
        if follow:
            ends = None
        elif stop is None:
            ends = end_offsets(consumer, topic, partitions, timeout)
        else:
            ends = resolve(stop)
        tracker = RangeTracker(starts, ends)
        if not tracker.pending:
            return
        consumer.assign([TopicPartition(topic, p, starts[p]) for p in sorted(tracker.pending)])
        while not tracker.done and not (stopped is not None and stopped()):
            msgs = consumer.consume(num_messages=batch, timeout=0.2)
            for msg in msgs:
                err = msg.error()
                if err is not None:
                    raise KafkaClientError(f"reading {topic}: {err.str()}")
                partition: int = msg.partition()  # type: ignore[assignment]
                if tracker.admit(partition, msg.offset()):  # type: ignore[arg-type]
                    yield msg
                if partition not in tracker.pending:
                    consumer.pause([TopicPartition(topic, partition)])
            if not msgs and tracker.pending:
                positions = consumer.position([TopicPartition(topic, p) for p in tracker.pending])
                finished = tracker.passed(positions)
                if finished:
                    consumer.pause([TopicPartition(topic, p) for p in finished])
    finally:
        consumer.close()
