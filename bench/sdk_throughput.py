"""SDK produce/consume throughput vs a bare confluent-kafka loop, on the real local broker.

Both sides move the same 100k ~1 KB TaskRequests and both Avro-encode/decode them (a bare
client has to serialise too); a raw-bytes row shows the client alone, for reference.
Figures only: nothing here is asserted.
"""

from __future__ import annotations

import asyncio
import io
import os
import statistics
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import fastavro
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from bench.report import Row, peak_rss_mb, percentile, print_table
from octollm.client import OctoClient
from octollm.contracts.models import TaskRequest
from octollm.contracts.schemas import get_schema
from octollm.kafka.admin import delete_topics, ensure_topics
from octollm.kafka.consumer import consumer_config
from octollm.kafka.producer import producer_config
from octollm.settings import Settings, get_settings
from octollm.supervisor import kafka
from octollm.topics import TASKS, TopicSpec, full_name

N = int(os.environ.get("OCTO_BENCH_N", "100000"))
LATENCY_N = 1000
ROUNDS = int(os.environ.get("OCTO_BENCH_ROUNDS", "3"))


def make_tasks(n: int) -> list[TaskRequest]:
    context = ("Background: the service handles invoices for many tenants. " * 14)[:820]
    now = datetime.now(UTC)
    return [
        TaskRequest(
            task_id=uuid.uuid4(),
            tenant_id=f"tenant-{i % 50}",
            goal=f"Summarise invoice batch {i} and flag anomalies.",
            context=context,
            constraints=["be brief"],
            acceptance_criteria=["mentions the total"],
            created_at=now,
        )
        for i in range(n)
    ]


def bare_encoder() -> tuple[bytes, dict[str, object]]:
    schema = get_schema("TaskRequest")
    return b"\xc3\x01" + schema.fingerprint_bytes, schema.parsed


def produce_loop(
    settings: Settings, topic: str, items: Iterator[tuple[str | None, bytes]]
) -> float:
    """The bare confluent-kafka loop; `items` is lazy, so producing them is timed too."""
    producer = Producer(producer_config(settings, client_id="bench-bare"))
    producer.produce(topic, b"warm-up")  # connect and get the idempotence PID before timing
    producer.flush(30)
    start = time.perf_counter()
    for key, value in items:
        while True:
            try:
                producer.produce(topic, value, key=key)
                break
            except BufferError:
                producer.poll(0.01)
        producer.poll(0)
    producer.flush(120)
    return time.perf_counter() - start


def bare_produce(settings: Settings, topic: str, records: list[dict[str, object]]) -> float:
    header, parsed = bare_encoder()

    def encoded() -> Iterator[tuple[str | None, bytes]]:
        for rec in records:
            buf = io.BytesIO()
            buf.write(header)
            fastavro.schemaless_writer(buf, parsed, rec)
            yield str(rec["task_id"]), buf.getvalue()

    return produce_loop(settings, topic, encoded())


def raw_produce(settings: Settings, topic: str, values: list[bytes]) -> float:
    return produce_loop(settings, topic, ((None, v) for v in values))


def bare_consume(settings: Settings, topic: str, expected: int) -> float:
    _, parsed = bare_encoder()
    consumer = Consumer(consumer_config(settings, client_id="bench-bare"))
    # Manual assignment from the beginning, as the SDK's records() does: no group join timed.
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
    got = 0
    start = time.perf_counter()
    while got < expected:
        for msg in consumer.consume(num_messages=1000, timeout=1.0):
            if msg.error() is None:
                value = msg.value()
                if value == b"warm-up":
                    continue
                fastavro.schemaless_reader(io.BytesIO(value[10:]), parsed, parsed)
                got += 1
    elapsed = time.perf_counter() - start
    consumer.close()
    return elapsed


async def sdk_run(settings: Settings, tasks: list[TaskRequest]) -> tuple[float, float, list[float]]:
    async with OctoClient(settings, client_id="bench-sdk") as octo:
        await octo.submit(make_tasks(1)[0])  # the same warm-up as the bare loop gets
        start = time.perf_counter()
        # Batches in flight together, as a producing service would keep them.
        await asyncio.gather(
            *(octo.submit_many(tasks[i : i + 5000]) for i in range(0, len(tasks), 5000))
        )
        produce_s = time.perf_counter() - start

        got = 0
        start = time.perf_counter()
        async for _ in octo.records(TASKS, start="beginning", stop_at_end=True):
            got += 1
        consume_s = time.perf_counter() - start
        assert got == len(tasks) + 1, f"SDK read back {got} of {len(tasks) + 1}"

        latencies = []
        for task in make_tasks(LATENCY_N):
            t0 = time.perf_counter()
            await octo.submit(task)
            latencies.append((time.perf_counter() - t0) * 1000)
    return produce_s, consume_s, latencies


def bare_latency(settings: Settings, topic: str, tasks: list[TaskRequest]) -> list[float]:
    header, parsed = bare_encoder()
    producer = Producer(producer_config(settings, client_id="bench-bare-latency"))
    latencies = []
    for task in tasks:
        buf = io.BytesIO()
        buf.write(header)
        fastavro.schemaless_writer(buf, parsed, task.to_avro())
        t0 = time.perf_counter()
        producer.produce(topic, buf.getvalue(), key=str(task.task_id))
        producer.flush(10)
        latencies.append((time.perf_counter() - t0) * 1000)
    return latencies


def main() -> None:
    base = get_settings()
    for line in kafka.up(base).lines():
        print(line)
    tasks = make_tasks(N)
    records = [t.to_avro() for t in tasks]
    header, parsed = bare_encoder()
    size = len(header) + len(fastavro_bytes(parsed, records[0]))
    payloads = [os.urandom(size) for _ in range(N)]
    print(
        f"\nmoving {N:,} TaskRequests of {size} bytes each, {ROUNDS} round(s), median shown "
        f"({len(base.bootstrap_servers.split(','))} broker(s), {base.partitions} partitions)"
    )
    runs: dict[str, list[float]] = {k: [] for k in ("sdk_p", "sdk_c", "bare_p", "bare_c", "raw_p")}
    for _ in range(ROUNDS):
        run_id = uuid.uuid4().hex[:8]
        sdk_s, bare_s, raw_s = (
            base.model_copy(update={"topic_prefix": f"bench-{run_id}.{side}."})
            for side in ("sdk", "bare", "raw")
        )
        topics = [full_name(s, TASKS) for s in (sdk_s, bare_s, raw_s)]
        for s in (sdk_s, bare_s, raw_s):
            ensure_topics(s, [TopicSpec(TASKS, "benchmark")])
        try:
            runs["bare_p"].append(N / bare_produce(bare_s, topics[1], records))
            runs["raw_p"].append(N / raw_produce(raw_s, topics[2], payloads))
            sdk_p, sdk_c, sdk_lat = asyncio.run(sdk_run(sdk_s, tasks))
            runs["sdk_p"].append(N / sdk_p)
            runs["sdk_c"].append(N / sdk_c)
            runs["bare_c"].append(N / bare_consume(bare_s, topics[1], N))
            bare_lat = bare_latency(bare_s, topics[1], make_tasks(LATENCY_N))
        finally:
            delete_topics(base, topics)

    med = {k: statistics.median(v) for k, v in runs.items()}
    target = "SDK >= 0.80 of bare"
    rows = [
        Row("produce (encode + send + ack)", med["sdk_p"], med["bare_p"], "/s", target),
        Row("consume (fetch + decode)", med["sdk_c"], med["bare_c"], "/s", target),
        Row("submit() ack latency p50", percentile(sdk_lat, 50), percentile(bare_lat, 50), "ms"),
        Row("submit() ack latency p99", percentile(sdk_lat, 99), percentile(bare_lat, 99), "ms"),
    ]
    print_table(
        "SDK (OctoClient) vs bare confluent-kafka + fastavro",
        rows,
        [
            f"raw bytes, no encoding (client only): {med['raw_p']:,.0f} /s produce",
            "per-round produce ratios: "
            + ", ".join(f"{a / b:.2f}" for a, b in zip(runs["sdk_p"], runs["bare_p"], strict=True)),
            f"peak RSS of this process (holds all {N:,} tasks): {peak_rss_mb():.0f} MB",
            "SDK produce = concurrent submit_many() calls of 5,000 TaskRequest models "
            "(model -> Avro single-object); bare = fastavro on prepared dicts; latency: last "
            f"round, {LATENCY_N} sequential submits vs produce()+flush()",
        ],
    )


def fastavro_bytes(parsed: dict[str, object], record: dict[str, object]) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, parsed, record)
    return buf.getvalue()
