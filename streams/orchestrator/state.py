"""A task's state and every decision about it, as pure functions: (state, event, now) → (state,
effects). No Kafka, no Faust, no clock of their own; the agent (agent.py) feeds them events and
sends their effects, unit tests call them directly.

Phases: planning → running → judging → safety → done. Events: a routed task arrives, an arm
answers (planner, plan step, judge, safety guardian), the clock ticks. Effects: `ArmRequest`s to
send, `AuditEvent`s, and at most one terminal `TaskResult` over the task's whole life.

Replays are harmless: a task seen before, a result for a step already done, or one answering a
stale request id changes nothing and emits nothing, which is what makes redelivery safe.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from octollm.contracts.models import (
    ArmRequest,
    ArmResult,
    ArmStatus,
    AuditEvent,
    RoutedTask,
    StepSummary,
    TaskResult,
    TaskStatus,
    Usage,
    Verification,
)
from octollm.orchestrator.plan import (
    CAP_CODE,
    DEFAULT_MAX_STEPS,
    InputTooLarge,
    Plan,
    PlanError,
    fallback_plan,
    plannable_arms,
    ready_steps,
    sink_steps,
    validate_plan,
)

COMPONENT = "orchestrator"
#: Namespace of every id the orchestrator derives (request ids, audit event ids).
ID_NAMESPACE = uuid.UUID("6f1c1d2e-8a4b-5c3d-9e0f-0c7a11e40004")

PLAN, JUDGE, SAFETY = "plan", "judge", "safety"
STAGE_CAPABILITY = {PLAN: "plan", JUDGE: "judge", SAFETY: "safety"}


class Phase(StrEnum):
    PLANNING = "planning"
    RUNNING = "running"
    JUDGING = "judging"
    SAFETY = "safety"
    DONE = "done"


StepStatus = Literal["pending", "running", "done", "failed"]


@dataclass(frozen=True)
class Config:
    """What the decisions depend on besides the task: limits and the registered arms."""

    capabilities: Mapping[str, frozenset[str]]
    max_rounds: int = 2
    max_attempts: int = 3
    retry_backoff_s: float = 0.5
    step_timeout_s: float = 300.0
    health_failures: int = 3
    max_steps: int = DEFAULT_MAX_STEPS

    @classmethod
    def from_settings(cls, settings: Any, capabilities: Mapping[str, frozenset[str]]) -> Config:
        return cls(
            capabilities=dict(capabilities),
            max_rounds=settings.orchestrator_max_rounds,
            max_attempts=settings.orchestrator_max_attempts,
            retry_backoff_s=settings.orchestrator_retry_backoff_s,
            step_timeout_s=settings.orchestrator_step_timeout_s,
            health_failures=settings.arm_health_failures,
        )


class StepState(BaseModel):
    """One call to an arm: a plan step, or the plan/judge/safety stage."""

    model_config = ConfigDict(extra="forbid")

    step_id: str
    arm: str
    status: StepStatus = "pending"
    attempt: int = 0
    request_id: str | None = None
    output: str = ""
    reason: str | None = None
    final_status: str | None = None  # the ArmStatus of the last result
    truncated: str = ""  # what the arm cut to answer (its `truncated` artifact); judge fails it
    usage: Usage = Field(default_factory=Usage)
    first_dispatched_at: datetime | None = None
    timeout_at: datetime | None = None
    retry_at: datetime | None = None
    finished_at: datetime | None = None


class TaskState(BaseModel):
    """Everything the orchestrator knows about one task; kept in the `tasks` table as JSON."""

    model_config = ConfigDict(extra="forbid")

    routed: RoutedTask
    phase: Phase = Phase.PLANNING
    round: int = 1
    plan: Plan | None = None
    steps: dict[str, StepState] = Field(default_factory=dict)  # the current round's plan steps
    stage: StepState | None = None  # the current plan/judge/safety call
    feedback: list[str] = Field(default_factory=list)
    draft: str = ""
    #: What checked the current round's draft (the judge's verdict); NONE until it is judged.
    verification: Verification = Field(default_factory=Verification)
    usage: Usage = Field(default_factory=Usage)
    arm_failures: dict[str, int] = Field(default_factory=dict)  # in a row, per arm
    received_at: datetime
    deadline_at: datetime | None = None
    #: Replay generation of the routed task this state is for (`octo-replay-generation`).
    generation: int = 0
    emitted: bool = False
    status: TaskStatus | None = None
    done_at: datetime | None = None

    @property
    def task_id(self) -> str:
        return str(self.routed.task.task_id)

    @property
    def tenant_id(self) -> str:
        return self.routed.task.tenant_id


@dataclass
class Effects:
    requests: list[ArmRequest] = field(default_factory=list)
    audits: list[AuditEvent] = field(default_factory=list)
    result: TaskResult | None = None

    def __bool__(self) -> bool:
        return bool(self.requests or self.audits or self.result)


# --- ids and audit ----------------------------------------------------------------------------


def derived_id(task_id: str, *parts: object) -> uuid.UUID:
    """A deterministic id: the same step of the same task always gets the same one."""
    return uuid.uuid5(ID_NAMESPACE, "/".join([task_id, *map(str, parts)]))


def _replayed(state: TaskState) -> tuple[int, ...]:
    """The generation as an extra id part, for replays only: original ids stay as they were."""
    return (state.generation,) if state.generation else ()


def _audit(
    state: TaskState,
    fx: Effects,
    stage: str,
    now: datetime,
    *,
    status: str = "",
    key: str = "",
    duration_ms: int | None = None,
    **details: str,
) -> None:
    event_id = derived_id(state.task_id, "audit", stage, state.round, key, 0, *_replayed(state))
    fx.audits.append(
        AuditEvent(
            event_id=str(event_id),
            task_id=state.task_id,
            tenant_id=state.tenant_id,
            stage=stage,
            component=COMPONENT,
            ts=now,
            status=status,
            duration_ms=duration_ms,
            generation=state.generation,
            details={k: v for k, v in details.items() if v},
        )
    )


# --- events -----------------------------------------------------------------------------------


def on_task(
    existing: TaskState | None,
    routed: RoutedTask,
    now: datetime,
    cfg: Config,
    generation: int = 0,
) -> tuple[TaskState, Effects]:
    """A routed task arrived: ask the planner for a plan.

    A redelivered task (same or older generation) changes nothing; a replay (a higher
    `octo-replay-generation`) starts the task over, as a new generation with its own ids.
    """
    if existing is not None and generation <= existing.generation:
        return existing, Effects()
    task = routed.task
    deadline = None
    if task.budget.deadline_ms is not None:
        deadline = task.created_at + timedelta(milliseconds=task.budget.deadline_ms)
        if generation > 0:  # a replay is judged against a fresh deadline, not the original one
            deadline = now + timedelta(milliseconds=task.budget.deadline_ms)
    state = TaskState(routed=routed, received_at=now, deadline_at=deadline, generation=generation)
    fx = Effects()
    _audit(state, fx, "received", now, status="OK", route=routed.route, tags=",".join(routed.tags))
    if deadline is not None and now >= deadline:
        return _finish(state, fx, now, TaskStatus.TIMED_OUT, reason="deadline passed on arrival")
    return _start_round(state, fx, now, cfg)


def on_arm_result(
    state: TaskState, result: ArmResult, now: datetime, cfg: Config
) -> tuple[TaskState, Effects]:
    """An arm answered. Stale, duplicate and late answers are ignored."""
    if state.phase is Phase.DONE:
        return state, Effects()
    state = _copy(state)
    fx = Effects()
    rid = str(result.request_id)
    if (
        state.stage is not None
        and state.stage.request_id == rid
        and state.stage.status == "running"
    ):
        return _on_stage_result(state, fx, state.stage, result, now, cfg)
    for step in state.steps.values():
        if step.request_id == rid and step.status == "running":
            return _on_step_result(state, fx, step, result, now, cfg)
    return state, Effects()


def on_tick(state: TaskState, now: datetime, cfg: Config) -> tuple[TaskState, Effects]:
    """The clock: the task's deadline, per-step timeouts, retries whose back-off is over."""
    if state.phase is Phase.DONE:
        return state, Effects()
    if state.deadline_at is not None and now >= state.deadline_at:
        state = _copy(state)
        return _finish(state, Effects(), now, TaskStatus.TIMED_OUT, reason="deadline passed")

    def expired(c: StepState) -> bool:
        return c.status == "running" and c.timeout_at is not None and now >= c.timeout_at

    def due(c: StepState) -> bool:
        return c.status == "pending" and c.retry_at is not None and now >= c.retry_at

    stage_expired = state.stage is not None and expired(state.stage)
    running = state.phase is Phase.RUNNING
    steps_expired = [s for s, c in state.steps.items() if running and expired(c)]
    anything_due = (state.stage is not None and due(state.stage)) or (
        running and any(due(c) for c in state.steps.values())
    )
    if not (stage_expired or steps_expired or anything_due):
        return state, Effects()
    state = _copy(state)
    fx = Effects()
    # A missing answer counts as the arm timing out: same retry and health rules.
    if stage_expired and state.stage is not None:
        synthetic = _synthetic_timeout(state, state.stage, now)
        state, more = _on_stage_result(state, Effects(), state.stage, synthetic, now, cfg)
        _merge(fx, more)
    for step_id in steps_expired:
        if state.phase is not Phase.RUNNING or step_id not in state.steps:
            break  # an earlier timeout ended the round or the task
        call = state.steps[step_id]
        state, more = _on_step_result(
            state, Effects(), call, _synthetic_timeout(state, call, now), now, cfg
        )
        _merge(fx, more)
    if state.phase is Phase.DONE:
        return state, fx
    if state.stage is not None and due(state.stage):
        _dispatch_stage(state, fx, now, cfg)
    if state.phase is Phase.RUNNING:
        _dispatch_ready(state, fx, now, cfg)
    return state, fx


def is_expired(state: TaskState, now: datetime, retention: timedelta) -> bool:
    """A finished task may leave the table once replays of it are no longer expected."""
    return (
        state.phase is Phase.DONE and state.done_at is not None and now - state.done_at > retention
    )


def _copy(state: TaskState) -> TaskState:
    """A copy the decisions below may change: the parts they change in place (steps, stage,
    feedback, arm failures) are new objects; the rest is shared, since it is only ever replaced
    (the routed task, the plan, usages, timestamps). The caller's state stays untouched (the
    agent caches it), and this costs a few µs where `model_copy(deep=True)` cost ~0.5 ms."""
    return state.model_copy(
        update={
            "steps": {k: s.model_copy() for k, s in state.steps.items()},
            "stage": state.stage.model_copy() if state.stage is not None else None,
            "feedback": list(state.feedback),
            "arm_failures": dict(state.arm_failures),
        }
    )


# --- rounds, stages and steps -----------------------------------------------------------------


def _merge(into: Effects, more: Effects) -> None:
    into.requests += more.requests
    into.audits += more.audits
    if more.result is not None:
        into.result = more.result


def _arm_for(
    capability: str, cfg: Config, state: TaskState, avoid: str | None = None
) -> str | None:
    """A registered arm with `capability`, preferring healthy ones."""
    arms = sorted(a for a, caps in cfg.capabilities.items() if capability in caps)
    healthy = [a for a in arms if state.arm_failures.get(a, 0) < cfg.health_failures]
    for pool in (healthy, arms):
        choice = [a for a in pool if a != avoid] or pool
        if choice:
            return choice[0]
    return None


def _start_round(
    state: TaskState, fx: Effects, now: datetime, cfg: Config
) -> tuple[TaskState, Effects]:
    arm = _arm_for("plan", cfg, state)
    if arm is None:
        return _use_plan(state, fx, now, cfg, None, "no planner arm is registered")
    state.phase = Phase.PLANNING
    state.plan = None
    state.steps = {}
    state.draft = ""
    state.verification = Verification()
    state.stage = StepState(step_id=PLAN, arm=arm)
    _dispatch_stage(state, fx, now, cfg)
    return state, fx


def _deadline_for(state: TaskState, now: datetime, cfg: Config) -> datetime:
    limit = now + timedelta(seconds=cfg.step_timeout_s)
    return min(limit, state.deadline_at) if state.deadline_at else limit


def _remaining_tokens(state: TaskState) -> int | None:
    limit = state.routed.task.budget.max_tokens
    if limit is None:
        return None
    return max(limit - state.usage.prompt_tokens - state.usage.completion_tokens, 0)


def _request(
    state: TaskState,
    call: StepState,
    now: datetime,
    cfg: Config,
    *,
    instruction: str,
    inputs: dict[str, str],
) -> ArmRequest:
    task = state.routed.task
    call.attempt += 1
    call.status = "running"
    call.retry_at = None
    call.request_id = str(
        derived_id(
            state.task_id, "request", state.round, call.step_id, call.attempt, *_replayed(state)
        )
    )
    call.first_dispatched_at = call.first_dispatched_at or now
    call.timeout_at = _deadline_for(state, now, cfg)
    return ArmRequest(
        request_id=uuid.UUID(call.request_id),
        task_id=task.task_id,
        tenant_id=task.tenant_id,
        step_id=call.step_id,
        arm=call.arm,
        instruction=instruction,
        inputs=inputs,
        context=task.context,
        attempt=call.attempt,
        deadline_at=call.timeout_at,
        max_tokens=_remaining_tokens(state),
        created_at=now,
        trace=task.trace,
    )


def _dispatch(
    state: TaskState, fx: Effects, call: StepState, request: ArmRequest, now: datetime
) -> None:
    fx.requests.append(request)
    _audit(
        state,
        fx,
        "dispatched",
        now,
        status="OK",
        key=f"{call.step_id}/{call.attempt}",
        arm=call.arm,
        step_id=call.step_id,
        attempt=str(call.attempt),
        request_id=str(request.request_id),
    )


def _dispatch_stage(state: TaskState, fx: Effects, now: datetime, cfg: Config) -> None:
    stage = state.stage
    assert stage is not None
    task = state.routed.task
    if stage.step_id == PLAN:
        arms = plannable_arms(cfg.capabilities)
        inputs = {
            "constraints": json.dumps(task.constraints),
            "acceptance_criteria": json.dumps(task.acceptance_criteria),
            "tags": json.dumps(state.routed.tags),
            "arms": json.dumps({a: sorted(c) for a, c in sorted(arms.items())}),
            "max_steps": str(cfg.max_steps),
        }
        if state.feedback:
            inputs["feedback"] = json.dumps(state.feedback)
    elif stage.step_id == JUDGE:
        inputs = {
            "draft": state.draft,
            "criteria": json.dumps(task.acceptance_criteria),
            "steps": json.dumps({s.step_id: s.output for s in state.steps.values()}),
        }
        cut = {s.step_id: s.truncated for s in state.steps.values() if s.truncated}
        if cut:
            inputs["truncated"] = json.dumps(cut)
        if state.feedback:  # a repaired draft that only repeats the complaint is an echo too
            inputs["feedback"] = json.dumps(state.feedback)
    else:
        inputs = {
            "output": state.draft,
            "injection": json.dumps(state.routed.injection.to_avro()),
        }
    request = _request(state, stage, now, cfg, instruction=task.goal, inputs=inputs)
    _dispatch(state, fx, stage, request, now)


def _dispatch_ready(state: TaskState, fx: Effects, now: datetime, cfg: Config) -> None:
    """Send every step whose dependencies are done and that is neither running nor backing off."""
    assert state.plan is not None
    done = [s for s, st in state.steps.items() if st.status == "done"]
    busy = [
        s
        for s, st in state.steps.items()
        if st.status in ("running", "failed") or (st.retry_at is not None and now < st.retry_at)
    ]
    for step in ready_steps(state.plan, done, busy):
        call = state.steps[step.id]
        inputs = {d: state.steps[d].output for d in step.depends_on}
        criteria = state.routed.task.acceptance_criteria
        if criteria and CAP_CODE in cfg.capabilities.get(call.arm, frozenset()):
            # a code step checks its own output against the task's examples before answering
            inputs["acceptance_criteria"] = json.dumps(list(criteria))
        request = _request(state, call, now, cfg, instruction=step.instruction, inputs=inputs)
        _dispatch(state, fx, call, request, now)


def _use_plan(
    state: TaskState, fx: Effects, now: datetime, cfg: Config, output: str | None, why: str
) -> tuple[TaskState, Effects]:
    """Adopt the planner's plan, or the deterministic fallback when it is unusable."""
    arms = plannable_arms(cfg.capabilities)
    plan: Plan | None = None
    if output is not None:
        try:
            data = json.loads(output)
            source = data.get("source", "llm") if isinstance(data, dict) else "llm"
            plan = validate_plan(
                data,
                arms=arms,
                max_steps=cfg.max_steps,
                source="fallback" if source == "fallback" else "llm",
            )
            if isinstance(data, dict) and data.get("note"):
                plan = plan.model_copy(update={"note": str(data["note"])})
        except (PlanError, ValueError) as exc:
            why = f"planner's plan unusable: {exc}"
    if plan is None:
        try:
            plan = fallback_plan(
                state.routed.task.goal, tags=state.routed.tags, capabilities=arms, note=why
            )
        except InputTooLarge as exc:
            return _finish(state, fx, now, TaskStatus.REJECTED, reason=str(exc))
        except PlanError as exc:
            return _finish(state, fx, now, TaskStatus.FAILED, reason=f"no usable plan: {exc}")
    state.plan = plan
    state.steps = {s.id: StepState(step_id=s.id, arm=s.arm) for s in plan.steps}
    state.stage = None
    state.phase = Phase.RUNNING
    _audit(
        state,
        fx,
        "planned",
        now,
        status="OK",
        source=plan.source,
        note=plan.note,
        steps=",".join(f"{s.id}:{s.arm}" for s in plan.steps),
    )
    _dispatch_ready(state, fx, now, cfg)
    return state, fx


def _account(state: TaskState, call: StepState, result: ArmResult) -> None:
    usage = result.usage
    call.usage = Usage(
        prompt_tokens=call.usage.prompt_tokens + usage.prompt_tokens,
        completion_tokens=call.usage.completion_tokens + usage.completion_tokens,
        cost_usd=call.usage.cost_usd + usage.cost_usd,
    )
    state.usage = Usage(
        prompt_tokens=state.usage.prompt_tokens + usage.prompt_tokens,
        completion_tokens=state.usage.completion_tokens + usage.completion_tokens,
        cost_usd=state.usage.cost_usd + usage.cost_usd,
    )
    if result.status is ArmStatus.OK:
        state.arm_failures[call.arm] = 0
    elif result.status in (ArmStatus.FAILED, ArmStatus.TIMED_OUT):
        state.arm_failures[call.arm] = state.arm_failures.get(call.arm, 0) + 1


def _over_budget(state: TaskState) -> str | None:
    budget = state.routed.task.budget
    tokens = state.usage.prompt_tokens + state.usage.completion_tokens
    if budget.max_tokens is not None and tokens > budget.max_tokens:
        return f"token budget exceeded: {tokens} used of {budget.max_tokens}"
    if budget.max_cost_usd is not None and state.usage.cost_usd > budget.max_cost_usd:
        return f"cost budget exceeded: ${state.usage.cost_usd:.4f} of ${budget.max_cost_usd:.4f}"
    return None


def _audit_result(
    state: TaskState, fx: Effects, call: StepState, result: ArmResult, now: datetime
) -> None:
    _audit(
        state,
        fx,
        "arm_result",
        now,
        status=result.status.value,
        key=f"{call.step_id}/{call.attempt}",
        duration_ms=int((result.finished_at - result.started_at).total_seconds() * 1000),
        arm=call.arm,
        step_id=call.step_id,
        attempt=str(call.attempt),
        reason=result.reason or "",
    )


def _settle(call: StepState, result: ArmResult, now: datetime) -> None:
    call.final_status = result.status.value
    call.reason = result.reason
    call.finished_at = now


def _retry_or_give_up(
    state: TaskState, fx: Effects, call: StepState, result: ArmResult, now: datetime, cfg: Config
) -> bool:
    """Schedule another attempt with back-off (maybe on another arm); False once out of tries."""
    if call.attempt >= cfg.max_attempts:
        call.status = "failed"
        return False
    call.status = "pending"
    call.request_id = None
    call.timeout_at = None
    call.retry_at = now + timedelta(seconds=cfg.retry_backoff_s * 2 ** (call.attempt - 1))
    if state.arm_failures.get(call.arm, 0) >= cfg.health_failures:
        caps = cfg.capabilities.get(call.arm, frozenset())
        wanted = (
            caps & frozenset(STAGE_CAPABILITY.values())
            if call.step_id in STAGE_CAPABILITY
            else caps
        )
        for capability in sorted(wanted):
            other = _arm_for(capability, cfg, state, avoid=call.arm)
            if other and other != call.arm:
                call.arm = other  # route around an unhealthy arm to one that can do the same
                break
    return True


def _on_stage_result(
    state: TaskState, fx: Effects, stage: StepState, result: ArmResult, now: datetime, cfg: Config
) -> tuple[TaskState, Effects]:
    _account(state, stage, result)
    _audit_result(state, fx, stage, result, now)
    _settle(stage, result, now)
    over = _over_budget(state)
    if over and stage.step_id != SAFETY:
        return _finish(state, fx, now, TaskStatus.FAILED, reason=over)
    if result.status is ArmStatus.REJECTED:
        status = TaskStatus.REJECTED
        return _finish(state, fx, now, status, reason=result.reason or f"{stage.step_id} refused")
    ok = result.status is ArmStatus.OK
    if stage.step_id == PLAN:
        if ok:
            stage.status = "done"
            return _use_plan(state, fx, now, cfg, result.output, "")
        if _retry_or_give_up(state, fx, stage, result, now, cfg):
            return state, fx
        return _use_plan(state, fx, now, cfg, None, f"planner failed: {result.reason}")
    verdict = _parse_json(result.output) if ok else None
    if verdict is None:
        if ok:  # an answer we cannot read counts as a failed call
            stage.reason = f"unreadable {stage.step_id} output"
        if _retry_or_give_up(state, fx, stage, result, now, cfg):
            return state, fx
        why = result.reason or stage.reason or "no usable answer"
        return _finish(state, fx, now, TaskStatus.FAILED, reason=f"{stage.step_id} failed: {why}")
    stage.status = "done"
    stage.output = result.output
    if stage.step_id == JUDGE:
        return _on_judged(state, fx, verdict, now, cfg)
    return _on_safety(state, fx, verdict, now)


def _on_judged(
    state: TaskState, fx: Effects, verdict: dict[str, Any], now: datetime, cfg: Config
) -> tuple[TaskState, Effects]:
    passed = verdict.get("passed") is True
    reasons = [str(r) for r in verdict.get("reasons", []) if str(r)][:10]
    state.verification = _verification(verdict)
    _audit(
        state,
        fx,
        "judged",
        now,
        status="PASSED" if passed else "FAILED",
        score=str(verdict.get("score", "")),
        reasons="; ".join(reasons)[:2000],
        verification=state.verification.method.value,
    )
    if passed:
        state.phase = Phase.SAFETY
        state.stage = StepState(
            step_id=SAFETY, arm=_arm_for("safety", cfg, state) or "safety_guardian"
        )
        _dispatch_stage(state, fx, now, cfg)
        return state, fx
    why = "; ".join(reasons) or "the judge rejected the draft"
    if state.round >= cfg.max_rounds:
        return _finish(
            state,
            fx,
            now,
            TaskStatus.FAILED,
            reason=f"judge failed after {state.round} round(s): {why}",
        )
    # Repair: a new round, planned with the judge's reasons as feedback.
    state.round += 1
    state.feedback = reasons or [why]
    return _start_round(state, fx, now, cfg)


def _verification(verdict: dict[str, Any]) -> Verification:
    """The judge's own account of what checked the draft; one we cannot read claims nothing."""
    try:
        return Verification.model_validate(verdict.get("verification") or {})
    except ValueError:
        return Verification()


def _on_safety(
    state: TaskState, fx: Effects, verdict: dict[str, Any], now: datetime
) -> tuple[TaskState, Effects]:
    kind = str(verdict.get("verdict", ""))
    _audit(
        state,
        fx,
        "safety_checked",
        now,
        status=kind.upper() or "UNKNOWN",
        pii=",".join(str(p) for p in verdict.get("pii", []) or []),
    )
    if kind == "blocked":
        reason = str(verdict.get("reason") or "the safety guardian blocked the output")
        return _finish(state, fx, now, TaskStatus.REJECTED, reason=reason)
    if kind not in ("pass", "redacted"):
        return _finish(state, fx, now, TaskStatus.FAILED, reason=f"unknown safety verdict {kind!r}")
    output = verdict.get("output")
    final = output if isinstance(output, str) else state.draft
    return _finish(state, fx, now, TaskStatus.SUCCEEDED, output=final)


def _on_step_result(
    state: TaskState, fx: Effects, call: StepState, result: ArmResult, now: datetime, cfg: Config
) -> tuple[TaskState, Effects]:
    assert state.plan is not None
    _account(state, call, result)
    _audit_result(state, fx, call, result, now)
    _settle(call, result, now)
    over = _over_budget(state)
    if over:
        return _finish(state, fx, now, TaskStatus.FAILED, reason=over)
    if result.status is ArmStatus.OK:
        call.status = "done"
        call.output = result.output
        call.truncated = result.artifacts.get("truncated", "")  # runtime.arm.TRUNCATED
        if all(s.status == "done" for s in state.steps.values()):
            sinks = sink_steps(state.plan)
            state.draft = "\n\n".join(state.steps[s.id].output for s in sinks)
            state.phase = Phase.JUDGING
            state.stage = StepState(step_id=JUDGE, arm=_arm_for("judge", cfg, state) or "judge")
            _dispatch_stage(state, fx, now, cfg)
            return state, fx
        _dispatch_ready(state, fx, now, cfg)
        return state, fx
    if result.status is ArmStatus.REJECTED:
        reason = f"step {call.step_id} refused by {call.arm}: {result.reason or 'no reason'}"
        return _finish(state, fx, now, TaskStatus.REJECTED, reason=reason)
    if _retry_or_give_up(state, fx, call, result, now, cfg):
        return state, fx
    why = (
        f"step {call.step_id} ({call.arm}) {result.status.value.lower()} after "
        f"{call.attempt} attempt(s): {result.reason or 'no reason'}"
    )
    if state.round < cfg.max_rounds:
        state.round += 1
        state.feedback = [why]
        return _start_round(state, fx, now, cfg)
    return _finish(state, fx, now, TaskStatus.FAILED, reason=why)


def _synthetic_timeout(state: TaskState, call: StepState, now: datetime) -> ArmResult:
    return ArmResult(
        request_id=uuid.UUID(call.request_id or str(uuid.UUID(int=0))),
        task_id=state.routed.task.task_id,
        step_id=call.step_id,
        arm=call.arm,
        status=ArmStatus.TIMED_OUT,
        reason="no result before the step's timeout",
        attempt=call.attempt,
        worker=COMPONENT,
        started_at=call.first_dispatched_at or now,
        finished_at=now,
    )


def _parse_json(text: str) -> dict[str, Any] | None:
    try:
        data = json.loads(text)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


# --- the end ----------------------------------------------------------------------------------


def summaries(state: TaskState) -> list[StepSummary]:
    """What each step did: the last round's plan steps in plan order, then the stages."""
    calls = list(state.steps.values())
    if state.stage is not None and state.stage.attempt:
        calls.append(state.stage)
    out = []
    for c in calls:
        if not c.attempt:
            status = "NOT_STARTED"
        elif c.status == "running":
            status = "RUNNING"
        else:
            status = c.final_status or "PENDING"
        duration = 0
        if c.first_dispatched_at and c.finished_at:
            duration = int((c.finished_at - c.first_dispatched_at).total_seconds() * 1000)
        out.append(
            StepSummary(
                step_id=c.step_id,
                arm=c.arm,
                status=status,
                attempts=c.attempt,
                duration_ms=max(duration, 0),
                reason=c.reason,
            )
        )
    return out


def _finish(
    state: TaskState,
    fx: Effects,
    now: datetime,
    status: TaskStatus,
    *,
    output: str | None = None,
    reason: str | None = None,
) -> tuple[TaskState, Effects]:
    """End the task: the one place a `TaskResult` is made, and only once."""
    if state.emitted:
        return state, fx
    if status is TaskStatus.TIMED_OUT and output is None:
        done = [s for s in state.steps.values() if s.status == "done"]
        output = state.draft or ("\n\n".join(s.output for s in done) if done else None)
    state.phase = Phase.DONE
    state.emitted = True
    state.status = status
    state.done_at = now
    task = state.routed.task
    fx.result = TaskResult(
        task_id=task.task_id,
        tenant_id=task.tenant_id,
        status=status,
        output=output,
        reason=reason,
        steps=summaries(state),
        usage=state.usage,
        created_at=task.created_at,
        completed_at=now,
        component=COMPONENT,
        verification=state.verification,
    )
    _audit(
        state,
        fx,
        "completed",
        now,
        status=status.value,
        duration_ms=int((now - state.received_at).total_seconds() * 1000),
        reason=(reason or "")[:2000],
        rounds=str(state.round),
        verification=state.verification.method.value,
    )
    return state, fx
