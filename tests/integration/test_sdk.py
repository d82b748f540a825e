"""OctoClient against the real broker: submit, read back, wait for a result, clear failures."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime

import pytest

from octollm.client import OctoClient
from octollm.codec import Codec
from octollm.contracts.models import TaskRequest, TaskResult, TaskStatus
from octollm.kafka.admin import ensure_topics
from octollm.kafka.exceptions import KafkaUnavailable
from octollm.kafka.producer import Producer
from octollm.settings import Settings
from octollm.topics import RESULTS, TASKS, full_name, topic_specs
from tests.conftest import free_port_pair

pytestmark = pytest.mark.integration


def result_for(task_id: str, tenant: str, status: TaskStatus = TaskStatus.SUCCEEDED) -> TaskResult:
    now = datetime.now(UTC)
    return TaskResult(
        task_id=uuid.UUID(task_id),
        tenant_id=tenant,
        status=status,
        output="done",
        created_at=now,
        completed_at=now,
    )


def publish_results(settings: Settings, results: list[TaskResult]) -> None:
    """Stand in for the orchestrator (not built yet): put terminal results on the topic."""
    codec = Codec()
    producer = Producer(settings)
    topic = full_name(settings, RESULTS)
    for r in results:
        producer.produce(topic, codec.encode(r, topic=topic), key=str(r.task_id))
    producer.flush()


async def test_submit_many_and_read_back(isolated: Settings) -> None:
    ensure_topics(isolated, topic_specs(isolated))
    tasks = [{"tenant_id": "acme", "goal": f"task {i}"} for i in range(300)]
    async with OctoClient(isolated) as octo:
        ids = await octo.submit_many(tasks)
        one = await octo.submit(
            TaskRequest(
                task_id=uuid.uuid4(), tenant_id="acme", goal="single", created_at=datetime.now(UTC)
            )
        )
        seen = [
            str(d.record["task_id"])
            async for d in octo.records(TASKS, start="beginning", stop_at_end=True)
        ]
    assert sorted(seen) == sorted([*ids, one])
    assert len(set(ids)) == 300


async def test_wait_and_results_filter(isolated: Settings) -> None:
    ensure_topics(isolated, topic_specs(isolated))
    async with OctoClient(isolated) as octo:
        mine = await octo.submit({"tenant_id": "acme", "goal": "answer me"})
        other = str(uuid.uuid4())
        # A result that arrives before wait() is called must not be missed.
        publish_results(isolated, [result_for(other, "globex"), result_for(mine, "acme")])
        got = await octo.wait(mine, timeout=30)
        assert str(got.task_id) == mine and got.status is TaskStatus.SUCCEEDED

        with pytest.raises(TimeoutError, match="no result for task"):
            await octo.wait(str(uuid.uuid4()), timeout=1)

        async def first_acme() -> TaskResult:
            async for r in octo.results(tenant="acme", start="beginning"):
                return r
            raise AssertionError("results() ended")

        acme = await asyncio.wait_for(first_acme(), 30)
        assert acme.tenant_id == "acme"


async def test_unreachable_broker_raises_within_10s(kafka_settings: Settings) -> None:
    dead = kafka_settings.model_copy(update={"bootstrap_servers": f"127.0.0.1:{free_port_pair()}"})
    began = time.monotonic()
    with pytest.raises(KafkaUnavailable, match="cannot reach Kafka"):
        async with OctoClient(dead):
            pass
    assert time.monotonic() - began < 10
