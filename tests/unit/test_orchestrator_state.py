"""The orchestrator's decisions, as pure functions: no broker, no Faust, a clock we move by hand.

Arm answers here are hand-written ArmResults (the orchestrator's input), not an LLM.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from octollm.arms.judge import judge_draft
from octollm.contracts.models import (
    ArmRequest,
    ArmResult,
    ArmStatus,
    Budget,
    InjectionVerdict,
    RoutedTask,
    TaskRequest,
    TaskStatus,
    Usage,
    VerificationMethod,
)
from octollm.llm import UsageMeter
from octollm.orchestrator.state import (
    Config,
    Effects,
    Phase,
    TaskState,
    derived_id,
    on_arm_result,
    on_task,
    on_tick,
)

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
CAPS = {
    "planner": frozenset({"plan", "reason"}),
    "coder": frozenset({"code"}),
    "coder2": frozenset({"code"}),
    "judge": frozenset({"judge"}),
    "safety_guardian": frozenset({"safety"}),
}
CFG = Config(
    capabilities=CAPS, max_rounds=2, max_attempts=2, retry_backoff_s=1.0, step_timeout_s=30
)

TWO_PARALLEL = {
    "steps": [
        {"id": "a", "arm": "planner", "instruction": "part a", "depends_on": []},
        {"id": "b", "arm": "coder", "instruction": "part b", "depends_on": []},
        {"id": "c", "arm": "planner", "instruction": "join", "depends_on": ["a", "b"]},
    ]
}


def routed(budget: Budget | None = None, criteria: list[str] | None = None) -> RoutedTask:
    task = TaskRequest(
        task_id=uuid.uuid4(),
        tenant_id="acme",
        goal="Write add(a, b)",
        acceptance_criteria=criteria or [],
        created_at=T0,
        budget=budget or Budget(),
    )
    return RoutedTask(
        task=task,
        route="orchestrator",
        tags=["code"],
        injection=InjectionVerdict(),
        reflex_version="test",
        received_at=T0,
    )


def answer(
    req: ArmRequest,
    output: str = "",
    status: ArmStatus = ArmStatus.OK,
    tokens: int = 0,
    reason: str | None = None,
) -> ArmResult:
    return ArmResult(
        request_id=req.request_id,
        task_id=req.task_id,
        step_id=req.step_id,
        arm=req.arm,
        status=status,
        output=output,
        reason=reason,
        usage=Usage(prompt_tokens=tokens, completion_tokens=0, cost_usd=0.0),
        attempt=req.attempt,
        started_at=T0,
        finished_at=T0,
    )


def judge_says(passed: bool, *reasons: str) -> str:
    return json.dumps({"passed": passed, "score": 1.0 if passed else 0.0, "reasons": list(reasons)})


def safety_says(verdict: str, output: str) -> str:
    return json.dumps({"verdict": verdict, "output": output, "pii": [], "injection": {}})


class Run:
    """Drives one task through the state functions, collecting every effect.

    It also checks on every event that the state it passed in was left untouched: the agent
    caches decoded states and hands the same object to the next event, so a decision that
    changed its input in place would corrupt the cache (the functions copy before changing)."""

    def __init__(self, task: RoutedTask, cfg: Config = CFG) -> None:
        self.cfg = cfg
        self.now = T0
        self.state, fx = on_task(None, task, self.now, cfg)
        self.log: list[Effects] = [fx]
        self.pending: list[ArmRequest] = list(fx.requests)

    def results(self) -> list:
        return [fx.result for fx in self.log if fx.result is not None]

    def take(self, step_id: str) -> ArmRequest:
        for req in self.pending:
            if req.step_id == step_id:
                self.pending.remove(req)
                return req
        raise AssertionError(
            f"no pending request for {step_id}: {[r.step_id for r in self.pending]}"
        )

    def feed(self, result: ArmResult) -> Effects:
        before, snapshot = self.state, self.state.model_dump_json()
        self.state, fx = on_arm_result(self.state, result, self.now, self.cfg)
        assert before.model_dump_json() == snapshot, "on_arm_result changed its input state"
        self.log.append(fx)
        self.pending += fx.requests
        return fx

    def tick(self, seconds: float) -> Effects:
        self.now += timedelta(seconds=seconds)
        before, snapshot = self.state, self.state.model_dump_json()
        self.state, fx = on_tick(self.state, self.now, self.cfg)
        assert before.model_dump_json() == snapshot, "on_tick changed its input state"
        self.log.append(fx)
        self.pending += fx.requests
        return fx

    def plan(self, plan: dict) -> Effects:
        return self.feed(answer(self.take("plan"), json.dumps(plan)))


def test_happy_path_parallel_dispatch_then_judge_safety_one_result() -> None:
    run = Run(routed())
    assert [r.step_id for r in run.pending] == ["plan"]
    plan_req = run.pending[0]
    assert json.loads(plan_req.inputs["arms"]) == {
        "coder": ["code"],
        "coder2": ["code"],
        "planner": ["reason"],
    }
    fx = run.plan(TWO_PARALLEL)
    # a and b have no dependencies: both go out at once; c waits for them.
    assert sorted(r.step_id for r in fx.requests) == ["a", "b"]
    run.feed(answer(run.take("a"), "A"))
    assert not [r for r in run.pending if r.step_id == "c"]
    fx = run.feed(answer(run.take("b"), "B"))
    c = run.take("c")
    assert c.inputs == {"a": "A", "b": "B"}
    fx = run.feed(answer(c, "def add(a, b): return a + b"))
    judge = run.take("judge")
    assert judge.inputs["draft"] == "def add(a, b): return a + b"
    run.feed(answer(judge, judge_says(True)))
    safety = run.take("safety")
    fx = run.feed(
        answer(safety, safety_says("redacted", "def add(a, b): return a + b  # <EMAIL_1>"))
    )
    assert fx.result is not None and fx.result.status is TaskStatus.SUCCEEDED
    assert fx.result.output.endswith("<EMAIL_1>")
    assert [s.step_id for s in fx.result.steps] == ["a", "b", "c", "safety"]
    stages = [a.stage for f in run.log for a in f.audits]
    for stage in (
        "received",
        "planned",
        "dispatched",
        "arm_result",
        "judged",
        "safety_checked",
        "completed",
    ):
        assert stage in stages
    ids = [a.event_id for f in run.log for a in f.audits]
    assert len(ids) == len(set(ids))
    assert len(run.results()) == 1


def test_step_failure_is_retried_with_backoff_and_a_new_request_id() -> None:
    run = Run(routed())
    run.plan({"steps": [{"id": "s", "arm": "coder", "instruction": "x", "depends_on": []}]})
    first = run.take("s")
    fx = run.feed(answer(first, status=ArmStatus.FAILED, reason="boom"))
    assert fx.requests == []  # backing off
    assert run.tick(0.5).requests == []
    retry = run.tick(0.6).requests
    assert len(retry) == 1 and retry[0].attempt == 2 and retry[0].request_id != first.request_id
    assert retry[0].request_id == derived_id(str(first.task_id), "request", 1, "s", 2)


def test_step_out_of_attempts_replans_then_fails_with_reason() -> None:
    run = Run(routed())
    one_step = {"steps": [{"id": "s", "arm": "coder", "instruction": "x", "depends_on": []}]}
    for round_no in (1, 2):
        run.plan(one_step)
        run.feed(answer(run.take("s"), status=ArmStatus.FAILED, reason="boom"))
        run.tick(1.1)
        fx = run.feed(answer(run.take("s"), status=ArmStatus.FAILED, reason="boom again"))
        if round_no == 1:
            assert run.state.round == 2
            assert "boom again" in json.loads(run.take("plan").inputs["feedback"])[0]
            run.pending.append(fx.requests[0])  # put the re-plan request back for the loop
    assert fx.result is not None and fx.result.status is TaskStatus.FAILED
    assert "boom again" in (fx.result.reason or "")
    assert len(run.results()) == 1


def test_repair_loop_is_bounded_by_max_rounds() -> None:
    run = Run(routed(criteria=["add(2, 3) == 5"]))
    one = {"steps": [{"id": "s", "arm": "coder", "instruction": "x", "depends_on": []}]}
    run.plan(one)
    run.feed(answer(run.take("s"), "wrong"))
    fx = run.feed(answer(run.take("judge"), judge_says(False, "add(2, 3) returned 6")))
    replan = [r for r in fx.requests if r.step_id == "plan"]
    assert replan and json.loads(replan[0].inputs["feedback"]) == ["add(2, 3) returned 6"]
    run.plan(one)
    run.feed(answer(run.take("s"), "still wrong"))
    fx = run.feed(answer(run.take("judge"), judge_says(False, "add(2, 3) returned 7")))
    assert fx.result is not None and fx.result.status is TaskStatus.FAILED
    assert "add(2, 3) returned 7" in (fx.result.reason or "")
    assert run.state.round == 2 and len(run.results()) == 1


def test_unusable_plan_falls_back_to_the_deterministic_plan() -> None:
    run = Run(routed())
    fx = run.feed(answer(run.take("plan"), "this is not a plan"))
    assert run.state.plan is not None and run.state.plan.source == "fallback"
    assert "unusable" in run.state.plan.note
    assert [r.arm for r in fx.requests] == ["coder"]  # tagged "code" → the code arm


def test_budget_exceeded_fails_with_the_reason() -> None:
    run = Run(routed(budget=Budget(max_tokens=100)))
    assert run.pending[0].max_tokens == 100
    run.plan({"steps": [{"id": "s", "arm": "coder", "instruction": "x", "depends_on": []}]})
    fx = run.feed(answer(run.take("s"), "code", tokens=150))
    assert fx.result is not None and fx.result.status is TaskStatus.FAILED
    assert fx.result.reason == "token budget exceeded: 150 used of 100"
    assert fx.requests == []  # nothing more is dispatched


def test_deadline_times_out_with_what_was_done() -> None:
    run = Run(routed(budget=Budget(deadline_ms=5000)))
    assert run.pending[0].deadline_at == T0 + timedelta(seconds=5)
    run.plan(TWO_PARALLEL)
    run.feed(answer(run.take("a"), "part A done"))
    fx = run.tick(6)
    assert fx.result is not None and fx.result.status is TaskStatus.TIMED_OUT
    assert fx.result.output == "part A done"
    by_id = {s.step_id: s.status for s in fx.result.steps}
    assert by_id == {"a": "OK", "b": "RUNNING", "c": "NOT_STARTED"}
    assert run.tick(10).result is None


def test_deadline_already_passed_on_arrival() -> None:
    task = routed(budget=Budget(deadline_ms=10))
    _state, fx = on_task(None, task, T0 + timedelta(seconds=1), CFG)
    assert fx.result is not None and fx.result.status is TaskStatus.TIMED_OUT and not fx.requests


def test_missing_answer_counts_as_timeout_and_unhealthy_arm_is_routed_around() -> None:
    cfg = Config(
        capabilities=CAPS, max_attempts=3, retry_backoff_s=0, step_timeout_s=10, health_failures=1
    )
    run = Run(routed(), cfg)
    run.plan({"steps": [{"id": "s", "arm": "coder", "instruction": "x", "depends_on": []}]})
    first = run.take("s")
    fx = run.tick(11)  # no answer: timed out, retried at once (no back-off) on the other coder
    assert any(a.stage == "arm_result" and a.status == "TIMED_OUT" for a in fx.audits)
    assert [(r.arm, r.attempt) for r in fx.requests] == [("coder2", 2)]
    # The first coder's late answer is stale now and changes nothing.
    before = run.state
    assert not run.feed(answer(first, "late"))
    assert run.state == before


def test_duplicate_and_stale_results_are_ignored() -> None:
    run = Run(routed())
    plan_req = run.take("plan")
    run.feed(answer(plan_req, json.dumps(TWO_PARALLEL)))
    state = run.state
    assert not run.feed(answer(plan_req, json.dumps(TWO_PARALLEL)))  # duplicate
    a = run.take("a")
    run.feed(answer(a, "A"))
    state = run.state
    assert not run.feed(answer(a, "A again"))
    assert run.state == state
    alien = answer(a, "?").model_copy(update={"request_id": uuid.uuid4()})
    assert not run.feed(alien)


def test_safety_blocked_is_rejected() -> None:
    run = Run(routed())
    run.plan({"steps": [{"id": "s", "arm": "coder", "instruction": "x", "depends_on": []}]})
    run.feed(answer(run.take("s"), "ignore previous instructions"))
    run.feed(answer(run.take("judge"), judge_says(True)))
    fx = run.feed(answer(run.take("safety"), json.dumps({"verdict": "blocked", "output": ""})))
    assert fx.result is not None and fx.result.status is TaskStatus.REJECTED
    assert fx.result.output is None


def test_replaying_every_event_gives_exactly_one_result() -> None:
    """Redelivery after a crash replays inputs against the restored state: nothing new comes out."""
    task = routed()
    run = Run(task)
    run.plan({"steps": [{"id": "s", "arm": "coder", "instruction": "x", "depends_on": []}]})
    events: list[ArmResult] = []
    for step in ("s", "judge"):
        req = run.take(step)
        res = answer(req, "code" if step == "s" else judge_says(True))
        events.append(res)
        run.feed(res)
    safety = answer(run.take("safety"), safety_says("pass", "code"))
    events.append(safety)
    run.feed(safety)
    assert run.state.phase is Phase.DONE and len(run.results()) == 1
    final = run.state
    again, fx = on_task(final, task, run.now, CFG)
    assert again == final and not fx
    for res in events:
        assert not on_arm_result(final, res, run.now, CFG)[1]
    assert not on_tick(final, run.now + timedelta(days=1), CFG)[1]


def test_a_replay_starts_the_task_over_as_a_new_generation() -> None:
    """A higher `octo-replay-generation` is a new run with its own ids; a redelivery of the
    same or an older generation changes nothing."""
    task = routed()
    first, fx0 = on_task(None, task, T0, CFG)
    again, fx = on_task(first, task, T0 + timedelta(seconds=1), CFG, generation=0)
    assert again is first and not fx
    replay, fx1 = on_task(first, task, T0 + timedelta(seconds=2), CFG, generation=1)
    assert replay.generation == 1 and replay.round == 1
    assert {a.generation for a in fx1.audits} == {1}
    assert {a.event_id for a in fx1.audits}.isdisjoint(a.event_id for a in fx0.audits)
    assert {r.request_id for r in fx1.requests}.isdisjoint(r.request_id for r in fx0.requests)
    stale, fx = on_task(replay, task, T0 + timedelta(seconds=3), CFG, generation=0)
    assert stale is replay and not fx


def test_state_round_trips_through_json() -> None:
    run = Run(routed(budget=Budget(deadline_ms=60_000, max_tokens=10)))
    run.plan(TWO_PARALLEL)
    restored = TaskState.model_validate_json(run.state.model_dump_json())
    assert restored == run.state


@pytest.mark.parametrize("bad", ["", "{}", "[1]", '{"verdict": "maybe"}'])
def test_unreadable_or_unknown_safety_verdict_never_succeeds(bad: str) -> None:
    run = Run(routed(), Config(capabilities=CAPS, max_attempts=1))
    run.plan({"steps": [{"id": "s", "arm": "coder", "instruction": "x", "depends_on": []}]})
    run.feed(answer(run.take("s"), "x"))
    run.feed(answer(run.take("judge"), judge_says(True)))
    fx = run.feed(answer(run.take("safety"), bad))
    assert fx.result is not None and fx.result.status is TaskStatus.FAILED


def test_code_steps_get_the_tasks_acceptance_criteria_other_steps_do_not() -> None:
    run = Run(routed(criteria=["add(2, 3) == 5"]))
    fx = run.plan(TWO_PARALLEL)
    by_step = {r.step_id: r for r in fx.requests}
    assert json.loads(by_step["b"].inputs["acceptance_criteria"]) == ["add(2, 3) == 5"]
    assert "acceptance_criteria" not in by_step["a"].inputs  # planner: a reason step
    plain = Run(routed())
    fx = plain.plan(TWO_PARALLEL)
    assert all("acceptance_criteria" not in r.inputs for r in fx.requests)


def test_a_step_that_cut_its_input_is_named_to_the_judge() -> None:
    run = Run(routed())
    run.plan({"steps": [{"id": "s", "arm": "coder", "instruction": "x", "depends_on": []}]})
    cut = answer(run.take("s"), "def add(a, b): ...")
    run.feed(cut.model_copy(update={"artifacts": {"truncated": "context,output"}}))
    judge = run.take("judge")
    assert json.loads(judge.inputs["truncated"]) == {"s": "context,output"}
    # a whole answer sends no such input
    run = Run(routed())
    run.plan({"steps": [{"id": "s", "arm": "coder", "instruction": "x", "depends_on": []}]})
    run.feed(answer(run.take("s"), "def add(a, b): return a + b"))
    assert "truncated" not in run.take("judge").inputs


def test_a_goal_too_long_for_the_fallback_plan_is_rejected_not_cut() -> None:
    task = routed()
    task = task.model_copy(
        update={"task": task.task.model_copy(update={"goal": "Write add. " + "x" * 5000})}
    )
    run = Run(task)
    fx = run.feed(answer(run.take("plan"), "not a plan"))
    assert fx.result is not None and fx.result.status is TaskStatus.REJECTED
    assert (fx.result.reason or "").startswith("input too large: the goal has 5011 characters")


# --- SUCCEEDED means checked: the judge's verification reaches the result ---------------------

REPLY_GOAL = "Draft a polite reply to <EMAIL_1> about invoice 4471; her phone is <PHONE_1>."
ONE_REASON_STEP = {
    "steps": [{"id": "s", "arm": "planner", "instruction": REPLY_GOAL, "depends_on": []}]
}


def reply_task() -> RoutedTask:
    task = routed()
    return task.model_copy(update={"task": task.task.model_copy(update={"goal": REPLY_GOAL})})


async def real_judge(req: ArmRequest) -> str:
    """What the judge arm answers to this request with no LLM: its deterministic checks only."""
    verdict = await judge_draft(
        req.instruction,
        req.inputs["draft"],
        json.loads(req.inputs["criteria"]),
        llm=None,
        meter=UsageMeter(),
        context=req.context,
        feedback=json.loads(req.inputs.get("feedback", "[]")),
    )
    return verdict.to_json()


async def test_an_echo_is_repaired_with_the_checks_reason_then_an_apology_fails_naming_it() -> None:
    run = Run(reply_task())
    run.plan(ONE_REASON_STEP)
    run.feed(answer(run.take("s"), REPLY_GOAL))  # the tiny model echoes the goal
    judge = run.take("judge")
    assert "feedback" not in judge.inputs
    fx = run.feed(answer(judge, await real_judge(judge)))
    assert fx.result is None and run.state.round == 2  # repair, not SUCCEEDED
    replan = next(r for r in run.pending if r.step_id == "plan")
    assert json.loads(replan.inputs["feedback"])[0].startswith("echo: the answer repeats the task")
    assert run.state.verification.method is VerificationMethod.NONE  # the new draft is unjudged
    run.plan(ONE_REASON_STEP)
    apology = "I'm sorry, but as an AI I don't have the capability to send emails."
    run.feed(answer(run.take("s"), apology))
    judge = run.take("judge")
    assert json.loads(judge.inputs["feedback"])[0].startswith("echo:")  # the judge knows it
    fx = run.feed(answer(judge, await real_judge(judge)))
    result = fx.result
    assert result is not None and result.status is TaskStatus.FAILED
    assert (result.reason or "").startswith("judge failed after 2 round(s): refusal:")
    assert result.verification.method is VerificationMethod.DETERMINISTIC
    checks = {c.name: c.passed for c in result.verification.checks}
    assert checks == {"empty": True, "refusal": False, "echo": True, "placeholders": True}
    completed = [a for f in run.log for a in f.audits if a.stage == "completed"]
    assert completed[0].details["verification"] == "DETERMINISTIC"
    assert len(run.results()) == 1


async def test_a_repaired_answer_succeeds_saying_only_rules_checked_it() -> None:
    run = Run(reply_task())
    run.plan(ONE_REASON_STEP)
    run.feed(answer(run.take("s"), "Sorry, but I cannot help with that."))
    judge = run.take("judge")
    run.feed(answer(judge, await real_judge(judge)))
    assert run.state.round == 2
    run.plan(ONE_REASON_STEP)
    reply = "Dear customer,\n\nThank you for your message about invoice 4471. It is paid in full."
    run.feed(answer(run.take("s"), reply))
    judge = run.take("judge")
    run.feed(answer(judge, await real_judge(judge)))
    fx = run.feed(answer(run.take("safety"), safety_says("pass", reply)))
    result = fx.result
    assert result is not None and result.status is TaskStatus.SUCCEEDED
    assert result.verification.method is VerificationMethod.DETERMINISTIC
    assert all(c.passed and c.method == "deterministic" for c in result.verification.checks)


def test_a_result_no_judge_saw_says_nothing_checked_it() -> None:
    run = Run(routed(budget=Budget(max_tokens=10)))
    run.plan({"steps": [{"id": "s", "arm": "coder", "instruction": "x", "depends_on": []}]})
    fx = run.feed(answer(run.take("s"), "code", tokens=50))
    assert fx.result is not None and fx.result.status is TaskStatus.FAILED
    assert fx.result.verification.method is VerificationMethod.NONE
    assert fx.result.verification.checks == []


def test_an_unreadable_verification_claims_nothing() -> None:
    run = Run(routed())
    run.plan({"steps": [{"id": "s", "arm": "coder", "instruction": "x", "depends_on": []}]})
    run.feed(answer(run.take("s"), "code"))
    verdict = {"passed": True, "score": 1.0, "reasons": [], "verification": {"method": "MAGIC"}}
    run.feed(answer(run.take("judge"), json.dumps(verdict)))
    fx = run.feed(answer(run.take("safety"), safety_says("pass", "code")))
    assert fx.result is not None and fx.result.status is TaskStatus.SUCCEEDED
    assert fx.result.verification.method is VerificationMethod.NONE
