"""Audit sink: rows/s from Kafka into chDB beside a bare insert loop, and audit lag at 5k events/s.

Throughput: N AuditEvents are produced first, then the sink (decode, batch, insert, commit) is
timed from its partition assignment until its committed offsets reach the end. The baseline
inserts the same rows, already built, straight into chDB in batches of the same size: the
store's own ceiling. Lag: events produced at a steady rate, each stamped with its send time;
lag = `inserted_at` (the row became visible) - `ts`. Figures only: nothing here is asserted.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from confluent_kafka import Consumer, TopicPartition

from bench.report import Row, peak_rss_mb, print_table
from octollm.audit.rows import AUDIT_EVENTS, COLUMNS, Source, to_row
from octollm.audit.sink import GROUP, SOURCE_TOPICS, AuditSink
from octollm.audit.store import AuditStore, open_store
from octollm.codec import Codec
from octollm.contracts.models import AuditEvent
from octollm.kafka.admin import delete_topics, ensure_topics
from octollm.kafka.consumer import consumer_config
from octollm.kafka.producer import Producer
from octollm.settings import Settings, get_settings
from octollm.supervisor import kafka
from octollm.topics import AUDIT, full_name, topic_specs

N = int(os.environ.get("OCTO_BENCH_N", "200000"))
RATE = int(os.environ.get("OCTO_BENCH_AUDIT_RATE", "5000"))
LAG_S = float(os.environ.get("OCTO_BENCH_AUDIT_LAG_S", "20"))


def make_event(run: str, i: int, ts: datetime) -> AuditEvent:
    return AuditEvent(
        event_id=f"{run}-{i}",
        task_id=str(uuid.uuid5(uuid.NAMESPACE_OID, f"{run}-{i // 8}")),
        tenant_id=f"tenant-{i % 50}",
        stage=("received", "routed", "planned", "dispatched", "judged", "completed")[i % 6],
        component="orchestrator",
        ts=ts,
        status="OK",
        duration_ms=i % 900,
        details={"route": "orchestrator", "arm": "planner", "step_id": f"s{i % 4}"},
    )


class Committed:
    """The sink group's committed offsets on a topic, read without joining the group."""

    def __init__(self, settings: Settings) -> None:
        group = f"{settings.topic_prefix}{GROUP}"
        self.consumer = Consumer(consumer_config(settings, group_id=group))

    def __call__(self, topic: str) -> int:
        parts = self.consumer.list_topics(topic, timeout=10).topics[topic].partitions
        got = self.consumer.committed([TopicPartition(topic, p) for p in parts], timeout=10)
        return sum(max(tp.offset, 0) for tp in got)


def run_sink_until(settings: Settings, store: AuditStore, topic: str, total: int) -> float:
    """Run the sink until `total` records of `topic` are committed; seconds from assignment."""
    sink = AuditSink(settings, store)
    stop = threading.Event()
    thread = threading.Thread(target=sink.run, args=(stop,), name="bench-audit-sink")
    thread.start()
    committed = Committed(settings)
    while not sink.assigned:
        time.sleep(0.005)
    start = time.perf_counter()
    while committed(topic) < total:
        time.sleep(0.02)
    elapsed = time.perf_counter() - start
    stop.set()
    thread.join(60)
    return elapsed


def throughput(base: Settings, store: AuditStore, codec: Codec) -> tuple[float, float, float]:
    settings = base.model_copy(update={"topic_prefix": f"bench-audit-{uuid.uuid4().hex[:6]}."})
    ensure_topics(settings, [s for s in topic_specs(settings) if s.name in SOURCE_TOPICS])
    topic = full_name(settings, AUDIT)
    run = uuid.uuid4().hex[:6]
    now = datetime.now(UTC)
    values = [codec.encode(make_event(run, i, now)) for i in range(N)]
    producer = Producer(settings, client_id="bench-audit")
    for i, value in enumerate(values):
        producer.produce(topic, value, key=f"{run}-{i // 8}")
    producer.flush(120)
    try:
        sink_s = run_sink_until(settings, store, topic, N)
    finally:
        delete_topics(base, [full_name(settings, t) for t in SOURCE_TOPICS])

    # The same rows, decoded and built in advance, inserted in the sink's batch size.
    start = time.perf_counter()
    rows = [to_row(codec.decode(v), Source(topic, 0, i))[1] for i, v in enumerate(values)]
    decode_s = time.perf_counter() - start
    rows = [(f"bare-{r[0]}", *r[1:]) for r in rows]  # other identities: no collapse into the sink's
    batch = base.audit_batch_rows
    start = time.perf_counter()
    for i in range(0, len(rows), batch):
        store.insert(AUDIT_EVENTS, rows[i : i + batch], COLUMNS[AUDIT_EVENTS])
    bare_s = time.perf_counter() - start
    return N / sink_s, N / bare_s, N / decode_s


def steady_lag(base: Settings, store: AuditStore, codec: Codec) -> list[float]:
    """Lag percentiles (p50, p99, max) in seconds at RATE events/s for LAG_S seconds."""
    settings = base.model_copy(update={"topic_prefix": f"bench-lag-{uuid.uuid4().hex[:6]}."})
    ensure_topics(settings, [s for s in topic_specs(settings) if s.name in SOURCE_TOPICS])
    topic = full_name(settings, AUDIT)
    run = uuid.uuid4().hex[:6]
    sink = AuditSink(settings, store)
    stop = threading.Event()
    thread = threading.Thread(target=sink.run, args=(stop,), name="bench-audit-lag")
    thread.start()
    committed = Committed(settings)
    while not sink.assigned:
        time.sleep(0.005)
    producer = Producer(settings, client_id="bench-audit-lag")
    tick = 0.05
    per_tick = int(RATE * tick)
    sent = 0
    start = time.monotonic()
    while (elapsed := time.monotonic() - start) < LAG_S:
        due = int(elapsed / tick) * per_tick
        while sent < due:
            event = make_event(run, sent, datetime.now(UTC))
            producer.produce(topic, codec.encode(event), key=event.task_id)
            sent += 1
        time.sleep(max(0.0, start + (int(elapsed / tick) + 1) * tick - time.monotonic()))
    producer.flush(60)
    while committed(topic) < sent:
        time.sleep(0.05)
    stop.set()
    thread.join(60)
    delete_topics(base, [full_name(settings, t) for t in SOURCE_TOPICS])
    got = store.rows(
        "SELECT quantileExact(0.5)(d) AS p50, quantileExact(0.99)(d) AS p99, max(d) AS mx, "
        "count() AS n FROM (SELECT dateDiff('millisecond', ts, inserted_at) AS d "
        "FROM audit_events FINAL WHERE startsWith(event_id, {p:String}))",
        {"p": f"{run}-"},
    )[0]
    print(f"  lag run: {got['n']:,} of {sent:,} events stored ({sent / LAG_S:,.0f}/s offered)")
    return [got["p50"] / 1000, got["p99"] / 1000, got["mx"] / 1000]


def main() -> None:
    base = get_settings()
    for line in kafka.up(base).lines():
        print(line)
    data = Path(tempfile.mkdtemp(prefix="octo-bench-audit-"))
    store = open_store(base.model_copy(update={"audit_data_dir": data}))
    codec = Codec.from_settings(base)
    try:
        sink_rate, bare_rate, decode_rate = throughput(base, store, codec)
        p50, p99, worst = steady_lag(base, store, codec)
    finally:
        store.close()
        shutil.rmtree(data, ignore_errors=True)
    print_table(
        "Audit sink: Kafka -> chDB (embedded) vs a bare chDB insert loop",
        [
            Row("sink rows/s (decode+insert+commit)", sink_rate, bare_rate, "/s", ">= 100,000 /s"),
            Row(f"audit lag p50 at {RATE:,}/s", p50, 0.0, "s"),
            Row(f"audit lag p99 at {RATE:,}/s", p99, 0.0, "s", "<= 2 s"),
            Row(f"audit lag max at {RATE:,}/s", worst, 0.0, "s"),
        ],
        [
            f"{N:,} AuditEvents; batches of {base.audit_batch_rows:,} rows or "
            f"{base.audit_batch_s:g} s; baseline = the same rows, pre-built, inserted straight",
            f"decode + row building alone (no Kafka, no insert): {decode_rate:,.0f} rows/s",
            f"lag = inserted_at - ts over {LAG_S:g} s at a steady {RATE:,} events/s",
            f"peak RSS of this process (sink, chDB engine and all {N:,} payloads): "
            f"{peak_rss_mb():.0f} MB",
        ],
    )
