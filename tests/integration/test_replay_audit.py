"""Replay through the pipeline and into the audit log, all real: Kafka, the reflex binary, the
audit sink (`octollm worker audit`) on chDB, and `octollm replay` from the command line.

Three batches of tasks are produced at three distinct times; replaying the middle batch's time
range sends exactly those tasks through the reflex layer again, as generation 1, and the audit
then holds every (task, generation) once: generation 0 for all, generation 1 for the middle.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from confluent_kafka import Producer

from octollm.audit.store import open_store
from octollm.codec import Codec
from octollm.kafka.admin import ensure_topics
from octollm.settings import Settings
from octollm.topics import TASKS, full_name, topic_specs
from tests.conftest import OCTOLLM, cli_env, free_port
from tests.integration.test_reflex_stream import running_reflex, task

pytestmark = pytest.mark.integration

BATCH = 5


def _produce_at(settings: Settings, when: datetime, n: int) -> list[str]:
    codec = Codec()
    producer = Producer({"bootstrap.servers": settings.bootstrap_servers, "acks": "all"})
    ids = []
    for i in range(n):
        t = task(f"Summarise the report of week {i}.")
        producer.produce(
            full_name(settings, TASKS),
            codec.encode(t, topic=TASKS),
            key=str(t.task_id).encode(),
            timestamp=int(when.timestamp() * 1000),
        )
        ids.append(str(t.task_id))
    assert producer.flush(30) == 0
    return ids


def _wait_until_stored(settings: Settings, audit_rows: int) -> None:
    """Until the sink reports `audit_rows` audit events inserted, on its own /metrics (the
    reflex layer writes one per task it decides on)."""
    url = f"http://127.0.0.1:{settings.audit_port}/metrics"
    deadline = time.monotonic() + 120
    inserted = 0.0
    while time.monotonic() < deadline:
        try:
            text = httpx.get(url, timeout=5).text
        except httpx.HTTPError:
            text = ""  # not listening yet
        for line in text.splitlines():
            if line.startswith('octo_audit_rows_inserted_total{table="audit_events"}'):
                inserted = float(line.rsplit(" ", 1)[1])
        if inserted >= audit_rows:
            return
        time.sleep(0.5)
    raise AssertionError(f"the audit sink stored {inserted:g} of {audit_rows} audit events")


def _wait_for_zero_lag(settings: Settings) -> None:
    url = f"http://127.0.0.1:{settings.audit_port}/metrics"
    deadline = time.monotonic() + 60
    lag = -1.0
    while time.monotonic() < deadline:
        samples = [
            float(line.rsplit(" ", 1)[1])
            for line in httpx.get(url, timeout=5).text.splitlines()
            if line.startswith("octo_audit_lag_records{")
        ]
        lag = sum(samples)
        if samples and lag == 0:
            return
        time.sleep(0.5)
    raise AssertionError(f"the audit sink stays {lag:g} record(s) behind")


def test_replayed_time_range_is_processed_again_and_audited_once_per_generation(
    isolated: Settings, tmp_path: Path
) -> None:
    ensure_topics(isolated, topic_specs(isolated))
    settings = isolated.model_copy(
        update={"audit_data_dir": tmp_path / "chdb", "audit_port": free_port()}
    )
    env = cli_env(
        settings,
        OCTO_AUDIT_DATA_DIR=str(settings.audit_data_dir),
        OCTO_AUDIT_PORT=str(settings.audit_port),
    )
    base = datetime.now(UTC) - timedelta(minutes=10)
    t0, t1, t2 = base, base + timedelta(minutes=1), base + timedelta(minutes=2)
    sink_log = (tmp_path / "sink.log").open("wb")
    sink = subprocess.Popen(
        [OCTOLLM, "worker", "audit"], env=env, stdout=sink_log, stderr=subprocess.STDOUT
    )
    try:
        with running_reflex(settings, tmp_path):
            first = _produce_at(settings, t0, BATCH)
            middle = _produce_at(settings, t1, BATCH)
            last = _produce_at(settings, t2, BATCH)
            _wait_until_stored(settings, 3 * BATCH)
            replay = subprocess.run(
                [
                    OCTOLLM,
                    "replay",
                    "--topic",
                    TASKS,
                    "--from-time",
                    t1.isoformat(),
                    "--to-time",
                    t2.isoformat(),
                ],
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert replay.returncode == 0, replay.stderr
            assert f"replayed {BATCH} event(s)" in replay.stdout, replay.stdout
            _wait_until_stored(settings, 4 * BATCH)
            # and the sink's group is not even one record behind: every partition the reflex
            # writes ends in a transaction marker, which the sink commits past when idle
            _wait_for_zero_lag(settings)
    finally:
        sink.send_signal(signal.SIGTERM)
        assert sink.wait(60) == 0, (tmp_path / "sink.log").read_text()[-3000:]
        sink_log.close()

    store = open_store(settings, migrate=False)  # the sink has exited: this process owns chDB
    try:
        rows = store.rows(
            "SELECT task_id, generation, count() AS n FROM audit_events FINAL "
            "WHERE stage = 'routed' GROUP BY task_id, generation"
        )
    finally:
        store.close()
    seen = Counter({(r["task_id"], r["generation"]): r["n"] for r in rows})
    assert set(seen.values()) == {1}, seen
    expected = {(t, 0) for t in first + middle + last} | {(t, 1) for t in middle}
    assert set(seen) == expected
