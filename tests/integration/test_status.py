"""`octollm status --json` on a real broker: group lag, audit lag, DLQ count, worker health."""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from pathlib import Path

import httpx
import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka import Producer as RawProducer

from octollm.kafka.admin import ensure_topics
from octollm.kafka.consumer import consumer_config
from octollm.kafka.producer import Producer
from octollm.ops.endpoint import (
    Endpoint,
    Heartbeat,
    MetricsEndpoint,
    endpoints_dir,
    record_endpoint,
)
from octollm.ops.lag import GroupLagCollector
from octollm.settings import Settings
from octollm.topics import AUDIT, DLQ, TASKS, full_name, topic_specs
from tests.conftest import OCTOLLM, cli_env, free_port
from tests.integration.test_arm_runtime import stop

pytestmark = pytest.mark.integration


def status(settings: Settings, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [OCTOLLM, "status", *args],
        env=cli_env(settings, **env),
        capture_output=True,
        text=True,
        timeout=120,
    )


def produce(settings: Settings, topic: str, n: int) -> dict[int, int]:
    producer = Producer(settings)
    for i in range(n):
        producer.produce(full_name(settings, topic), f"v{i}".encode(), key=f"k{i}")
    producer.flush()
    consumer = Consumer(consumer_config(settings))
    try:
        return {
            p: consumer.get_watermark_offsets(
                TopicPartition(full_name(settings, topic), p), timeout=10
            )[1]
            for p in range(settings.partitions)
        }
    finally:
        consumer.close()


def commit(settings: Settings, group: str, topic: str, offsets: dict[int, int]) -> None:
    consumer = Consumer(consumer_config(settings, group_id=group))
    try:
        consumer.commit(
            offsets=[TopicPartition(full_name(settings, topic), p, o) for p, o in offsets.items()],
            asynchronous=False,
        )
    finally:
        consumer.close()


def test_status_reports_lag_audit_lag_dlq_and_health(isolated: Settings) -> None:
    settings = isolated
    ensure_topics(settings, topic_specs(settings))
    highs = produce(settings, TASKS, 20)
    committed = {p: min(2, h) for p, h in highs.items()}
    group = f"{settings.topic_prefix}octo-test-readers"
    commit(settings, group, TASKS, committed)
    audit_highs = produce(settings, AUDIT, 5)
    commit(settings, f"{settings.topic_prefix}octo-audit", AUDIT, {p: 0 for p in audit_highs})
    produce(settings, DLQ, 3)

    # A live member of the group: subscribed, committing nothing.
    member = Consumer(consumer_config(settings, group_id=group, **{"enable.auto.commit": False}))
    member.subscribe([full_name(settings, TASKS)])
    deadline = time.monotonic() + 30
    while not member.assignment() and time.monotonic() < deadline:
        member.poll(0.2)

    heartbeat = Heartbeat()
    heartbeat.beat()
    up = MetricsEndpoint(heartbeat.check)
    url = up.start(0)
    record_endpoint(settings, Endpoint("arm.planner", os.getpid(), url))
    down_url = f"http://127.0.0.1:{free_port()}"
    record_endpoint(settings, Endpoint("orchestrator", os.getpid(), down_url))
    try:
        result = status(
            settings,
            "--json",
            "--interval",
            "0.5",
            OCTO_AUDIT_PORT=str(free_port()),
            OCTO_REFLEX_METRICS_ADDR="0",
        )
    finally:
        up.stop()
        member.close()
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)

    groups = {g["group"]: g for g in doc["groups"]}
    readers = groups[group]
    expected_lag = sum(highs[p] - committed[p] for p in highs)
    assert readers["lag"] == expected_lag
    assert readers["members"] == 1
    assert readers["topics"][0]["topic"] == full_name(settings, TASKS)
    assert readers["topics"][0]["out_per_s"] == 0.0
    assert doc["audit"] == {"group": f"{settings.topic_prefix}octo-audit", "lag": 5}
    assert doc["dlq"] == {"count": 3}
    topics = {t["topic"]: t for t in doc["topics"]}
    assert topics[full_name(settings, TASKS)]["end_offset"] == 20
    assert topics[full_name(settings, TASKS)]["in_per_s"] == 0.0
    assert doc["interval_s"] > 0

    health = {h["component"]: h for h in doc["components"]}
    assert health["arm.planner"]["up"] and health["arm.planner"]["url"] == url
    assert not health["orchestrator"]["up"]
    assert not health["audit"]["up"]  # no sink running: shown down, not hidden
    assert "reflex" not in health

    # the same lag as a worker's octollm_consumer_lag metric
    [family] = GroupLagCollector(settings, group).collect()
    assert [(s.labels, s.value) for s in family.samples] == [
        ({"group": group, "topic": full_name(settings, TASKS)}, expected_lag)
    ]

    table = status(settings, "--interval", "0", OCTO_REFLEX_METRICS_ADDR="0")
    assert table.returncode == 0, table.stderr
    assert group in table.stdout and "dead letters: 3" in table.stdout


def _transactional_workload(settings: Settings, topic: str) -> dict[int, list[int]]:
    """Four committed transactions of five records and one aborted of three, as the reflex
    layer or a Faust worker writes; returns each partition's data-record offsets."""
    producer = RawProducer(
        {
            **settings.kafka_client_config(),
            "transactional.id": f"lag-test-{uuid.uuid4().hex[:8]}",
            "partitioner": "murmur2_random",
        }
    )
    producer.init_transactions(30)
    for t in range(5):
        producer.begin_transaction()
        for i in range(5 if t < 4 else 3):
            producer.produce(topic, f"v{t}-{i}".encode(), key=f"k{t}-{i}")
        if t < 4:
            producer.commit_transaction(30)
        else:
            producer.abort_transaction(30)
    offsets: dict[int, list[int]] = {p: [] for p in range(settings.partitions)}
    reader = Consumer(consumer_config(settings))
    try:
        reader.assign([TopicPartition(topic, p, 0) for p in offsets])
        deadline = time.monotonic() + 30
        while sum(map(len, offsets.values())) < 20 and time.monotonic() < deadline:
            for msg in reader.consume(100, timeout=0.5):
                if msg.error() is None:
                    offsets[msg.partition()].append(msg.offset())
    finally:
        reader.close()
    assert sum(map(len, offsets.values())) == 20  # read_committed: the aborted three never show
    return offsets


def test_lag_counts_records_not_transaction_markers(isolated: Settings) -> None:
    settings = isolated
    ensure_topics(settings, topic_specs(settings))
    topic = full_name(settings, TASKS)
    offsets = _transactional_workload(settings, topic)
    highs = produce(settings, TASKS, 0)
    # Drained: committed past each partition's last record, as every consumer commits.
    drained = f"{settings.topic_prefix}octo-test-drained"
    commit(settings, drained, TASKS, {p: (o[-1] + 1 if o else 0) for p, o in offsets.items()})
    # Two records short in every partition that holds two or more.
    short = f"{settings.topic_prefix}octo-test-short"
    behind = {p: o[-2] for p, o in offsets.items() if len(o) >= 2}
    commit(settings, short, TASKS, behind)
    # The offset difference is not lag: markers and aborted records sit in between.
    assert sum(highs[p] - (o[-1] + 1 if o else 0) for p, o in offsets.items()) > 0

    result = status(settings, "--json", "--interval", "0", OCTO_REFLEX_METRICS_ADDR="0")
    assert result.returncode == 0, result.stderr
    groups = {g["group"]: g for g in json.loads(result.stdout)["groups"]}
    assert groups[drained]["lag"] == 0
    assert groups[short]["lag"] == 2 * len(behind)
    [family] = GroupLagCollector(settings, drained).collect()
    assert [s.value for s in family.samples] == [0]
    [family] = GroupLagCollector(settings, short).collect()
    assert [s.value for s in family.samples] == [2 * len(behind)]


def test_no_broker_is_one_line_exit_1(isolated: Settings) -> None:
    nowhere = isolated.model_copy(update={"bootstrap_servers": f"127.0.0.1:{free_port()}"})
    result = status(nowhere, "--json", OCTO_CONNECT_TIMEOUT_S="1")
    assert result.returncode == 1
    assert result.stderr.startswith("octollm: error: cannot reach Kafka")
    assert result.stderr.strip().count("\n") == 0
    assert result.stdout == ""


def test_a_real_arm_worker_serves_metrics_and_health_and_cleans_up(isolated: Settings) -> None:
    ensure_topics(isolated, topic_specs(isolated))
    log_path = Path(isolated.data_dir) / f"worker-executor-{os.getpid()}-{time.time_ns()}.log"
    with open(log_path, "wb") as log:
        worker = subprocess.Popen(
            [OCTOLLM, "worker", "arm", "executor"],
            env=cli_env(isolated),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    record = endpoints_dir(isolated) / f"arm.executor-{worker.pid}.json"
    try:
        deadline = time.monotonic() + 90
        healthy = None
        while time.monotonic() < deadline and worker.poll() is None:
            if record.exists():
                url = json.loads(record.read_text())["url"]
                healthy = httpx.get(f"{url}/healthz", trust_env=False)
                if healthy.status_code == 200:
                    break
            time.sleep(0.5)
        assert healthy is not None and healthy.status_code == 200, log_path.read_text()
        metrics = httpx.get(f"{url}/metrics", trust_env=False).text
        assert "octollm_arm_requests_total" in metrics
        assert "octollm_arm_duration_seconds" in metrics
        assert "# TYPE octollm_consumer_lag gauge" in metrics
        doc = json.loads(status(isolated, "--json", "--interval", "0").stdout)
        [mine] = [h for h in doc["components"] if h["pid"] == worker.pid]
        assert mine["component"] == "arm.executor" and mine["up"]
    finally:
        assert stop(worker) == 0, log_path.read_text()
    assert not record.exists()  # removed on a clean exit
