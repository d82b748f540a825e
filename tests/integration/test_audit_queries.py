"""Audit queries over a real chDB: trace, stats and search on realistic rows, and the one-owner
rule: while this process owns the store, the CLI (a subprocess) is answered by the endpoint
with the same JSON; once nobody owns it, the CLI opens it itself."""

from __future__ import annotations

import json
import random
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from octollm.audit import queries
from octollm.audit.endpoint import Endpoint, serve_in_thread
from octollm.audit.reader import LocalReader
from octollm.audit.store import AuditStore, open_store
from octollm.settings import Settings
from tests.conftest import OCTOLLM, cli_env, free_port

pytestmark = pytest.mark.integration

EVENT_COLUMNS = [
    "event_id", "task_id", "tenant_id", "stage", "component", "ts", "status", "duration_ms",
    "generation", "details", "src_topic", "src_partition", "src_offset",
]  # fmt: skip
RESULT_COLUMNS = [
    "task_id", "generation", "tenant_id", "status", "reason", "output", "steps", "prompt_tokens",
    "completion_tokens", "cost_usd", "created_at", "completed_at", "component", "src_topic",
    "src_partition", "src_offset",
]  # fmt: skip
# What the orchestrator emits, in order (the reflex's `routed` comes before `received`).
STAGES = [
    ("routed", "reflex"),
    ("received", "orchestrator"),
    ("planned", "orchestrator"),
    ("dispatched", "orchestrator"),
    ("arm_result", "orchestrator"),
    ("judged", "orchestrator"),
    ("safety_checked", "orchestrator"),
    ("completed", "orchestrator"),
]
NS = uuid.UUID("6f1c1a8e-1b5e-4c1e-9a55-0d6c2f3f7a01")
# Whole seconds: the store keeps milliseconds, the comparisons below need exact times.
T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
SINCE, UNTIL = T0 - timedelta(minutes=30), T0 + timedelta(minutes=30)
FAILED = {4, 7}
REASON = "judge rejected the answer: Missing Unit Tests"


@dataclass
class Seeded:
    settings: Settings
    store: AuditStore
    events: list[dict[str, Any]]  # distinct rows, as inserted
    results: list[dict[str, Any]]
    task_ids: list[str]
    old_task: str


def _task_rows(
    rng: random.Random, i: int, task_id: str, start: datetime, generation: int
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    tenant = "globex" if i % 3 == 0 else "acme"
    failed = i in FAILED
    arm = "coder" if i % 2 else "retriever"
    route = "priority" if i % 4 == 0 else "orchestrator"
    events = []
    ts = start
    for n, (stage, component) in enumerate(STAGES):
        details: dict[str, str] = {}
        if stage in ("routed", "received"):
            details["route"] = route
        if stage in ("dispatched", "arm_result"):
            details.update(arm=arm, step_id="s1")
        if stage == "judged":
            details["verdict"] = "reject" if failed else "accept"
        status = "OK"
        if stage == "completed":
            status = "FAILED" if failed else "SUCCEEDED"
            if failed:
                details["reason"] = REASON
        duration = None if stage in ("received", "dispatched") else rng.randint(1, 900)
        events.append(
            {
                "event_id": str(uuid.uuid5(NS, f"{task_id}/{stage}/{generation}")),
                "task_id": task_id,
                "tenant_id": tenant,
                "stage": stage,
                "component": component,
                "ts": ts,
                "status": status,
                "duration_ms": duration,
                "generation": generation,
                "details": details,
                "src_topic": "octo.audit.v1",
                "src_partition": i % 3,
                "src_offset": i * 100 + n,
            }
        )
        ts += timedelta(milliseconds=rng.randint(5, 400))
    result = {
        "task_id": task_id,
        "generation": generation,
        "tenant_id": tenant,
        "status": "FAILED" if failed else "SUCCEEDED",
        "reason": REASON if failed else None,
        "output": None if failed else f"def add(a, b):\n    return a + b  # task {i}",
        "steps": "[]",
        "prompt_tokens": 100 + i,
        "completion_tokens": 20 + i,
        "cost_usd": 0.0,
        "created_at": start,
        "completed_at": events[-1]["ts"],
        "component": "orchestrator",
        "src_topic": "octo.results.v1",
        "src_partition": i % 3,
        "src_offset": i,
    }
    return events, result


def _insert(store: AuditStore, events: list[dict[str, Any]], results: list[dict[str, Any]]) -> None:
    store.insert("audit_events", [[e[c] for c in EVENT_COLUMNS] for e in events], EVENT_COLUMNS)
    store.insert("task_results", [[r[c] for c in RESULT_COLUMNS] for r in results], RESULT_COLUMNS)


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seeded]:
    root = tmp_path_factory.mktemp("audit-queries")
    settings = Settings(data_dir=root, audit_data_dir=root / "chdb", audit_port=free_port())
    store = open_store(settings)
    rng = random.Random(6)
    events: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []
    task_ids = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(12)]
    for i, task_id in enumerate(task_ids):
        e, r = _task_rows(rng, i, task_id, T0 + timedelta(seconds=i), 0)
        events += e
        results.append(r)
    # Task 0 replayed ten minutes later: generation 1, its own ids.
    e, r = _task_rows(rng, 0, task_ids[0], T0 + timedelta(minutes=10), 1)
    events += e
    results.append(r)
    # A task two days old: outside the stats window.
    old_task = str(uuid.uuid4())
    e, r = _task_rows(rng, 1, old_task, T0 - timedelta(days=2), 0)
    events += e
    results.append(r)
    _insert(store, events, results)
    # A redelivered batch: the same rows again (other Kafka offsets), never shown twice.
    again = [e for e in events if e["task_id"] in task_ids[:3]]
    _insert(
        store,
        [{**e, "src_offset": e["src_offset"] + 10_000} for e in again],
        [r for r in results if r["task_id"] in task_ids[:3]],
    )
    try:
        yield Seeded(settings, store, events, results, task_ids, old_task)
    finally:
        store.close()


# --- trace ------------------------------------------------------------------------------------


def test_trace_has_every_stage_in_order_once(seeded: Seeded) -> None:
    task = seeded.task_ids[4]  # a failed one
    rows = queries.trace(seeded.store, task)
    assert [r["stage"] for r in rows] == [s for s, _ in STAGES] + ["result"]
    assert [r["kind"] for r in rows] == ["stage"] * len(STAGES) + ["result"]
    expected = [e for e in seeded.events if e["task_id"] == task]
    for row, event in zip(rows, expected, strict=False):
        assert row["component"] == event["component"]
        assert row["status"] == event["status"]
        assert row["duration_ms"] == event["duration_ms"]
        assert row["details"] == event["details"]
        assert row["ts"] == queries.iso(event["ts"])
    assert rows[-2]["details"]["reason"] == REASON
    assert rows[-1]["status"] == "FAILED"
    assert rows[-1]["details"]["reason"] == REASON
    assert rows[-1]["duration_ms"] == int(
        (expected[-1]["ts"] - expected[0]["ts"]).total_seconds() * 1000
    )


def test_trace_shows_redelivered_rows_once_and_each_generation(seeded: Seeded) -> None:
    rows = queries.trace(seeded.store, seeded.task_ids[0])  # inserted twice, and replayed
    stages = [(r["generation"], r["stage"]) for r in rows]
    per_generation = [s for s, _ in STAGES] + ["result"]
    assert stages == [(0, s) for s in per_generation] + [(1, s) for s in per_generation]
    assert rows == sorted(rows, key=lambda r: r["ts"])


def test_trace_of_unknown_task_is_empty(seeded: Seeded) -> None:
    assert queries.trace(seeded.store, str(uuid.uuid4())) == []
    # A value that would break a formatted query is only a parameter.
    assert queries.trace(seeded.store, "x' OR 1=1 --") == []


# --- stats ------------------------------------------------------------------------------------


def _expected_stats(seeded: Seeded, key: str) -> dict[str, dict[str, Any]]:
    in_window = [e for e in seeded.events if SINCE <= e["ts"] < UNTIL]
    groups: dict[str, list[dict[str, Any]]] = {}
    for e in in_window:
        groups.setdefault(e[key], []).append(e)
    seconds = (UNTIL - SINCE).total_seconds()
    out = {}
    for name, members in groups.items():
        durations = [e["duration_ms"] for e in members if e["duration_ms"] is not None]
        p50, p95, p99 = np.percentile(durations, [50, 95, 99])  # linear, as quantilesExactInclusive
        out[name] = {
            "events": len(members),
            "tasks": len({e["task_id"] for e in members}),
            "rate_per_s": round(len(members) / seconds, 6),
            "timed": len(durations),
            "p50_ms": round(float(p50), 3),
            "p95_ms": round(float(p95), 3),
            "p99_ms": round(float(p99), 3),
        }
    return out


@pytest.mark.parametrize(("by", "key"), [("tenant", "tenant_id"), ("status", "status")])
def test_stats_counts_rates_and_percentiles(seeded: Seeded, by: str, key: str) -> None:
    got = queries.stats(seeded.store, SINCE, UNTIL, by)
    expected = _expected_stats(seeded, key)
    assert {g["key"]: {k: v for k, v in g.items() if k not in ("by", "key")} for g in got} == (
        expected
    )
    assert [g["events"] for g in got] == sorted((g["events"] for g in got), reverse=True)


def test_stats_by_route_arm_and_stage(seeded: Seeded) -> None:
    by_route = {g["key"]: g for g in queries.stats(seeded.store, SINCE, UNTIL, "route")}
    # Tasks 0, 4 and 8 go the priority route; task 0 twice (its replay).
    assert by_route["priority"]["tasks"] == 3
    assert by_route["priority"]["events"] == 4 * len(STAGES)
    assert by_route["orchestrator"]["events"] == 9 * len(STAGES)
    by_arm = {g["key"]: g for g in queries.stats(seeded.store, SINCE, UNTIL, "arm")}
    assert set(by_arm) == {"coder", "retriever"}
    assert by_arm["coder"]["events"] == 2 * 6  # tasks 1,3,5,7,9,11: dispatched + arm_result
    by_stage = {g["key"]: g for g in queries.stats(seeded.store, SINCE, UNTIL, "stage")}
    assert by_stage["received"]["events"] == 13 and by_stage["received"]["p50_ms"] is None


def test_stats_rejects_bad_arguments(seeded: Seeded) -> None:
    with pytest.raises(queries.QueryInputError, match="--by"):
        queries.stats(seeded.store, SINCE, UNTIL, "colour")
    with pytest.raises(queries.QueryInputError, match="later than"):
        queries.stats(seeded.store, UNTIL, SINCE, "tenant")


# --- search -----------------------------------------------------------------------------------


def test_search_filters(seeded: Seeded) -> None:
    s = seeded.store
    everything = queries.search(s, limit=1000)
    assert len(everything) == len(seeded.results)  # duplicates once, each generation once
    times = [r["completed_at"] for r in everything]
    assert times == sorted(times, reverse=True)
    failed = queries.search(s, status="failed")
    assert {r["task_id"] for r in failed} == {seeded.task_ids[i] for i in FAILED}
    assert all(r["reason"] == REASON for r in failed)
    globex = queries.search(s, tenant="globex", since=SINCE, until=UNTIL)
    assert {r["task_id"] for r in globex} == {seeded.task_ids[i] for i in (0, 3, 6, 9)}
    assert len(globex) == 5  # task 0 twice: generations 0 and 1
    old = queries.search(s, until=SINCE)
    assert [r["task_id"] for r in old] == [seeded.old_task]
    assert len(queries.search(s, limit=3)) == 3


def test_search_contains_any_case_in_output_reason_or_details(seeded: Seeded) -> None:
    s = seeded.store
    by_output = queries.search(s, contains="# TASK 5")
    assert [(r["task_id"], r["matched"]) for r in by_output] == [(seeded.task_ids[5], "output")]
    by_reason = queries.search(s, contains="missing unit")
    assert {r["matched"] for r in by_reason} == {"reason"}
    assert len(by_reason) == len(FAILED)
    # "priority" is only in the route detail of audit events (tasks 0, 4, 8; 0 replayed).
    by_details = queries.search(s, contains="PRIORITY", since=SINCE)
    assert {r["task_id"] for r in by_details} == {seeded.task_ids[i] for i in (0, 4, 8)}
    assert {r["matched"] for r in by_details} == {"details"}
    assert queries.search(s, contains="no such text anywhere") == []


# --- the endpoint and the CLI -----------------------------------------------------------------


def _cli(seeded: Seeded, *args: str, port: int | None = None) -> subprocess.CompletedProcess[str]:
    env = cli_env(
        seeded.settings,
        OCTO_AUDIT_DATA_DIR=str(seeded.settings.audit_store_dir),
        OCTO_AUDIT_PORT=str(port or seeded.settings.audit_port),
    )
    return subprocess.run(
        [OCTOLLM, "audit", *args], env=env, capture_output=True, text=True, timeout=120
    )


@pytest.fixture(scope="module")
def endpoint(seeded: Seeded) -> Iterator[Endpoint]:
    served = serve_in_thread(seeded.store, seeded.settings)
    try:
        yield served
    finally:
        served.stop()


def _window_args() -> list[str]:
    return ["--since", queries.iso(SINCE), "--until", queries.iso(UNTIL)]


def test_endpoint_routes(seeded: Seeded, endpoint: Endpoint) -> None:
    with httpx.Client(base_url=endpoint.url, trust_env=False) as http:
        health = http.get("/healthz").json()
        assert health["status"] == "ok" and health["migrations"] == [1]
        metrics = http.get("/metrics")
        assert metrics.status_code == 200 and "python_info" in metrics.text
        task = seeded.task_ids[2]
        trace = http.get(f"/v1/trace/{task}").json()
        assert trace["rows"] == queries.trace(seeded.store, task)
        assert http.get(f"/v1/trace/{uuid.uuid4()}").status_code == 404
        bad = http.get("/v1/stats", params={"since": "yesterday"})
        assert bad.status_code == 400 and "since" in bad.json()["error"]
        assert http.get("/v1/stats", params={"by": "colour"}).status_code == 400
        assert http.get("/v1/nothing").status_code == 404


def test_cli_is_answered_by_the_endpoint_while_this_process_owns_chdb(
    seeded: Seeded, endpoint: Endpoint
) -> None:
    local = LocalReader(seeded.store)
    task = seeded.task_ids[7]
    trace = _cli(seeded, "trace", task, "--json")
    assert trace.returncode == 0, trace.stderr
    assert json.loads(trace.stdout) == local.trace(task)
    stats = _cli(seeded, "stats", *_window_args(), "--by", "tenant", "--json")
    assert stats.returncode == 0, stats.stderr
    assert json.loads(stats.stdout) == local.stats(SINCE, UNTIL, "tenant")
    search = _cli(seeded, "search", "--contains", "missing", "--status", "FAILED", "--json")
    assert search.returncode == 0, search.stderr
    expected = local.search(
        tenant=None, status="FAILED", since=None, until=None, contains="missing", limit=50
    )
    assert json.loads(search.stdout) == expected and len(expected) == len(FAILED)
    table = _cli(seeded, "trace", task)
    assert table.returncode == 0 and "judged" in table.stdout and "Missing Unit" in table.stdout
    unknown = _cli(seeded, "trace", str(uuid.UUID(int=1)))
    assert unknown.returncode == 1
    assert unknown.stderr.strip().splitlines() == [
        f"octollm: error: no audit record of task {uuid.UUID(int=1)} in "
        f"chdb:{seeded.settings.audit_store_dir.resolve()} via {endpoint.url}"
    ]
    migrate = _cli(seeded, "migrate")
    assert migrate.returncode == 0, migrate.stderr
    assert "owns" in migrate.stdout and "up to date" in migrate.stdout


def test_cli_without_the_endpoint_while_chdb_is_owned_says_so(seeded: Seeded) -> None:
    done = _cli(seeded, "trace", seeded.task_ids[1], port=free_port())
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "is owned by process" in lines[0], done.stderr


def test_cli_opens_chdb_itself_when_nobody_owns_it(seeded: Seeded, endpoint: Endpoint) -> None:
    task = seeded.task_ids[3]
    expected = queries.trace(seeded.store, task)
    expected_stats = LocalReader(seeded.store).stats(SINCE, UNTIL, "status")
    endpoint.stop()
    seeded.store.close()  # this process lets go of the engine
    trace = _cli(seeded, "trace", task, "--json")
    assert trace.returncode == 0, trace.stderr
    assert json.loads(trace.stdout) == expected
    stats = _cli(seeded, "stats", *_window_args(), "--by", "status", "--json")
    assert json.loads(stats.stdout) == expected_stats
    migrate = _cli(seeded, "migrate")
    assert migrate.returncode == 0 and "up to date" in migrate.stdout, migrate.stderr
    assert not Path(seeded.settings.audit_store_dir / "status").exists()
