"""The async Python SDK for upstream producers and downstream consumers.

```python
async with OctoClient() as octo:
    task_id = await octo.submit({"tenant_id": "acme", "goal": "write add(a, b)"})
    result = await octo.wait(task_id, timeout=60)
```

Producing is idempotent (librdkafka's idempotent producer: retries never duplicate or reorder a
task). A delivery thread blocks in librdkafka's poll, so an acknowledgement wakes the caller at
once; a `submit_many` batch resolves one future, not one per record. (confluent-kafka's own
`AIOProducer` cannot send headers, which replay and tracing need.) Consuming uses
confluent-kafka's `AIOConsumer`, which reads in batches.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Self

from confluent_kafka import KafkaError, Message, TopicPartition
from confluent_kafka import Producer as _RawProducer
from confluent_kafka.aio import AIOConsumer

from octollm.codec import Codec, Decoded
from octollm.codec.errors import CodecError
from octollm.contracts.models import TaskRequest, TaskResult
from octollm.kafka.admin import cluster_metadata, partitions_of
from octollm.kafka.consumer import (
    RangeTracker,
    StartPosition,
    consumer_config,
    end_offsets,
    start_offsets,
)
from octollm.kafka.exceptions import KafkaClientError, ProduceFailed
from octollm.kafka.producer import producer_config
from octollm.settings import Settings, WireFormat, get_settings
from octollm.tasks import task_from_dict
from octollm.topics import RESULTS, TASKS, full_name

TaskLike = TaskRequest | Mapping[str, Any]
log = logging.getLogger("octollm.client")


class _Batch:
    """Counts the outstanding deliveries of one `submit_many` call; one future for them all.

    librdkafka calls it from whichever thread is polling (the delivery thread, or a flush), so
    the count is locked; only the last delivery crosses to the loop.
    """

    __slots__ = ("error", "future", "lock", "loop", "pending")

    def __init__(self, loop: asyncio.AbstractEventLoop, pending: int) -> None:
        self.loop = loop
        self.future: asyncio.Future[None] = loop.create_future()
        self.pending = pending
        self.error: str | None = None
        self.lock = threading.Lock()

    def __call__(self, err: KafkaError | None, msg: Message) -> None:
        with self.lock:
            if err is not None and self.error is None:
                self.error = f"{msg.topic()}: {err.str()}"
            self.pending -= 1
            last = self.pending == 0
        if last:
            self.loop.call_soon_threadsafe(self._resolve)

    def _resolve(self) -> None:
        if self.future.done():
            return
        if self.error:
            self.future.set_exception(ProduceFailed(self.error))
        else:
            self.future.set_result(None)


class OctoClient:
    """Submit tasks, follow results, wait for one task's result."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        client_id: str = "octollm-sdk",
        wire_format: WireFormat | None = None,
    ) -> None:
        self.settings = settings or get_settings()
        self._client_id = client_id
        self._codec = Codec(
            wire_format=wire_format or self.settings.wire_format,
            registry_url=self.settings.schema_registry_url,
        )
        self._producer: _RawProducer | None = None
        self._delivery_thread: threading.Thread | None = None
        self._closing = threading.Event()
        self._started_at = datetime.now(UTC)
        self._waiters: dict[str, asyncio.Future[TaskResult]] = {}
        self._seen: dict[str, TaskResult] = {}
        self._watcher: asyncio.Task[None] | None = None
        self.tasks_topic = full_name(self.settings, TASKS)
        self.results_topic = full_name(self.settings, RESULTS)

    # --- lifecycle --------------------------------------------------------------------------
    async def start(self) -> Self:
        """Check the cluster answers (a clear `KafkaUnavailable` within the connect timeout)."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, cluster_metadata, self.settings)
        self._producer = _RawProducer(producer_config(self.settings, client_id=self._client_id))
        self._closing.clear()
        self._delivery_thread = threading.Thread(
            target=self._serve_deliveries,
            args=(self._producer,),
            name="octollm-deliveries",
            daemon=True,
        )
        self._delivery_thread.start()
        return self

    async def close(self) -> None:
        """Deliver what is queued, then stop."""
        if self._producer is not None:
            await self.flush()
        self._closing.set()
        if self._delivery_thread is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._delivery_thread.join)
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        for waiter in self._waiters.values():
            if not waiter.done():
                waiter.cancel()
        self._producer = None

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    # --- producing --------------------------------------------------------------------------
    async def submit(self, task: TaskLike) -> str:
        """Produce one task and wait until the broker has it; returns its task_id."""
        return (await self.submit_many([task]))[0]

    async def submit_many(self, tasks: Iterable[TaskLike]) -> list[str]:
        """Produce tasks in order, keyed by task_id; returns once all are acknowledged."""
        producer = self._require_producer()
        encoded = [self._encode_task(t) for t in tasks]
        if not encoded:
            return []
        batch = _Batch(asyncio.get_running_loop(), len(encoded))
        for task_id, value in encoded:
            while True:
                try:
                    producer.produce(self.tasks_topic, value, key=task_id, on_delivery=batch)
                    break
                except BufferError:
                    # librdkafka's queue is full: the delivery thread drains it meanwhile.
                    await asyncio.sleep(0.001)
        # Send now rather than after linger.ms: the caller is waiting for these.
        producer.flush(0)
        await batch.future
        return [task_id for task_id, _ in encoded]

    async def flush(self, timeout: float = 60.0) -> None:
        """Wait until everything produced so far is acknowledged."""
        producer = self._require_producer()
        loop = asyncio.get_running_loop()
        remaining = await loop.run_in_executor(None, producer.flush, timeout)
        if remaining:
            raise ProduceFailed(f"{remaining} record(s) not acknowledged within {timeout:g}s")

    def _encode_task(self, task: TaskLike) -> tuple[str, bytes]:
        model = task if isinstance(task, TaskRequest) else task_from_dict(task)
        return str(model.task_id), self._codec.encode(model, topic=self.tasks_topic)

    def _require_producer(self) -> _RawProducer:
        if self._producer is None:
            raise KafkaClientError("OctoClient is not started: use `async with OctoClient()`")
        return self._producer

    def _serve_deliveries(self, producer: _RawProducer) -> None:
        """Delivery thread: librdkafka runs the delivery callbacks inside poll()."""
        while not self._closing.is_set():
            producer.poll(0.05)

    # --- consuming --------------------------------------------------------------------------
    async def records(
        self,
        topic: str,
        *,
        start: StartPosition | str = "end",
        group_id: str | None = None,
        stop_at_end: bool = False,
    ) -> AsyncIterator[Decoded]:
        """Decoded records of one of our topics (name without prefix), in order per partition.

        With `group_id` the reader joins that consumer group and commits its progress;
        otherwise it reads every partition from `start`, and `stop_at_end` ends the iteration
        at the end of the topic as it was when reading began. Undecodable records are skipped
        with a warning: dead-lettering them is the pipeline's job, not a reader's.
        """
        if stop_at_end and group_id is not None:
            raise ValueError("stop_at_end needs a read without a consumer group")
        name = full_name(self.settings, topic)
        position = StartPosition.parse(start) if isinstance(start, str) else start
        loop = asyncio.get_running_loop()
        partitions = await loop.run_in_executor(None, partitions_of, self.settings, name)
        consumer = AIOConsumer(
            consumer_config(self.settings, group_id=group_id, client_id=self._client_id),
            max_workers=2,
        )
        tracker: RangeTracker | None = None
        try:
            if group_id is None:
                raw, timeout = consumer._consumer, self.settings.connect_timeout_s
                assignment = await loop.run_in_executor(
                    None, start_offsets, raw, name, partitions, position, timeout
                )
                if stop_at_end:
                    ends = await loop.run_in_executor(
                        None, end_offsets, raw, name, partitions, timeout
                    )
                    # the same end rule as read_range, the synchronous readers' loop
                    tracker = RangeTracker({tp.partition: tp.offset for tp in assignment}, ends)
                await consumer.assign(assignment)
            else:
                await consumer.subscribe([name])
            while tracker is None or not tracker.done:
                batch = await consumer.consume(num_messages=1000, timeout=0.5)
                for msg in batch:
                    if msg.error() is not None:
                        continue
                    if tracker is not None and not tracker.admit(msg.partition(), msg.offset()):
                        continue
                    try:
                        yield self._codec.decode(msg.value() or b"", topic=name)
                    except CodecError as exc:
                        log.warning(
                            "skipping undecodable record %s/%d@%d: %s",
                            name,
                            msg.partition(),
                            msg.offset(),
                            exc,
                        )
                if tracker is not None and not batch:
                    tracker.passed(
                        await consumer.position([TopicPartition(name, p) for p in tracker.pending])
                    )
        finally:
            await consumer.close()

    async def results(
        self,
        tenant: str | None = None,
        *,
        start: StartPosition | str = "end",
        group_id: str | None = None,
    ) -> AsyncIterator[TaskResult]:
        """Terminal results as they arrive, optionally only one tenant's."""
        async for decoded in self.records(RESULTS, start=start, group_id=group_id):
            if decoded.schema.name != "TaskResult":
                continue
            if tenant is not None and decoded.record.get("tenant_id") != tenant:
                continue
            yield TaskResult.from_avro(decoded.record)

    async def wait(self, task_id: str, timeout: float) -> TaskResult:
        """The terminal result of `task_id`; `TimeoutError` if none arrives in time.

        Results are watched from shortly before this client started, so a result that arrived
        between `submit` and `wait` is not missed.
        """
        if task_id in self._seen:
            return self._seen.pop(task_id)
        future = self._waiters.get(task_id)
        if future is None:
            future = asyncio.get_running_loop().create_future()
            self._waiters[task_id] = future
        if self._watcher is None or self._watcher.done():
            self._watcher = asyncio.create_task(self._watch_results(), name="octollm-results")
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout)
        except TimeoutError:
            raise TimeoutError(f"no result for task {task_id} within {timeout:g}s") from None
        finally:
            if future.done():
                self._waiters.pop(task_id, None)

    async def _watch_results(self) -> None:
        since = StartPosition(kind="time", time=self._started_at - timedelta(seconds=60))
        async for result in self.results(start=since):
            key = str(result.task_id)
            waiter = self._waiters.get(key)
            if waiter is not None and not waiter.done():
                waiter.set_result(result)
            else:
                self._seen[key] = result
                if len(self._seen) > 10_000:  # bounded: results nobody waits for are dropped
                    self._seen.pop(next(iter(self._seen)))
