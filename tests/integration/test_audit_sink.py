"""The audit sink on the real Kafka fixture and a real chDB store in a temporary directory.

chDB allows one owning process per data directory (and one directory per process at a time), so
each test opens its own store and closes it; the SIGKILL test reads the store only after the
sink subprocess has exited.
"""

from __future__ import annotations

import hashlib
import json
import logging
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition
from prometheus_client import REGISTRY

from octollm.audit.rows import COLUMNS
from octollm.audit.sink import GROUP, SOURCE_TOPICS, AuditSink, Backoff
from octollm.audit.store import AuditStore, open_store
from octollm.codec import Codec
from octollm.contracts.models import AuditEvent, DeadLetter, TaskResult, TaskStatus
from octollm.kafka.admin import ensure_topics
from octollm.kafka.consumer import consumer_config
from octollm.kafka.headers import REPLAY_GENERATION
from octollm.kafka.producer import Headers, Producer
from octollm.settings import Settings
from octollm.topics import AUDIT, DLQ, RESULTS, TASKS, full_name, topic_specs
from tests.conftest import OCTOLLM, cli_env, free_port

pytestmark = pytest.mark.integration

codec = Codec()
NOW = datetime.now(UTC)


# --- helpers ------------------------------------------------------------------------------------


def event(i: int, run: str) -> AuditEvent:
    return AuditEvent(
        event_id=f"{run}-e{i}",
        task_id=str(uuid.uuid5(uuid.NAMESPACE_OID, f"{run}-{i % 97}")),
        tenant_id=f"tenant-{i % 5}",
        stage="planned",
        component="orchestrator",
        ts=NOW,
        status="OK",
        duration_ms=i,
        details={"i": str(i)},
    )


def result(i: int) -> TaskResult:
    return TaskResult(
        task_id=uuid.uuid5(uuid.NAMESPACE_OID, f"result-{i}"),
        tenant_id="acme",
        status=TaskStatus.SUCCEEDED,
        output=f"answer {i}",
        created_at=NOW,
        completed_at=NOW,
        component="orchestrator",
    )


def letter(i: int) -> DeadLetter:
    return DeadLetter(
        dead_letter_id=uuid.uuid5(uuid.NAMESPACE_OID, f"dl-{i}"),
        original_topic="octo.tasks.v1",
        original_partition=0,
        original_offset=i,
        payload=b"\x00broken",
        error_class="TruncatedBody",
        reason="the body ends early",
        component="reflex",
        ts=NOW,
    )


def produce(
    settings: Settings, topic: str, items: Sequence[tuple[str | None, bytes, Headers | None]]
) -> None:
    producer = Producer(settings, client_id="test-audit")
    for key, value, headers in items:
        producer.produce(topic, value, key=key, headers=headers)
    producer.flush(60)


def encoded(models: Sequence[Any]) -> list[tuple[str | None, bytes, Headers | None]]:
    return [(str(getattr(m, "task_id", "")), codec.encode(m), None) for m in models]


def wait_for(check: Callable[[], bool], what: str, timeout: float = 120.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def count(store: AuditStore, table: str, where: str = "1") -> int:
    return int(store.rows(f"SELECT count() AS n FROM {table} FINAL WHERE {where}")[0]["n"])


class Offsets:
    """The sink group's committed offsets and the topics' ends, read without joining the group."""

    def __init__(self, settings: Settings) -> None:
        self.consumer = Consumer(
            consumer_config(settings, group_id=f"{settings.topic_prefix}{GROUP}")
        )

    def _parts(self, topic: str) -> list[TopicPartition]:
        meta = self.consumer.list_topics(topic, timeout=10).topics[topic]
        return [TopicPartition(topic, p) for p in meta.partitions]

    def committed(self, topic: str) -> int:
        got = self.consumer.committed(self._parts(topic), timeout=10)
        return sum(max(tp.offset, 0) for tp in got)

    def end(self, topic: str) -> int:
        return sum(
            self.consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in self._parts(topic)
        )

    def caught_up(self, topics: Sequence[str]) -> bool:
        return all(self.committed(t) == self.end(t) for t in topics)

    def close(self) -> None:
        self.consumer.close()


@pytest.fixture
def settings(isolated: Settings, tmp_path: Path) -> Settings:
    s = isolated.model_copy(
        update={"audit_data_dir": tmp_path / "chdb", "audit_batch_rows": 500, "audit_batch_s": 0.2}
    )
    ensure_topics(s, [spec for spec in topic_specs(s) if spec.name in SOURCE_TOPICS])
    return s


@pytest.fixture
def store(settings: Settings) -> Iterator[AuditStore]:
    opened = open_store(settings)
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture
def offsets(settings: Settings) -> Iterator[Offsets]:
    o = Offsets(settings)
    yield o
    o.close()


@contextmanager
def running(sink: AuditSink) -> Iterator[AuditSink]:
    stop = threading.Event()
    errors: list[BaseException] = []

    def target() -> None:
        try:
            sink.run(stop)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=target, name="audit-sink-test")
    thread.start()
    try:
        yield sink
    finally:
        stop.set()
        thread.join(60)
        assert not thread.is_alive(), "the sink did not stop"
    assert not errors, errors


# --- 1. each event once, even when delivered twice ----------------------------------------------


def test_events_results_and_dead_letters_land_once(
    settings: Settings, store: AuditStore, offsets: Offsets
) -> None:
    run = uuid.uuid4().hex[:6]
    audit, results, dlq = (full_name(settings, t) for t in (AUDIT, RESULTS, DLQ))
    events = [event(i, run) for i in range(300)]
    replayed: list[tuple[str | None, bytes, Headers | None]] = [
        (str(r.task_id), codec.encode(r), [(REPLAY_GENERATION, b"1")])
        for r in (result(i) for i in range(10))
    ]
    batches = {
        audit: encoded(events),
        results: encoded([result(i) for i in range(20)]) + replayed,
        dlq: encoded([letter(i) for i in range(5)]),
    }
    with running(AuditSink(settings, store)):
        for topic, items in batches.items():
            produce(settings, topic, items)
        wait_for(lambda: offsets.caught_up(list(batches)), "the first delivery to be committed")
        assert count(store, "audit_events") == 300
        assert count(store, "task_results") == 30
        assert count(store, "task_results", "generation = 1") == 10
        assert count(store, "dead_letters") == 5

        # Redelivery (a producer retry, a replay with the same identities): still once each.
        for topic, items in batches.items():
            produce(settings, topic, items)
        wait_for(lambda: offsets.caught_up(list(batches)), "the second delivery to be committed")

    assert count(store, "audit_events") == 300
    assert count(store, "task_results") == 30
    assert count(store, "dead_letters") == 5
    ids = {r["event_id"] for r in store.rows("SELECT event_id FROM audit_events FINAL")}
    assert ids == {e.event_id for e in events}
    row = store.rows(f"SELECT * FROM audit_events FINAL WHERE event_id = '{run}-e7'")[0]
    assert (row["stage"], row["duration_ms"], row["details"]) == ("planned", 7, {"i": "7"})
    assert row["src_topic"] == audit
    stored = store.rows("SELECT payload_bytes, payload_sha256 FROM dead_letters FINAL LIMIT 1")[0]
    assert stored["payload_sha256"] == hashlib.sha256(b"\x00broken").hexdigest()


# --- 2. SIGKILL mid-stream, restart: every event exactly once ------------------------------------


def test_sigkill_mid_stream_loses_and_doubles_nothing(settings: Settings, offsets: Offsets) -> None:
    n = 20_000
    run = uuid.uuid4().hex[:6]
    audit = full_name(settings, AUDIT)
    produce(settings, audit, encoded([event(i, run) for i in range(n)]))
    env = cli_env(
        settings,
        OCTO_AUDIT_DATA_DIR=str(settings.audit_store_dir),
        OCTO_AUDIT_BATCH_ROWS="100",  # many small batches: the kill lands between two of them
        OCTO_AUDIT_BATCH_S="0.2",
    )
    argv = [OCTOLLM, "worker", "audit"]
    log_path = settings.data_dir / f"audit-sink-{run}.log"

    def start() -> subprocess.Popen[bytes]:
        with log_path.open("ab") as log_file:
            return subprocess.Popen(argv, env=env, stdout=log_file, stderr=subprocess.STDOUT)

    first = start()
    try:
        wait_for(lambda: offsets.committed(audit) >= 1_000, "the first batches to be stored")
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(30)
    at_kill = offsets.committed(audit)
    assert 0 < at_kill < n, f"the kill was not mid-stream: {at_kill} of {n} committed"

    # The killed member holds its partitions until its session times out (45 s by default),
    # then the group rebalances to the new one.
    second = start()
    try:
        wait_for(
            lambda: offsets.committed(audit) == n, "the restarted sink to catch up", timeout=240
        )
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(60)
        print(log_path.read_text()[-5000:])  # shown only when the test fails
    assert second.returncode == 0, log_path.read_text()

    # Only now, with the sink gone, may this process open the store.
    store = open_store(settings)
    try:
        assert count(store, "audit_events") == n
        unique = store.rows("SELECT uniqExact(event_id) AS u FROM audit_events")[0]["u"]
        assert unique == n
        ids = {r["event_id"] for r in store.rows("SELECT event_id FROM audit_events FINAL")}
        assert ids == {f"{run}-e{i}" for i in range(n)}
    finally:
        store.close()


# --- 3. the store unavailable for a while: back off, then catch up ------------------------------


class FlakyStore:
    """The real store behind a switch: while `down` is set, every insert fails before reaching
    chDB (fault injection around the real store, which stays the one that answers queries)."""

    def __init__(self, store: AuditStore) -> None:
        self.store = store
        self.where = store.where
        self.down = threading.Event()
        self.failed_at: list[float] = []

    def insert(self, table: str, rows: Any, columns: Any) -> None:
        if self.down.is_set():
            self.failed_at.append(time.monotonic())
            raise ConnectionError("Connection refused (injected)")
        self.store.insert(table, rows, columns)


def lag(topic: str, partitions: int) -> float:
    return sum(
        REGISTRY.get_sample_value("octo_audit_lag_records", {"topic": topic, "partition": str(p)})
        or 0.0
        for p in range(partitions)
    )


def test_store_outage_backs_off_then_catches_up(
    settings: Settings, store: AuditStore, offsets: Offsets, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="octollm.audit.sink")
    run = uuid.uuid4().hex[:6]
    audit = full_name(settings, AUDIT)
    flaky = FlakyStore(store)
    flaky.down.set()
    errors_before = REGISTRY.get_sample_value("octo_audit_store_errors_total") or 0.0
    backoff = Backoff(initial_s=0.05, max_s=0.4)
    sink = AuditSink(settings, flaky, backoff=backoff, lag_interval_s=0.1)
    with running(sink):
        produce(settings, audit, encoded([event(i, run) for i in range(3000)]))
        wait_for(lambda: len(flaky.failed_at) >= 6, "the sink to retry a few times")
        produce(settings, audit, encoded([event(i, run) for i in range(3000, 6000)]))
        wait_for(lambda: lag(audit, settings.partitions) >= 6000, "the lag gauge to show it all")
        assert count(store, "audit_events") == 0
        assert offsets.committed(audit) == 0, "offsets were committed without an insert"

        flaky.down.clear()
        wait_for(lambda: offsets.caught_up([audit]), "the sink to catch up")
        wait_for(lambda: lag(audit, settings.partitions) == 0, "the lag gauge to fall to 0")

    assert count(store, "audit_events") == 6000
    assert store.rows("SELECT uniqExact(event_id) AS u FROM audit_events")[0]["u"] == 6000
    # Backed off: every wait between two failed tries was at least the back-off's delay.
    gaps = [b - a for a, b in zip(flaky.failed_at, flaky.failed_at[1:], strict=False)]
    for gap, delay in zip(gaps, backoff.delays(), strict=False):
        assert gap >= delay * 0.95
    errors = (REGISTRY.get_sample_value("octo_audit_store_errors_total") or 0.0) - errors_before
    assert errors == len(flaky.failed_at)
    # One line when the outage starts and one when it ends, not one per retry.
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert sum("cannot store the batch" in m for m in said) == 1, said
    assert sum("is back after" in m for m in said) == 1, said


# --- 4. an undecodable record goes to the DLQ and the sink keeps going ---------------------------


def test_undecodable_record_is_dead_lettered_and_the_sink_goes_on(
    settings: Settings, store: AuditStore, offsets: Offsets
) -> None:
    run = uuid.uuid4().hex[:6]
    audit, dlq = full_name(settings, AUDIT), full_name(settings, DLQ)
    garbage = b"goal: mail jane.doe@example.com"  # not a record, and holding raw PII
    with running(AuditSink(settings, store)):
        produce(settings, audit, encoded([event(0, run)]))
        produce(settings, audit, [("k-bad", garbage, [("origin", b"test")])])
        produce(settings, audit, encoded([event(1, run)]))
        wait_for(
            lambda: count(store, "dead_letters") == 1 and offsets.caught_up([audit, dlq]),
            "the dead letter to be stored",
        )
        assert count(store, "audit_events") == 2
        produce(settings, audit, encoded([event(2, run)]))
        wait_for(lambda: count(store, "audit_events") == 3, "the next event to be stored")

    row = store.rows("SELECT * FROM dead_letters FINAL")[0]
    assert row["original_topic"] == audit
    assert (row["error_class"], row["component"]) == ("UnknownFormat", "audit")
    assert row["payload_bytes"] == len(garbage)
    assert row["payload_sha256"] == hashlib.sha256(garbage).hexdigest()
    assert row["src_topic"] == dlq
    assert "jane.doe" not in repr(row)
    assert set(row) >= set(COLUMNS["dead_letters"])

    # The raw bytes are kept on the DLQ topic (for `octollm dlq show/retry`), once.
    reader = Consumer(consumer_config(settings))
    parts = reader.list_topics(dlq, timeout=10).topics[dlq].partitions
    reader.assign([TopicPartition(dlq, p, 0) for p in parts])
    letters = []
    for msg in reader.consume(num_messages=100, timeout=5):
        if msg.error() is None:
            letters.append(codec.decode_model(msg.value()))
    reader.close()
    assert len(letters) == 1
    assert isinstance(letters[0], DeadLetter)
    assert letters[0].payload == garbage and letters[0].headers == {"origin": "test"}


# --- 6. a dead letter keyed by a task id is in that task's trace ---------------------------------


def test_trace_finds_a_dead_lettered_task_by_its_key(settings: Settings, tmp_path: Path) -> None:
    """Real reflex binary → real sink → real chDB → `octollm audit trace --json`: a record
    keyed by a task id that fails to decode (bad UTF-8, cut short) is in that task's trace; a
    record whose key is no task id is audited under no task."""
    from tests.integration.test_reflex_stream import running_reflex, task

    ensure_topics(settings, topic_specs(settings))
    tasks_topic = full_name(settings, TASKS)
    bad_utf8, cut = task("AAAA first"), task("Summarise the notes.")
    raw = codec.encode(bad_utf8, topic=TASKS)
    assert raw.count(b"AAAA") == 1
    records = [
        (str(bad_utf8.task_id), raw.replace(b"AAAA", b"\xff\xfe\xfd\xfc"), "InvalidUtf8"),
        (str(cut.task_id), codec.encode(cut, topic=TASKS)[:-5], "TruncatedBody"),
        ("order-17", codec.encode(task("x"), topic=TASKS)[:-5], "TruncatedBody"),
    ]
    store = open_store(settings)
    try:
        with (
            running_reflex(settings, tmp_path, "--instance", "dl"),
            running(AuditSink(settings, store)),
        ):
            produce(settings, tasks_topic, [(k, v, None) for k, v, _ in records])
            wait_for(
                lambda: (
                    count(store, "audit_events", "stage = 'dead_lettered'") == 3
                    and count(store, "dead_letters") == 3
                ),
                "three dead letters in the audit store",
            )
        stored = store.rows(
            "SELECT task_id, details FROM audit_events FINAL WHERE stage = 'dead_lettered'"
        )
        letters = {
            r["dead_letter_id"]: r["error_class"]
            for r in store.rows("SELECT dead_letter_id, error_class FROM dead_letters FINAL")
        }
    finally:
        store.close()  # let go of chDB: the CLI opens it itself
    assert sorted(r["task_id"] for r in stored) == sorted(
        ["", str(bad_utf8.task_id), str(cut.task_id)]
    )

    env = cli_env(
        settings,
        OCTO_AUDIT_DATA_DIR=str(settings.audit_store_dir),
        OCTO_AUDIT_PORT=str(free_port()),
    )
    for key, _, error_class in records[:2]:
        done = subprocess.run(
            [OCTOLLM, "audit", "trace", key, "--json"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        [row] = json.loads(done.stdout)
        assert (row["kind"], row["stage"], row["status"]) == ("stage", "dead_lettered", "FAILED")
        assert row["component"] == "reflex"
        assert row["details"]["error_class"] == error_class
        assert letters[row["details"]["dead_letter_id"]] == error_class
        assert row["details"]["source_topic"] == tasks_topic
