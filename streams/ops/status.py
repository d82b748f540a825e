"""What `octollm status` shows: consumer lag, topic rates, audit lag, DLQ count, worker health.

Everything comes from the broker (watermarks, committed offsets, group members) and from each
worker's `/healthz`; nothing here needs the workers' cooperation beyond that. Rates are deltas
between two samples `interval` seconds apart: in = high-watermark growth per topic, out =
committed-offset growth per group and topic.
"""

from __future__ import annotations

import time
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from typing import Any

import httpx
from confluent_kafka import Consumer as RawConsumer
from confluent_kafka import (
    ConsumerGroupTopicPartitions,
    KafkaError,
    KafkaException,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient

from octollm.kafka.admin import admin_client, cluster_metadata
from octollm.kafka.consumer import consumer_config
from octollm.ops.endpoint import Endpoint, known_endpoints
from octollm.ops.lag import list_offsets, unread_records
from octollm.settings import Settings
from octollm.topics import DLQ, full_name

#: The audit sink's consumer group, without the topic prefix (the sink's own module names it too).
AUDIT_GROUP = "octo-audit"

TP = tuple[str, int]


@dataclass(frozen=True)
class GroupState:
    group: str
    state: str
    members: int
    committed: dict[TP, int]
    #: records still to consume per partition (octollm.ops.lag): markers are not lag
    lag: dict[TP, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Sample:
    """One look at the cluster: high watermarks of our topics and every group's offsets."""

    at: float  # time.monotonic()
    high: dict[TP, int]
    groups: dict[str, GroupState]


@dataclass(frozen=True)
class Health:
    component: str
    url: str
    pid: int | None
    up: bool
    latency_ms: float | None
    detail: str


@dataclass
class Report:
    """One status document (`--json` prints `as_dict()`)."""

    groups: list[dict[str, Any]] = field(default_factory=list)
    topics: list[dict[str, Any]] = field(default_factory=list)
    audit_group: str = ""
    audit_lag: int | None = None
    dlq_count: int = 0
    components: list[Health] = field(default_factory=list)
    interval_s: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "groups": self.groups,
            "topics": self.topics,
            "audit": {"group": self.audit_group, "lag": self.audit_lag},
            "dlq": {"count": self.dlq_count},
            "components": [h.__dict__ for h in self.components],
            "interval_s": self.interval_s,
        }


def _result(future: Future[Any], timeout: float) -> Any:
    return future.result(timeout=timeout)


class StatusProbe:
    """Holds the clients `status` needs, so `--watch` does not reconnect on every refresh."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.prefix = settings.topic_prefix
        self.admin: AdminClient = admin_client(settings)
        cluster_metadata(settings, client=self.admin)  # one clear error now if no broker
        self.dlq = DlqCounter(settings)

    def close(self) -> None:
        self.dlq.close()

    # --- sampling ---------------------------------------------------------------------------
    def our_topics(self) -> dict[str, list[int]]:
        """Our topics (`<prefix>octo.*`) and their partitions."""
        meta = cluster_metadata(self.settings, client=self.admin)
        start = f"{self.prefix}octo."
        return {
            name: sorted(info.partitions)
            for name, info in meta.topics.items()
            if name.startswith(start) and info.error is None
        }

    def _groups(self, timeout: float) -> dict[str, GroupState]:
        listing = _result(self.admin.list_consumer_groups(request_timeout=timeout), timeout)
        names = sorted(g.group_id for g in listing.valid if g.group_id.startswith(self.prefix))
        if not names:
            return {}
        described = self.admin.describe_consumer_groups(names, request_timeout=timeout)
        offsets = {
            name: self.admin.list_consumer_group_offsets(
                [ConsumerGroupTopicPartitions(name)], request_timeout=timeout
            )[name]
            for name in names
        }
        groups = {}
        for name in names:
            try:
                desc = _result(described[name], timeout)
                committed_tps = _result(offsets[name], timeout).topic_partitions or []
            except KafkaException as exc:
                if exc.args[0].code() == KafkaError.GROUP_ID_NOT_FOUND:
                    continue  # deleted between the listing and the question
                raise
            committed = {
                (tp.topic, tp.partition): tp.offset for tp in committed_tps if tp.offset >= 0
            }
            groups[name] = GroupState(
                name, str(desc.state.name).lower(), len(desc.members), committed
            )
        return groups

    def sample(self) -> Sample:
        timeout = self.settings.connect_timeout_s
        try:
            groups = self._groups(timeout)
            ours = self.our_topics()
            tps = {(t, p) for t, parts in ours.items() for p in parts}
            for g in groups.values():
                tps |= set(g.committed)
            high = list_offsets(self.admin, sorted(tps), timeout)
            unread = unread_records(
                self.settings, {name: g.committed for name, g in groups.items()}, high
            )
        except KafkaException as exc:
            from octollm.kafka.exceptions import KafkaUnavailable

            raise KafkaUnavailable(
                self.settings.bootstrap_servers, timeout, exc.args[0].str()
            ) from None
        groups = {name: replace(g, lag=unread.get(name, {})) for name, g in groups.items()}
        return Sample(time.monotonic(), high, groups)

    # --- the report -------------------------------------------------------------------------
    def report(self, previous: Sample | None, current: Sample) -> Report:
        report = Report(
            groups=group_rows(current, previous, self.prefix),
            topics=topic_rows(current, previous, self.prefix),
            dlq_count=self.dlq.count(),
            components=check_all(known_endpoints(self.settings)),
            interval_s=round(current.at - previous.at, 3) if previous else None,
            audit_group=f"{self.prefix}{AUDIT_GROUP}",
        )
        audit = report.audit_group
        for row in report.groups:
            if row["group"] == audit:
                report.audit_lag = row["lag"]
        return report


def _is_ours(group: GroupState, prefix: str) -> bool:
    # With no prefix every group on the cluster matches; keep ours: named octo… or reading octo.*
    rest = group.group[len(prefix) :]
    return (
        bool(prefix)
        or rest.startswith("octo")
        or any(t.startswith("octo.") for t, _ in group.committed)
    )


def group_rows(current: Sample, previous: Sample | None, prefix: str) -> list[dict[str, Any]]:
    """Per group: state, members, lag per topic (records still to consume), out rates."""
    dt = current.at - previous.at if previous else 0.0
    rows = []
    for name, group in sorted(current.groups.items()):
        if not _is_ours(group, prefix):
            continue
        topics: dict[str, dict[str, Any]] = {}
        for tp in sorted(group.committed):
            entry = topics.setdefault(tp[0], {"topic": tp[0], "lag": 0, "out_per_s": None})
            entry["lag"] += group.lag.get(tp, 0)
        if previous is not None and dt > 0 and name in previous.groups:
            before = previous.groups[name].committed
            for topic, entry in topics.items():
                delta = sum(
                    offset - before.get(tp, offset)
                    for tp, offset in group.committed.items()
                    if tp[0] == topic
                )
                entry["out_per_s"] = round(max(delta, 0) / dt, 2)
        rows.append(
            {
                "group": name,
                "state": group.state,
                "members": group.members,
                "lag": sum(t["lag"] for t in topics.values()),
                "topics": list(topics.values()),
            }
        )
    return rows


def topic_rows(current: Sample, previous: Sample | None, prefix: str) -> list[dict[str, Any]]:
    """Per topic of ours: its end offset (Σ high watermarks) and in rate (events/s)."""
    dt = current.at - previous.at if previous else 0.0
    totals: dict[str, int] = {}
    before: dict[str, int] = {}
    for (topic, partition), high in current.high.items():
        if not topic.startswith(f"{prefix}octo."):
            continue
        totals[topic] = totals.get(topic, 0) + high
        if previous is not None:
            before[topic] = before.get(topic, 0) + previous.high.get((topic, partition), high)
    return [
        {
            "topic": topic,
            "end_offset": total,
            "in_per_s": round(max(total - before[topic], 0) / dt, 2)
            if previous is not None and dt > 0
            else None,
        }
        for topic, total in sorted(totals.items())
    ]


class DlqCounter:
    """Counts the records on the DLQ by reading them (watermark differences would count the
    reflex layer's transaction markers too); `--watch` reads only what is new each time."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.topic = full_name(settings, DLQ)
        self._consumer: RawConsumer | None = None
        self._positions: dict[int, int] = {}
        self._count = 0

    def count(self) -> int:
        timeout = self.settings.connect_timeout_s
        if self._consumer is None:
            meta = cluster_metadata(self.settings, topic=self.topic).topics.get(self.topic)
            if meta is None or meta.error is not None:
                return 0
            self._consumer = RawConsumer(consumer_config(self.settings, client_id="octollm-status"))
            starts = [
                TopicPartition(
                    self.topic,
                    p,
                    self._consumer.get_watermark_offsets(
                        TopicPartition(self.topic, p), timeout=timeout
                    )[0],
                )
                for p in meta.partitions
            ]
            self._positions = {tp.partition: tp.offset for tp in starts}
            self._consumer.assign(starts)
        consumer = self._consumer
        ends = {
            p: consumer.get_watermark_offsets(TopicPartition(self.topic, p), timeout=timeout)[1]
            for p in self._positions
        }
        # An open transaction holds a read_committed reader back; never wait long for it.
        deadline = time.monotonic() + 2.0
        while any(self._positions[p] < end for p, end in ends.items()):
            for msg in consumer.consume(num_messages=1000, timeout=0.2):
                if msg.error() is None:
                    self._count += 1
            for tp in consumer.position([TopicPartition(self.topic, p) for p in ends]):
                if tp.offset >= 0:
                    self._positions[tp.partition] = tp.offset
            if time.monotonic() > deadline:
                break  # show what was counted; the next refresh goes on from here
        return self._count

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None


def check_health(endpoint: Endpoint, client: httpx.Client) -> Health:
    """GET <url>/healthz: up on 200, down on anything else or no answer."""
    started = time.perf_counter()
    try:
        response = client.get(f"{endpoint.url}/healthz")
    except httpx.HTTPError as exc:
        reason = type(exc).__name__ if not str(exc) else str(exc)
        return Health(endpoint.component, endpoint.url, endpoint.pid, False, None, reason)
    latency = round((time.perf_counter() - started) * 1000, 1)
    detail = response.text.strip().splitlines()[0] if response.text.strip() else ""
    up = response.status_code == 200
    if not up:
        detail = f"HTTP {response.status_code}: {detail}"
    return Health(endpoint.component, endpoint.url, endpoint.pid, up, latency, detail[:200])


def check_all(endpoints: list[Endpoint], timeout_s: float = 1.0) -> list[Health]:
    with httpx.Client(timeout=timeout_s, trust_env=False) as client:
        return [check_health(e, client) for e in endpoints]
