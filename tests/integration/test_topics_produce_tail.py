"""The foundation on a real broker: topics, produce from JSONL, tail back, clear failures."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition

from octollm.kafka.consumer import consumer_config
from octollm.settings import Settings
from octollm.topics import TASKS, full_name, topic_specs
from tests.conftest import OCTOLLM, cli_env, free_port_pair

pytestmark = pytest.mark.integration


def octollm(settings: Settings, *args: str, stdin: str | None = None, timeout: float = 120):
    return subprocess.run(
        [OCTOLLM, *args],
        env=cli_env(settings),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def end_offsets(settings: Settings, topic: str) -> dict[int, int]:
    consumer = Consumer(consumer_config(settings))
    try:
        meta = consumer.list_topics(topic, timeout=10)
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in meta.topics[topic].partitions
        }
    finally:
        consumer.close()


def test_topics_create_is_idempotent(isolated: Settings) -> None:
    first = octollm(isolated, "topics", "create")
    assert first.returncode == 0, first.stderr
    n = len(topic_specs(isolated))
    assert f"{n} created, 0 already existed" in first.stdout
    assert full_name(isolated, "octo.arm.safety_guardian.requests") in first.stdout
    second = octollm(isolated, "topics", "create")
    assert second.returncode == 0, second.stderr
    assert f"0 created, {n} already existed" in second.stdout
    assert second.stdout.count("exists") == n


def test_1000_tasks_come_back_exactly_and_in_order_per_key(
    isolated: Settings, tmp_path: Path
) -> None:
    assert octollm(isolated, "topics", "create").returncode == 0
    keys = [str(uuid.uuid4()) for _ in range(100)]
    lines = [
        json.dumps({"task_id": keys[i % 100], "tenant_id": f"t{i % 7}", "goal": f"step {i // 100}"})
        for i in range(1000)
    ]
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text("\n".join(lines) + "\n")

    produced = octollm(isolated, "produce", "--file", str(tasks))
    assert produced.returncode == 0, produced.stderr
    assert produced.stdout.split() == [keys[i % 100] for i in range(1000)]

    tailed = octollm(isolated, "tail", TASKS, "--from", "beginning", "--json")
    assert tailed.returncode == 0, tailed.stderr
    records = [json.loads(line) for line in tailed.stdout.splitlines()]
    assert len(records) == 1000
    steps: dict[str, list[int]] = {}
    for rec in records:
        assert rec["schema"] == "TaskRequest"
        assert rec["key"] == rec["value"]["task_id"]
        steps.setdefault(rec["key"], []).append(int(rec["value"]["goal"].split()[1]))
    assert set(steps) == set(keys)
    assert all(seq == list(range(10)) for seq in steps.values())

    limited = octollm(isolated, "tail", TASKS, "--from", "beginning", "--limit", "7")
    assert limited.returncode == 0 and len(limited.stdout.splitlines()) == 7


def test_tail_from_time_and_negative_offset(isolated: Settings, tmp_path: Path) -> None:
    assert octollm(isolated, "topics", "create").returncode == 0
    first = tmp_path / "first.jsonl"
    first.write_text('{"tenant_id": "a", "goal": "before"}\n' * 5)
    assert octollm(isolated, "produce", "-f", str(first)).returncode == 0
    time.sleep(1.1)
    cut = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    time.sleep(1.1)
    second = tmp_path / "second.jsonl"
    second.write_text('{"tenant_id": "a", "goal": "after"}\n' * 3)
    assert octollm(isolated, "produce", "-f", str(second)).returncode == 0

    since = octollm(isolated, "tail", TASKS, "--from", cut, "--json")
    goals = [json.loads(line)["value"]["goal"] for line in since.stdout.splitlines()]
    assert goals == ["after"] * 3

    last = octollm(isolated, "tail", TASKS, "--from", "-1", "--json")
    # one record back from the end of each partition that has data
    per_partition = {json.loads(line)["partition"] for line in last.stdout.splitlines()}
    assert len(last.stdout.splitlines()) == len(per_partition) >= 1

    at_end = octollm(isolated, "tail", TASKS, "--from", "end")
    assert at_end.returncode == 0 and at_end.stdout == ""


def test_malformed_line_sends_nothing(isolated: Settings, tmp_path: Path) -> None:
    assert octollm(isolated, "topics", "create").returncode == 0
    topic = full_name(isolated, TASKS)
    before = end_offsets(isolated, topic)
    bad = tmp_path / "bad.jsonl"
    good = '{"tenant_id": "a", "goal": "fine"}'
    bad.write_text("\n".join([good] * 10 + ['{"tenant_id": "a"}'] + [good] * 10) + "\n")
    result = octollm(isolated, "produce", "--file", str(bad))
    assert result.returncode == 2
    assert "line 11: field 'goal'" in result.stderr
    assert result.stdout == ""
    assert end_offsets(isolated, topic) == before


def test_unreachable_broker_fails_clearly_within_10s(
    kafka_settings: Settings, tmp_path: Path
) -> None:
    dead = kafka_settings.model_copy(update={"bootstrap_servers": f"127.0.0.1:{free_port_pair()}"})
    tasks = tmp_path / "t.jsonl"
    tasks.write_text('{"tenant_id": "a", "goal": "g"}\n')
    for args in (("produce", "--file", str(tasks)), ("tail", TASKS), ("topics", "create")):
        began = time.monotonic()
        result = octollm(dead, *args, timeout=30)
        elapsed = time.monotonic() - began
        assert result.returncode == 1, (args, result.stderr)
        assert "cannot reach Kafka at" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert elapsed < 10, f"{args} took {elapsed:.1f}s"
