"""The audit sink: audit events, terminal results and dead letters from Kafka into the store.

One loop, one thread: consume (read_committed, group `<prefix>octo-audit`, no auto-commit) into a
batch of up to `audit_batch_rows` rows or `audit_batch_s` seconds, then insert each table's rows,
send the batch's dead letters, and only then commit the batch's offsets. A crash anywhere before
the commit means the batch is read again; the tables are ReplacingMergeTrees keyed by each row's
deterministic identity, so the second copy collapses into the first (read with FINAL).

When the store fails the sink pauses its partitions (staying in the group), backs off
exponentially and retries the same batch until it goes in; one log line when the outage starts,
one when it ends. Records it cannot decode go to the DLQ topic and the sink moves on.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from confluent_kafka import (
    OFFSET_INVALID,
    Consumer,
    IsolationLevel,
    KafkaError,
    Message,
    TopicPartition,
)
from confluent_kafka.admin._listoffsets import OffsetSpec
from prometheus_client import Counter, Gauge, Histogram

from octollm.audit.rows import COLUMNS, Row, Source, dead_letter_for, to_row
from octollm.codec import Codec
from octollm.codec.errors import CodecError
from octollm.contracts.models import DeadLetter
from octollm.kafka.admin import admin_client
from octollm.kafka.consumer import consumer_config
from octollm.kafka.producer import Producer
from octollm.settings import Settings
from octollm.topics import AUDIT, DLQ, RESULTS, full_name

log = logging.getLogger("octollm.audit.sink")

GROUP = "octo-audit"
#: What the sink consumes (without the topic prefix).
SOURCE_TOPICS = (AUDIT, RESULTS, DLQ)

# --- metrics (prometheus-client's default registry, served on the sink's /metrics) ---------------
ROWS_INSERTED = Counter(
    "octo_audit_rows_inserted", "Rows the audit sink inserted, per table.", ["table"]
)
INSERT_SECONDS = Histogram(
    "octo_audit_insert_seconds",
    "Time of one table insert into the audit store.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
BATCH_ROWS = Histogram(
    "octo_audit_batch_rows",
    "Rows per committed batch.",
    buckets=(1, 10, 100, 500, 1000, 2500, 5000, 10000, 50000),
)
LAG = Gauge(
    "octo_audit_lag_records",
    "Records on the partition not yet stored and committed by the sink.",
    ["topic", "partition"],
)
STORE_ERRORS = Counter("octo_audit_store_errors", "Failed inserts into the audit store.")
DEAD_LETTERED = Counter(
    "octo_audit_dead_lettered", "Records the sink could not store and sent to the DLQ."
)
_last_insert = {"monotonic": time.monotonic()}
SINCE_INSERT = Gauge(
    "octo_audit_seconds_since_last_insert",
    "Seconds since the sink's last successful insert (or its start).",
)
SINCE_INSERT.set_function(lambda: time.monotonic() - _last_insert["monotonic"])


class Store(Protocol):
    """What the sink needs of `AuditStore` (tests wrap the real one to inject faults)."""

    where: str

    def insert(self, table: str, rows: Any, columns: Any) -> None: ...


@dataclass
class Backoff:
    """Exponential delays, capped: 0.2, 0.4, 0.8, … up to `max_s`."""

    initial_s: float = 0.2
    max_s: float = 10.0
    factor: float = 2.0

    def delays(self) -> Iterator[float]:
        delay = self.initial_s
        while True:
            yield delay
            delay = min(delay * self.factor, self.max_s)


@dataclass
class Batch:
    """Rows per table, dead letters to send, and the offset to commit per partition."""

    rows: dict[str, list[Row]] = field(default_factory=lambda: defaultdict(list))
    dead_letters: list[DeadLetter] = field(default_factory=list)
    offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    size: int = 0
    started: float | None = None  # monotonic time of its first record

    def add(self, msg: Message, table: str | None, row: Row | None) -> None:
        if table is not None and row is not None:
            self.rows[table].append(row)
        self.size += 1
        self.offsets[(msg.topic() or "", msg.partition() or 0)] = (msg.offset() or 0) + 1
        if self.started is None:
            self.started = time.monotonic()


class AuditSink:
    """Run with `AuditSink(settings, store).run(stop_event)`; returns once stopped and closed."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        *,
        backoff: Backoff | None = None,
        shutdown_grace_s: float = 10.0,
        lag_interval_s: float = 1.0,
    ) -> None:
        self.settings = settings
        self.store = store
        self.backoff = backoff or Backoff()
        self.shutdown_grace_s = shutdown_grace_s
        self.lag_interval_s = lag_interval_s
        self.topics = [full_name(settings, t) for t in SOURCE_TOPICS]
        self.dlq_topic = full_name(settings, DLQ)
        self.codec = Codec.from_settings(settings)
        self.consumer = Consumer(
            consumer_config(
                settings,
                group_id=f"{settings.topic_prefix}{GROUP}",
                client_id="octollm-audit",
                **{
                    "enable.auto.commit": False,
                    "enable.auto.offset.store": False,
                    # A crashed sink's partitions move to a new one after 10 s, not 45.
                    "session.timeout.ms": 10_000,
                },
            )
        )
        self.producer = Producer(settings, client_id="octollm-audit-dlq")
        self.admin = admin_client(settings)
        self.batch = Batch()
        self._committed: dict[tuple[str, int], int] = {}
        self._assigned: list[TopicPartition] = []
        self._flushing = False
        self._abandon = False
        self._lag_at = 0.0
        self._idle_checked_at = 0.0

    @property
    def assigned(self) -> bool:
        """True once the group has given this sink partitions."""
        return bool(self._assigned)

    # --- the loop ---------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        self.consumer.subscribe(self.topics, on_assign=self._on_assign, on_revoke=self._on_revoke)
        log.info("audit sink: %s -> %s", ", ".join(self.topics), self.store.where)
        try:
            while not stop.is_set():
                self._consume_some()
                if self._batch_due():
                    self._flush(stop)
                elif self.batch.started is None:
                    self._commit_idle_positions()
                self._maybe_update_lag()
            # Stopping: store what was read, with a bounded wait if the store is down (what is
            # not committed is read again next time, so giving up loses nothing).
            self._flush(stop, deadline=time.monotonic() + self.shutdown_grace_s)
        finally:
            self.consumer.close()  # leaves the group now, not after the session timeout
            self.producer.flush(10)
            log.info("audit sink stopped")

    def _consume_some(self) -> None:
        room = max(1, self.settings.audit_batch_rows - self.batch.size)
        timeout = 0.2
        if self.batch.started is not None:
            left = self.batch.started + self.settings.audit_batch_s - time.monotonic()
            timeout = max(0.0, min(timeout, left))
        for msg in self.consumer.consume(num_messages=min(room, 10_000), timeout=timeout):
            self._add(msg)

    def _add(self, msg: Message) -> None:
        err = msg.error()
        if err is not None:
            if err.code() != KafkaError._PARTITION_EOF:
                log.warning("audit sink: consumer error: %s", err.str())
            return
        src = Source(msg.topic() or "", msg.partition() or 0, msg.offset() or 0)
        value = msg.value()
        try:
            decoded = self.codec.decode(value, topic=src.topic)
            table, row = to_row(decoded, src, msg.headers())
        except CodecError as exc:
            log.warning(
                "audit sink: %s@%s/%s cannot be stored (%s: %s); dead-lettered",
                src.topic,
                src.partition,
                src.offset,
                exc.error_class,
                exc,
            )
            key = msg.key()
            self.batch.dead_letters.append(
                dead_letter_for(
                    src, key if isinstance(key, bytes) else None, value, msg.headers(), exc
                )
            )
            self.batch.add(msg, None, None)
            return
        self.batch.add(msg, table, row)

    def _batch_due(self) -> bool:
        b = self.batch
        if b.started is None:
            return False
        full = b.size >= self.settings.audit_batch_rows
        return full or time.monotonic() - b.started >= self.settings.audit_batch_s

    # --- storing and committing -------------------------------------------------------------

    def _flush(self, stop: threading.Event, deadline: float | None = None) -> None:
        """Insert, dead-letter, then commit the batch; retry with back-off until it succeeds,
        the partitions are revoked, or (stopping) the deadline passes."""
        batch = self.batch
        if batch.started is None:
            return
        self._flushing, self._abandon = True, False
        delays = self.backoff.delays()
        outage_since: float | None = None
        paused: list[TopicPartition] = []
        try:
            while True:
                try:
                    self._store(batch)
                    break
                except Exception as exc:  # any store, driver or DLQ-producer failure
                    STORE_ERRORS.inc()
                    if outage_since is None:
                        outage_since = time.monotonic()
                        log.warning(
                            "audit sink: cannot store the batch in %s (%s); retrying with "
                            "back-off, holding %d records, offsets not committed",
                            self.store.where,
                            _one_line(exc),
                            batch.size,
                        )
                        paused = list(self._assigned)
                        self.consumer.pause(paused)
                delay = next(delays)
                if deadline is None and stop.is_set():
                    deadline = time.monotonic() + self.shutdown_grace_s
                if deadline is not None and time.monotonic() + delay > deadline:
                    log.warning("audit sink: stopping with %d records unstored", batch.size)
                    return
                self._wait(delay, stop if deadline is None else None)
                if self._abandon:
                    log.info("audit sink: partitions revoked during the outage; batch dropped")
                    return
            if outage_since is not None:
                log.warning(
                    "audit sink: the audit store is back after %.1fs; catching up",
                    time.monotonic() - outage_since,
                )
            self._commit(batch)
        finally:
            if paused:
                try:
                    self.consumer.resume(paused)
                except Exception as exc:  # partitions revoked meanwhile: nothing to resume
                    log.debug("audit sink: resume: %s", exc)
            self._flushing = False
            self.batch = Batch()

    def _store(self, batch: Batch) -> None:
        # Each insert is idempotent (deterministic identities), so after a partial failure
        # the retry inserts every table again and the duplicates collapse.
        for table, table_rows in batch.rows.items():
            if not table_rows:
                continue
            start = time.perf_counter()
            self.store.insert(table, table_rows, COLUMNS[table])
            INSERT_SECONDS.observe(time.perf_counter() - start)
        if batch.dead_letters:
            for letter in batch.dead_letters:
                self.producer.produce(
                    self.dlq_topic,
                    self.codec.encode(letter, topic=self.dlq_topic),
                    key=str(letter.dead_letter_id),
                )
            self.producer.flush(30)
            batch_dead = len(batch.dead_letters)
            batch.dead_letters = []  # sent: a retry of the inserts must not send them again
            DEAD_LETTERED.inc(batch_dead)
        for table, table_rows in batch.rows.items():
            ROWS_INSERTED.labels(table).inc(len(table_rows))
        batch.rows.clear()
        _last_insert["monotonic"] = time.monotonic()

    def _commit(self, batch: Batch) -> None:
        offsets = [TopicPartition(t, p, o) for (t, p), o in batch.offsets.items()]
        try:
            self.consumer.commit(offsets=offsets, asynchronous=False)
        except Exception as exc:  # e.g. a rebalance in between: the rows are read again, once
            log.warning("audit sink: commit failed (%s); those records will be re-read", exc)
            return
        self._committed.update(batch.offsets)
        BATCH_ROWS.observe(batch.size)
        self._lag_at = 0.0  # refresh the lag gauge now

    def _commit_idle_positions(self) -> None:
        """With nothing pending, commit each partition's position when it is past the last
        commit: a transaction's commit marker ends most partitions, and a consumer never sees
        it as a record, so committing `last offset + 1` would leave the group one behind."""
        now = time.monotonic()
        if now - self._idle_checked_at < self.settings.audit_batch_s or not self._assigned:
            return
        self._idle_checked_at = now
        try:
            positions = self.consumer.position(list(self._assigned))
        except Exception as exc:  # not fatal: the next idle check tries again
            log.debug("audit sink: no positions (%s)", exc)
            return
        ahead = [
            tp
            for tp in positions
            if tp.offset >= 0 and tp.offset > self._committed.get((tp.topic, tp.partition), -1)
        ]
        if not ahead:
            return
        try:
            self.consumer.commit(offsets=ahead, asynchronous=False)
        except Exception as exc:
            log.debug("audit sink: idle commit failed (%s)", exc)
            return
        self._committed.update({(tp.topic, tp.partition): tp.offset for tp in ahead})

    def _wait(self, seconds: float, stop: threading.Event | None) -> None:
        """Sleep, but keep serving the consumer (group membership, rebalance callbacks)."""
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            if stop is not None and stop.is_set():
                return
            msg = self.consumer.poll(min(left, 0.2))  # partitions paused: normally nothing
            if msg is not None:
                self._add(msg)
            self._maybe_update_lag()

    # --- group membership and lag -----------------------------------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.info("audit sink: assigned %s", _names(partitions))
        self._assigned = list(partitions)
        try:
            committed = consumer.committed(partitions, timeout=self.settings.connect_timeout_s)
        except Exception as exc:
            log.warning("audit sink: cannot read committed offsets: %s", exc)
            committed = []
        for tp in committed:
            if tp.offset != OFFSET_INVALID and tp.offset >= 0:
                self._committed[(tp.topic, tp.partition)] = tp.offset
        self._lag_at = 0.0

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.info("audit sink: revoked %s", _names(partitions))
        if self._flushing:
            self._abandon = True  # the retry loop drops the batch; the new owner re-reads it
        elif self.batch.started is not None:
            try:  # one attempt, so the next owner does not re-read what we already have
                self._store(self.batch)
                self._commit(self.batch)
            except Exception as exc:
                log.warning("audit sink: flush on revoke failed (%s); batch dropped", exc)
            self.batch = Batch()
        gone = {(tp.topic, tp.partition) for tp in partitions}
        self._assigned = [tp for tp in self._assigned if (tp.topic, tp.partition) not in gone]
        for topic, partition in gone:
            self._committed.pop((topic, partition), None)
            with contextlib.suppress(KeyError):  # never measured
                LAG.remove(topic, str(partition))

    def _maybe_update_lag(self) -> None:
        now = time.monotonic()
        if now - self._lag_at < self.lag_interval_s or not self._assigned:
            return
        self._lag_at = now
        keys = [(tp.topic, tp.partition) for tp in self._assigned]
        # Through the admin client: the consumer's own watermark query waits behind its
        # long-polling fetch (up to fetch.wait.max.ms each), and a paused consumer fetches none.
        ends = self._offsets(keys, OffsetSpec.latest())  # type: ignore[no-untyped-call]
        never = [k for k in keys if k not in self._committed]
        starts = self._offsets(never, OffsetSpec.earliest()) if never else {}  # type: ignore[no-untyped-call]
        for key, high in ends.items():
            done = self._committed.get(key, starts.get(key, high))
            LAG.labels(key[0], str(key[1])).set(max(0, high - done))

    def _offsets(self, keys: list[tuple[str, int]], spec: OffsetSpec) -> dict[tuple[str, int], int]:
        """Each partition's end (read_committed: the last stable offset) or start offset."""
        found: dict[tuple[str, int], int] = {}
        try:
            futures = self.admin.list_offsets(
                {TopicPartition(t, p): spec for t, p in keys},
                isolation_level=IsolationLevel.READ_COMMITTED,
                request_timeout=self.settings.connect_timeout_s,
            )
            for tp, future in futures.items():
                found[(tp.topic, tp.partition)] = future.result().offset
        except Exception as exc:  # broker slow or gone: keep the gauges' last values
            log.debug("audit sink: cannot list offsets: %s", exc)
        return found


def _names(partitions: list[TopicPartition]) -> str:
    return ", ".join(f"{tp.topic}/{tp.partition}" for tp in partitions) or "nothing"


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def run_sink(settings: Settings, store: Store, stop: threading.Event) -> None:
    """Convenience for the worker command and tests."""
    AuditSink(settings, store).run(stop)
