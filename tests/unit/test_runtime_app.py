"""The app factory's hot-path pieces, without a broker: the cached partitioner and the
concurrent transaction commit."""

from __future__ import annotations

import asyncio
import inspect
import re
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka.partitioner import DefaultPartitioner  # type: ignore[import-untyped]
from faust.transport.consumer import ThreadDelegateConsumer
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from faust.types import TP

from octollm.runtime import faust_internals
from octollm.runtime.app import CommitGate, KeyedTransactionManager, murmur2_partitioner


def test_partitioner_is_aiokafkas_default_for_keyed_records() -> None:
    default = DefaultPartitioner()
    for n in (1, 3, 6, 7, 64):
        parts = list(range(n))
        for i in range(500):
            key = f"task-{i}".encode()
            assert murmur2_partitioner(key, parts, parts) == default(key, parts, parts)


def test_partitioner_without_a_key_picks_an_available_partition() -> None:
    assert {murmur2_partitioner(None, [0, 1, 2], [2]) for _ in range(20)} == {2}


class RecordingProducer:
    """Stands in for Faust's producer: records which transactional ids commit, and when."""

    def __init__(self) -> None:
        self.running = 0
        self.most_at_once = 0
        self.committed: dict[str, dict[Any, int]] = {}

    async def commit_transactions(
        self, by_tid: dict[str, dict[Any, int]], group_id: str, start_new_transaction: bool
    ) -> None:
        self.running += 1
        self.most_at_once = max(self.most_at_once, self.running)
        await asyncio.sleep(0.01)
        self.committed.update(by_tid)
        self.running -= 1


def manager(producer: RecordingProducer, gate: CommitGate) -> KeyedTransactionManager:
    m = object.__new__(KeyedTransactionManager)
    app = SimpleNamespace(
        conf=SimpleNamespace(id="octo-orchestrator"),
        assignor=SimpleNamespace(group_for_topic=lambda topic: 0),
        consumer=SimpleNamespace(_thread=SimpleNamespace(tp_last_committed_at={})),
    )
    m.__dict__.update(app=app, producer=producer, gate=gate)
    return m


def test_partitions_commit_concurrently_each_in_its_own_transaction() -> None:
    producer = RecordingProducer()
    tps = {TP("in", p): 10 + p for p in range(6)}

    async def main() -> bool:
        return await manager(producer, CommitGate()).commit(tps)

    assert asyncio.run(main()) is True
    assert producer.most_at_once == 6
    assert sorted(producer.committed) == [f"octo-orchestrator-0-{p}" for p in range(6)]
    assert all(len(v) == 1 for v in producer.committed.values())


def test_commit_waits_for_events_halfway_through_applying() -> None:
    producer = RecordingProducer()
    gate = CommitGate()
    order: list[str] = []

    async def event() -> None:
        async with gate.applying():
            order.append("event applies")
            await asyncio.sleep(0.02)
            order.append("event done")

    async def commit() -> None:
        await asyncio.sleep(0.005)
        await manager(producer, gate).commit({TP("in", 0): 1})
        order.append("committed")

    async def main() -> None:
        await asyncio.gather(event(), commit())

    asyncio.run(main())
    assert order == ["event applies", "event done", "committed"]


def test_a_transactional_commit_counts_for_fausts_livelock_check() -> None:
    producer = RecordingProducer()
    m = manager(producer, CommitGate())
    tps = {TP("octo.orchestrator.ticks", p): 5 for p in range(3)}
    before = time.monotonic()
    assert asyncio.run(m.commit(tps)) is True
    seen = m.app.consumer._thread.tp_last_committed_at
    assert set(seen) == set(tps)
    assert all(before <= at <= time.monotonic() for at in seen.values())


def test_fausts_livelock_check_still_reads_tp_last_committed_at() -> None:
    """`note_committed` feeds this attribute: if the pinned faust-streaming stops reading it,
    the "has not committed … (report as bug)" false alarm comes back, so fail here, naming it."""
    source = inspect.getsource(AIOKafkaConsumerThread.verify_event_path)
    assert "self.tp_last_committed_at.get(tp)" in source


def test_every_private_faust_name_we_use_is_there() -> None:
    assert faust_internals.missing() == []


def test_a_private_name_that_moved_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    used = (
        *faust_internals.USED,
        (AIOKafkaConsumerThread, "_renamed_since", "method"),
        (ThreadDelegateConsumer, "gone_attr", "instance"),
    )
    monkeypatch.setattr(faust_internals, "USED", used)
    assert faust_internals.missing() == [
        "faust.transport.drivers.aiokafka.AIOKafkaConsumerThread._renamed_since",
        "faust.transport.consumer.ThreadDelegateConsumer.gone_attr",
    ]
    with pytest.raises(RuntimeError, match=r"_renamed_since, .*gone_attr"):
        faust_internals.check()


def test_only_the_internals_module_touches_fausts_private_names() -> None:
    """Every `_name` of faust-streaming we rely on is listed in `faust_internals.USED`, and no
    other module of ours reaches for one (a grep over the runtime and orchestrator sources)."""
    private = {name for _owner, name, _kind in faust_internals.USED if name.startswith("_")}
    root = Path(faust_internals.__file__).parent.parent
    offenders = []
    for path in [*root.glob("runtime/*.py"), *root.glob("orchestrator/*.py")]:
        if path.name == "faust_internals.py":
            continue
        text = path.read_text()
        offenders += [
            f"{path.name}: {name}"
            for name in private
            if re.search(rf"\.{re.escape(name)}\b|\b{re.escape(name)}\(", text)
        ]
    assert offenders == []
