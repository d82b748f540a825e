"""`audit trace` latency over a big audit log (target p99 ≤ 20 ms over 10M rows).

The rows are generated inside chDB (`INSERT … SELECT FROM numbers()`: ten events per task, a
result per task, a month of timestamps, 50 tenants), so building 10M rows takes about a minute
rather than the hours a Python loop would. `OCTO_BENCH_ROWS` sets the number of events.

Figures for random task ids, beside a baseline in the same run, the bare
`SELECT … WHERE task_id = x` on both tables (no FINAL, no ordering): what the lookups cost before
the guarantees `trace` adds (duplicates collapsed, stage order, rows shaped for people).
`trace` is timed directly on the store (the CLI with CLICKHOUSE_URL, or chDB nobody owns) and
through the sink's endpoint over HTTP (the CLI in a running stack).
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from bench.report import Row, peak_rss_mb, percentile, print_table
from octollm.audit import queries
from octollm.audit.endpoint import serve_in_thread
from octollm.audit.reader import RemoteReader
from octollm.audit.store import AuditStore, open_store
from octollm.settings import Settings

ROWS = int(os.environ.get("OCTO_BENCH_ROWS", "10000000"))
QUERIES = int(os.environ.get("OCTO_BENCH_AUDIT_QUERIES", "300"))
EVENTS_PER_TASK = 10
TARGET_MS = 20.0

# One task's ten events: two plan steps, each dispatched and answered.
_STAGES = (
    "['routed','received','planned','dispatched','arm_result','dispatched','arm_result',"
    "'judged','safety_checked','completed']"
)
_TASK = f"intDiv(number, {EVENTS_PER_TASK})"
_TASK_ID = f"UUIDNumToString(MD5(toString({_TASK})))"
# Tasks spread over the last 30 days, a task's events 20 ms apart.
_EVENTS = f"""
INSERT INTO audit_events (event_id, task_id, tenant_id, stage, component, ts, status,
    duration_ms, generation, details, src_topic, src_partition, src_offset)
SELECT UUIDNumToString(MD5(concat('e', toString(number)))),
       {_TASK_ID},
       concat('tenant-', toString({_TASK} % 50)),
       {_STAGES}[number % {EVENTS_PER_TASK} + 1],
       if(number % {EVENTS_PER_TASK} = 0, 'reflex', 'orchestrator'),
       now64(3) - toIntervalMillisecond(2592000000 - {_TASK} * intDiv(2592000000, {{tasks:UInt64}})
           - (number % {EVENTS_PER_TASK}) * 20),
       if(number % {EVENTS_PER_TASK} = {EVENTS_PER_TASK - 1},
          if({_TASK} % 20 = 0, 'FAILED', 'SUCCEEDED'), 'OK'),
       if(number % 3 = 1, NULL, toInt64(number % 997)),
       0,
       map('route', if({_TASK} % 4 = 0, 'priority', 'orchestrator'),
           'arm', if(number % 2 = 0, 'coder', 'retriever'), 'step_id', 's1'),
       'octo.audit.v1', toInt32(number % 3), toInt64(number)
FROM numbers({{rows:UInt64}})
"""
_RESULTS = f"""
INSERT INTO task_results (task_id, generation, tenant_id, status, reason, output, steps,
    prompt_tokens, completion_tokens, cost_usd, created_at, completed_at, component, src_topic,
    src_partition, src_offset)
SELECT UUIDNumToString(MD5(toString(number))), 0, concat('tenant-', toString(number % 50)),
       if(number % 20 = 0, 'FAILED', 'SUCCEEDED'),
       if(number % 20 = 0, 'judge rejected the answer', NULL),
       if(number % 20 = 0, NULL, concat('def f(): return ', toString(number))),
       '[]', 100, 20, 0.0,
       now64(3) - toIntervalMillisecond(2592000000 - number * intDiv(2592000000, {{tasks:UInt64}})),
       now64(3) - toIntervalMillisecond(2592000000 - number * intDiv(2592000000, {{tasks:UInt64}})
           - {(EVENTS_PER_TASK - 1) * 20}),
       'orchestrator', 'octo.results.v1', toInt32(number % 3), toInt64(number)
FROM numbers({{tasks:UInt64}})
"""
_BASELINE_EVENTS = """
SELECT stage, component, status, duration_ms, generation, ts, details
FROM audit_events WHERE task_id = {task_id:String}
"""
_BASELINE_RESULTS = """
SELECT generation, status, reason, output, created_at, completed_at
FROM task_results WHERE task_id = {task_id:String}
"""


def task_id(n: int) -> str:
    """The id `_TASK_ID` gives task n (UUIDNumToString of the MD5 of its number)."""
    return str(uuid.UUID(bytes=hashlib.md5(str(n).encode()).digest()))


def build(store: AuditStore, rows: int) -> float:
    tasks = max(1, rows // EVENTS_PER_TASK)
    started = time.perf_counter()
    store.command(_EVENTS, {"rows": rows, "tasks": tasks})
    store.command(_RESULTS, {"tasks": tasks})
    return time.perf_counter() - started


def timed(call: Callable[[str], object], ids: list[str]) -> list[float]:
    for tid in ids[:10]:  # warm caches and the marks of each part
        call(tid)
    samples = []
    for tid in ids:
        started = time.perf_counter()
        call(tid)
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="octo-bench-audit-"))
    settings = Settings(data_dir=tmp)
    store = open_store(settings)
    endpoint = None
    try:
        build_s = build(store, ROWS)
        tasks = max(1, ROWS // EVENTS_PER_TASK)
        counted = store.rows("SELECT count() AS n FROM audit_events")[0]["n"]
        parts = store.rows(
            "SELECT count() AS n FROM system.parts WHERE table = 'audit_events' AND active"
        )[0]["n"]
        rng = random.Random(7)
        ids = [task_id(rng.randrange(tasks)) for _ in range(QUERIES)]
        assert len(queries.trace(store, ids[0])) == EVENTS_PER_TASK + 1, "generated rows differ"

        def bare(t: str) -> None:
            store.rows(_BASELINE_EVENTS, {"task_id": t})
            store.rows(_BASELINE_RESULTS, {"task_id": t})

        baseline = timed(bare, ids)
        direct = timed(lambda t: queries.trace(store, t), ids)
        endpoint = serve_in_thread(store, settings, port=0)
        remote = RemoteReader(endpoint.url, store.where)
        via_http = timed(remote.trace, ids)
        remote.close()
        rows = [
            Row(f"trace p50 ({QUERIES} random tasks)",
                percentile(direct, 50), percentile(baseline, 50), "ms", f"≤{TARGET_MS:.0f} ms"),
            Row("trace p99", percentile(direct, 99), percentile(baseline, 99), "ms",
                f"≤{TARGET_MS:.0f} ms"),
            Row("trace via endpoint p50", percentile(via_http, 50), percentile(baseline, 50), "ms"),
            Row("trace via endpoint p99", percentile(via_http, 99), percentile(baseline, 99), "ms",
                f"≤{TARGET_MS:.0f} ms"),
        ]  # fmt: skip
        print_table(
            f"audit trace over {counted:,} events ({tasks:,} tasks, {parts} active parts)",
            rows,
            [
                "baseline: the same two lookups bare (SELECT … WHERE task_id = x on each table: "
                "no FINAL, no order, no shaping), same store, same task ids",
                f"built in {build_s:.1f} s inside chDB ({ROWS / build_s:,.0f} rows/s, "
                "INSERT … SELECT FROM numbers())",
                "trace = 2 queries (events and results, FINAL, PREWHERE task_id) + shaping",
                f"peak RSS {peak_rss_mb():,.0f} MB",
            ],
        )
    finally:
        if endpoint is not None:
            endpoint.stop()
        store.close()
        shutil.rmtree(tmp, ignore_errors=True)
