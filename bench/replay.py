"""Replay events/s vs a bare confluent-kafka consume→produce copy loop, on the real local broker.

Both copy the same 200k small records (~100 bytes, keyed, one header) from one topic into an
empty one of their own, with the same producer settings (idempotent, acks=all, lz4); the bare
loop copies key, value and headers as they are, the replay engine adds its two marks per record.
Figures only: nothing here is asserted.
"""

from __future__ import annotations

import os
import statistics
import time
import uuid

from confluent_kafka import Consumer, Producer, TopicPartition

from bench.report import Row, print_table
from octollm.kafka.admin import delete_topics, ensure_topics, partitions_of
from octollm.kafka.consumer import consumer_config
from octollm.kafka.producer import producer_config
from octollm.replay.copy import PRODUCER_OVERRIDES, Replay
from octollm.replay.ranges import PartitionRange
from octollm.settings import Settings, get_settings
from octollm.supervisor import kafka
from octollm.topics import TopicSpec, full_name

N = int(os.environ.get("OCTO_BENCH_REPLAY_N", "200000"))
ROUNDS = int(os.environ.get("OCTO_BENCH_ROUNDS", "3"))


def fill(settings: Settings, topic: str) -> None:
    producer = Producer(producer_config(settings, client_id="bench-fill", **PRODUCER_OVERRIDES))
    value = os.urandom(100)
    for i in range(N):
        while True:
            try:
                producer.produce(topic, value, key=b"key-%d" % i, headers=[("trace", b"t")])
                break
            except BufferError:
                producer.poll(0.01)
    assert producer.flush(120) == 0


def ranges(settings: Settings, topic: str) -> list[PartitionRange]:
    consumer = Consumer(consumer_config(settings))
    try:
        return [
            PartitionRange(p, 0, consumer.get_watermark_offsets(TopicPartition(topic, p))[1])
            for p in partitions_of(settings, topic)
        ]
    finally:
        consumer.close()


def bare_copy(settings: Settings, source: str, target: str, todo: list[PartitionRange]) -> float:
    """What a person would write by hand: consume in batches, produce each, flush."""
    consumer = Consumer(consumer_config(settings, client_id="bench-bare"))
    producer = Producer(producer_config(settings, client_id="bench-bare", **PRODUCER_OVERRIDES))
    start = time.perf_counter()
    consumer.assign([TopicPartition(source, r.partition, r.start) for r in todo])
    copied, total = 0, sum(r.size for r in todo)
    while copied < total:
        for msg in consumer.consume(num_messages=10_000, timeout=0.5):
            if msg.error() is not None:
                continue
            while True:
                try:
                    producer.produce(
                        target,
                        msg.value(),
                        key=msg.key(),
                        headers=msg.headers(),
                        partition=msg.partition(),
                    )
                    break
                except BufferError:
                    producer.poll(0.05)
            copied += 1
        producer.poll(0)
    producer.flush(120)
    elapsed = time.perf_counter() - start
    consumer.close()
    return elapsed


def replay_copy(settings: Settings, source: str, target: str, todo: list[PartitionRange]) -> float:
    job = Replay(settings, topic=source, target=target, target_partitions=len(todo), ranges=todo)
    report = job.run()
    assert report.events == N and not report.failed, report.errors
    return report.elapsed_s


def main() -> None:
    base = get_settings()
    for line in kafka.up(base).lines():
        print(line)
    runs: dict[str, list[float]] = {"replay": [], "bare": []}
    for _ in range(ROUNDS):
        s = base.model_copy(update={"topic_prefix": f"bench-replay-{uuid.uuid4().hex[:8]}."})
        names = [full_name(s, n) for n in ("source", "bare", "replay")]
        ensure_topics(s, [TopicSpec(n, "benchmark") for n in ("source", "bare", "replay")])
        try:
            fill(s, names[0])
            todo = ranges(s, names[0])
            runs["bare"].append(N / bare_copy(s, names[0], names[1], todo))
            runs["replay"].append(N / replay_copy(s, names[0], names[2], todo))
        finally:
            delete_topics(base, names)
    med = {k: statistics.median(v) for k, v in runs.items()}
    print_table(
        f"replay: copy {N:,} records of ~100 B ({base.partitions} partitions, {ROUNDS} rounds)",
        [Row("replay events/s", med["replay"], med["bare"], "/s", ">= 100,000 /s")],
        [
            "per-round replay/bare: "
            + ", ".join(
                f"{a:,.0f}/{b:,.0f}" for a, b in zip(runs["replay"], runs["bare"], strict=True)
            ),
            "bare = consume(10k) → produce(key, value, headers, same partition) → flush;"
            " replay = octollm.replay.copy.Replay (adds octo-replay-of / -generation headers)",
        ],
    )
