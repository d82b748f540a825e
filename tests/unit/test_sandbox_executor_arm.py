"""The executor arm called directly (no broker): inputs parsed, statuses as documented."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime

import pytest

from octollm.arms import load_arm
from octollm.arms.executor import BadInputs, parse_inputs
from octollm.contracts.models import ArmRequest, ArmStatus
from octollm.runtime.arm import ArmContext, ArmOutput
from octollm.settings import Settings

pytestmark = pytest.mark.unit


def req(instruction: str = "run", **inputs: str) -> ArmRequest:
    return ArmRequest(
        request_id=uuid.uuid4(),
        task_id=uuid.uuid4(),
        tenant_id="acme",
        step_id="s1",
        arm="executor",
        instruction=instruction,
        inputs=inputs,
        created_at=datetime.now(UTC),
    )


def handle(request: ArmRequest, **settings: object) -> ArmOutput:
    s = Settings(bootstrap_servers="127.0.0.1:1", **settings)  # type: ignore[arg-type]
    arm = load_arm("executor")

    async def go() -> ArmOutput:
        ctx = ArmContext(s, "w1", "executor")
        await arm.setup(ctx)
        return await arm.handle(request, ctx)

    return asyncio.run(go())


def test_registered_with_the_execute_capability() -> None:
    arm = load_arm("executor")
    assert arm.name == "executor" and arm.capabilities == frozenset({"execute"})


def test_code_runs_and_the_output_is_the_sandbox_result() -> None:
    out = handle(req(code="print(sum(range(10)))", language="python"))
    assert out.status is ArmStatus.OK
    result = json.loads(out.output)
    assert result["stdout"] == "45\n" and out.artifacts == {"exit_code": "0", "limit": ""}


def test_a_failing_program_is_still_ok_and_a_limit_is_named() -> None:
    out = handle(req(code="x = bytearray(10**10)"), sandbox_memory_mb=128)
    assert out.status is ArmStatus.OK and out.artifacts == {"exit_code": "1", "limit": "memory"}


@pytest.mark.parametrize(
    ("inputs", "reason"),
    [
        ({"argv": '["nc", "127.0.0.1", "80"]'}, "not allow-listed"),
        ({"argv": "[]"}, "non-empty JSON list"),
        ({"code": "print(1)", "language": "ruby"}, "not supported"),
        ({"code": "print(1)", "files": '{"../x": "y"}'}, "stay in the work dir"),
        ({"code": "print(1)", "timeout_s": "soon"}, "not a number"),
    ],
)
def test_refusals_are_rejected_with_the_reason(inputs: dict[str, str], reason: str) -> None:
    out = handle(req(**inputs))
    assert out.status is ArmStatus.REJECTED and reason in (out.reason or ""), out


def test_python_from_the_instruction_when_no_code_is_given() -> None:
    assert parse_inputs(req("Run:\n```python\nprint(1)\n```"))["code"] == "print(1)"
    with pytest.raises(BadInputs, match="nothing to run"):
        parse_inputs(req("say hello"))
