"""Reprocessing: move a consumer group's committed offsets, like `kafka-consumer-groups
--reset-offsets`, so the group reads a stretch of its topic again.

`plan_reset` computes the new offset of each partition (clamped to what the partition holds,
a time through offsets-for-times: the first record at or after it); `apply_reset` writes them.
Both refuse while the group has members: a live member would overwrite the reset with its next
commit, and the broker rejects an admin commit for a group in use anyway.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from confluent_kafka import (
    Consumer,
    ConsumerGroupTopicPartitions,
    KafkaError,
    KafkaException,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient

from octollm.kafka.admin import admin_client
from octollm.kafka.consumer import consumer_config
from octollm.kafka.exceptions import KafkaClientError
from octollm.replay.ranges import ALL_PARTITIONS, ReplayInputError, offsets_at, watermarks
from octollm.settings import Settings


class GroupActive(KafkaClientError):
    """The group has members; its offsets can only be reset while it is empty."""


class ResetFailed(KafkaClientError):
    pass


@dataclass(frozen=True)
class ResetTarget:
    kind: Literal["earliest", "latest", "time", "offset"]
    offsets: dict[int, int] | None = None  # for "offset"; key ALL_PARTITIONS = every partition
    time: datetime | None = None


@dataclass(frozen=True)
class ResetRow:
    partition: int
    current: int | None  # the committed offset, None when the group has none here
    new: int
    high: int  # the partition's high watermark when planned

    @property
    def lag_before(self) -> int | None:
        return None if self.current is None else self.high - self.current

    @property
    def lag_after(self) -> int:
        return self.high - self.new


def active_members(admin: AdminClient, group: str, timeout: float) -> list[str]:
    """`client_id@host` of each member of `group` (none for an unknown or empty group)."""
    future = admin.describe_consumer_groups([group], request_timeout=timeout)[group]
    try:
        description = future.result()
    except KafkaException as exc:
        if exc.args[0].code() == KafkaError.GROUP_ID_NOT_FOUND:
            return []
        raise ResetFailed(f"describing group {group!r}: {exc.args[0].str()}") from None
    return [f"{m.client_id}@{m.host}" for m in description.members]


def ensure_inactive(admin: AdminClient, group: str, timeout: float) -> None:
    members = active_members(admin, group, timeout)
    if members:
        raise GroupActive(
            f"group {group!r} has {len(members)} active member(s) ({', '.join(members[:3])}); "
            "stop its consumers first, then reset"
        )


def committed(
    admin: AdminClient, group: str, topic: str, partitions: list[int], timeout: float
) -> dict[int, int | None]:
    request = ConsumerGroupTopicPartitions(group, [TopicPartition(topic, p) for p in partitions])
    future = admin.list_consumer_group_offsets([request], request_timeout=timeout)[group]
    try:
        result = future.result()
    except KafkaException as exc:
        raise ResetFailed(f"reading {group!r}'s offsets: {exc.args[0].str()}") from None
    return {tp.partition: tp.offset if tp.offset >= 0 else None for tp in result.topic_partitions}


def plan_reset(
    settings: Settings, group: str, topic: str, partitions: list[int], target: ResetTarget
) -> list[ResetRow]:
    """The new committed offset of each partition `target` selects (`topic` is a full name)."""
    timeout = settings.connect_timeout_s
    selected = partitions
    if target.kind == "offset":
        assert target.offsets is not None
        named = sorted(p for p in target.offsets if p != ALL_PARTITIONS)
        missing = [p for p in named if p not in partitions]
        if missing:
            raise ReplayInputError(
                f"--to-offset: {topic} has no partition {', '.join(map(str, missing))}"
            )
        selected = named or partitions
    admin = admin_client(settings)
    ensure_inactive(admin, group, timeout)
    current = committed(admin, group, topic, selected, timeout)
    consumer = Consumer(consumer_config(settings, client_id="octollm-reprocess"))
    try:
        marks = watermarks(consumer, topic, selected, timeout)
        highs = {p: high for p, (_low, high) in marks.items()}
        if target.kind == "time":
            assert target.time is not None
            wanted = offsets_at(consumer, topic, selected, target.time, highs, timeout)
        elif target.kind == "offset":
            assert target.offsets is not None
            offsets = target.offsets
            wanted = {p: offsets.get(p, offsets.get(ALL_PARTITIONS, 0)) for p in selected}
        elif target.kind == "earliest":
            wanted = {p: low for p, (low, _high) in marks.items()}
        else:
            wanted = highs
    finally:
        consumer.close()
    return [
        ResetRow(p, current.get(p), min(max(wanted[p], marks[p][0]), marks[p][1]), marks[p][1])
        for p in selected
    ]


def apply_reset(settings: Settings, group: str, topic: str, rows: list[ResetRow]) -> None:
    """Commit each row's new offset for `group` (checking again that the group is empty)."""
    timeout = settings.connect_timeout_s
    admin = admin_client(settings)
    ensure_inactive(admin, group, timeout)
    request = ConsumerGroupTopicPartitions(
        group, [TopicPartition(topic, r.partition, r.new) for r in rows]
    )
    future = admin.alter_consumer_group_offsets([request], request_timeout=timeout)[group]
    try:
        result = future.result()
    except KafkaException as exc:
        raise ResetFailed(f"resetting {group!r}: {exc.args[0].str()}") from None
    failed = [tp for tp in result.topic_partitions if tp.error is not None]
    if failed:
        raise ResetFailed(
            f"resetting {group!r}: partition {failed[0].partition}: {failed[0].error.str()}"
        )
