"""Producers: idempotent by default, delivery failures surfaced as `ProduceFailed`."""

from __future__ import annotations

from typing import Any

from confluent_kafka import KafkaError, Message
from confluent_kafka import Producer as _RawProducer

from octollm.kafka.exceptions import ProduceFailed
from octollm.settings import Settings

Headers = list[tuple[str, str | bytes | None]]


def producer_config(settings: Settings, *, client_id: str, **overrides: Any) -> dict[str, Any]:
    """Idempotent, acks=all: a retried send never writes a task twice or reorders a key."""
    return {
        **settings.kafka_client_config(),
        "client.id": client_id,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 1,
        "compression.type": "lz4",
        # The Java client's partitioner (murmur2), which aiokafka/Faust and the Rust reflex layer
        # also use: a task_id lands on the same partition number of every topic, so the
        # orchestrator's table partitions line up with its input topics (co-partitioning).
        "partitioner": "murmur2_random",
        # Give up on a record after this long instead of librdkafka's 5-minute default.
        "message.timeout.ms": 60_000,
        **overrides,
    }


class Producer:
    """A synchronous producer for commands and workers that do not run an event loop."""

    def __init__(self, settings: Settings, *, client_id: str = "octollm", **overrides: Any) -> None:
        self._producer = _RawProducer(producer_config(settings, client_id=client_id, **overrides))
        self._errors: list[str] = []
        self.delivered = 0

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self._errors.append(f"{msg.topic()}: {err.str()}")
        else:
            self.delivered += 1

    def produce(
        self,
        topic: str,
        value: bytes,
        *,
        key: bytes | str | None = None,
        headers: Headers | None = None,
    ) -> None:
        while True:
            try:
                self._producer.produce(
                    topic, value, key=key, headers=headers, on_delivery=self._on_delivery
                )
                break
            except BufferError:
                # Local queue full: serve delivery reports to make room, then retry.
                self._producer.poll(0.05)
        self._producer.poll(0)

    def flush(self, timeout: float = 60.0) -> int:
        """Wait for every record to be acknowledged; raise `ProduceFailed` if any was not."""
        remaining: int = self._producer.flush(timeout)
        if remaining:
            raise ProduceFailed(f"{remaining} record(s) not acknowledged within {timeout:g}s")
        if self._errors:
            errors, self._errors = self._errors, []
            raise ProduceFailed(f"{len(errors)} record(s) failed; first: {errors[0]}")
        return self.delivered

    @property
    def raw(self) -> _RawProducer:
        return self._producer
