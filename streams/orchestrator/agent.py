"""The orchestrator's Faust side: agents that feed events to `state` and send the effects.

Inputs (all keyed by task id, all with `settings.partitions` partitions, so co-partitioned):
`octo.tasks.routed.priority`, `octo.tasks.routed.orchestrator`, `octo.arm.results` and our own
clock, `octo.orchestrator.ticks`. State: the `tasks` table (task id → `TaskState` JSON), backed
by its changelog topic. Outputs: arm requests, audit events, the terminal result (and the task's
reply topic), dead letters.

Exactly once: with `processing_guarantee="exactly_once"` every record an event causes (the table
update, the outputs) and the event's input offset are committed in one Kafka transaction per
input partition (see `runtime.app.KeyedTransactionManager`). Each event's records are handed to
the producer in order (table update first) and acknowledged before the event counts as
processed, and a replayed event changes nothing in `state`, so a crash or a rebalance at any
point leaves exactly one committed `TaskResult` per task.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import faust
from faust.types import EventT, TopicT
from prometheus_client import Counter, Histogram

from octollm.codec import Codec, CodecError
from octollm.codec.errors import SchemaMismatch
from octollm.contracts.models import ArmResult, AvroModel, RoutedTask, TaskResult
from octollm.kafka.admin import partitions_of
from octollm.kafka.exceptions import KafkaClientError
from octollm.kafka.headers import REPLAY_GENERATION, generation_of
from octollm.orchestrator.state import (
    Config,
    Effects,
    TaskState,
    is_expired,
    on_arm_result,
    on_task,
    on_tick,
)
from octollm.runtime.app import (
    ORCHESTRATOR_GROUP,
    create_app,
    key_partition,
    raw_topic,
    topic,
    use_keyed_transactions,
)
from octollm.runtime.arm import dead_letter
from octollm.settings import Settings
from octollm.topics import (
    ARM_RESULTS,
    AUDIT,
    DLQ,
    ORCHESTRATOR_TICKS,
    RESULTS,
    arm_requests,
    full_name,
    routed,
)

log = logging.getLogger("octollm.orchestrator")

EVENTS = Counter("octollm_orchestrator_events_total", "Events handled, by kind", ["kind"])
# Resolved once: `labels()` takes a lock and hashes the label tuple, on every event otherwise.
TASK_EVENTS, RESULT_EVENTS, TICK_EVENTS = (EVENTS.labels(k) for k in ("task", "arm_result", "tick"))
RESULTS_EMITTED = Counter(
    "octollm_orchestrator_results_total", "Terminal results emitted, by status", ["status"]
)
TASK_SECONDS = Histogram(
    "octollm_orchestrator_task_seconds",
    "Time from a task's arrival to its terminal result",
    buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 120, 300, 600),
)

#: How long a finished task stays in the table, so late duplicates of its events find it.
DONE_RETENTION = timedelta(hours=1)
REPLY_TOPIC_RECHECK_S = 30.0  # a missing reply_topic is looked up again after this long


def now_utc() -> datetime:
    return datetime.now(UTC)


class Orchestrator:
    """The orchestrator app: build it, then run `app` with a Faust worker."""

    def __init__(
        self,
        settings: Settings,
        capabilities: dict[str, frozenset[str]],
        *,
        clock: Callable[[], datetime] = now_utc,
    ) -> None:
        self.settings = settings
        self.cfg = Config.from_settings(settings, capabilities)
        self.clock = clock
        self.codec = Codec.from_settings(settings)
        self.app = create_app(settings, ORCHESTRATOR_GROUP)
        self.gate = use_keyed_transactions(self.app, settings, routed("orchestrator"))
        self.exactly_once = settings.processing_guarantee == "exactly_once"
        app = self.app
        self.priority_in = topic(app, settings, routed("priority"))
        self.normal_in = topic(app, settings, routed("orchestrator"))
        self.results_in = topic(app, settings, ARM_RESULTS)
        self.ticks = topic(app, settings, ORCHESTRATOR_TICKS)  # internal: see `ensure_topics`
        self.audit_out = topic(app, settings, AUDIT)
        self.results_out = topic(app, settings, RESULTS)
        self.dlq_out = topic(app, settings, DLQ)
        self.tasks = app.Table(
            "tasks", default=None, partitions=settings.partitions, key_type=bytes, value_type=bytes
        )
        self._out_topics: dict[str, TopicT] = {}
        self._reply_topics: dict[str, tuple[bool, float]] = {}  # name → (exists, checked at)
        # Which tasks are not done yet, per partition: what a tick looks at. Process-local and
        # rebuilt from the table after a restart or rebalance (see `_active_in`).
        self._active: dict[int, set[bytes]] = {}
        self._indexed: set[int] = set()
        # The decoded state of each unfinished task, beside the table bytes it was decoded from
        # (or encoded to): parsing a task's JSON on every event was a third of our own CPU. A
        # cached entry is used only while the table still holds those very bytes, so a state
        # recovered from the changelog or written elsewhere is always decoded afresh.
        self._states: dict[bytes, tuple[bytes, TaskState]] = {}
        self._register()

    def ensure_topics(self) -> None:
        """Create the orchestrator's internal ticks topic before the worker joins its group:
        a topic missing at the first assignment is left out of it."""
        from octollm.kafka.admin import ensure_topics
        from octollm.topics import TopicSpec

        spec = TopicSpec(ORCHESTRATOR_TICKS, "orchestrator clock", {"retention.ms": "3600000"})
        ensure_topics(self.settings, [spec])

    # --- wiring ---------------------------------------------------------------------------
    def _register(self) -> None:
        app, settings = self.app, self.settings
        concurrency = settings.orchestrator_concurrency

        # Faust has no strict priority between topics. The priority route gets an agent of its
        # own with twice the concurrency, so its tasks never queue behind ordinary ones in one
        # stream, and a bigger share of the loop's turns while both have work.
        @app.agent(self.priority_in, name="orchestrator-priority", concurrency=2 * concurrency)
        async def priority(stream: faust.StreamT[bytes]) -> AsyncIterator[None]:
            async for event in stream.events():
                await self._on_routed(event)
                yield None

        @app.agent(self.normal_in, name="orchestrator-routed", concurrency=concurrency)
        async def normal(stream: faust.StreamT[bytes]) -> AsyncIterator[None]:
            async for event in stream.events():
                await self._on_routed(event)
                yield None

        @app.agent(self.results_in, name="orchestrator-arm-results", concurrency=concurrency)
        async def arm_results(stream: faust.StreamT[bytes]) -> AsyncIterator[None]:
            async for event in stream.events():
                await self._on_arm_result(event)
                yield None

        @app.agent(self.ticks, name="orchestrator-ticks")
        async def ticks(stream: faust.StreamT[bytes]) -> AsyncIterator[None]:
            async for event in stream.events():
                await self._on_tick(event)
                yield None

        @app.timer(settings.orchestrator_tick_s)  # type: ignore[untyped-decorator]
        async def clock() -> None:
            await self._send_ticks()

        self.agents = (priority, normal, arm_results, ticks)

    # --- events -----------------------------------------------------------------------------
    async def _decode(self, event: EventT[Any], kind: type[AvroModel]) -> AvroModel | None:
        try:
            record = self.codec.decode_model(event.value, topic=event.message.topic)
            if not isinstance(record, kind):
                raise SchemaMismatch(f"expected a {kind.__name__}, got a {type(record).__name__}")
            return record
        except CodecError as exc:
            log.warning(
                "dead-lettered %s offset %d: %s [component=orchestrator]",
                event.message.topic,
                event.message.offset,
                exc,
            )
            letter = dead_letter(event, exc, "orchestrator")
            dlq = full_name(self.settings, DLQ)
            await self._send(dlq, event.key, self.codec.encode(letter, topic=dlq))
            return None

    def _load(self, key: bytes) -> TaskState | None:
        """The task's state, never to be changed in place (the `state` functions copy it)."""
        raw = self.tasks.get(key)
        if not raw:
            return None
        cached = self._states.get(key)
        if cached is not None and (cached[0] is raw or cached[0] == raw):
            return cached[1]
        state = TaskState.model_validate_json(raw)
        if not state.emitted:
            self._states[key] = (raw, state)
        return state

    def _forget(self, keys: Iterable[bytes]) -> None:
        for key in keys:
            self._states.pop(key, None)

    async def _on_routed(self, event: EventT[Any]) -> None:
        TASK_EVENTS.inc()
        routed_task = await self._decode(event, RoutedTask)
        if routed_task is None:
            return
        assert isinstance(routed_task, RoutedTask)
        key = str(routed_task.task.task_id).encode()
        state = self._load(key)
        generation = generation_of(event.headers)
        new, fx = on_task(state, routed_task, self.clock(), self.cfg, generation)
        if state is None:
            log.info(
                "task received [task_id=%s tenant_id=%s route=%s component=orchestrator]",
                new.task_id,
                new.tenant_id,
                routed_task.route,
            )
        await self._apply(key, state, new, fx, event.message.partition)

    async def _on_arm_result(self, event: EventT[Any]) -> None:
        RESULT_EVENTS.inc()
        result = await self._decode(event, ArmResult)
        if result is None:
            return
        assert isinstance(result, ArmResult)
        key = str(result.task_id).encode()
        state = self._load(key)
        if state is None:
            log.warning(
                "result for an unknown task ignored [task_id=%s step_id=%s component=orchestrator]",
                result.task_id,
                result.step_id,
            )
            return
        new, fx = on_arm_result(state, result, self.clock(), self.cfg)
        await self._apply(key, state, new, fx, event.message.partition)

    async def _on_tick(self, event: EventT[Any]) -> None:
        TICK_EVENTS.inc()
        partition = event.message.partition
        now = self.clock()
        for key in list(self._active_in(partition)):
            state = self._load(key)
            if state is None:
                self._active[partition].discard(key)
                self._forget([key])
                continue
            if is_expired(state, now, DONE_RETENTION):
                del self.tasks[key]
                self._active[partition].discard(key)
                self._forget([key])
                continue
            new, fx = on_tick(state, now, self.cfg)
            await self._apply(key, state, new, fx, partition)

    def _active_in(self, partition: int) -> set[bytes]:
        if partition not in self._indexed:
            # First tick for this partition since it was assigned: index the recovered table.
            n = self.settings.partitions
            keys = {k for k in self.tasks if key_partition(k, n) == partition}
            self._active.setdefault(partition, set()).update(keys)
            self._indexed.add(partition)
        return self._active.setdefault(partition, set())

    async def _send_ticks(self) -> None:
        """One tick per assigned partition, on the plain producer: a tick inside a transaction
        would only be seen once that partition's transaction commits, which an idle partition
        never does."""
        name = full_name(self.settings, ORCHESTRATOR_TICKS)
        stamp = str(time.time()).encode()
        assigned = {tp.partition for tp in self.app.assignor.assigned_actives() if tp.topic == name}
        for p in self._indexed - assigned:  # revoked: another worker owns them now
            self._indexed.discard(p)
            self._forget(self._active.pop(p, set()))
        for p in sorted(assigned):
            await self.app.producer.send(name, b"tick", stamp, p, None, None)

    # --- effects -----------------------------------------------------------------------------
    def _out(self, name: str) -> TopicT:
        t = self._out_topics.get(name)
        if t is None:
            t = self._out_topics[name] = raw_topic(self.app, name)
        return t

    async def _apply(
        self, key: bytes, old: TaskState | None, new: TaskState, fx: Effects, partition: int
    ) -> None:
        if new is old and not fx:
            return
        # The reply-topic check may wait on the broker: done before the gate, not inside it.
        records = await self._records(new, fx)
        # State and outputs go out together: a commit waits until all of them are acknowledged,
        # so no transaction holds one without the other (see `runtime.app.CommitGate`).
        raw = new.model_dump_json().encode()
        async with self.gate.applying():
            self.tasks[key] = raw
            if new.emitted:
                self._forget([key])  # a finished task is read again only for late duplicates
            else:
                self._states[key] = (raw, new)
            await self._send_all(key, records, new.generation)
        if new.emitted:
            self._active.get(partition, set()).discard(key)
        else:
            self._active.setdefault(partition, set()).add(key)
        if fx.result is not None:
            self._log_result(new, fx.result)

    async def _records(self, new: TaskState, fx: Effects) -> list[tuple[str, bytes]]:
        """The event's outputs, encoded: arm requests, audit events, the result (and the
        task's reply topic)."""
        s, codec = self.settings, self.codec
        records: list[tuple[str, bytes]] = []
        for req in fx.requests:
            name = full_name(s, arm_requests(req.arm))
            records.append((name, codec.encode(req, topic=name)))
        for audit in fx.audits:
            name = full_name(s, AUDIT)
            records.append((name, codec.encode(audit, topic=name)))
        if fx.result is not None:
            name = full_name(s, RESULTS)
            records.append((name, codec.encode(fx.result, topic=name)))
            reply = new.routed.task.reply_topic
            if reply and await self._reply_topic_exists(reply, new):
                records.append((reply, codec.encode(fx.result, topic=reply)))
        return records

    async def _reply_topic_exists(self, name: str, state: TaskState) -> bool:
        """A task's reply_topic is the caller's: we never create it. If it is missing the result
        goes to octo.results.v1 only (as in the reflex layer), instead of the producer waiting
        for the topic forever and stalling the partition. Found topics are remembered; a
        missing one is asked about again after a while."""
        known = self._reply_topics.get(name)
        now = time.monotonic()
        if known is not None and (known[0] or now - known[1] < REPLY_TOPIC_RECHECK_S):
            return known[0]
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(None, partitions_of, self.settings, name)
            exists = True
        except KafkaClientError:
            exists = False
            log.warning(
                "reply topic %s does not exist; result only on %s "
                "[task_id=%s tenant_id=%s component=orchestrator]",
                name,
                full_name(self.settings, RESULTS),
                state.routed.task.task_id,
                state.routed.task.tenant_id,
            )
        self._reply_topics[name] = (exists, now)
        return exists

    def _log_result(self, state: TaskState, result: TaskResult) -> None:
        RESULTS_EMITTED.labels(result.status.value).inc()
        TASK_SECONDS.observe((result.completed_at - state.received_at).total_seconds())
        log.info(
            "task %s [task_id=%s tenant_id=%s rounds=%d reason=%s component=orchestrator]",
            result.status.value,
            result.task_id,
            result.tenant_id,
            state.round,
            result.reason or "",
        )

    async def _send(self, name: str, key: bytes | None, value: bytes) -> None:
        await self._out(name).send_soon(key=key, value=value)

    async def _send_all(
        self, key: bytes, records: list[tuple[str, bytes]], generation: int = 0
    ) -> None:
        """Queue the records behind the table update, in order. Under exactly-once the next
        commit waits for their acknowledgements (`CommitGate.track`); otherwise the event waits,
        since its offset may be committed as soon as it is done. A replayed task's records carry
        its generation, so the audit sink and the caller can tell the runs apart."""
        headers = {REPLAY_GENERATION: str(generation).encode()} if generation else None
        pending = [
            self._out(name).send_soon(key=key, value=value, headers=headers)
            for name, value in records
        ]
        if self.exactly_once:
            self.gate.track(pending)
        elif pending:
            await asyncio.gather(*pending)
