"""`octollm replay` and `octollm reprocess` on the real broker: exact ranges, marks, filters,
dry runs, bad invocations that send nothing, and group resets that respect live members."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from confluent_kafka import (
    Consumer,
    ConsumerGroupTopicPartitions,
    Message,
    Producer,
    TopicPartition,
)

from octollm.codec import Codec
from octollm.contracts.models import TaskRequest
from octollm.kafka.admin import admin_client, ensure_topics
from octollm.kafka.consumer import consumer_config
from octollm.kafka.headers import REPLAY_GENERATION, REPLAY_OF, header
from octollm.kafka.producer import producer_config
from octollm.settings import Settings
from octollm.topics import TASKS, TopicSpec, full_name
from tests.conftest import OCTOLLM, cli_env

pytestmark = pytest.mark.integration

SECOND = 1000
CODEC = Codec()


def octollm(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [OCTOLLM, *args], env=cli_env(settings), capture_output=True, text=True, timeout=120
    )


def ok_json(settings: Settings, *args: str) -> dict[str, Any]:
    done = octollm(settings, *args, "--json")
    assert done.returncode == 0, done.stderr
    out: dict[str, Any] = json.loads(done.stdout)
    return out


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class Sent:
    partition: int
    offset: int
    ts: int
    key: bytes
    value: bytes


def create(settings: Settings, *names: str) -> list[str]:
    ensure_topics(settings, [TopicSpec(n, "replay test") for n in names])
    return [full_name(settings, n) for n in names]


def task_value(tenant: str) -> tuple[bytes, bytes]:
    task = TaskRequest(
        task_id=uuid.uuid4(), tenant_id=tenant, goal="replay me", created_at=datetime.now(UTC)
    )
    return str(task.task_id).encode(), CODEC.encode(task)


def produce(settings: Settings, topic: str, rows: list[tuple[int, int, bytes, bytes]]) -> None:
    """rows: (partition, timestamp ms, key, value), each with a `trace-x` header."""
    producer = Producer(producer_config(settings, client_id="test-replay"))
    for partition, ts, key, value in rows:
        producer.produce(
            topic, value, key=key, partition=partition, timestamp=ts, headers=[("trace-x", b"t")]
        )
    assert producer.flush(30) == 0


def read_all(settings: Settings, topic: str) -> list[Message]:
    """Every record of `topic` now, partition by partition in offset order."""
    consumer = Consumer(consumer_config(settings, client_id="test-replay-read"))
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        highs = {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in partitions
        }
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        got: list[Message] = []
        deadline = time.monotonic() + 30
        while sum(1 for m in got) < sum(highs.values()) and time.monotonic() < deadline:
            got += [m for m in consumer.consume(500, timeout=0.5) if m.error() is None]
        return sorted(got, key=lambda m: (m.partition(), m.offset()))
    finally:
        consumer.close()


def highs(settings: Settings, topic: str) -> dict[int, int]:
    consumer = Consumer(consumer_config(settings, client_id="test-replay-marks"))
    try:
        parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in parts
        }
    finally:
        consumer.close()


@pytest.fixture
def three_batches(isolated: Settings) -> tuple[str, int, int, dict[str, list[Sent]]]:
    """Batches A, B, C of 10 TaskRequests each over 3 partitions, stamped 10 s apart.

    Partition 0 holds A's last record at T1 - 1 ms, B's first at exactly T1, B's last at
    T2 - 1 ms and C's first at exactly T2: the boundaries a time range must get right.
    """
    (topic,) = create(isolated, TASKS)
    t0 = (int(time.time()) - 600) * SECOND
    t1, t2 = t0 + 10 * SECOND, t0 + 20 * SECOND
    batches: dict[str, list[Sent]] = {}
    next_offset = [0, 0, 0]
    for name, start, last in (("A", t0, t1 - 1), ("B", t1, t2 - 1), ("C", t2, t2 + 9 * 100)):
        rows = []
        for i in range(10):
            ts = last if i == 9 else start + i * 100
            key, value = task_value("acme" if i % 2 else "globex")
            rows.append((i % 3, ts, key, value))
        produce(isolated, topic, rows)
        batches[name] = []
        for p, ts, key, value in rows:
            batches[name].append(Sent(p, next_offset[p], ts, key, value))
            next_offset[p] += 1
    return topic, t1, t2, batches


def test_time_range_replays_exactly_the_middle_batch_and_generations_count_up(
    isolated: Settings, three_batches: tuple[str, int, int, dict[str, list[Sent]]]
) -> None:
    topic, t1, t2, batches = three_batches
    before = highs(isolated, topic)
    report = ok_json(
        isolated, "replay", "--topic", TASKS, "--from-time", iso(t1), "--to-time", iso(t2)
    )
    assert report["events"] == 10 and report["failed"] == 0 and not report["dry_run"]

    copies = [m for m in read_all(isolated, topic) if m.offset() >= before[m.partition()]]
    origin = {(s.partition, s.offset): s for s in batches["B"]}
    assert len(copies) == 10
    for m in copies:
        _, p, o = (header(m.headers(), REPLAY_OF) or "").rsplit("/", 2)
        src = origin[(int(p), int(o))]  # KeyError = a record outside batch B was copied
        assert m.partition() == src.partition  # same partition number
        assert (m.key(), m.value()) == (src.key, src.value)
        assert header(m.headers(), REPLAY_GENERATION) == "1"
        assert header(m.headers(), "trace-x") == "t"
        assert header(m.headers(), REPLAY_OF) == f"{topic}/{src.partition}/{src.offset}"
    assert {(s.partition, s.offset) for s in batches["B"]} == {
        tuple(map(int, (header(m.headers(), REPLAY_OF) or "").rsplit("/", 2)[1:])) for m in copies
    }

    # A replay of the replay, into another topic: generation 2, pointing at the copies.
    (second,) = create(isolated, "replays")
    start = ",".join(f"{p}:{o}" for p, o in before.items())
    report = ok_json(
        isolated, "replay", "--topic", TASKS, "--from-offset", start, "--target", "replays"
    )
    assert report["events"] == 10
    again = read_all(isolated, second)
    assert len(again) == 10
    copy_at = {(m.partition(), m.offset()): m for m in copies}
    for m in again:
        assert header(m.headers(), REPLAY_GENERATION) == "2"
        _, p, o = (header(m.headers(), REPLAY_OF) or "").rsplit("/", 2)
        assert copy_at[(int(p), int(o))].value() == m.value()
        assert [k for k, _ in m.headers() or []].count(REPLAY_GENERATION) == 1


def test_dry_run_counts_per_partition_and_sends_nothing(
    isolated: Settings, three_batches: tuple[str, int, int, dict[str, list[Sent]]]
) -> None:
    topic, t1, _t2, batches = three_batches
    before = highs(isolated, topic)
    report = ok_json(isolated, "replay", "--topic", TASKS, "--from-time", iso(t1), "--dry-run")
    assert report["dry_run"] and report["events"] == 20  # B and C
    by_partition = {p["partition"]: p for p in report["partitions"]}
    for p in range(3):
        mine = sorted(s.ts for s in batches["B"] + batches["C"] if s.partition == p)
        assert by_partition[p]["events"] == len(mine)
        assert by_partition[p]["first_time"] == iso(mine[0])
        assert by_partition[p]["last_time"] == iso(mine[-1])
    assert highs(isolated, topic) == before

    text = octollm(isolated, "replay", "--topic", TASKS, "--from-time", iso(t1), "--dry-run")
    assert text.returncode == 0 and "would replay 20 event(s)" in text.stdout


def test_filters_and_undecodable_records(isolated: Settings) -> None:
    topic, target = create(isolated, TASKS, "copies")
    rows = [
        (i % 3, int(time.time() * 1000), *task_value(t))
        for i, t in enumerate(["acme", "globex", "acme", "initech", "acme"])
    ]
    rows.append((0, int(time.time() * 1000), b"k", b"not avro at all"))
    produce(isolated, topic, rows)

    report = ok_json(
        isolated,
        "replay",
        "--topic",
        TASKS,
        "--from-offset",
        "0",
        "--filter",
        "tenant=acme,tenant=initech",
        "--target",
        "copies",
    )
    assert (report["events"], report["skipped"]) == (4, 2)
    tenants = sorted(
        CODEC.decode(m.value()).record["tenant_id"] for m in read_all(isolated, target)
    )
    assert tenants == ["acme", "acme", "acme", "initech"]

    # Without a filter nothing needs decoding: the undecodable record is copied as it is.
    report = ok_json(
        isolated, "replay", "--topic", TASKS, "--from-offset", "0", "--target", "copies"
    )
    assert report["events"] == 6
    assert b"not avro at all" in [m.value() for m in read_all(isolated, target)]


def test_rate_is_honoured(isolated: Settings) -> None:
    topic, _ = create(isolated, TASKS, "paced")
    produce(
        isolated, topic, [(i % 3, int(time.time() * 1000), b"k%d" % i, b"v") for i in range(50)]
    )
    report = ok_json(
        isolated,
        "replay",
        "--topic",
        TASKS,
        "--from-offset",
        "0",
        "--target",
        "paced",
        "--rate",
        "100/s",
    )
    assert report["events"] == 50
    assert report["elapsed_s"] >= 0.3  # 50 at 100/s take about 0.5 s; loosely


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--from-time", "yesterday"], "--from-time: 'yesterday' is not an ISO-8601 time"),
        (["--from-offset", "0:-4"], "--from-offset: offset '-4'"),
        (["--from-offset", "9:0"], "no partition 9"),
        (["--from-offset", "0", "--filter", "colour=red"], "unknown key 'colour'"),
        (["--from-offset", "0", "--rate", "fast"], "--rate"),
        (["--from-offset", "0", "--from-time", "2026-01-01T00:00:00Z"], "exactly one of"),
        (["--to-offset", "5"], "exactly one of --from-offset and --from-time"),
        (["--from-time", "2026-01-02T00:00:00Z", "--to-time", "2026-01-01T00:00:00Z"], "before"),
        (["--from-offset", "0", "--target", "nowhere"], "target topic"),
    ],
)
def test_bad_invocations_exit_2_and_send_nothing(
    isolated: Settings, args: list[str], fragment: str
) -> None:
    (topic,) = create(isolated, TASKS)
    produce(isolated, topic, [(p, int(time.time() * 1000), b"k", b"v") for p in range(3)])
    before = highs(isolated, topic)
    done = octollm(isolated, "replay", "--topic", TASKS, *args)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("octollm: error: ") and fragment in lines[0]
    assert highs(isolated, topic) == before


def test_replay_of_a_missing_topic_exits_2(isolated: Settings) -> None:
    done = octollm(isolated, "replay", "--topic", "no.such.topic", "--from-offset", "0")
    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"octollm: error: source topic '{full_name(isolated, 'no.such.topic')}' does not exist"
    )


def committed(settings: Settings, group: str, topic: str) -> dict[int, int]:
    request = ConsumerGroupTopicPartitions(group, [TopicPartition(topic, p) for p in range(3)])
    admin = admin_client(settings)  # held: a collected client never resolves its futures
    result = admin.list_consumer_group_offsets([request])[group].result(timeout=30)
    return {tp.partition: tp.offset for tp in result.topic_partitions}


def commit(settings: Settings, group: str, topic: str, offsets: dict[int, int]) -> None:
    consumer = Consumer(consumer_config(settings, group_id=group, client_id="test-commit"))
    consumer.commit(
        offsets=[TopicPartition(topic, p, o) for p, o in offsets.items()], asynchronous=False
    )
    consumer.close()


def test_reprocess_plans_then_executes(
    isolated: Settings, three_batches: tuple[str, int, int, dict[str, list[Sent]]]
) -> None:
    topic, t1, _t2, batches = three_batches
    group = f"g-{uuid.uuid4().hex[:8]}"
    end = highs(isolated, topic)
    commit(isolated, group, topic, end)

    plan = ok_json(isolated, "reprocess", "--group", group, "--topic", TASKS, "--to-time", iso(t1))
    first_b = {p: min(s.offset for s in batches["B"] if s.partition == p) for p in range(3)}
    assert not plan["executed"]
    assert {r["partition"]: (r["current"], r["new"]) for r in plan["partitions"]} == {
        p: (end[p], first_b[p]) for p in range(3)
    }
    assert committed(isolated, group, topic) == end  # a plan changes nothing

    done = ok_json(
        isolated, "reprocess", "--group", group, "--topic", TASKS, "--to-time", iso(t1), "--execute"
    )
    assert done["executed"] and committed(isolated, group, topic) == first_b

    ok_json(
        isolated, "reprocess", "--group", group, "--topic", TASKS, "--to-offset", "1:2", "--execute"
    )
    assert committed(isolated, group, topic) == {**first_b, 1: 2}
    ok_json(isolated, "reprocess", "--group", group, "--topic", TASKS, "--to-earliest", "--execute")
    assert committed(isolated, group, topic) == {0: 0, 1: 0, 2: 0}

    text = octollm(isolated, "reprocess", "--group", group, "--topic", TASKS, "--to-latest")
    assert text.returncode == 0 and "plan only" in text.stdout
    bad = octollm(isolated, "reprocess", "--group", group, "--topic", TASKS, "--to-time", "soon")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1
    both = octollm(
        isolated, "reprocess", "--group", group, "--topic", TASKS, "--to-earliest", "--to-latest"
    )
    assert both.returncode == 2 and "exactly one of" in both.stderr


def test_reprocess_refuses_a_group_with_an_active_member(
    isolated: Settings, three_batches: tuple[str, int, int, dict[str, list[Sent]]]
) -> None:
    topic, _t1, _t2, _ = three_batches
    group = f"g-{uuid.uuid4().hex[:8]}"
    member = Consumer(consumer_config(isolated, group_id=group, client_id="test-member"))
    member.subscribe([topic])
    deadline = time.monotonic() + 30
    while not member.assignment() and time.monotonic() < deadline:
        member.poll(0.2)
    assert member.assignment(), "the member never joined"
    try:
        member.commit(offsets=[TopicPartition(topic, p, 1) for p in range(3)], asynchronous=False)
        before = committed(isolated, group, topic)
        for extra in ([], ["--execute"]):
            done = octollm(
                isolated, "reprocess", "--group", group, "--topic", TASKS, "--to-earliest", *extra
            )
            assert done.returncode == 1
            lines = done.stderr.strip().splitlines()
            assert len(lines) == 1 and "1 active member(s)" in lines[0], done.stderr
        assert committed(isolated, group, topic) == before
    finally:
        member.close()
