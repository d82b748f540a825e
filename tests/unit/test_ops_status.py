"""`octollm status` arithmetic (lag, rates, which groups are ours) and health checks."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from octollm.ops.endpoint import Endpoint, Heartbeat, MetricsEndpoint
from octollm.ops.status import GroupState, Report, Sample, check_all, group_rows, topic_rows
from octollm.settings import Settings
from tests.conftest import free_port

pytestmark = pytest.mark.unit

T = "p.octo.tasks.v1"
R = "p.octo.results.v1"


def sample(
    at: float,
    high: dict[tuple[str, int], int],
    committed: dict[tuple[str, int], int],
    lag: dict[tuple[str, int], int],
) -> Sample:
    groups = {
        "p.octo-orchestrator": GroupState("p.octo-orchestrator", "stable", 2, committed, lag),
        "q.octo-orchestrator": GroupState("q.octo-orchestrator", "stable", 1, {}),
    }
    return Sample(at, high, groups)


def test_lag_is_records_still_to_consume_summed_over_partitions() -> None:
    # partition 0: 6 offsets behind, of which 1 is a transaction marker (the probe reads them)
    now = sample(
        10.0, {(T, 0): 10, (T, 1): 5, (R, 0): 3}, {(T, 0): 4, (T, 1): 5}, {(T, 0): 5, (T, 1): 0}
    )
    [row] = [r for r in group_rows(now, None, "p.") if r["group"] == "p.octo-orchestrator"]
    assert row["lag"] == 5 and row["members"] == 2 and row["state"] == "stable"
    assert row["topics"] == [{"topic": T, "lag": 5, "out_per_s": None}]


def test_rates_are_deltas_over_the_interval() -> None:
    before = sample(
        10.0, {(T, 0): 10, (T, 1): 5, (R, 0): 3}, {(T, 0): 4, (T, 1): 5}, {(T, 0): 6, (T, 1): 0}
    )
    after = sample(
        12.0, {(T, 0): 20, (T, 1): 9, (R, 0): 3}, {(T, 0): 10, (T, 1): 8}, {(T, 0): 10, (T, 1): 1}
    )
    rows = {r["topic"]: r for r in topic_rows(after, before, "p.")}
    assert rows[T] == {"topic": T, "end_offset": 29, "in_per_s": 7.0}
    assert rows[R]["in_per_s"] == 0.0
    group = next(r for r in group_rows(after, before, "p.") if r["group"] == "p.octo-orchestrator")
    assert group["topics"] == [{"topic": T, "lag": 11, "out_per_s": 4.5}]
    assert group["lag"] == 11


def test_without_a_prefix_only_octo_groups_and_topics_count() -> None:
    now = Sample(
        1.0,
        {("octo.tasks.v1", 0): 5, ("other", 0): 9},
        {
            "octo-arm-judge": GroupState("octo-arm-judge", "empty", 0, {}),
            "billing": GroupState("billing", "stable", 1, {("other", 0): 1}),
            "reader": GroupState("reader", "empty", 0, {("octo.tasks.v1", 0): 2}),
        },
    )
    assert [r["group"] for r in group_rows(now, None, "")] == ["octo-arm-judge", "reader"]
    assert [r["topic"] for r in topic_rows(now, None, "")] == ["octo.tasks.v1"]


def test_report_as_json_document() -> None:
    doc = Report(audit_group="p.octo-audit", audit_lag=3, dlq_count=2).as_dict()
    assert doc["audit"] == {"group": "p.octo-audit", "lag": 3}
    assert doc["dlq"] == {"count": 2}


def test_health_up_unhealthy_and_down(tmp_path: Path) -> None:
    heartbeat = Heartbeat()
    heartbeat.beat()
    up, unhealthy = MetricsEndpoint(heartbeat.check), MetricsEndpoint(Heartbeat().check)
    try:
        endpoints = [
            Endpoint("orchestrator", os.getpid(), up.start(0)),
            Endpoint("arm.judge", os.getpid(), unhealthy.start(0)),
            Endpoint("reflex", None, f"http://127.0.0.1:{free_port()}"),
        ]
        a, b, c = check_all(endpoints, timeout_s=2)
    finally:
        up.stop()
        unhealthy.stop()
    assert a.up and a.detail == "ok" and a.latency_ms is not None
    assert not b.up and b.detail.startswith("HTTP 503: starting")
    assert not c.up and c.latency_ms is None and c.detail
    assert Settings().metrics_port == 0
