"""Consumer lag: how many records a group still has to read, as `octollm status`, each worker's
`/metrics` (`octollm_consumer_lag{group,topic}`) and `octollm run --once` count it.

Lag is *records still to be consumed*: the data records a read_committed reader would get from
the group's committed offset on. The high watermark minus the committed offset overcounts it:
every transaction leaves a commit marker at an offset of its own in each partition it wrote,
and aborted records keep theirs, so a group that has read everything a transactional producer
(the reflex layer, the orchestrator, the arms) wrote sits one marker behind per partition, and
an idle pipeline showed lag forever. Where a gap is small we read it and count; a larger gap is
reported as the offset difference (clearly behind anyway, and reading it would cost as much as
consuming it).

Prometheus cannot ask Kafka itself, so each Python worker reports its own group's lag (the
reflex layer and the audit sink export theirs), cached for a few seconds so several scrapers
cost one question; a broker that does not answer yields no sample, never a failed scrape.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer as RawConsumer
from confluent_kafka import ConsumerGroupTopicPartitions, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._listoffsets import OffsetSpec
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from octollm.kafka.admin import admin_client
from octollm.kafka.consumer import consumer_config
from octollm.settings import Settings

log = logging.getLogger("octollm.ops.lag")

TP = tuple[str, int]

#: Gaps up to this many offsets are read to tell records from markers; larger ones are counted
#: as offsets. A transactional producer leaves one marker per transaction, so an idle group is
#: a few offsets behind at most.
READ_CAP = 1000

#: How long one count may read before it reports the rest of a gap as offsets.
READ_BUDGET_S = 3.0


@dataclass(frozen=True)
class _Span:
    """What a read_committed reader found in [start, end) of one partition."""

    start: int
    data: tuple[int, ...]  # offsets of data records, ascending
    resolved: int  # offsets below this were read; from here to end is unknown (counted)


def unread_records(
    settings: Settings, groups: dict[str, dict[TP, int]], ends: dict[TP, int]
) -> dict[str, dict[TP, int]]:
    """Per group and partition: records at or after the committed offset still to be consumed.

    `groups` maps a group to its committed offsets, `ends` each partition to its high
    watermark. Partitions several groups read are read once, from the lowest small gap.
    """
    starts: dict[TP, int] = {}
    for committed in groups.values():
        for tp, offset in committed.items():
            end = ends.get(tp)
            if end is not None and 0 < end - offset <= READ_CAP:
                starts[tp] = min(offset, starts.get(tp, offset))
    spans = _read_spans(settings, starts, ends) if starts else {}
    out: dict[str, dict[TP, int]] = {}
    for group, committed in groups.items():
        lags = out.setdefault(group, {})
        for tp, offset in committed.items():
            end = ends.get(tp)
            if end is None:
                continue
            span = spans.get(tp)
            if span is None or offset < span.start:
                lags[tp] = max(end - offset, 0)
            else:
                past = sum(1 for o in span.data if o >= offset)
                lags[tp] = past + max(end - max(span.resolved, offset), 0)
    return out


def _read_spans(settings: Settings, starts: dict[TP, int], ends: dict[TP, int]) -> dict[TP, _Span]:
    """Read [start, end) of each partition with a read_committed reader that commits nothing."""
    eof: dict[str, Any] = {"enable.partition.eof": True}
    consumer = RawConsumer(consumer_config(settings, client_id="octollm-lag", **eof))
    data: dict[TP, list[int]] = {tp: [] for tp in starts}
    resolved = dict(starts)
    open_tps = set(starts)
    try:
        consumer.assign([TopicPartition(t, p, o) for (t, p), o in starts.items()])
        deadline = time.monotonic() + READ_BUDGET_S
        while open_tps and time.monotonic() < deadline:
            for msg in consumer.consume(num_messages=500, timeout=0.2):
                tp = (str(msg.topic()), int(msg.partition() or 0))
                if tp not in open_tps:
                    continue
                offset = int(msg.offset() or 0)
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        # EOF comes at the last stable offset; an open transaction's records
                        # beyond it stay unknown and are counted until it ends.
                        resolved[tp] = max(resolved[tp], min(offset, ends[tp]))
                        open_tps.discard(tp)
                    continue
                if offset < ends[tp]:
                    data[tp].append(offset)
                resolved[tp] = max(resolved[tp], min(offset + 1, ends[tp]))
                if resolved[tp] >= ends[tp]:
                    open_tps.discard(tp)
    finally:
        consumer.close()
    return {tp: _Span(starts[tp], tuple(data[tp]), resolved[tp]) for tp in starts}


def committed_offsets(admin: AdminClient, group: str, timeout: float) -> dict[TP, int]:
    """The group's committed offsets (partitions it never committed are left out)."""
    # All the group's committed partitions: naming partitions in this request crashed
    # librdkafka (confluent-kafka 2.16) for a group whose first member was still joining.
    request = [ConsumerGroupTopicPartitions(group)]
    listed = admin.list_consumer_group_offsets(request, request_timeout=timeout)[group]
    tps = listed.result(timeout).topic_partitions or []
    return {(tp.topic, tp.partition): tp.offset for tp in tps if tp.offset >= 0}


def list_offsets(
    admin: AdminClient, tps: list[TP], timeout: float, *, earliest: bool = False
) -> dict[TP, int]:
    """High watermarks (or low ones) of `tps`."""
    if not tps:
        return {}
    spec = OffsetSpec.earliest() if earliest else OffsetSpec.latest()  # type: ignore[no-untyped-call]
    futures = admin.list_offsets(
        {TopicPartition(t, p): spec for t, p in tps}, request_timeout=timeout
    )
    return {(tp.topic, tp.partition): f.result(timeout).offset for tp, f in futures.items()}


def group_lag(settings: Settings, admin: AdminClient, group: str, timeout: float) -> dict[str, int]:
    """Per topic: records the group still has to consume, over its committed partitions."""
    committed = committed_offsets(admin, group, timeout)
    ends = list_offsets(admin, sorted(committed), timeout)
    lag: dict[str, int] = {}
    for (topic, _), n in unread_records(settings, {group: committed}, ends)[group].items():
        lag[topic] = lag.get(topic, 0) + n
    return lag


class GroupLagCollector(Collector):
    def __init__(self, settings: Settings, group: str, cache_s: float = 5.0) -> None:
        self.settings = settings
        self.group = group
        self.cache_s = cache_s
        self._admin: AdminClient | None = None
        self._cached: dict[str, int] = {}
        self._at = float("-inf")

    def _lag(self) -> dict[str, int]:
        if time.monotonic() - self._at < self.cache_s:
            return self._cached
        self._admin = self._admin or admin_client(self.settings)
        try:
            self._cached = group_lag(self.settings, self._admin, self.group, timeout=2.0)
        except (KafkaException, TimeoutError) as exc:
            log.debug("consumer lag of %s unknown: %s", self.group, exc)
            self._cached = {}
        self._at = time.monotonic()
        return self._cached

    @staticmethod
    def _family() -> GaugeMetricFamily:
        return GaugeMetricFamily(
            "octollm_consumer_lag",
            "Records the worker's consumer group has still to consume, per topic",
            labels=["group", "topic"],
        )

    def describe(self) -> Iterator[GaugeMetricFamily]:
        # Registering asks for the names; without this it would call collect() (and Kafka).
        yield self._family()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = self._family()
        for topic, value in sorted(self._lag().items()):
            family.add_metric([self.group, topic], value)
        yield family


def behind(
    settings: Settings, admin: AdminClient, group: str, topics: list[str], timeout: float
) -> int:
    """Records on `topics` that `group` has still to consume, counting partitions it never
    committed from their start (0 means caught up). `octollm run --once` waits on this."""
    metadata = admin.list_topics(timeout=timeout)
    tps = [(t, p) for t in topics if t in metadata.topics for p in metadata.topics[t].partitions]
    if not tps:
        return 0
    done = committed_offsets(admin, group, timeout)
    lows = list_offsets(admin, tps, timeout, earliest=True)
    starts = {tp: done.get(tp, lows[tp]) for tp in tps}
    ends = list_offsets(admin, tps, timeout)
    return sum(unread_records(settings, {group: starts}, ends)[group].values())
