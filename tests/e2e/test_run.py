"""The README's main job from the outside: `octollm run --once` on a data dir and ports of its own.

It starts Kafka and the local LLM server, the reflex layer, the orchestrator and every arm as
separate processes, sends examples/tasks.jsonl and waits until each task has its terminal
result. Then we read the topics back ourselves: one result per task, the code task SUCCEEDED,
the injection QUARANTINED, and no raw PII from the examples on any arm or result topic.
"""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition

from octollm.settings import Settings
from tests.conftest import OCTOLLM, cli_env, free_port_pair

pytestmark = pytest.mark.e2e

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "tasks.jsonl"
RAW_PII = [b"jane.doe@example.com", b"415 555 0100", b"+1 415"]


def read_all(bootstrap: str, topic: str) -> list[bytes]:
    """Every committed record value of `topic` (read_committed, from the beginning)."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "e2e-reader",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
    )
    try:
        meta = consumer.list_topics(topic, timeout=10).topics.get(topic)
        if meta is None or meta.error is not None:
            return []
        parts = [TopicPartition(topic, p) for p in meta.partitions]
        ends = {}
        for tp in parts:
            _, high = consumer.get_watermark_offsets(tp, timeout=10)
            ends[tp.partition] = high
        consumer.assign([TopicPartition(topic, p, 0) for p in ends])
        values: list[bytes] = []
        pending = {p for p, end in ends.items() if end > 0}
        while pending:
            msg = consumer.poll(2.0)
            if msg is None:
                positions = consumer.position([TopicPartition(topic, p) for p in pending])
                pending -= {tp.partition for tp in positions if tp.offset >= ends[tp.partition]}
                continue
            if msg.error() is None:
                values.append(msg.value() or b"")
                if msg.offset() + 1 >= ends[msg.partition()]:
                    pending.discard(msg.partition())
        return values
    finally:
        consumer.close()


@pytest.mark.timeout(1500)
def test_run_once_answers_every_example_exactly_once(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path / "data", kafka_port=free_port_pair(), llm_port=free_port_pair()
    )
    env = cli_env(settings, OCTO_LLM_PORT=str(settings.llm_port))
    examples = [json.loads(line) for line in EXAMPLES.read_text().splitlines() if line.strip()]
    result = subprocess.run(
        [OCTOLLM, "run", "--once", "--timeout", "900"],
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    answered = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    by_id = {r["task_id"]: r for r in answered}
    assert len(by_id) == len(examples) == len(answered), result.stdout
    status_by_goal = {r["goal"]: r["status"] for r in answered}
    add_goal = next(g for g in status_by_goal if g.startswith("Write a Python function add"))
    assert status_by_goal[add_goal] == "SUCCEEDED", answered
    attack = next(g for g in status_by_goal if g.startswith("Ignore all previous"))
    assert status_by_goal[attack] == "QUARANTINED", answered
    assert f"all {len(examples)} task(s) answered" in result.stdout

    # `octollm run` stopped everything it started: the broker is gone, so restart it to read.
    up = subprocess.run(
        [OCTOLLM, "infra", "up", "--no-llm"], env=env, capture_output=True, text=True, timeout=300
    )
    assert up.returncode == 0, up.stderr
    try:
        from octollm.codec import Codec

        codec = Codec.from_settings(settings)
        results = [
            codec.decode(v).record for v in read_all(settings.bootstrap_servers, "octo.results.v1")
        ]
        per_task = Counter(str(r["task_id"]) for r in results)
        assert set(per_task) == set(by_id) and set(per_task.values()) == {1}, per_task
        for r in results:  # what the run printed is what is on the topic
            assert str(r["status"]) == by_id[str(r["task_id"])]["status"]

        # no raw PII from the examples anywhere downstream of the reflex layer
        for topic in [
            "octo.results.v1",
            "octo.arm.results",
            "octo.tasks.routed.orchestrator",
            "octo.tasks.routed.priority",
            *(f"octo.arm.{arm}.requests" for arm in ("planner", "judge", "safety_guardian")),
        ]:
            for value in read_all(settings.bootstrap_servers, topic):
                for raw in RAW_PII:
                    assert raw not in value, f"raw PII {raw!r} on {topic}"
    finally:
        down = subprocess.run(
            [OCTOLLM, "infra", "down"], env=env, capture_output=True, text=True, timeout=120
        )
        assert down.returncode == 0, down.stderr
