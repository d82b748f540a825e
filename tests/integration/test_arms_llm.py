"""The planner, judge and safety guardian against the REAL local LLM server (llama.cpp serving
SmolLM2-135M-Instruct) and the real reflex binary, each arm on its own through the runtime's
`run_request` (no Kafka: the runtime's own tests cover consuming and producing).

The server is started by the supervisor on a free port with its data in a temporary directory,
once for this module, and stopped by PID at the end; a server that cannot start fails the
tests. The model is weak: planner tests accept an LLM plan or the fallback, but the plan must be
valid and the source recorded (see the `plan_source` user property in the JUnit report).
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import pytest

from octollm.arms import capabilities, load_arm
from octollm.contracts.models import ArmRequest, ArmStatus
from octollm.orchestrator.plan import plannable_arms, validate_plan
from octollm.runtime.arm import ArmContext, run_request
from octollm.settings import Settings

pytestmark = pytest.mark.integration

ARMS = {
    **{name: sorted(caps) for name, caps in capabilities().items()},
    # The coder, executor and retriever arrive with the next issue; the planner must already
    # plan for them when the orchestrator announces them.
    "coder": ["code"],
    "retriever": ["retrieve"],
    "executor": ["execute"],
}
CORRECT = "```python\ndef add(a, b):\n    return a + b\n```"
WRONG = "```python\ndef add(a, b):\n    return a - b\n```"


def arm_request(arm: str, step_id: str, instruction: str, inputs: dict[str, str]) -> ArmRequest:
    return ArmRequest(
        request_id=uuid.uuid4(),
        task_id=uuid.uuid4(),
        tenant_id="acme",
        step_id=step_id,
        arm=arm,
        instruction=instruction,
        inputs=inputs,
        created_at=datetime.now(UTC),
    )


async def run(settings: Settings, name: str, request: ArmRequest):
    arm = load_arm(name)
    ctx = ArmContext(settings, f"{name}@it", name)
    try:
        await arm.setup(ctx)
        return await run_request(arm, request, ctx)
    finally:
        await arm.close()
        await ctx.aclose()


def plan_inputs(tags: list[str], criteria: list[str]) -> dict[str, str]:
    return {
        "constraints": "[]",
        "acceptance_criteria": json.dumps(criteria),
        "tags": json.dumps(tags),
        "arms": json.dumps(ARMS),
        "max_steps": "8",
    }


@pytest.mark.parametrize(
    ("goal", "tags", "criteria", "answering_cap"),
    [
        (
            "Write a Python function add(a, b) that returns the sum of a and b.",
            ["code"],
            ["add(2, 3) == 5"],
            "code",
        ),
        ("Explain in two sentences why the sky is blue.", [], [], "reason"),
    ],
    ids=["code-goal", "prose-goal"],
)
async def test_planner_returns_a_valid_plan(
    llm_settings, record_property, goal, tags, criteria, answering_cap
):
    result = await run(
        llm_settings, "planner", arm_request("planner", "plan", goal, plan_inputs(tags, criteria))
    )
    assert result.status is ArmStatus.OK, result.reason
    source = result.artifacts["plan_source"]
    record_property("plan_source", source)
    record_property("plan", result.output)
    plannable = plannable_arms(ARMS)
    plan = validate_plan(json.loads(result.output), arms=plannable, source=source)
    assert source in ("llm", "fallback")
    assert json.loads(result.output)["source"] == source
    if source == "fallback":
        assert result.artifacts["plan_note"]
    assert any(answering_cap in plannable[s.arm] for s in plan.steps)
    # The planner asked the real model and accounted for its tokens, unless the call itself
    # failed (on a loaded 2-core machine it can run out of time), which the note then says.
    note = result.artifacts.get("plan_note", "")
    assert result.usage.prompt_tokens > 0 or note.startswith("LLM failed"), note


async def test_reason_step_answers(llm_settings):
    request = arm_request(
        "planner",
        "answer",
        "In one sentence: what colour is the sky on a clear day?",
        {"retrieve": "The sky on a clear day looks blue because of Rayleigh scattering."},
    )
    result = await run(llm_settings, "planner", request)
    assert result.status is ArmStatus.OK, result.reason
    assert result.output.strip()
    assert result.usage.prompt_tokens > 0 and result.usage.completion_tokens > 0


async def test_judge_passes_a_correct_add_and_fails_a_wrong_one(llm_settings):
    criteria = json.dumps(["add(2, 3) == 5", "assert add(10, -4) == 6"])
    good = await run(
        llm_settings,
        "judge",
        arm_request("judge", "judge", "Write add(a, b).", {"draft": CORRECT, "criteria": criteria}),
    )
    verdict = json.loads(good.output)
    assert verdict["passed"] is True and verdict["score"] == 1.0
    # the criteria ran in the sandbox; the draft's answer check (not empty) is a rule
    assert [c["method"] for c in verdict["checks"]] == ["tests", "tests", "deterministic"]
    assert verdict["verification"]["method"] == "TESTS"
    bad = await run(
        llm_settings,
        "judge",
        arm_request("judge", "judge", "Write add(a, b).", {"draft": WRONG, "criteria": criteria}),
    )
    verdict = json.loads(bad.output)
    assert verdict["passed"] is False and verdict["score"] == 0.3333  # only "not empty" passed
    assert "returned -1, expected 5" in verdict["reasons"][0]


async def test_judge_answers_an_llm_criterion(llm_settings, record_property):
    inputs = {
        "draft": "Kafka stores records in partitioned, replicated logs.",
        "criteria": json.dumps(["The answer is about data storage"]),
    }
    result = await run(
        llm_settings, "judge", arm_request("judge", "judge", "How does Kafka store data?", inputs)
    )
    assert result.status is ArmStatus.OK, result.reason
    check = json.loads(result.output)["checks"][0]
    record_property("llm_verdict", json.dumps(check))
    assert check["method"] == "llm"
    # The model answered under the schema (its judgement itself is not asserted: it is weak).
    assert not check.get("unverified"), check
    assert check["detail"]
    assert result.usage.completion_tokens > 0


async def test_safety_guardian_through_the_runtime(llm_settings):
    result = await run(
        llm_settings,
        "safety_guardian",
        arm_request("safety_guardian", "safety", "", {"output": "Mail jane.doe@example.com"}),
    )
    body = json.loads(result.output)
    assert result.status is ArmStatus.OK and body["verdict"] == "redacted"
    assert body["output"] == "Mail <EMAIL_1>"
