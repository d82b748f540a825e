"""Every use of faust-streaming's private surface, in one place, with a check that it is there.

Our exactly-once runtime (`runtime.app`) needs a few of Faust's private names: the transaction
manager's per-partition producers, the consumer thread's highwater query and its livelock
bookkeeping. Nothing else in the code base touches a Faust name that starts with `_`. Faust is
pinned (pyproject.toml); when the pin moves, `missing()` names what changed, a unit test fails
on it, and a worker refuses to start with that list instead of misbehaving quietly.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Iterable
from typing import Any

from faust.transport.consumer import ThreadDelegateConsumer, TransactionManager
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from faust.transport.drivers.aiokafka import Consumer as AIOKafkaTransportConsumer
from faust.transport.drivers.aiokafka import Producer as AIOKafkaTransportProducer

#: (owner, private name, how it is used). "method": called or overridden; "attribute": read
#: from the class; "instance": assigned in the class's source (`self.<name> =`).
USED: tuple[tuple[type, str, str], ...] = (
    (TransactionManager, "_tps_to_transactional_ids", "method"),
    (TransactionManager, "_start_transactions", "method"),
    (TransactionManager, "_stop_transactions", "method"),
    (AIOKafkaTransportProducer, "_transaction_producers", "attribute"),
    (AIOKafkaConsumerThread, "_highwaters", "method"),
    (AIOKafkaConsumerThread, "_ensure_consumer", "method"),
    (AIOKafkaConsumerThread, "tp_last_committed_at", "instance"),
    (ThreadDelegateConsumer, "_new_consumer_thread", "method"),
    (ThreadDelegateConsumer, "_thread", "instance"),
)


def missing() -> list[str]:
    """The private names we use that the installed faust-streaming no longer has."""
    gone = []
    for owner, name, kind in USED:
        if kind == "instance":
            present = f"self.{name} =" in inspect.getsource(owner)
        else:
            present = hasattr(owner, name)
            if present and kind == "method":
                present = callable(getattr(owner, name))
        if not present:
            gone.append(f"{owner.__module__}.{owner.__qualname__}.{name}")
    return gone


def check() -> None:
    """Raise naming every private name that moved (called when a worker wires its app)."""
    gone = missing()
    if gone:
        raise RuntimeError(
            "the installed faust-streaming lacks what OctoLLM's runtime relies on: "
            + ", ".join(gone)
            + " (see octollm.runtime.faust_internals)"
        )


# --- the transaction manager ------------------------------------------------------------------


def transaction_producers(manager: TransactionManager) -> dict[str, Any]:
    """The transactional producers the manager holds, by transactional id."""
    producers: dict[str, Any] = getattr(manager.producer, "_transaction_producers", {})
    return producers


def transactional_ids(manager: TransactionManager, tps: Any) -> set[str]:
    return set(manager._tps_to_transactional_ids(tps))


async def start_transactions(manager: TransactionManager, tids: Iterable[str]) -> None:
    await manager._start_transactions(tids)


async def stop_transactions(manager: TransactionManager, tids: Iterable[str]) -> None:
    await manager._stop_transactions(tids)


def note_committed(app: Any, tps: Iterable[Any]) -> None:
    """Record a commit for Faust's livelock check (`verify_event_path`), which reads when each
    partition last committed from `tp_last_committed_at`; only Faust's plain commit sets it."""
    thread = getattr(app.consumer, "_thread", None)
    last_committed = getattr(thread, "tp_last_committed_at", None)
    if last_committed is not None:
        last_committed.update(dict.fromkeys(tps, time.monotonic()))


# --- the consumer thread ----------------------------------------------------------------------


class StableEndConsumerThread(AIOKafkaConsumerThread):
    """Faust's consumer thread, asking the broker for a changelog's last stable offset.

    Under exactly-once, Faust takes a changelog partition's highwater from the last stable
    offset its consumer saw in a fetch response: none for a partition not fetched since it was
    assigned, so recovery reads nothing and the table keeps whatever its standby copy had, which
    may lag. (Seen in the kill test: the survivor resumed 2 tasks from a state one step old
    while their next requests were out, and they waited forever.) A ListOffsets request with
    read_committed returns the real last stable offset, and recovery reads up to it.
    """

    async def _highwaters(self, partitions: Any) -> Any:
        if self.consumer.in_transaction:
            return await self._ensure_consumer().end_offsets(list(partitions))
        return await super()._highwaters(partitions)


class StableEndConsumer(AIOKafkaTransportConsumer):
    """Faust's aiokafka consumer with `StableEndConsumerThread` as its thread."""

    def _new_consumer_thread(self) -> AIOKafkaConsumerThread:
        return StableEndConsumerThread(self, loop=self.loop, beacon=self.beacon)
