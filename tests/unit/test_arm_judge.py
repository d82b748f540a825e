"""The judge arm: criterion classification, deterministic checks, the verdict, and the LLM path
with recorded responses (no network)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import pytest

from octollm.arms.judge import JudgeArm, Kind, classify, judge_draft, text_check, verification
from octollm.contracts.models import ArmRequest, ArmStatus, VerificationMethod
from octollm.llm import LLMClient, UsageMeter
from octollm.settings import Settings
from tests.arm_helpers import Ctx, down_settings, recorded

pytestmark = pytest.mark.unit

CODE_DRAFT = "Here is the function:\n```python\ndef add(a, b):\n    return a + b\n```\n"
WRONG_DRAFT = "```python\ndef add(a, b):\n    return a * b\n```"


def request(draft: str, criteria: list[str], goal: str = "Write add(a, b).") -> ArmRequest:
    return ArmRequest(
        request_id=uuid.uuid4(),
        task_id=uuid.uuid4(),
        tenant_id="acme",
        step_id="judge",
        arm="judge",
        instruction=goal,
        inputs={"draft": draft, "criteria": json.dumps(criteria), "steps": "{}"},
        created_at=datetime.now(UTC),
    )


@pytest.mark.parametrize(
    ("criterion", "kind"),
    [
        ("add(2, 3) == 5", Kind.PYTHON),
        ("assert add(1, 2) == 3", Kind.PYTHON),
        ("add(2, 3) returns 5", Kind.PYTHON),
        ("must mention Kafka", Kind.CONTAINS),
        ("The answer contains 'exactly once'", Kind.CONTAINS),
        ("does not mention Java", Kind.CONTAINS),
        ('contains "add(2, 3)"', Kind.CONTAINS),  # a quoted call is text, not a check to run
        ("at most 50 words", Kind.LENGTH),
        ("The answer must be at most 3 sentences", Kind.LENGTH),
        ("no more than 10 lines", Kind.LENGTH),
        ("at least 2 bullet points", Kind.LENGTH),
        ("is valid JSON", Kind.JSON),
        ("The output must be a valid JSON object", Kind.JSON),
        ("no TODO", Kind.NO_TODO),
        ("The code has no TODOs", Kind.NO_TODO),
        ("valid Python", Kind.PYTHON_SYNTAX),
        ("defines a function named add", Kind.DEFINES),
        ("mentions the trade-offs between latency and throughput", Kind.LLM),
        ("Explain Kafka in at most 3 sentences", Kind.LLM),  # length plus meaning: the LLM
        ("is polite", Kind.LLM),
    ],
)
def test_classify(criterion, kind):
    assert classify(criterion).kind is kind


@pytest.mark.parametrize(
    ("criterion", "draft", "passed"),
    [
        ("must mention Kafka", "Kafka keeps the log.", True),
        ("must mention Kafka", "Kafkaesque, isn't it", False),  # a word, not a prefix
        ("does not mention Java", "Written in Rust.", True),
        ("does not mention Java", "Unlike Java, ...", False),
        ("contains 'exactly once'", "Delivery is EXACTLY ONCE here.", True),
        ("at most 5 words", "one two three four five", True),
        ("at most 5 words", "one two three four five six", False),
        ("fewer than 3 lines", "a\nb\n\nc", False),
        ("at least 2 bullet points", "- a\n- b\n", True),
        ("exactly 2 sentences", "One. Two!", True),
        ("is valid JSON", '{"a": 1}', True),
        ("is valid JSON", "```json\n[1, 2]\n```", True),
        ("is valid JSON", "{'a': 1}", False),
        ("must be a valid JSON object", "[1]", False),
        ("no TODO", "def f():\n    pass  # TODO later", False),
        ("no TODO", "done", True),
        ("valid Python", CODE_DRAFT, True),
        ("valid Python", "just words", False),
        ("defines a function named add", CODE_DRAFT, True),
        ("defines a function named sub", CODE_DRAFT, False),
    ],
)
def test_text_checks(criterion, draft, passed):
    c = classify(criterion)
    result = text_check(c, draft)
    assert result.passed is passed, result
    assert result.method == "deterministic"


async def test_correct_add_passes_and_wrong_add_fails_deterministically():
    criteria = ["add(2, 3) == 5", "assert add(-1, 1) == 0", "defines a function named add"]
    good = await judge_draft("Write add.", CODE_DRAFT, criteria, llm=None, meter=UsageMeter())
    assert good.passed and good.score == 1.0 and good.reasons == []
    # the runnable criteria ran in the sandbox, the rest (and the answer check) are rules
    assert [c.method for c in good.checks] == ["tests", "tests", "deterministic", "deterministic"]
    assert json.loads(good.to_json())["verification"]["method"] == "TESTS"
    bad = await judge_draft("Write add.", WRONG_DRAFT, criteria, llm=None, meter=UsageMeter())
    assert not bad.passed and bad.score == pytest.approx(2 / 4, abs=1e-3)
    assert any("returned 6, expected 5" in r for r in bad.reasons)


async def test_code_criteria_without_code_fail_with_a_reason():
    verdict = await judge_draft(
        "x", "I would write it in Python.", ["add(1, 2) == 3"], llm=None, meter=UsageMeter()
    )
    assert not verdict.passed and verdict.checks[0].detail == "no Python code in the draft"


async def test_code_found_in_step_outputs_when_the_draft_is_prose():
    verdict = await judge_draft(
        "x",
        "See the code step.",
        ["add(1, 2) == 3"],
        llm=None,
        meter=UsageMeter(),
        steps={"code": CODE_DRAFT},
    )
    assert verdict.passed


async def test_no_criteria_the_answer_checks_decide_without_the_llm():
    ok = await judge_draft("x", "an answer", [], llm=None, meter=UsageMeter())
    assert ok.passed and ok.score == 1.0
    assert {c.method for c in ok.checks} == {"deterministic"}
    assert [c.criterion for c in ok.checks] == ["empty", "refusal", "echo"]
    assert verification(ok.checks).method is VerificationMethod.DETERMINISTIC
    empty = await judge_draft("x", "  ", [], llm=None, meter=UsageMeter())
    assert not empty.passed and empty.score == 0.0
    assert empty.reasons == ["empty: the answer is empty; write the answer itself"]


async def test_llm_criterion_uses_the_recorded_answer_and_counts_tokens():
    # recorded response: SmolLM2's JSON verdict under the {"passed", "reason"} schema
    llm = LLMClient(Settings(), transport=recorded('{"passed": true, "reason": "It is polite."}'))
    meter = UsageMeter()
    verdict = await judge_draft(
        "Greet.", "Hello, nice to meet you!", ["is polite"], llm=llm, meter=meter
    )
    assert verdict.passed and verdict.checks[0].method == "llm"
    assert verdict.checks[0].detail == "It is polite."
    assert meter.prompt_tokens == 60 and meter.completion_tokens == 12


async def test_unusable_llm_answer_is_unverified_and_fails_closed():
    # recorded response: the model ignored the schema
    llm = LLMClient(Settings(), transport=recorded("Yes, it is polite."))
    verdict = await judge_draft(
        "Greet.", "Hello!", ["is polite", "at most 5 words"], llm=llm, meter=UsageMeter()
    )
    assert not verdict.passed and verdict.score == 0.8  # 4 of 5: the answer checks passed
    assert verdict.checks[0].unverified and verdict.checks[0].detail.startswith("unverified")
    # the one check that ran is a rule: nothing judged the meaning
    assert verification(verdict.checks).method is VerificationMethod.DETERMINISTIC


async def test_llm_down_is_unverified_and_fails_closed():
    llm = LLMClient(down_settings())
    verdict = await judge_draft("Greet.", "Hello!", ["is polite"], llm=llm, meter=UsageMeter())
    await llm.aclose()
    assert not verdict.passed
    assert verdict.checks[0].unverified and "unavailable" in verdict.checks[0].detail


async def test_arm_output_is_the_contract_json():
    settings = down_settings()
    ctx = Ctx(settings=settings, llm=LLMClient(settings))
    out = await JudgeArm().handle(request(CODE_DRAFT, ["add(2, 3) == 5", "no TODO"]), ctx)
    assert out.status is ArmStatus.OK
    body = json.loads(out.output)
    assert body["passed"] is True and body["score"] == 1.0 and body["reasons"] == []
    assert [set(c) for c in body["checks"]] == [{"criterion", "passed", "method", "detail"}] * 3
    assert body["verification"] == {
        "method": "TESTS",
        "checks": [
            {"name": "add(2, 3) == 5", "method": "tests", "passed": True},
            {"name": "no TODO", "method": "deterministic", "passed": True},
            {"name": "empty", "method": "deterministic", "passed": True},
        ],
    }
    assert out.artifacts == {"passed": "true", "score": "1.0000"}


async def test_request_without_draft_fails():
    settings = down_settings()
    ctx = Ctx(settings=settings, llm=LLMClient(settings))
    req = request("", [])
    req.inputs.pop("draft")
    out = await JudgeArm().handle(req, ctx)
    assert out.status is ArmStatus.FAILED and "draft" in (out.reason or "")


# --- code criteria through the real sandbox (octollm.sandbox.run_checks, no mocks) ------------

BUGGY_DRAFT = "```python\ndef add(a, b):\n    return a + b if a >= 0 else b - a\n```"
LOOPING_DRAFT = "```python\nwhile True:\n    pass\n\ndef add(a, b):\n    return a + b\n```"


async def test_the_arm_runs_code_criteria_in_the_sandbox_of_its_settings():
    settings = down_settings().model_copy(update={"sandbox_wall_s": 2.0})
    ctx = Ctx(settings=settings, llm=LLMClient(settings))
    criteria = ["add(2, 3) == 5", "add(-1, 1) returns 0"]

    async def verdict(draft: str) -> dict[str, object]:
        out = await JudgeArm().handle(request(draft, criteria), ctx)
        assert out.status is ArmStatus.OK
        body: dict[str, object] = json.loads(out.output)
        return body

    right = await verdict(CODE_DRAFT)
    assert right["passed"] is True and right["score"] == 1.0
    buggy = await verdict(BUGGY_DRAFT)  # right for positive a only: the second check finds it
    assert buggy["passed"] is False and buggy["score"] == 0.6667  # the answer is not empty
    assert buggy["reasons"] == ["add(-1, 1) returns 0: add(-1, 1) returned 2, expected 0"]
    looping = await verdict(LOOPING_DRAFT)
    assert looping["passed"] is False and looping["score"] == 0.3333
    assert all("timed out after 2s" in r for r in looping["reasons"])  # type: ignore[attr-defined]


async def test_code_criteria_are_unverified_when_the_sandbox_refuses():
    # The executor's policy, not a Python that the judge falls back to: no python3 allowed here.
    settings = down_settings().model_copy(update={"sandbox_allowed_commands": ["echo"]})
    ctx = Ctx(settings=settings, llm=LLMClient(settings))
    out = await JudgeArm().handle(request(CODE_DRAFT, ["add(2, 3) == 5", "no TODO"]), ctx)
    body = json.loads(out.output)
    assert body["passed"] is False and body["score"] == pytest.approx(2 / 3, abs=1e-3)
    assert body["verification"]["method"] == "DETERMINISTIC"  # the tests never ran
    check = body["checks"][0]
    assert check["unverified"] is True
    assert check["detail"].startswith("unverified: the sandbox refused to run the code:")


async def test_a_draft_a_step_cut_never_passes():
    cut = {"answer": "output"}
    verdict = await judge_draft("x", "an answer", [], llm=None, meter=UsageMeter(), truncated=cut)
    assert not verdict.passed and verdict.score == 0.75
    assert verdict.checks[-1].method == "deterministic" and not verdict.checks[-1].passed
    assert "step answer cut its output" in verdict.reasons[-1]
    # even with every criterion met
    verdict = await judge_draft(
        "x", "an answer", ["no TODO"], llm=None, meter=UsageMeter(), truncated=cut
    )
    assert not verdict.passed and verdict.checks[0].passed
    # nothing cut: passes as before
    whole = await judge_draft("x", "an answer", [], llm=None, meter=UsageMeter(), truncated={})
    assert whole.passed


async def test_the_judge_arm_reads_the_orchestrators_truncated_input():
    settings = down_settings()
    ctx = Ctx(settings=settings, llm=LLMClient(settings))
    req = request("an answer", [])
    for raw in (json.dumps({"answer": "context,output"}), "not json"):  # unreadable: cut
        req.inputs["truncated"] = raw
        out = await JudgeArm().handle(req, ctx)
        assert out.status is ArmStatus.OK and out.artifacts["passed"] == "false", raw
    await ctx.llm.aclose()


# --- the answer checks (arms/checks_text.py) inside the verdict --------------------------------

REPLY_GOAL = "Draft a polite reply to <EMAIL_1> about invoice 4471."


async def test_an_echo_fails_before_any_llm_call_and_the_llm_criteria_are_unverified():
    # a recorded "passed" the judge must never ask for: the draft is the goal echoed back
    llm = LLMClient(Settings(), transport=recorded('{"passed": true, "reason": "Polite."}'))
    meter = UsageMeter()
    verdict = await judge_draft(REPLY_GOAL, REPLY_GOAL, ["is polite"], llm=llm, meter=meter)
    assert not verdict.passed and meter.prompt_tokens == 0
    assert verdict.checks[0].unverified and "failed echo" in verdict.checks[0].detail
    assert any(r.startswith("echo: the answer repeats the task") for r in verdict.reasons)
    assert verification(verdict.checks).method is VerificationMethod.DETERMINISTIC


async def test_a_good_answer_then_gets_the_llm_verdict():
    llm = LLMClient(Settings(), transport=recorded('{"passed": true, "reason": "Polite."}'))
    draft = "Dear customer, thank you for your note about invoice 4471; it is paid in full."
    verdict = await judge_draft(REPLY_GOAL, draft, ["is polite"], llm=llm, meter=UsageMeter())
    assert verdict.passed
    assert verification(verdict.checks).method is VerificationMethod.LLM_JUDGE


async def test_the_judge_arm_reads_context_and_feedback_for_the_answer_checks():
    settings = down_settings()
    ctx = Ctx(settings=settings, llm=LLMClient(settings))
    goal = "Draft a reply to the customer's message in the context."
    req = request("Dear <PERSON_1>, thank you; your order ships on Monday.", [], goal=goal)
    out = await JudgeArm().handle(req, ctx)
    assert json.loads(out.output)["passed"] is False  # <PERSON_1> looks invented
    req.context = "Message from <PERSON_1>: where is my order?"
    out = await JudgeArm().handle(req, ctx)
    assert json.loads(out.output)["passed"] is True
    # a repaired draft that repeats the complaint is still an echo
    complaint = "echo: the answer repeats the task instead of answering it"
    req.inputs["draft"] = f"{goal} A previous answer failed review; fix this: {complaint}"
    req.inputs["feedback"] = json.dumps([complaint])
    body = json.loads((await JudgeArm().handle(req, ctx)).output)
    assert body["passed"] is False and body["reasons"][0].startswith("echo:")
    await ctx.llm.aclose()
