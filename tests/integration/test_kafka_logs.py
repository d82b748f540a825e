"""A broker that dies under a connected aiokafka client (what Faust's workers use): its
connection errors are logged once per interval, with the count held back, and every one is
counted in octollm_kafka_connection_errors_total. A real one-node cluster of this test's own,
stopped by PID mid-test."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer  # type: ignore[import-untyped]
from aiokafka.errors import KafkaError  # type: ignore[import-untyped]

from octollm.kafka.admin import ensure_topics
from octollm.kafka.logs import CONNECTION_ERRORS, throttle_connection_errors
from octollm.settings import Settings
from octollm.supervisor import kafka
from octollm.topics import TopicSpec
from tests.conftest import free_port_pair

pytestmark = pytest.mark.integration

INTERVAL_S = 2.0
OUTAGE_S = 10.0


class Kept(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[Settings]:
    settings = Settings(data_dir=tmp_path / "data", kafka_port=free_port_pair(), partitions=1)
    kafka.up(settings, brokers=1)
    try:
        yield settings
    finally:
        kafka.down(settings)


def _errors_counted() -> float:
    return sum(
        sample.value
        for metric in CONNECTION_ERRORS.collect()
        for sample in metric.samples
        if sample.name.endswith("_total")
    )


def test_a_dead_broker_is_one_line_per_interval_and_every_error_counts(
    own_broker: Settings,
) -> None:
    topic = f"logs-{uuid.uuid4().hex[:8]}"
    ensure_topics(own_broker, [TopicSpec(topic, "test")])
    throttle_connection_errors(INTERVAL_S)
    kept = Kept()
    aiokafka_log = logging.getLogger("aiokafka")  # its modules' loggers propagate to it
    aiokafka_log.addHandler(kept)
    counted_before = _errors_counted()

    async def outage() -> None:
        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=own_broker.bootstrap_servers,
            group_id=None,  # no coordinator: stop() must not wait for the dead broker
            retry_backoff_ms=100,
            request_timeout_ms=3000,  # so stop() gives up on the dead node quickly
        )
        await consumer.start()
        try:
            await consumer.getmany(timeout_ms=2000)
            assert kafka.down(own_broker)  # the broker dies under the client
            ends = time.monotonic() + OUTAGE_S
            while time.monotonic() < ends:
                try:
                    await consumer.getmany(timeout_ms=500)
                except KafkaError:  # a worker retries the same way; we only watch the logs
                    await asyncio.sleep(0.1)
        finally:
            # aiokafka's fetcher re-raises the cancellation of its last fetch to the dead node
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(consumer.stop(), 30)

    try:
        asyncio.run(outage())
    finally:
        aiokafka_log.removeHandler(kept)
    counted = _errors_counted() - counted_before
    # one key per message and broker: the text before the error detail and the held-back count
    keys = Counter(re.sub(r" \(\d+ more like it .*", "", line).split(":")[0] for line in kept.lines)
    # aiokafka retries every ~100 ms: dozens of errors, a handful of lines each
    assert counted >= 10, (counted, kept.lines)
    assert 1 <= len(kept.lines) < counted, kept.lines
    assert "Unable connect to node with id 0" in keys, keys
    assert max(keys.values()) <= OUTAGE_S / INTERVAL_S + 2, keys
    assert any("more like it in the last" in line for line in kept.lines), kept.lines
