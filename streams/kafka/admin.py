"""Cluster checks and idempotent topic creation."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

from confluent_kafka import KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._listoffsets import OffsetSpec
from confluent_kafka.admin._metadata import ClusterMetadata
from confluent_kafka.cimpl import NewTopic

from octollm.kafka.exceptions import KafkaUnavailable, TopicCreationFailed, TopicNotFound
from octollm.settings import Settings
from octollm.topics import TopicSpec, full_name


def admin_client(settings: Settings) -> AdminClient:
    return AdminClient(settings.kafka_client_config())


def cluster_metadata(
    settings: Settings, *, client: AdminClient | None = None, topic: str | None = None
) -> ClusterMetadata:
    """Metadata of the cluster, or `KafkaUnavailable` once the connect timeout has passed."""
    client = client or admin_client(settings)
    try:
        if topic is None:
            return client.list_topics(timeout=settings.connect_timeout_s)
        return client.list_topics(topic=topic, timeout=settings.connect_timeout_s)
    except KafkaException as exc:
        raise KafkaUnavailable(
            settings.bootstrap_servers, settings.connect_timeout_s, str(exc.args[0])
        ) from exc


def partitions_of(
    settings: Settings, topic: str, *, client: AdminClient | None = None
) -> list[int]:
    """The partition ids of `topic` (its full name), or `TopicNotFound`."""
    metadata = cluster_metadata(settings, client=client, topic=topic)
    info = metadata.topics.get(topic)
    if info is None or info.error is not None or not info.partitions:
        raise TopicNotFound(topic)
    return sorted(info.partitions)


@dataclass(frozen=True)
class TopicOutcome:
    name: str
    action: Literal["created", "exists"]
    partitions: int
    replication_factor: int


def ensure_topics(settings: Settings, specs: list[TopicSpec]) -> list[TopicOutcome]:
    """Create the missing topics and report the ones found; safe to run any number of times."""
    client = admin_client(settings)
    existing = cluster_metadata(settings, client=client).topics
    outcomes: list[TopicOutcome] = []
    wanted: dict[str, NewTopic] = {}
    for spec in specs:
        name = full_name(settings, spec.name)
        if name in existing:
            info = existing[name]
            replicas = len(next(iter(info.partitions.values())).replicas) if info.partitions else 0
            outcomes.append(TopicOutcome(name, "exists", len(info.partitions), replicas))
            continue
        config = {"min.insync.replicas": str(settings.min_insync_replicas), **spec.config}
        wanted[name] = NewTopic(
            name,
            num_partitions=settings.partitions,
            replication_factor=settings.replication_factor,
            config=config,
        )
    if wanted:
        futures = client.create_topics(
            list(wanted.values()),
            operation_timeout=30,
            request_timeout=settings.connect_timeout_s * 3,
        )
        for name, future in futures.items():
            try:
                future.result()
                action: Literal["created", "exists"] = "created"
            except KafkaException as exc:
                # Another process created it between our metadata read and the request.
                if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise TopicCreationFailed(
                        f"could not create {name}: {exc.args[0].str()}"
                    ) from exc
                action = "exists"
            outcomes.append(
                TopicOutcome(name, action, settings.partitions, settings.replication_factor)
            )
    if wanted:
        _wait_for_leaders(settings, client, list(wanted))
    order = {full_name(settings, s.name): i for i, s in enumerate(specs)}
    return sorted(outcomes, key=lambda o: order[o.name])


def _wait_for_leaders(
    settings: Settings, client: AdminClient, names: list[str], timeout: float = 30.0
) -> None:
    """Return once every partition of `names` answers an offsets request at its leader.

    Creation is acknowledged, and metadata names leaders, before each leader has loaded its
    partitions; a client reading offsets in that window gets NOT_LEADER_FOR_PARTITION.
    """
    deadline = time.monotonic() + timeout
    while True:
        topics = cluster_metadata(settings, client=client).topics
        partitions = [
            TopicPartition(name, p)
            for name in names
            if name in topics
            for p in topics[name].partitions
        ]
        ready = len({tp.topic for tp in partitions}) == len(names)
        if ready:
            latest = OffsetSpec.latest()  # type: ignore[no-untyped-call]
            futures = client.list_offsets({tp: latest for tp in partitions}, request_timeout=5)
            try:
                for future in futures.values():
                    future.result()
                return
            except KafkaException:
                pass
        if time.monotonic() > deadline:
            raise TopicCreationFailed(f"topics not ready within {timeout:g}s: {', '.join(names)}")
        time.sleep(0.1)


def delete_topics(settings: Settings, names: list[str]) -> None:
    """Delete topics by full name (used by `make reset` and tests)."""
    if not names:
        return
    client = admin_client(settings)
    for future in client.delete_topics(names, operation_timeout=30).values():
        try:
            future.result()
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
                raise
