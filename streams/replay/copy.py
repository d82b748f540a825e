"""The replay engine: copy selected offset ranges of a topic into a topic, marking each copy.

Each copy keeps its origin's key, value and headers, plus `octo-replay-of` (origin
`topic/partition/offset`) and `octo-replay-generation` (origin's generation + 1), both replacing
any earlier value, so a replay of a replay is one generation further on and names its immediate
origin. A copy goes to the origin's partition number when the target has it (our keys are
murmur2-partitioned, so that is where the key would land anyway), else where its key hashes.

Reading stops at the ends resolved before the first read: a same-topic replay never reads its
own output. `dry_run` reads exactly the same records and sends nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from octollm.codec import Codec
from octollm.codec.errors import CodecError
from octollm.kafka.consumer import read_range
from octollm.kafka.exceptions import KafkaClientError
from octollm.kafka.headers import REPLAY_GENERATION, REPLAY_OF, HeadersLike, generation_of
from octollm.kafka.producer import producer_config
from octollm.replay.ranges import PartitionRange, RecordFilter
from octollm.settings import Settings

#: Throughput settings of the replay producer (the benchmark's bare loop uses the same ones).
#: Only failed deliveries call back into Python: a callback per record would cost more than the
#: copy itself.
PRODUCER_OVERRIDES: dict[str, Any] = {
    "linger.ms": 5,
    "batch.size": 1_000_000,
    "delivery.report.only.error": True,
}
_BATCH = 10_000
#: Progress (and the producer's delivery callbacks) every this many records read.
_PROGRESS_EVERY = 5_000
Header = tuple[str, str | bytes | None]


class ReplayFailed(KafkaClientError):
    """Reading the origin failed; nothing after the failure was copied."""


@dataclass
class PartitionReport:
    """What one partition's range held: copied (or, in a dry run, would be) and filtered out."""

    partition: int
    start: int
    end: int
    events: int = 0
    skipped: int = 0
    first_ts: int | None = None  # ms since the epoch, of the first and last copied event
    last_ts: int | None = None


@dataclass
class ReplayReport:
    topic: str
    target: str
    dry_run: bool
    partitions: list[PartitionReport]
    elapsed_s: float = 0.0
    failed: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def events(self) -> int:
        return sum(p.events for p in self.partitions)

    @property
    def skipped(self) -> int:
        return sum(p.skipped for p in self.partitions)


class _Pacer:
    """Holds sends to `rate` per second on average since the first one."""

    def __init__(self, rate: float | None) -> None:
        self._interval = 1.0 / rate if rate else 0.0
        self._t0: float | None = None

    @property
    def active(self) -> bool:
        return self._interval > 0

    def wait(self, sent: int) -> None:
        if not self._interval:
            return
        now = time.monotonic()
        if self._t0 is None:
            self._t0 = now
        due = self._t0 + sent * self._interval
        if due > now:
            time.sleep(due - now)


def replay_headers(headers: HeadersLike, origin: str) -> list[Header]:
    """The origin's headers without replay marks, then the new marks (generation + 1)."""
    if not headers:
        return [(REPLAY_OF, origin), (REPLAY_GENERATION, "1")]
    pairs = list(headers.items() if isinstance(headers, Mapping) else headers)
    out: list[Header] = [(k, v) for k, v in pairs if k != REPLAY_OF and k != REPLAY_GENERATION]
    # Only a record that carries replay marks needs its generation parsed.
    generation = generation_of(pairs) + 1 if len(out) < len(pairs) else 1
    out.append((REPLAY_OF, origin))
    out.append((REPLAY_GENERATION, str(generation)))
    return out


class Replay:
    """One replay run: `run()` copies every selected range once and reports what it did."""

    def __init__(
        self,
        settings: Settings,
        *,
        topic: str,
        target: str,
        target_partitions: int,
        ranges: list[PartitionRange],
        record_filter: RecordFilter | None = None,
        rate: float | None = None,
        dry_run: bool = False,
        on_progress: Callable[[int], None] | None = None,
    ) -> None:
        self.settings = settings
        self.topic, self.target = topic, target
        self.target_partitions = target_partitions
        self.ranges = ranges
        self.record_filter = record_filter
        self.dry_run = dry_run
        self._pacer = _Pacer(rate)
        self._on_progress = on_progress or (lambda _n: None)
        self._codec = Codec.from_settings(settings) if record_filter else None
        self._errors: list[str] = []
        self._failed = 0

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:  # only failures are reported (delivery.report.only.error)
            self._failed += 1
            if len(self._errors) < 5:
                self._errors.append(f"{msg.topic()}: {err.str()}")

    def _on_error(self, err: KafkaError) -> None:
        if err.fatal():
            self._errors.append(f"producer: {err.str()}")

    def _wanted(self, msg: Message) -> bool:
        if self.record_filter is None:
            return True
        assert self._codec is not None
        try:
            record = self._codec.decode(msg.value(), topic=self.topic).record
        except CodecError:
            return False  # a filter asks about fields an undecodable record does not have
        return self.record_filter.matches(record)

    def run(self) -> ReplayReport:
        reports = {r.partition: PartitionReport(r.partition, r.start, r.end) for r in self.ranges}
        report = ReplayReport(self.topic, self.target, self.dry_run, list(reports.values()))
        pending = {r.partition: r for r in self.ranges if r.size > 0}
        if not pending:
            return report
        producer = (
            None
            if self.dry_run
            else Producer(
                producer_config(
                    self.settings,
                    client_id="octollm-replay",
                    on_delivery=self._on_delivery,
                    error_cb=self._on_error,
                    **PRODUCER_OVERRIDES,
                )
            )
        )
        started = time.monotonic()
        try:
            self._copy(producer, pending, reports)
        finally:
            if producer is not None:
                remaining = producer.flush(60)
                if remaining:
                    self._failed += remaining
                    self._errors.append(f"{remaining} event(s) not acknowledged within 60s")
            report.elapsed_s = time.monotonic() - started
            report.failed, report.errors = self._failed, self._errors
        return report

    def _copy(
        self,
        producer: Producer | None,
        pending: dict[int, PartitionRange],
        reports: dict[int, PartitionReport],
    ) -> None:
        topic, target = self.topic, self.target
        paced = self._pacer.active
        sent = read = 0
        records = read_range(
            self.settings,
            topic,
            {p: r.start for p, r in pending.items()},
            {p: r.end for p, r in pending.items()},
            client_id="octollm-replay",
            batch=_BATCH,
        )
        wanted = self._wanted if self.record_filter is not None else None
        try:
            # The loop below runs once per record: it avoids calls it does not need.
            for msg in records:
                p: int = msg.partition()  # type: ignore[assignment]
                rep = reports[p]
                read += 1
                if wanted is not None and not wanted(msg):
                    rep.skipped += 1
                else:
                    ts = msg.timestamp()[1]
                    if rep.first_ts is None:
                        rep.first_ts = ts
                    rep.last_ts = ts
                    rep.events += 1
                    if producer is not None:
                        if paced:
                            self._pacer.wait(sent)
                        self._send(producer, msg, target, p, msg.offset())  # type: ignore[arg-type]
                        sent += 1
                if paced or read >= _PROGRESS_EVERY:  # slow by request: show it as it happens
                    self._on_progress(read)
                    read = 0
                    if producer is not None:
                        producer.poll(0)
        except KafkaClientError as exc:
            raise ReplayFailed(str(exc)) from None
        finally:
            records.close()
        self._on_progress(read)

    def _send(self, producer: Producer, msg: Message, target: str, p: int, offset: int) -> None:
        headers = replay_headers(msg.headers(), f"{self.topic}/{p}/{offset}")
        partition = p if p < self.target_partitions else -1  # -1: the partitioner picks
        while True:
            try:
                producer.produce(
                    target, msg.value(), key=msg.key(), headers=headers, partition=partition
                )
                return
            except BufferError:
                producer.poll(0.05)  # local queue full: let deliveries make room
