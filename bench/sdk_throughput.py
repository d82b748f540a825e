"""SDK produce/consume throughput vs a bare confluent-kafka loop, on the real local broker.

Both sides move the same 100k ~1 KB TaskRequests and both Avro-encode/decode them (a bare
client has to serialise too); a raw-bytes row shows the client alone, for reference.
Figures only: nothing here is asserted.
"""

from __future__ import annotations

import asyncio
import io
import os
import time
import uuid
from datetime import UTC, datetime

import fastavro
from confluent_kafka import Consumer, Producer

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


def bare_produce(settings: Settings, topic: str, records: list[dict[str, object]]) -> float:
    header, parsed = bare_encoder()
    producer = Producer(producer_config(settings, client_id="bench-bare"))
    start = time.perf_counter()
    for rec in records:
        buf = io.BytesIO()
        buf.write(header)
        fastavro.schemaless_writer(buf, parsed, rec)
        while True:
            try:
                producer.produce(topic, buf.getvalue(), key=str(rec["task_id"]))
                break
            except BufferError:
                producer.poll(0.01)
        producer.poll(0)
    producer.flush(120)
    return time.perf_counter() - start


def raw_produce(settings: Settings, topic: str, values: list[bytes]) -> float:
    producer = Producer(producer_config(settings, client_id="bench-raw"))
    start = time.perf_counter()
    for value in values:
        while True:
            try:
                producer.produce(topic, value)
                break
            except BufferError:
                producer.poll(0.01)
        producer.poll(0)
    producer.flush(120)
    return time.perf_counter() - start


def bare_consume(settings: Settings, topic: str, expected: int) -> float:
    _, parsed = bare_encoder()
    consumer = Consumer(consumer_config(settings, client_id="bench-bare"))
    consumer.subscribe([topic])
    got = 0
    start = time.perf_counter()
    while got < expected:
        for msg in consumer.consume(num_messages=1000, timeout=1.0):
            if msg.error() is None:
                fastavro.schemaless_reader(io.BytesIO(msg.value()[10:]), parsed, parsed)
                got += 1
    elapsed = time.perf_counter() - start
    consumer.close()
    return elapsed


async def sdk_run(settings: Settings, tasks: list[TaskRequest]) -> tuple[float, float, list[float]]:
    async with OctoClient(settings, client_id="bench-sdk") as octo:
        start = time.perf_counter()
        for i in range(0, len(tasks), 5000):
            await octo.submit_many(tasks[i : i + 5000])
        produce_s = time.perf_counter() - start

        got = 0
        start = time.perf_counter()
        async for _ in octo.records(TASKS, start="beginning", stop_at_end=True):
            got += 1
        consume_s = time.perf_counter() - start
        assert got == len(tasks), f"SDK read back {got} of {len(tasks)}"

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
    run_id = uuid.uuid4().hex[:8]
    sdk_settings = base.model_copy(update={"topic_prefix": f"bench-{run_id}.sdk."})
    bare_settings = base.model_copy(update={"topic_prefix": f"bench-{run_id}.bare."})
    raw_settings = base.model_copy(update={"topic_prefix": f"bench-{run_id}.raw."})
    spec = [TopicSpec(TASKS, "benchmark")]
    topics = []
    for s in (sdk_settings, bare_settings, raw_settings):
        ensure_topics(s, spec)
        topics.append(full_name(s, TASKS))
    try:
        tasks = make_tasks(N)
        records = [t.to_avro() for t in tasks]
        size = len(bare_encoder()[0]) + len(fastavro_bytes(bare_encoder()[1], records[0]))
        print(
            f"\nmoving {N:,} TaskRequests of {size} bytes each "
            f"({len(base.bootstrap_servers.split(','))} broker(s), {base.partitions} partitions)"
        )

        bare_p = bare_produce(bare_settings, topics[1], records)
        raw_p = raw_produce(raw_settings, topics[2], [os.urandom(size) for _ in range(N)])
        sdk_p, sdk_c, sdk_lat = asyncio.run(sdk_run(sdk_settings, tasks))
        bare_c = bare_consume(bare_settings, topics[1], N)
        bare_lat = bare_latency(bare_settings, topics[1], make_tasks(LATENCY_N))

        rows = [
            Row(
                "produce (encode + send + ack)", N / sdk_p, N / bare_p, "/s", "SDK >= 0.80 of bare"
            ),
            Row("consume (fetch + decode)", N / sdk_c, N / bare_c, "/s", "SDK >= 0.80 of bare"),
            Row(
                "submit() ack latency p50", percentile(sdk_lat, 50), percentile(bare_lat, 50), "ms"
            ),
            Row(
                "submit() ack latency p99", percentile(sdk_lat, 99), percentile(bare_lat, 99), "ms"
            ),
        ]
        print_table(
            "SDK (OctoClient) vs bare confluent-kafka + fastavro",
            rows,
            [
                f"raw bytes, no encoding (client only): {N / raw_p:,.0f} /s produce",
                f"peak RSS of this process: {peak_rss_mb():.0f} MB",
                "SDK produce = submit_many() in chunks of 5,000 TaskRequest models "
                "(model -> Avro single-object); bare = fastavro on prepared dicts",
            ],
        )
    finally:
        delete_topics(base, topics)


def fastavro_bytes(parsed: dict[str, object], record: dict[str, object]) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, parsed, record)
    return buf.getvalue()
