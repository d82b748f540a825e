"""The arm runtime on the real broker, with tiny test arms defined here (no LLM: they only prove
the runtime). Workers run as real `faust` worker subprocesses of this module:

    python -m tests.integration.test_arm_runtime arm <name>
    python -m tests.integration.test_arm_runtime orchestrator

(the orchestrator there knows these test arms instead of the registry's).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from octollm.arms import ARMS
from octollm.codec import Codec
from octollm.contracts.models import ArmRequest, ArmResult, ArmStatus, DeadLetter
from octollm.kafka.admin import ensure_topics
from octollm.kafka.consumer import consumer_config
from octollm.kafka.producer import producer_config
from octollm.runtime.arm import Arm, ArmContext, ArmOutput
from octollm.settings import Settings
from octollm.topics import ARM_RESULTS, DLQ, arm_requests, full_name, topic_specs
from tests.conftest import cli_env

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PYTHON = str(ROOT / ".venv" / "bin" / "python")
WAIT_S = 90.0


# --- test arms ---------------------------------------------------------------------------------


class EchoArm(Arm):
    """Does what the instruction says: ok, boom, slow, reject, sleep:<s>."""

    name: ClassVar[str] = "t_echo"
    capabilities: ClassVar[frozenset[str]] = frozenset({"reason"})
    timeout_s: ClassVar[float] = 1.0

    async def handle(self, request: ArmRequest, ctx: ArmContext) -> ArmOutput:
        what = request.instruction
        if what == "boom":
            raise RuntimeError("the test arm exploded")
        if what == "slow":
            await asyncio.sleep(30)
        if what == "reject":
            return ArmOutput(status=ArmStatus.REJECTED, reason="policy says no")
        if what.startswith("sleep:"):
            await asyncio.sleep(float(what.split(":", 1)[1]))
        return ArmOutput(output=f"echo {what} from {ctx.worker_id}", artifacts={"n": "1"})


class SlowEchoArm(EchoArm):
    name: ClassVar[str] = "t_slow"
    timeout_s: ClassVar[float] = 60.0


class PlannerArm(Arm):
    """Plans two parallel code steps and a join; answers reason steps by echoing."""

    name: ClassVar[str] = "t_planner"
    capabilities: ClassVar[frozenset[str]] = frozenset({"plan", "reason"})

    async def handle(self, request: ArmRequest, ctx: ArmContext) -> ArmOutput:
        if request.step_id != "plan":
            return ArmOutput(output=" + ".join(request.inputs[k] for k in sorted(request.inputs)))
        steps = [
            {"id": "a", "arm": "t_coder", "instruction": request.instruction, "depends_on": []},
            {"id": "b", "arm": "t_coder", "instruction": "tests", "depends_on": []},
            {"id": "join", "arm": "t_planner", "instruction": "join", "depends_on": ["a", "b"]},
        ]
        return ArmOutput(output=json.dumps({"steps": steps}))


class CoderArm(Arm):
    name: ClassVar[str] = "t_coder"
    capabilities: ClassVar[frozenset[str]] = frozenset({"code"})

    async def handle(self, request: ArmRequest, ctx: ArmContext) -> ArmOutput:
        delay = float(os.environ.get("T_CODER_DELAY_S", "0"))
        if delay:
            await asyncio.sleep(delay)
        return ArmOutput(output=f"code for {request.instruction}")


class JudgeArm(Arm):
    name: ClassVar[str] = "t_judge"
    capabilities: ClassVar[frozenset[str]] = frozenset({"judge"})

    async def handle(self, request: ArmRequest, ctx: ArmContext) -> ArmOutput:
        ok = bool(request.inputs.get("draft"))
        checked = {
            "method": "DETERMINISTIC",
            "checks": [{"name": "empty", "method": "deterministic", "passed": ok}],
        }
        verdict = {"passed": ok, "score": 1.0, "reasons": [], "verification": checked}
        return ArmOutput(output=json.dumps(verdict))


class SafetyArm(Arm):
    name: ClassVar[str] = "t_safety"
    capabilities: ClassVar[frozenset[str]] = frozenset({"safety"})

    async def handle(self, request: ArmRequest, ctx: ArmContext) -> ArmOutput:
        verdict = {"verdict": "pass", "output": request.inputs["output"], "pii": []}
        return ArmOutput(output=json.dumps(verdict))


TEST_ARMS: dict[str, type[Arm]] = {
    a.name: a for a in (EchoArm, SlowEchoArm, PlannerArm, CoderArm, JudgeArm, SafetyArm)
}
FLOW_ARMS = ("t_planner", "t_coder", "t_judge", "t_safety")


def flow_capabilities() -> dict[str, frozenset[str]]:
    return {name: TEST_ARMS[name].capabilities for name in FLOW_ARMS}


def flow_settings(settings: Settings) -> Settings:
    """Settings whose topic list includes the test arms' request topics."""
    return settings.model_copy(update={"arms": (*settings.arms, *TEST_ARMS)})


# --- processes and records --------------------------------------------------------------------


def start_worker(settings: Settings, *args: str, **env: str) -> subprocess.Popen[bytes]:
    """A worker subprocess; its output goes to a log file in the test's data dir."""
    name = f"worker-{'-'.join(args)}-{uuid.uuid4().hex[:6]}.log"
    path = Path(settings.data_dir) / name
    with open(path, "wb") as log:  # the child keeps its own copy
        proc = subprocess.Popen(
            [PYTHON, "-m", "tests.integration.test_arm_runtime", *args],
            cwd=ROOT,
            env=cli_env(settings, OCTO_ORCHESTRATOR_TICK_S="0.2", **env),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    proc.log_path = path  # type: ignore[attr-defined]
    return proc


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 30) -> int:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    return proc.returncode


@contextlib.contextmanager
def workers(settings: Settings, *specs: tuple[str, ...]) -> Iterator[list[subprocess.Popen[bytes]]]:
    procs = [start_worker(settings, *spec) for spec in specs]
    try:
        yield procs
    finally:
        for p in procs:
            stop(p)


def create_topics(settings: Settings) -> None:
    ensure_topics(settings, topic_specs(settings))


def produce(settings: Settings, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    p = Producer(producer_config(settings, client_id="test"))
    for key, value in records:
        p.produce(full_name(settings, topic), value, key=key)
    assert p.flush(30) == 0


def read_until(
    settings: Settings,
    topic: str,
    done: Callable[[list[Any]], bool],
    *,
    timeout: float = WAIT_S,
    settle: float = 3.0,
) -> list[Any]:
    """Every record of `topic` (read_committed, decoded), once `done(records)` holds and then
    `settle` seconds more, so duplicates that follow are caught too."""
    codec = Codec.from_settings(settings)
    name = full_name(settings, topic)
    consumer = Consumer(consumer_config(settings))
    try:
        meta = consumer.list_topics(name, timeout=10)
        consumer.assign([TopicPartition(name, p, 0) for p in meta.topics[name].partitions])
        got: list[Any] = []
        deadline = time.monotonic() + timeout
        settle_until: float | None = None
        while time.monotonic() < (settle_until or deadline):
            msg = consumer.poll(0.2)
            if msg is not None and msg.error() is None:
                got.append(codec.decode_model(msg.value()))
            if settle_until is None and done(got):
                settle_until = time.monotonic() + settle
        return got
    finally:
        consumer.close()


def request(instruction: str, arm: str = "t_echo", **extra: Any) -> ArmRequest:
    now = datetime.now(UTC)
    return ArmRequest(
        request_id=uuid.uuid4(),
        task_id=uuid.uuid4(),
        tenant_id="acme",
        step_id="s1",
        arm=arm,
        instruction=instruction,
        created_at=now,
        **extra,
    )


# --- tests ---------------------------------------------------------------------------------------


@pytest.fixture
def arm_settings(isolated: Settings) -> Settings:
    settings = flow_settings(isolated)
    create_topics(settings)
    return settings


def send_requests(settings: Settings, reqs: list[ArmRequest], arm: str = "t_echo") -> None:
    codec = Codec.from_settings(settings)
    produce(
        settings,
        arm_requests(arm),
        [(str(r.task_id).encode(), codec.encode(r, topic=arm_requests(arm))) for r in reqs],
    )


def test_outcomes_become_arm_results_and_bad_requests_dead_letters(arm_settings: Settings) -> None:
    s = arm_settings
    past = datetime.now(UTC) - timedelta(seconds=5)
    reqs = {
        "ok": request("ok"),
        "boom": request("boom"),
        "slow": request("slow"),
        "reject": request("reject"),
        "late": request("ok", deadline_at=past),
    }
    send_requests(s, list(reqs.values()))
    produce(s, arm_requests("t_echo"), [(b"k", b"\xc3\x01garbage")])
    with workers(s, ("arm", "t_echo")):
        results = read_until(s, ARM_RESULTS, lambda got: len(got) >= len(reqs))
        letters = read_until(s, DLQ, lambda got: len(got) >= 1, settle=0)
    by_id = {r.request_id: r for r in results if isinstance(r, ArmResult)}
    assert len(results) == len(reqs) == len(by_id)
    ok = by_id[reqs["ok"].request_id]
    assert ok.status is ArmStatus.OK and ok.output.startswith("echo ok from t_echo@")
    assert ok.task_id == reqs["ok"].task_id and ok.step_id == "s1" and ok.attempt == 1
    assert ok.artifacts == {"n": "1"} and ok.started_at <= ok.finished_at
    boom = by_id[reqs["boom"].request_id]
    assert boom.status is ArmStatus.FAILED and boom.reason == "RuntimeError: the test arm exploded"
    assert by_id[reqs["slow"].request_id].status is ArmStatus.TIMED_OUT
    assert by_id[reqs["reject"].request_id].reason == "policy says no"
    late = by_id[reqs["late"].request_id]
    assert late.status is ArmStatus.TIMED_OUT and "deadline" in (late.reason or "")
    assert len(letters) == 1 and isinstance(letters[0], DeadLetter)
    assert letters[0].component == "arm.t_echo" and letters[0].payload == b"\xc3\x01garbage"


def test_killed_arm_request_is_redelivered_to_another_member(arm_settings: Settings) -> None:
    s = arm_settings
    req = request("sleep:6", arm="t_slow")
    first = start_worker(s, "arm", "t_slow")
    try:
        time.sleep(12)  # joined the group and owns every partition
        send_requests(s, [req], arm="t_slow")
        time.sleep(3)  # mid-request
        assert stop(first, signal.SIGKILL) == -signal.SIGKILL
        with workers(s, ("arm", "t_slow")):
            results = read_until(s, ARM_RESULTS, lambda got: len(got) >= 1, settle=3)
    finally:
        stop(first)
    assert [r.request_id for r in results] == [req.request_id]
    assert results[0].status is ArmStatus.OK and str(first.pid) not in results[0].worker


def test_unknown_arm_is_a_one_line_error(isolated: Settings) -> None:
    out = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "octollm"), "worker", "arm", "no_such_arm"],
        env=cli_env(isolated),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        f"octollm: error: unknown arm 'no_such_arm'; registered: {', '.join(sorted(ARMS))}"
    ]


# --- worker entry point ----------------------------------------------------------------------


def _main(argv: list[str]) -> None:
    from octollm.orchestrator.agent import Orchestrator
    from octollm.runtime.app import run_worker
    from octollm.runtime.arm import build_arm_app
    from octollm.settings import get_settings

    settings = flow_settings(get_settings())
    if argv[0] == "arm":
        app = build_arm_app(settings, TEST_ARMS[argv[1]]())
    else:
        orchestrator = Orchestrator(settings, flow_capabilities())
        orchestrator.ensure_topics()
        app = orchestrator.app
    run_worker(app, "info")


if __name__ == "__main__":
    _main(sys.argv[1:])
