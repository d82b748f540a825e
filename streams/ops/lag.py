"""`octollm_consumer_lag{group,topic}` on a worker's /metrics: how far its group is behind.

Prometheus cannot ask Kafka itself, so each Python worker reports its own group's lag (the
reflex layer and the audit sink export theirs). It is computed on scrape from the broker's view
(high watermark - committed offset, summed over partitions), cached for a few seconds so several
scrapers cost one question; a broker that does not answer yields no sample, never a failed scrape.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

from confluent_kafka import ConsumerGroupTopicPartitions, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._listoffsets import OffsetSpec
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from octollm.kafka.admin import admin_client
from octollm.settings import Settings

log = logging.getLogger("octollm.ops.lag")


def group_lag(admin: AdminClient, group: str, timeout: float) -> dict[str, int]:
    """Per topic: sum over the group's committed partitions of high watermark - committed."""
    request = [ConsumerGroupTopicPartitions(group)]
    committed = admin.list_consumer_group_offsets(request, request_timeout=timeout)[group]
    tps = [tp for tp in committed.result(timeout).topic_partitions or [] if tp.offset >= 0]
    if not tps:
        return {}
    latest = OffsetSpec.latest()  # type: ignore[no-untyped-call]
    futures = admin.list_offsets(
        {TopicPartition(tp.topic, tp.partition): latest for tp in tps}, request_timeout=timeout
    )
    highs = {(tp.topic, tp.partition): f.result(timeout).offset for tp, f in futures.items()}
    lag: dict[str, int] = {}
    for tp in tps:
        high = highs.get((tp.topic, tp.partition), tp.offset)
        lag[tp.topic] = lag.get(tp.topic, 0) + max(high - tp.offset, 0)
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
            self._cached = group_lag(self._admin, self.group, timeout=2.0)
        except (KafkaException, TimeoutError) as exc:
            log.debug("consumer lag of %s unknown: %s", self.group, exc)
            self._cached = {}
        self._at = time.monotonic()
        return self._cached

    @staticmethod
    def _family() -> GaugeMetricFamily:
        return GaugeMetricFamily(
            "octollm_consumer_lag",
            "Records the worker's consumer group has not committed yet, per topic",
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


def behind(admin: AdminClient, group: str, topics: list[str], timeout: float) -> int:
    """Records on `topics` that `group` has not committed yet, counting partitions it never
    committed from their start (0 means caught up). `octollm run --once` waits on this."""
    metadata = admin.list_topics(timeout=timeout)
    tps = [
        TopicPartition(t, p)
        for t in topics
        if t in metadata.topics
        for p in metadata.topics[t].partitions
    ]
    if not tps:
        return 0
    # All the group's committed partitions: naming partitions in this request crashed
    # librdkafka (confluent-kafka 2.16) for a group whose first member was still joining.
    request = [ConsumerGroupTopicPartitions(group)]
    committed = admin.list_consumer_group_offsets(request, request_timeout=timeout)[group]
    listed = committed.result(timeout).topic_partitions or []
    done = {(tp.topic, tp.partition): tp.offset for tp in listed}
    latest, earliest = OffsetSpec.latest(), OffsetSpec.earliest()  # type: ignore[no-untyped-call]
    highs = _offsets(admin, tps, latest, timeout)
    lows = _offsets(admin, tps, earliest, timeout)
    total = 0
    for key, high in highs.items():
        start = done.get(key, -1)
        total += max(high - (start if start >= 0 else lows[key]), 0)
    return total


def _offsets(
    admin: AdminClient, tps: list[TopicPartition], spec: OffsetSpec, timeout: float
) -> dict[tuple[str, int], int]:
    futures = admin.list_offsets({tp: spec for tp in tps}, request_timeout=timeout)
    return {(tp.topic, tp.partition): f.result(timeout).offset for tp, f in futures.items()}
