"""The orchestrator on the real broker with the test arms of test_arm_runtime (no LLM: the
arms' answers are fixed, which is what lets these tests count results exactly).

Every worker is a real subprocess; results are read with a read_committed consumer, so what is
counted is what a downstream consumer sees.
"""

from __future__ import annotations

import collections
import signal
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from octollm.codec import Codec
from octollm.contracts.models import (
    AuditEvent,
    Budget,
    DeadLetter,
    InjectionVerdict,
    RoutedTask,
    TaskRequest,
    TaskResult,
    TaskStatus,
    VerificationMethod,
)
from octollm.settings import Settings
from octollm.topics import AUDIT, DLQ, RESULTS, full_name, routed
from tests.integration.test_arm_runtime import (
    FLOW_ARMS,
    create_topics,
    flow_settings,
    produce,
    read_until,
    start_worker,
    stop,
    workers,
)

pytestmark = pytest.mark.integration


def routed_task(i: int, *, route: str = "orchestrator", **task: object) -> RoutedTask:
    now = datetime.now(UTC)
    request = TaskRequest(
        task_id=uuid.uuid4(), tenant_id="acme", goal=f"write add number {i}", created_at=now, **task
    )
    return RoutedTask(
        task=request,
        route=route,
        tags=["code"],
        injection=InjectionVerdict(),
        reflex_version="test",
        received_at=now,
    )


def send(settings: Settings, tasks: list[RoutedTask]) -> None:
    codec = Codec.from_settings(settings)
    for route in ("orchestrator", "priority"):
        topic = routed(route)
        batch = [t for t in tasks if t.route == route]
        produce(
            settings,
            topic,
            [
                (str(t.task.task_id).encode(), codec.encode(t, topic=full_name(settings, topic)))
                for t in batch
            ],
        )


def per_task(results: list[object]) -> collections.Counter[str]:
    return collections.Counter(str(r.task_id) for r in results if isinstance(r, TaskResult))


@pytest.fixture
def flow(isolated: Settings) -> Settings:
    settings = flow_settings(isolated)
    create_topics(settings)
    return settings


def test_tasks_are_planned_dispatched_judged_and_answered_once(flow: Settings) -> None:
    s = flow
    reply = f"{s.topic_prefix}replies"
    tasks = [routed_task(i, route="priority" if i % 3 == 0 else "orchestrator") for i in range(12)]
    tasks.append(routed_task(99, reply_topic=reply))
    late = routed_task(100, budget=Budget(deadline_ms=1))  # its deadline passed before it arrives
    tasks.append(late)
    from octollm.kafka.admin import ensure_topics
    from octollm.topics import TopicSpec

    ensure_topics(s.model_copy(update={"topic_prefix": ""}), [TopicSpec(reply, "replies")])
    send(s, tasks)
    produce(s, routed("orchestrator"), [(b"bad", b"\x00\x00\x00\x00\x01not avro")])
    with workers(s, *[("arm", a) for a in FLOW_ARMS], ("orchestrator",)):
        results = read_until(s, RESULTS, lambda got: len(per_task(got)) >= len(tasks))
        audits = read_until(s, AUDIT, lambda got: True, settle=1)
        replies = read_until(
            s.model_copy(update={"topic_prefix": ""}), reply, lambda g: len(g) >= 1
        )
        letters = read_until(s, DLQ, lambda got: len(got) >= 1, settle=0)
    counts = per_task(results)
    assert set(counts) == {str(t.task.task_id) for t in tasks}
    assert set(counts.values()) == {1}, "a task was answered more than once"
    by_id = {str(r.task_id): r for r in results}
    for t in tasks[:-1]:
        r = by_id[str(t.task.task_id)]
        assert r.status is TaskStatus.SUCCEEDED, r.reason
        assert r.output == f"code for {t.task.goal} + code for tests"
        assert [s.step_id for s in r.steps] == ["a", "b", "join", "safety"]
        assert r.verification.method is VerificationMethod.DETERMINISTIC  # the judge's word
        assert [c.name for c in r.verification.checks] == ["empty"]
    assert by_id[str(late.task.task_id)].status is TaskStatus.TIMED_OUT
    assert by_id[str(late.task.task_id)].verification.method is VerificationMethod.NONE
    assert [str(r.task_id) for r in replies] == [str(tasks[-2].task.task_id)]
    stages = {
        a.stage
        for a in audits
        if isinstance(a, AuditEvent) and a.task_id == str(tasks[0].task.task_id)
    }
    assert stages >= {
        "received",
        "planned",
        "dispatched",
        "arm_result",
        "judged",
        "safety_checked",
        "completed",
    }
    ids = [a.event_id for a in audits]
    assert len(ids) == len(set(ids)), "audit events are not unique"
    assert len(letters) == 1 and isinstance(letters[0], DeadLetter)
    assert letters[0].component == "orchestrator"


def test_killed_orchestrator_tasks_are_finished_by_the_other_exactly_once(flow: Settings) -> None:
    """Two orchestrators share the partitions; one is SIGKILLed mid-stream. Every task still
    gets exactly one committed result."""
    s = flow
    tasks = [routed_task(i) for i in range(40)]
    # Slow steps, so the kill lands while many tasks are mid-flight.
    with workers(s, *[("arm", a) for a in FLOW_ARMS if a != "t_coder"]):
        coders = [start_worker(s, "arm", "t_coder", T_CODER_DELAY_S="1.0") for _ in range(2)]
        # The default step timeout (300 s) is longer than the test waits: every request must
        # survive the kill itself, not be re-sent by the survivor's timeout tick.
        first = start_worker(s, "orchestrator")
        second = start_worker(s, "orchestrator")
        try:
            time.sleep(15)  # both joined and share the partitions
            send(s, tasks)
            time.sleep(5)
            assert stop(first, signal.SIGKILL) == -signal.SIGKILL
            results = read_until(
                s, RESULTS, lambda got: len(per_task(got)) >= len(tasks), timeout=180, settle=8
            )
        finally:
            for p in (first, second, *coders):
                stop(p)
    counts = per_task(results)
    missing = {str(t.task.task_id) for t in tasks} - set(counts)
    if missing:  # show what the orchestrators said: a stuck task is a bug to diagnose
        logs = "\n".join(
            f"--- {p.log_path}:\n" + "\n".join(Path(p.log_path).read_text().splitlines()[-40:])
            for p in (first, second)
        )
        raise AssertionError(f"{len(missing)} task(s) never answered: {sorted(missing)}\n{logs}")
    twice = {k: n for k, n in counts.items() if n > 1}
    assert not twice, f"answered more than once: {twice}"
    assert {r.status for r in results} == {TaskStatus.SUCCEEDED}
    # The kill really landed mid-stream: the survivor finished tasks it never received (their
    # state came from the changelog), and the killed one had not finished all of its own.
    first_log = first.log_path.read_text()
    second_log = second.log_path.read_text()
    assert second_log.count("task SUCCEEDED") > second_log.count("task received")
    assert first_log.count("task SUCCEEDED") < first_log.count("task received")
