"""Workers' /metrics and /healthz, and the endpoint files `status` and Prometheus read."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry, Counter

from octollm.ops.endpoint import (
    Endpoint,
    Heartbeat,
    MetricsEndpoint,
    endpoints_dir,
    known_endpoints,
    prometheus_targets_dir,
    record_endpoint,
    recorded_endpoints,
    serve_worker,
)
from octollm.settings import Settings

pytestmark = pytest.mark.unit


def test_serves_metrics_and_health() -> None:
    registry = CollectorRegistry()
    Counter("octollm_test_things_total", "things", registry=registry).inc(3)
    heartbeat = Heartbeat(stale_after_s=60)
    endpoint = MetricsEndpoint(heartbeat.check, registry)
    url = endpoint.start(0)
    try:
        assert url.startswith("http://127.0.0.1:")
        with httpx.Client(trust_env=False) as client:
            metrics = client.get(f"{url}/metrics")
            assert metrics.status_code == 200
            assert "octollm_test_things_total 3.0" in metrics.text
            starting = client.get(f"{url}/healthz")
            assert starting.status_code == 503 and "starting" in starting.text
            heartbeat.beat()
            healthy = client.get(f"{url}/healthz")
            assert (healthy.status_code, healthy.text) == (200, "ok\n")
            assert client.get(f"{url}/nope").status_code == 404
    finally:
        endpoint.stop()


def test_stale_heartbeat_is_unhealthy() -> None:
    heartbeat = Heartbeat(stale_after_s=0)
    heartbeat.beat()
    healthy, detail = heartbeat.check()
    assert not healthy and "silent" in detail


def test_files_are_written_read_and_stale_ones_removed(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    ours = Endpoint("arm.judge", os.getpid(), "http://127.0.0.1:12345")
    paths = record_endpoint(settings, ours)
    assert json.loads(paths[0].read_text()) == {
        "component": "arm.judge",
        "pid": os.getpid(),
        "url": "http://127.0.0.1:12345",
    }
    assert json.loads(paths[1].read_text()) == [
        {
            "targets": ["127.0.0.1:12345"],
            "labels": {"component": "arm.judge", "pid": str(os.getpid())},
        }
    ]
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    dead_pid = int(dead.stdout)
    record_endpoint(settings, Endpoint("orchestrator", dead_pid, "http://127.0.0.1:1"))
    (endpoints_dir(settings) / "junk.json").write_text("{not json")
    assert recorded_endpoints(settings) == [ours]
    assert not (endpoints_dir(settings) / f"orchestrator-{dead_pid}.json").exists()
    assert not (prometheus_targets_dir(settings) / f"orchestrator-{dead_pid}.json").exists()


def test_known_endpoints_are_reflex_audit_then_workers(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, audit_port=9999, reflex_metrics_addr="127.0.0.1:9464")
    record_endpoint(settings, Endpoint("orchestrator", os.getpid(), "http://127.0.0.1:4000"))
    # the same URL twice (e.g. a sink that also records itself) is listed once
    record_endpoint(settings, Endpoint("audit", os.getpid(), "http://127.0.0.1:9999"))
    assert [(e.component, e.url) for e in known_endpoints(settings)] == [
        ("reflex", "http://127.0.0.1:9464"),
        ("audit", "http://127.0.0.1:9999"),
        ("orchestrator", "http://127.0.0.1:4000"),
    ]
    off = settings.model_copy(update={"reflex_metrics_addr": "0"})
    assert "reflex" not in [e.component for e in known_endpoints(off)]


def test_a_taken_port_leaves_the_worker_running_without_metrics(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = Settings(data_dir=tmp_path, metrics_port=port)
        assert serve_worker(settings, "arm.coder") is None
    assert recorded_endpoints(settings) == []


def test_serve_worker_records_its_endpoint(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    endpoint = serve_worker(settings, "arm.coder")
    assert endpoint is not None
    try:
        [found] = recorded_endpoints(settings)
        assert found == Endpoint("arm.coder", os.getpid(), endpoint.url)
        assert httpx.get(f"{endpoint.url}/healthz", trust_env=False).status_code == 200
    finally:
        endpoint.stop()
