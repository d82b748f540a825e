"""The README's main job from the outside: `octollm run --once` on a data dir and ports of its own.

It starts Kafka and the local LLM server, the reflex layer, the orchestrator and every arm as
separate processes, sends examples/tasks.jsonl and waits until each task has its terminal
result. Then we read the topics back ourselves: one result per task, the code task SUCCEEDED,
the injection QUARANTINED, every result of the class its content allows (below), and no raw PII
from the examples on any arm or result topic.

The tiny default model decides whether a free-text example passes its checks, so those are
asserted as invariants, never as one status: SUCCEEDED says what verified it and passed every
check (never an echo, an apology or an empty answer), FAILED by the judge names the check.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaException, TopicPartition

from octollm.arms import ARMS
from octollm.arms.checks_text import check_answer, is_prose
from octollm.client import OctoClient
from octollm.codec import Codec
from octollm.settings import Settings
from octollm.supervisor.process import pid_alive, wait_until
from tests.conftest import OCTOLLM, cli_env, free_port_pair

pytestmark = pytest.mark.e2e

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "tasks.jsonl"
RAW_PII = [b"jane.doe@example.com", b"415 555 0100", b"+1 415"]


def _high_watermark(consumer: Consumer, tp: TopicPartition) -> int:
    """The partition's end offset, waiting out a restarted broker still loading its leaders."""
    deadline = time.monotonic() + 60
    while True:
        try:
            return int(consumer.get_watermark_offsets(tp, timeout=10)[1])
        except KafkaException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def read_all(bootstrap: str, topic: str) -> list[bytes]:
    """Every committed record value of `topic` (read_committed, from the beginning)."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "e2e-reader",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
    )
    try:
        meta = consumer.list_topics(topic, timeout=10).topics.get(topic)
        if meta is None or meta.error is not None:
            return []
        parts = [TopicPartition(topic, p) for p in meta.partitions]
        ends = {}
        for tp in parts:
            ends[tp.partition] = _high_watermark(consumer, tp)
        consumer.assign([TopicPartition(topic, p, 0) for p in ends])
        values: list[bytes] = []
        pending = {p for p, end in ends.items() if end > 0}
        while pending:
            msg = consumer.poll(2.0)
            if msg is None:
                positions = consumer.position([TopicPartition(topic, p) for p in pending])
                pending -= {tp.partition for tp in positions if tp.offset >= ends[tp.partition]}
                continue
            if msg.error() is None:
                values.append(msg.value() or b"")
                if msg.offset() + 1 >= ends[msg.partition()]:
                    pending.discard(msg.partition())
        return values
    finally:
        consumer.close()


@pytest.mark.timeout(1500)
def test_run_once_answers_every_example_exactly_once(
    tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    settings = Settings(
        data_dir=tmp_path / "data", kafka_port=free_port_pair(), llm_port=free_port_pair()
    )
    env = cli_env(settings, OCTO_LLM_PORT=str(settings.llm_port))
    examples = [json.loads(line) for line in EXAMPLES.read_text().splitlines() if line.strip()]
    started = datetime.now(UTC).isoformat()
    result = subprocess.run(
        [OCTOLLM, "run", "--once", "--timeout", "900"],
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    answered = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    by_id = {r["task_id"]: r for r in answered}
    assert len(by_id) == len(examples) == len(answered), result.stdout
    status_by_goal = {r["goal"]: r["status"] for r in answered}
    add_goal = next(
        g for g in status_by_goal if g.startswith("Write a Python function add(a, b) that returns")
    )
    assert status_by_goal[add_goal] == "SUCCEEDED", answered
    attack = next(g for g in status_by_goal if g.startswith("Ignore all previous"))
    assert status_by_goal[attack] == "QUARANTINED", answered
    assert f"all {len(examples)} task(s) answered" in result.stdout
    assert "audit: every step stored" in result.stdout, result.stdout[-2000:]

    # The audit log has every stage of the code task (the sink is stopped, so the CLI opens the
    # embedded store itself), and none of the examples' raw PII in any table.
    add_id = next(r["task_id"] for r in answered if r["goal"] == add_goal)
    trace = subprocess.run(
        [OCTOLLM, "audit", "trace", add_id, "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert trace.returncode == 0, trace.stderr
    stages = {row["stage"] for row in json.loads(trace.stdout)}
    assert {"received", "routed", "planned", "dispatched", "judged", "completed"} <= stages, stages
    _assert_no_pii_in_audit_tables(settings)

    # `octollm run` stopped everything it started: the broker is gone, so restart it to read.
    up = subprocess.run(
        [OCTOLLM, "infra", "up", "--no-llm"], env=env, capture_output=True, text=True, timeout=300
    )
    assert up.returncode == 0, up.stderr
    try:
        # a replay dry run over the run's time range counts the examples, sending nothing
        dry = subprocess.run(
            [OCTOLLM, "replay", "--topic", "octo.tasks.v1", "--from-time", started, "--dry-run"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert dry.returncode == 0, dry.stderr
        assert f"would replay {len(examples)} event(s)" in dry.stdout, dry.stdout
        codec = Codec.from_settings(settings)
        results = [
            codec.decode(v).record for v in read_all(settings.bootstrap_servers, "octo.results.v1")
        ]
        per_task = Counter(str(r["task_id"]) for r in results)
        assert set(per_task) == set(by_id) and set(per_task.values()) == {1}, per_task
        for r in results:  # what the run printed is what is on the topic
            assert str(r["status"]) == by_id[str(r["task_id"])]["status"]
            _assert_content_class(r, by_id[str(r["task_id"])]["goal"])
        result_of = {by_id[str(r["task_id"])]["goal"]: r for r in results}
        ended = {  # the model's share of the outcome, for the record (JUnit property, -rA)
            goal[:40]: f"{r['status']} {r['verification']['method']} {(r['reason'] or '')[:160]}"
            for goal, r in result_of.items()
        }
        record_property("examples", json.dumps(ended))
        print(json.dumps(ended, indent=1))
        add = result_of[add_goal]["verification"]
        assert str(add["method"]) == "TESTS", add
        assert {"add(2, 3) == 5", "add(-1, 1) == 0"} <= {c["name"] for c in add["checks"]}
        assert str(result_of[attack]["verification"]["method"]) == "NONE"
        reply = next(r for g, r in result_of.items() if g.startswith("Draft a polite reply"))
        assert str(reply["status"]) in {"SUCCEEDED", "FAILED", "TIMED_OUT"}, reply
        if str(reply["status"]) == "SUCCEEDED":  # its placeholders were checked, and kept
            kept = [c for c in reply["verification"]["checks"] if c["name"] == "placeholders"]
            assert kept and kept[0]["passed"], reply["verification"]
        # retrieve → code → test → cite: the task that asks for the conventions doc. The coder
        # always gets the passages and cites them; whether SmolLM2-135M then writes an add()
        # that passes `add(2, 3) == 5` within its attempts is the model's luck (seen in CI: six
        # tries, all buggy, led astray by the doc's "validate input, raise ValueError"). So:
        # SUCCEEDED with the code and the citation, or FAILED by the judge on that criterion.
        cite = next(r for r in answered if "coding conventions doc" in r["goal"])
        cited = next(r for r in results if str(r["task_id"]) == cite["task_id"])
        doc = "examples/corpus/coding-conventions.md"
        if cite["status"] == "SUCCEEDED":
            assert "def add" in cited["output"]
            assert doc in cited["output"], cited["output"]
        else:
            assert cite["status"] == "FAILED", cite
            assert cited["reason"].startswith("judge failed"), cited["reason"]
            assert "add(2, 3) == 5" in cited["reason"], cited["reason"]
        coder_answers = [
            a
            for a in (
                codec.decode(v).record
                for v in read_all(settings.bootstrap_servers, "octo.arm.results")
            )
            if str(a["task_id"]) == cite["task_id"] and a["arm"] == "coder"
        ]
        assert coder_answers and all(doc in a["output"] for a in coder_answers), coder_answers

        # no raw PII from the examples anywhere downstream of the reflex layer
        for topic in [
            "octo.results.v1",
            "octo.arm.results",
            "octo.tasks.routed.orchestrator",
            "octo.tasks.routed.priority",
            *(f"octo.arm.{arm}.requests" for arm in ARMS),
        ]:
            for value in read_all(settings.bootstrap_servers, topic):
                for raw in RAW_PII:
                    assert raw not in value, f"raw PII {raw!r} on {topic}"
    finally:
        down = subprocess.run(
            [OCTOLLM, "infra", "down"], env=env, capture_output=True, text=True, timeout=120
        )
        assert down.returncode == 0, down.stderr


FREE_TEXT_CHECKS = {"empty", "refusal", "echo"}


def _assert_content_class(result: dict[str, Any], goal: str) -> None:
    """What a result may be, whatever the model wrote: SUCCEEDED passed every check that ran
    and names how it was verified (a prose answer at least by the free-text checks, and it is no
    refusal or empty answer to our own eyes either); FAILED by the judge names a failed check;
    any other ending says why."""
    status, output, reason = str(result["status"]), result["output"], result["reason"] or ""
    verification = result["verification"]
    method = str(verification["method"])
    checks = {c["name"]: c["passed"] for c in verification["checks"]}
    if status == "SUCCEEDED":
        assert method in {"TESTS", "LLM_JUDGE", "DETERMINISTIC"}, result
        assert checks and all(checks.values()), result
        assert output and output.strip(), result
        if is_prose(output):
            assert set(checks) >= FREE_TEXT_CHECKS, result
            again = {c.name: c for c in check_answer(goal, output)}
            assert again["empty"].passed and again["refusal"].passed, (result, again)
    elif status == "FAILED" and reason.startswith("judge failed"):
        failed = [name for name, passed in checks.items() if not passed]
        assert failed and any(name in reason for name in failed), result
        assert method != "NONE", result
    else:
        assert status in {"FAILED", "TIMED_OUT", "QUARANTINED", "REJECTED"}, result
        assert reason, result


def _assert_no_pii_in_audit_tables(settings: Settings) -> None:
    """Every column of every audit table, as text: none holds the examples' raw PII."""
    from octollm.audit.store import open_store

    store = open_store(settings, migrate=False)
    try:
        for table in ("audit_events", "task_results", "dead_letters"):
            rows = store.rows(f"SELECT * FROM {table}")
            assert rows or table == "dead_letters", f"{table} is empty"
            text = repr(rows).encode()
            for raw in RAW_PII:
                assert raw not in text, f"raw PII {raw!r} in {table}"
    finally:
        store.close()


def _pid_of(settings: Settings, worker: str) -> int:
    return int((Path(settings.data_dir) / "run" / "workers" / f"{worker}.pid").read_text())


async def _deadline_and_kill(settings: Settings) -> tuple[str, str]:
    """Submit an already-late task and a code task; SIGKILL the orchestrator mid-task."""
    async with OctoClient(settings, client_id="e2e") as octo:
        late = await octo.submit(
            {
                "tenant_id": "e2e",
                "goal": "Explain what a Kafka consumer group is.",
                "budget": {"deadline_ms": 1},
            }
        )
        result = await octo.wait(late, timeout=300)
        assert str(result.status) == "TIMED_OUT", result

        task = await octo.submit(
            {
                "tenant_id": "e2e",
                "goal": "Write a Python function add(a, b) that returns the sum.",
                "acceptance_criteria": ["add(2, 3) == 5"],
            }
        )
        await asyncio.sleep(3)  # the orchestrator has the task in flight by now
        victim = _pid_of(settings, "orchestrator")
        os.kill(victim, signal.SIGKILL)
        result = await octo.wait(task, timeout=600)
        assert str(result.status) in {"SUCCEEDED", "FAILED"}, result
        assert _pid_of(settings, "orchestrator") != victim  # restarted by `octollm run`
        await asyncio.sleep(5)  # room for a duplicate to show up, if there were one
        return late, task


@pytest.mark.timeout(1500)
def test_run_serves_until_sigterm_times_out_and_survives_a_killed_orchestrator(
    tmp_path: Path,
) -> None:
    """`octollm run` as a service: an impossible deadline ends TIMED_OUT, an orchestrator
    SIGKILLed mid-task is restarted and the task still gets exactly one result, and SIGTERM
    stops every process it started."""
    settings = Settings(
        data_dir=tmp_path / "data", kafka_port=free_port_pair(), llm_port=free_port_pair()
    )
    env = cli_env(settings, OCTO_LLM_PORT=str(settings.llm_port))
    run_log = tmp_path / "run.log"
    with run_log.open("w") as log:
        run = subprocess.Popen(
            [OCTOLLM, "run", "--no-examples"], env=env, stdout=log, stderr=subprocess.STDOUT
        )
    workers = Path(settings.data_dir) / "run" / "workers"
    pids: list[int] = []
    try:
        wait_until(
            lambda: (workers / "arm.safety_guardian.pid").exists() or run.poll() is not None,
            timeout=600,
            what="octollm run to start its workers",
        )
        assert run.poll() is None, run_log.read_text()
        pids = [_pid_of(settings, w) for w in ("reflex", "arm.planner", "arm.judge")]
        late, task = asyncio.run(_deadline_and_kill(settings))
        pids.append(_pid_of(settings, "orchestrator"))

        codec = Codec.from_settings(settings)
        results = [
            codec.decode(v).record for v in read_all(settings.bootstrap_servers, "octo.results.v1")
        ]
        per_task = Counter(str(r["task_id"]) for r in results)
        assert per_task == {late: 1, task: 1}, per_task
    finally:
        run.send_signal(signal.SIGTERM)
        code = run.wait(timeout=180)
        text = run_log.read_text()
        assert code == 0, text[-3000:]
        for pid in pids:
            assert not pid_alive(pid), f"pid {pid} still running after SIGTERM"
        assert "orchestrator: stopped" in text and "kafka node 0 stopped" in text, text[-3000:]
