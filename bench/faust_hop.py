"""One Faust hop (consume → small transform → produce) against a raw aiokafka loop doing the same,
on the real local broker, in the same run. Figures only: nothing here is asserted.

Both sides read the same N pre-produced records from a topic of their own and write the reversed
bytes to another; the clock runs from the first record consumed to the last one acknowledged, so
start-up and group joins are not timed. The Faust hop runs as a real worker subprocess (the way
`octollm worker` runs), at least once like the arms and, in a second row, exactly once with our
keyed transactions like the orchestrator.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from confluent_kafka import Producer

from bench.report import Row, print_table
from octollm.kafka.admin import delete_topics, ensure_topics
from octollm.kafka.producer import producer_config
from octollm.settings import Settings, get_settings
from octollm.supervisor import kafka
from octollm.topics import TopicSpec, full_name

N = int(os.environ.get("OCTO_BENCH_HOP_N", "50000"))
SIZE = 512
ROOT = Path(__file__).resolve().parent.parent
IN, OUT = "bench.hop.in", "bench.hop.out"


def fill(settings: Settings, n: int) -> None:
    p = Producer(producer_config(settings, client_id="bench-fill"))
    payload = os.urandom(SIZE)
    topic = full_name(settings, IN)
    for i in range(n):
        while True:
            try:
                p.produce(topic, payload, key=f"task-{i}".encode())
                break
            except BufferError:
                p.poll(0.05)
    assert p.flush(60) == 0


async def raw_hop(settings: Settings, n: int) -> float:
    consumer = AIOKafkaConsumer(
        full_name(settings, IN),
        bootstrap_servers=settings.bootstrap_servers,
        group_id=f"{settings.topic_prefix}raw",
        auto_offset_reset="earliest",
        max_poll_records=1000,
    )
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, linger_ms=1)
    await consumer.start()
    await producer.start()
    out = full_name(settings, OUT)
    seen = 0
    began = 0.0
    try:
        while seen < n:
            batches = await consumer.getmany(timeout_ms=500, max_records=1000)
            for records in batches.values():
                if not began:
                    began = time.perf_counter()
                for r in records:
                    await producer.send(out, r.value[::-1], key=r.key)
                    seen += 1
        await producer.flush()
        return n / (time.perf_counter() - began)
    finally:
        await producer.stop()
        await consumer.stop()


def faust_hop(settings: Settings, n: int, exactly_once: bool) -> float:
    env = {
        **os.environ,
        "OCTO_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
        "OCTO_TOPIC_PREFIX": settings.topic_prefix,
        "OCTO_PARTITIONS": str(settings.partitions),
    }
    mode = "eos" if exactly_once else "alo"
    out = subprocess.run(
        [sys.executable, "-m", "bench.faust_hop", "_worker", str(n), mode],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    for line in out.stdout.splitlines():
        if line.startswith("RATE "):
            return float(line.split()[1])
    raise RuntimeError(
        f"the Faust hop did not report a rate:\n{out.stdout[-2000:]}{out.stderr[-2000:]}"
    )


def _worker(n: int, mode: str) -> None:
    """The Faust side, in its own process: hop n records, print the rate, stop."""
    import faust

    from octollm.runtime.app import create_app, run_worker, topic, use_keyed_transactions

    settings = get_settings()
    app = create_app(settings, "bench-hop", exactly_once=mode == "eos")
    if mode == "eos":
        use_keyed_transactions(app, settings, IN)
    source, sink = topic(app, settings, IN), topic(app, settings, OUT)
    state = {"seen": 0, "began": 0.0}

    @app.agent(source)
    async def hop(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            if not state["seen"]:
                state["began"] = time.perf_counter()
            await sink.send(key=event.key, value=event.value[::-1])
            state["seen"] += 1
            if state["seen"] == n:
                await app.producer.flush()
                if mode == "eos":
                    await app.consumer.commit()  # the last outputs are visible only once committed
                print(f"RATE {n / (time.perf_counter() - state['began']):.1f}", flush=True)
                os.kill(os.getpid(), 15)

    run_worker(app, "error")


def main() -> None:
    base = get_settings()
    for line in kafka.up(base).lines():
        print(line)
    print(f"\nhopping {N:,} records of {SIZE} bytes ({base.partitions} partitions)")
    rates: dict[str, float] = {}
    for name in ("raw", "faust", "faust_eos"):
        s = base.model_copy(update={"topic_prefix": f"bench-{uuid.uuid4().hex[:8]}.{name}."})
        ensure_topics(s, [TopicSpec(IN, "benchmark"), TopicSpec(OUT, "benchmark")])
        try:
            fill(s, N)
            if name == "raw":
                rates[name] = asyncio.run(raw_hop(s, N))
            else:
                rates[name] = faust_hop(s, N, exactly_once=name == "faust_eos")
        finally:
            delete_topics(s, [full_name(s, IN), full_name(s, OUT)])
    rows = [
        Row("Faust hop, at least once", rates["faust"], rates["raw"], "/s", ">=5k/s, >=0.5 of raw"),
        Row("Faust hop, exactly once (keyed txn)", rates["faust_eos"], rates["raw"], "/s", ""),
    ]
    print_table(
        "Faust hop vs raw aiokafka loop (consume → reverse bytes → produce)",
        rows,
        [
            "baseline: AIOKafkaConsumer.getmany + AIOKafkaProducer.send in one loop, same records",
            "clock: first record consumed → last output acknowledged (committed, for exactly once)",
        ],
    )


if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == "_worker":
    _worker(int(sys.argv[2]), sys.argv[3])


# --- the orchestrator's machinery, with instant arms ------------------------------------------
#
# MACHINERY BENCHMARK: no LLM. The arms below answer at once with fixed outputs (a one-step plan,
# a constant step output, a passing judge, a passing safety check), so what is measured is the
# orchestrator, the arm runtime, Kafka and the transactions: a task crosses the orchestrator four
# times (plan, step, judge, safety) and each crossing waits for a transaction commit.

MACHINE_ARMS = ("m_planner", "m_coder", "m_judge", "m_safety")
MACHINE_N = int(os.environ.get("OCTO_BENCH_MACHINE_N", "1000"))
LATENCY_RATE = float(os.environ.get("OCTO_BENCH_MACHINE_RATE", "50"))
#: A light load too: latency there is the machinery's floor (hops and the commit wait), not
#: the queue in front of a saturated worker.
LIGHT_RATE = 10.0


def _machine_arm(name: str) -> Any:
    import json

    from octollm.runtime.arm import Arm, ArmOutput

    outputs = {
        "m_planner": json.dumps(
            {"steps": [{"id": "s", "arm": "m_coder", "instruction": "x", "depends_on": []}]}
        ),
        "m_coder": "def add(a, b):\n    return a + b\n",
        "m_judge": json.dumps({"passed": True, "score": 1.0, "reasons": []}),
    }
    caps = {"m_planner": "plan", "m_coder": "code", "m_judge": "judge", "m_safety": "safety"}

    class Instant(Arm):
        capabilities = frozenset({caps[name]})

        async def handle(self, request: Any, ctx: Any) -> Any:
            if name == "m_safety":
                text = request.inputs["output"]
                return ArmOutput(output=json.dumps({"verdict": "pass", "output": text}))
            return ArmOutput(output=outputs[name])

    Instant.name = name
    return Instant()


def _profile_on_exit(kind: str) -> None:
    """`OCTO_BENCH_PROFILE=DIR`: profile this worker (cProfile, CPU) and dump DIR/<kind>.prof
    when it exits (Faust's worker exits the process on SIGTERM)."""
    folder = os.environ.get("OCTO_BENCH_PROFILE")
    if not folder:
        return
    import atexit
    import cProfile

    profiler = cProfile.Profile()
    profiler.enable()
    atexit.register(lambda: profiler.dump_stats(str(Path(folder) / f"{kind}.prof")))


def _machine_worker(kind: str) -> None:
    from octollm.orchestrator.agent import Orchestrator
    from octollm.runtime.app import run_worker
    from octollm.runtime.arm import build_arm_app

    _profile_on_exit(kind)
    settings = get_settings()
    if kind == "orchestrator":
        caps = {n: _machine_arm(n).capabilities for n in MACHINE_ARMS}
        orchestrator = Orchestrator(settings, caps)
        orchestrator.ensure_topics()
        run_worker(orchestrator.app, "error")
    else:
        run_worker(build_arm_app(settings, _machine_arm(kind)), "error")


def _routed(i: int) -> Any:
    from datetime import UTC, datetime

    from octollm.contracts.models import InjectionVerdict, RoutedTask, TaskRequest

    now = datetime.now(UTC)
    task = TaskRequest(task_id=uuid.uuid4(), tenant_id="bench", goal=f"add {i}", created_at=now)
    return RoutedTask(
        task=task,
        route="orchestrator",
        tags=["code"],
        injection=InjectionVerdict(),
        reflex_version="bench",
        received_at=now,
    )


def _machine_round(settings: Settings, n: int, rate: float | None) -> tuple[float, list[float]]:
    """Produce n tasks (all at once, or paced at `rate`/s); return (tasks/s, latencies in ms)."""
    import threading

    from confluent_kafka import Consumer, TopicPartition

    from octollm.codec import Codec
    from octollm.kafka.consumer import consumer_config
    from octollm.topics import RESULTS, routed

    codec = Codec.from_settings(settings)
    topic = full_name(settings, routed("orchestrator"))
    results = full_name(settings, RESULTS)
    consumer = Consumer(consumer_config(settings))
    meta = consumer.list_topics(results, timeout=10)
    ends = {
        p: consumer.get_watermark_offsets(TopicPartition(results, p))[1]
        for p in meta.topics[results].partitions
    }
    consumer.assign([TopicPartition(results, p, o) for p, o in ends.items()])
    sent: dict[str, float] = {}
    tasks = [_routed(i) for i in range(n)]

    def send() -> None:
        p = Producer(producer_config(settings, client_id="bench-machine"))
        for i, t in enumerate(tasks):
            if rate:
                time.sleep(max(0.0, i / rate - (time.perf_counter() - began)))
            sent[str(t.task.task_id)] = time.perf_counter()
            p.produce(topic, codec.encode(t, topic=topic), key=str(t.task.task_id))
            p.poll(0)
        p.flush(60)

    began = time.perf_counter()
    sender = threading.Thread(target=send)
    sender.start()
    latencies: list[float] = []
    last = began
    deadline = began + 300
    while len(latencies) < n and time.perf_counter() < deadline:
        msg = consumer.poll(0.2)
        if msg is None or msg.error():
            continue
        key = msg.key().decode()
        if key in sent:
            last = time.perf_counter()
            latencies.append((last - sent[key]) * 1000)
    sender.join()
    consumer.close()
    if len(latencies) < n:
        raise RuntimeError(f"only {len(latencies)} of {n} results within 300 s")
    return n / (last - began), latencies


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far (Linux /proc): unlike rates, not skewed much by
    other work sharing the machine's cores."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machinery_main() -> None:
    from bench.report import percentile

    base = get_settings()
    for line in kafka.up(base).lines():
        print(line)
    s = base.model_copy(update={"topic_prefix": f"bench-{uuid.uuid4().hex[:8]}.machine."})
    s = s.model_copy(update={"arms": (*s.arms, *MACHINE_ARMS)})
    from octollm.topics import topic_specs

    ensure_topics(s, topic_specs(s))
    env = {
        **os.environ,
        "OCTO_BOOTSTRAP_SERVERS": s.bootstrap_servers,
        "OCTO_TOPIC_PREFIX": s.topic_prefix,
        "OCTO_PARTITIONS": str(s.partitions),
    }
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "bench.faust_hop", "_machine", kind],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for kind in (*MACHINE_ARMS, "orchestrator")
    ]
    try:
        _machine_round(s, 20, None)  # warm-up: every worker has joined and answered
        cpu_before = [_cpu_seconds(p.pid) for p in procs]
        rate, _ = _machine_round(s, MACHINE_N, None)
        cpu = [
            (_cpu_seconds(p.pid) - c) * 1000 / MACHINE_N
            for p, c in zip(procs, cpu_before, strict=True)
        ]
        _, lat = _machine_round(s, int(LATENCY_RATE * 10), LATENCY_RATE)
        _, light = _machine_round(s, int(LIGHT_RATE * 10), LIGHT_RATE)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(30)
    print_table(
        "MACHINERY benchmark (no LLM: instant fixed-answer arms), 1 orchestrator worker",
        [
            Row("tasks/s, burst of tasks", rate, 1000.0, "/s", ">=1k tasks/s per worker"),
            Row("orchestrator CPU per task, burst", cpu[-1], 1.0, "ms", "<=1 ms (1k/s on a core)"),
            Row("4 arm workers' CPU per task, burst", sum(cpu[:-1]), 1.0, "ms"),
            Row(f"produce→result p50 at {LATENCY_RATE:g}/s", percentile(lat, 50), 50.0, "ms"),
            Row(
                f"produce→result p99 at {LATENCY_RATE:g}/s",
                percentile(lat, 99),
                50.0,
                "ms",
                "p99 <= 50 ms at 500/s",
            ),
            Row(f"produce→result p50 at {LIGHT_RATE:g}/s", percentile(light, 50), 50.0, "ms"),
            Row(f"produce→result p99 at {LIGHT_RATE:g}/s", percentile(light, 99), 50.0, "ms"),
        ],
        [
            "baseline column: the issue's target, not a measurement",
            f"{MACHINE_N} tasks for the rate; a task = plan, 1 step, judge, safety; exactly once",
            "CPU: user+system time of the worker processes during the burst (/proc), per task;"
            " OCTO_BENCH_PROFILE=DIR dumps a cProfile of each worker there",
        ],
    )


if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == "_machine":
    _machine_worker(sys.argv[2])
