"""One Faust app factory for every Python worker (orchestrator, arms, benchmarks).

Settings decide everything a worker shares: brokers, topic prefix, partitions, the processing
guarantee. Keys and values travel as raw bytes: we decode with our own `Codec`, so a malformed
record becomes a dead letter instead of an exception inside Faust that kills the agent.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import ssl
from collections import defaultdict
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import Any, ClassVar

import faust
from aiokafka.errors import ProducerFenced  # type: ignore[import-untyped]
from aiokafka.partitioner import murmur2  # type: ignore[import-untyped]
from faust.transport.consumer import TransactionManager
from faust.types import TopicT

from octollm.runtime import faust_internals
from octollm.settings import SaslMechanism, SecurityProtocol, Settings
from octollm.topics import full_name

log = logging.getLogger("octollm.runtime")

ORCHESTRATOR_GROUP = "octo-orchestrator"


def arm_group(arm: str) -> str:
    return f"octo-arm-{arm}"


def app_id(settings: Settings, group: str) -> str:
    """The Faust app id, which is also the consumer group id and the changelog topics' prefix.

    It carries the topic prefix so environments that share a cluster never share a group or a
    changelog.
    """
    return f"{settings.topic_prefix}{group}"


def _credentials(settings: Settings) -> Any:
    protocol = settings.security_protocol
    if protocol is SecurityProtocol.PLAINTEXT:
        return None
    context = None
    if protocol in (SecurityProtocol.SSL, SecurityProtocol.SASL_SSL):
        context = ssl.create_default_context(
            cafile=str(settings.ssl_ca_location) if settings.ssl_ca_location else None
        )
    if protocol is SecurityProtocol.SSL:
        return faust.SSLCredentials(context)
    assert settings.sasl_username is not None and settings.sasl_password is not None
    mechanism = settings.sasl_mechanism or SaslMechanism.PLAIN
    return faust.SASLCredentials(
        username=settings.sasl_username,
        password=settings.sasl_password.get_secret_value(),
        mechanism=mechanism.value,
        ssl_context=context,
    )


@functools.lru_cache(maxsize=1 << 16)
def key_partition(key: bytes, partitions: int) -> int:
    """The partition aiokafka's and librdkafka's murmur2 partitioners give `key`.

    Cached: murmur2 is pure Python (~15 µs) and a task's id keys about twenty records."""
    return int(murmur2(key) & 0x7FFFFFFF) % partitions


def murmur2_partitioner(
    key: bytes | None, all_partitions: Sequence[int], available: Sequence[int]
) -> int:
    """aiokafka's `DefaultPartitioner` (murmur2, random without a key), on the cached hash."""
    if key is None:
        return random.choice(available or all_partitions)
    return all_partitions[key_partition(key, len(all_partitions))]


class CommitGate:
    """Keeps a transaction commit from landing halfway through one event's records.

    An event's table update (its changelog record) and its outputs leave through Faust's
    producer buffer one after the other. A commit in between would put the new state in the
    committed transaction and the outputs in the next one; a crash then aborts the outputs while
    the state says they were sent, and the task waits for answers to requests nobody received.
    Many events may apply their records at once; a commit waits until none is halfway and every
    tracked record is acknowledged, and holds new events back until it is done. An event does
    not wait for its own records' acknowledgements (one round trip per event): the commit does,
    once for all of them.
    """

    def __init__(self) -> None:
        self._applying = 0
        self._committing = False
        self._changed = asyncio.Condition()
        self._sent: list[asyncio.Future[Any]] = []

    def track(self, sent: Iterable[asyncio.Future[Any]]) -> None:
        """Records queued inside `applying()`: the next commit waits until they are delivered."""
        self._sent.extend(sent)

    @asynccontextmanager
    async def applying(self) -> AsyncIterator[None]:
        """Around one event's table update and the queueing of its outputs."""
        async with self._changed:
            await self._changed.wait_for(lambda: not self._committing)
            self._applying += 1
        try:
            yield
        finally:
            async with self._changed:
                self._applying -= 1
                self._changed.notify_all()

    @asynccontextmanager
    async def committing(self) -> AsyncIterator[None]:
        """Around a transaction commit."""
        async with self._changed:
            await self._changed.wait_for(lambda: not self._committing)
            self._committing = True
            await self._changed.wait_for(lambda: self._applying == 0)
            sent, self._sent = self._sent, []
        try:
            if sent:  # a failed delivery fails the commit: Faust then crashes the worker
                await asyncio.gather(*sent)
            yield
        finally:
            async with self._changed:
                self._committing = False
                self._changed.notify_all()


class KeyedTransactionManager(TransactionManager):
    """Faust's transaction manager, with our outputs inside the transactions.

    Faust picks a record's transaction by its destination partition and topic group, which it
    knows only for topics the app consumes; every other record (our arm requests, results,
    audit events, a reply topic) would go out on a non-transactional producer, visible even
    if the input that caused it is then reprocessed. All our topics are keyed by task id and
    co-partitioned, so such a record joins the transaction of the input partition its key
    hashes to: the one that also carries the task's changelog update and its input offset.
    """

    #: The app's main input topic (full name) and its partition count; set by
    #: `use_keyed_transactions`.
    home_topic: str = ""
    home_partitions: int = 1
    #: Shared with the agents that write state and outputs together; see `CommitGate`.
    gate: ClassVar[CommitGate | None] = None

    async def commit(self, offsets: Any, start_new_transaction: bool = True) -> bool:
        if self.gate is None:
            return await self._commit_all(offsets, start_new_transaction)
        async with self.gate.committing():
            return await self._commit_all(offsets, start_new_transaction)

    async def _commit_all(self, offsets: Any, start_new_transaction: bool) -> bool:
        """Faust's `commit`, but the partitions' transactions commit concurrently, not one
        after the other: each has its own producer, and one commit is several round trips
        (offsets to the transaction, EndTxn, the next AddPartitionsToTxn)."""
        group_id = self.app.conf.id
        by_tid: dict[str, dict[Any, int]] = defaultdict(dict)
        for tp, offset in offsets.items():
            group = self.app.assignor.group_for_topic(tp.topic)
            by_tid[f"{group_id}-{group}-{tp.partition}"][tp] = offset
        try:
            await asyncio.gather(
                *(
                    self.producer.commit_transactions(
                        {tid: tps}, group_id, start_new_transaction=start_new_transaction
                    )
                    for tid, tps in by_tid.items()
                )
            )
        except ProducerFenced as exc:
            self.log.warning("producer fenced: %r", exc)
            await self.app.crash(exc)
            return True
        # Faust's livelock check would otherwise call every busy partition (the orchestrator's
        # ticks) "not committed at all since worker start (report as bug)"
        faust_internals.note_committed(self.app, offsets)
        return True

    async def on_rebalance(self, assigned: Any, revoked: Any, newly_assigned: Any) -> None:
        """Start a fresh transactional producer for every newly assigned partition.

        Faust reuses a producer it still holds for a transactional id, even one that another
        member has fenced since (seen here: a partition revoked, taken by a worker that was then
        killed, and assigned back). Every send and commit on it then fails and the partition
        stalls. A new producer with the same id fences the zombie and aborts its open
        transaction, which is what Kafka's protocol expects on every assignment.
        """
        held = set(faust_internals.transaction_producers(self))
        wanted = faust_internals.transactional_ids(self, assigned)
        fresh = faust_internals.transactional_ids(self, newly_assigned)
        stale = (held - wanted) | (held & fresh)
        if stale:
            await faust_internals.stop_transactions(self, sorted(stale))
        start = wanted - (held - stale)
        if start:
            self.log.info("starting %d transactional producer(s)", len(start))
            await faust_internals.start_transactions(self, sorted(start))

    async def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        partition: int | None,
        timestamp: float | None,
        headers: Any,
        *,
        transactional_id: str | None = None,
    ) -> Any:
        assignor = self.app.assignor
        try:
            assignor.group_for_topic(topic)
            consumed = True
        except KeyError:
            consumed = False
        try:
            home_group = assignor.group_for_topic(self.home_topic)
        except KeyError:  # not assigned yet: nothing of ours is being processed
            consumed = True
        if key is None or consumed:
            return await super().send(topic, key, value, partition, timestamp, headers)
        home = key_partition(key, self.home_partitions)
        tid = f"{self.app.conf.id}-{home_group}-{home}"
        fut: Any = await self.producer.send(
            topic, key, value, partition, timestamp, headers, transactional_id=tid
        )
        return fut


#: Settings for transactional apps (the orchestrator), measured with
#: `python -m bench orchestrator-machinery` (docs/orchestrator.md, "Performance").
EXACTLY_ONCE_TUNING: dict[str, Any] = {
    # Outputs are visible to read_committed consumers (a task's result) only once their
    # transaction commits: at 0.2 s this wait was most of a task's latency (p50 200 ms at
    # 10 tasks/s, of which 55 ms was processing); at 0.05 s it is 90 ms.
    "broker_commit_interval": 0.05,
    # One producer per input partition and ~23 records per task went out as one produce
    # request per record; a 2 ms linger batches them (40% fewer requests for the orchestrator
    # and the broker) at a cost of 2 ms per hop.
    "producer_linger": 0.002,
}


def create_app(
    settings: Settings,
    group: str,
    *,
    exactly_once: bool | None = None,
    **overrides: Any,
) -> faust.App:
    """A Faust app for one kind of worker; `group` is e.g. `octo-orchestrator`, `octo-arm-judge`.

    `exactly_once=None` follows `settings.processing_guarantee`. The web server is off unless
    `settings.worker_web_port` is set, and then listens on 127.0.0.1 only.
    """
    if exactly_once is None:
        exactly_once = settings.processing_guarantee == "exactly_once"
    web: dict[str, Any] = {"web_enabled": False}
    if settings.worker_web_port is not None:
        web = {
            "web_enabled": True,
            "web_bind": "127.0.0.1",
            "web_host": "127.0.0.1",
            "web_port": settings.worker_web_port,
        }
    datadir = settings.data_dir / "faust" / app_id(settings, group)
    # Faust makes only the last level of its datadir (tables live in memory; it keeps little).
    datadir.parent.mkdir(parents=True, exist_ok=True)
    config: dict[str, Any] = {
        "broker": [f"kafka://{s.strip()}" for s in settings.bootstrap_servers.split(",")],
        "broker_credentials": _credentials(settings),
        "store": "memory://",
        "key_serializer": "raw",
        "value_serializer": "raw",
        "topic_partitions": settings.partitions,
        "topic_replication_factor": settings.replication_factor,
        "processing_guarantee": "exactly_once" if exactly_once else "at_least_once",
        "consumer_auto_offset_reset": "earliest",
        # Our modules are imported explicitly; scanning for decorators is slow and surprising.
        "autodiscover": False,
        "datadir": str(datadir),
        # Commit often: a smaller window to redo after a crash, shorter transactions. (Exactly
        # once commits more often still; see EXACTLY_ONCE_TUNING.)
        "broker_commit_interval": 0.2,
        "broker_commit_every": 200,
        # murmur2 like aiokafka's default partitioner, on the cached hash (every record).
        "producer_partitioner": murmur2_partitioner,
        # A killed worker's partitions move to the others after this long without heartbeats
        # (Faust's default is 60 s); heartbeats come from a thread, so slow handlers are fine.
        "broker_session_timeout": 10.0,
        "broker_heartbeat_interval": 2.0,
        # Faust logs a warning per event slower than this; LLM arms are slow by nature.
        "stream_processing_timeout": 600.0,
        **web,
        **(EXACTLY_ONCE_TUNING if exactly_once else {}),
        **overrides,
    }
    app = faust.App(app_id(settings, group), **config)
    return app


def use_keyed_transactions(app: faust.App, settings: Settings, home_topic: str) -> CommitGate:
    """Put records for topics the app does not consume into the transaction of the input
    partition their key belongs to (see `KeyedTransactionManager`). Call before the app starts.

    Returns the app's `CommitGate`: hold `gate.applying()` around each event's table update and
    sends, so a commit never splits them.
    """
    faust_internals.check()  # a moved private name fails here, named, not at the first rebalance
    gate = CommitGate()
    manager = type(
        "OctoTransactionManager",
        (KeyedTransactionManager,),
        {
            "home_topic": full_name(settings, home_topic),
            "home_partitions": settings.partitions,
            "gate": gate,
        },
    )
    # The transport makes its transaction manager from this attribute when the consumer starts.
    app.transport.TransactionManager = manager  # type: ignore[misc]
    app.transport.Consumer = faust_internals.StableEndConsumer  # type: ignore[misc]
    return gate


def topic(app: faust.App, settings: Settings, name: str, **kwargs: Any) -> TopicT:
    """A Faust topic for one of ours (`name` without the prefix), raw bytes both ways."""
    return app.topic(
        full_name(settings, name),
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        partitions=settings.partitions,
        **kwargs,
    )


def raw_topic(app: faust.App, name: str, **kwargs: Any) -> TopicT:
    """A Faust topic by full name (e.g. a task's reply_topic), raw bytes both ways."""
    return app.topic(
        name,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        **kwargs,
    )


def run_worker(app: faust.App, log_level: str = "warning") -> None:
    """Run `app` in a Faust worker in this process until SIGTERM/SIGINT (then it commits what
    is done, leaves the group and exits the process)."""
    level = logging.getLevelName(log_level.upper())
    if isinstance(level, int) and level > logging.DEBUG:
        # Faust's worker leaves its libraries' loggers at DEBUG and filters in the handler, so
        # aiokafka and Faust build a log record for every message sent; measured: ~15% of a hop.
        logging.disable(logging.DEBUG)
    worker = faust.Worker(app, loglevel=log_level.upper(), redirect_stdouts=False)
    worker.execute_from_commandline()
