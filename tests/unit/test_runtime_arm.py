"""The arm runtime's mapping of what an arm does to an ArmResult, without a broker."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import ClassVar

import pytest

from octollm.arms import ARMS, UnknownArm, capabilities, load_arm
from octollm.contracts.models import ArmRequest, ArmStatus, Usage
from octollm.runtime.app import create_app, key_partition
from octollm.runtime.arm import Arm, ArmContext, ArmOutput, request_timeout, run_request
from octollm.settings import Settings


class Behaving(Arm):
    name: ClassVar[str] = "t_unit"
    capabilities: ClassVar[frozenset[str]] = frozenset({"reason"})
    timeout_s: ClassVar[float] = 0.2

    async def handle(self, request: ArmRequest, ctx: ArmContext) -> ArmOutput:
        match request.instruction:
            case "ok":
                return ArmOutput(output="fine", usage=Usage(prompt_tokens=3, completion_tokens=4))
            case "boom":
                raise ValueError("bad input")
            case "slow":
                await asyncio.sleep(5)
            case "claims-timeout":
                return ArmOutput(status=ArmStatus.TIMED_OUT, reason="I gave up")
            case "reject":
                return ArmOutput(status=ArmStatus.REJECTED, reason="not allowed")
        return ArmOutput()


def req(instruction: str, deadline_at: datetime | None = None) -> ArmRequest:
    return ArmRequest(
        request_id=uuid.uuid4(),
        task_id=uuid.uuid4(),
        tenant_id="acme",
        step_id="s",
        arm="t_unit",
        instruction=instruction,
        attempt=2,
        deadline_at=deadline_at,
        created_at=datetime.now(UTC),
    )


@pytest.fixture
def ctx() -> ArmContext:
    return ArmContext(Settings(), "t_unit@test", "t_unit")


@pytest.mark.parametrize(
    ("instruction", "status", "reason"),
    [
        ("ok", ArmStatus.OK, None),
        ("boom", ArmStatus.FAILED, "ValueError: bad input"),
        ("slow", ArmStatus.TIMED_OUT, "no answer within 0.2s"),
        ("claims-timeout", ArmStatus.FAILED, "I gave up"),  # only the runtime times out
        ("reject", ArmStatus.REJECTED, "not allowed"),
    ],
)
def test_outcome_to_status(
    instruction: str, status: ArmStatus, reason: str | None, ctx: ArmContext
) -> None:
    request = req(instruction)
    result = asyncio.run(run_request(Behaving(), request, ctx))
    assert (result.status, result.reason) == (status, reason)
    assert (result.request_id, result.task_id, result.step_id) == (
        request.request_id,
        request.task_id,
        "s",
    )
    assert (result.arm, result.attempt, result.worker) == ("t_unit", 2, "t_unit@test")
    assert result.started_at <= result.finished_at


def test_usage_is_passed_through(ctx: ArmContext) -> None:
    result = asyncio.run(run_request(Behaving(), req("ok"), ctx))
    assert (result.output, result.usage.prompt_tokens, result.usage.completion_tokens) == (
        "fine",
        3,
        4,
    )


def test_timeout_is_the_earlier_of_arm_limit_and_deadline() -> None:
    now = datetime.now(UTC)
    assert request_timeout(Behaving(), req("x"), now) == pytest.approx(0.2)
    soon = req("x", deadline_at=now + timedelta(seconds=0.1))
    assert request_timeout(Behaving(), soon, now) == pytest.approx(0.1, abs=0.01)
    past = req("x", deadline_at=now - timedelta(seconds=1))
    assert request_timeout(Behaving(), past, now) == 0.0


def test_registry_lists_arms_with_capabilities() -> None:
    assert {"planner", "judge", "safety_guardian"} <= set(ARMS)
    caps = capabilities()
    assert (
        "plan" in caps["planner"]
        and "judge" in caps["judge"]
        and "safety" in caps["safety_guardian"]
    )
    with pytest.raises(UnknownArm, match="unknown arm 'nope'; registered: "):
        load_arm("nope")


def test_app_factory_binds_web_to_loopback_and_prefixes_the_group(tmp_path) -> None:
    settings = Settings(topic_prefix="env1.", data_dir=tmp_path)
    app = create_app(settings, "octo-orchestrator")
    assert app.conf.id == "env1.octo-orchestrator" and not app.conf.web_enabled
    web = create_app(settings.model_copy(update={"worker_web_port": 16066}), "octo-arm-x")
    assert (web.conf.web_bind, web.conf.web_port) == ("127.0.0.1", 16066)


def test_key_partition_matches_librdkafka_murmur2() -> None:
    # Known value from the Java client's murmur2 partitioner test vectors ("21" → -973932308).
    assert key_partition(b"21", 1 << 20) == (-973932308 & 0x7FFFFFFF) % (1 << 20)
