"""Plans: a small DAG of steps, each naming an arm and an instruction.

Pure functions, no Kafka and no LLM: the planner arm validates what the model proposes with
`validate_plan` (and falls back to `fallback_plan`), the orchestrator schedules with
`ready_steps` and aggregates with `sink_steps`. Unit tests call them directly.

Wire form (the planner arm's `ArmResult.output`, and the plan kept in the task's state):

    {"steps": [{"id": "s1", "arm": "retriever", "instruction": "...", "depends_on": []},
               {"id": "s2", "arm": "coder", "instruction": "...", "depends_on": ["s1"]}],
     "source": "llm" | "fallback", "note": "why the fallback was used, if it was"}
"""

from __future__ import annotations

import graphlib
import json
from collections.abc import Collection, Iterable, Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

#: Capabilities a plan step can ask for. The judge and the safety guardian are not plannable:
#: the orchestrator runs them itself on the draft (see `PLANNABLE_CAPABILITIES`).
CAP_REASON = "reason"  # answer / explain / summarise with the LLM
CAP_CODE = "code"
CAP_RETRIEVE = "retrieve"
CAP_EXECUTE = "execute"
PLANNABLE_CAPABILITIES = frozenset({CAP_REASON, CAP_CODE, CAP_RETRIEVE, CAP_EXECUTE})

DEFAULT_MAX_STEPS = 8
MAX_INSTRUCTION_CHARS = 4000

StepId = str


class PlanError(ValueError):
    """A proposed plan is unusable; the message says why (it ends up in the audit)."""


class InputTooLarge(PlanError):
    """The goal does not fit a step's instruction: the task is REJECTED, never answered cut."""


class Step(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    id: StepId = Field(pattern=r"^[A-Za-z0-9_.-]{1,32}$")
    arm: str = Field(min_length=1, max_length=64)
    instruction: str = Field(min_length=1, max_length=MAX_INSTRUCTION_CHARS)
    depends_on: tuple[StepId, ...] = ()


class Plan(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    steps: tuple[Step, ...] = Field(min_length=1)
    source: Literal["llm", "fallback"] = "llm"
    note: str = ""

    def step(self, step_id: StepId) -> Step:
        for s in self.steps:
            if s.id == step_id:
                return s
        raise KeyError(step_id)

    def to_json(self) -> str:
        return self.model_dump_json()


def plannable_arms(capabilities: Mapping[str, Collection[str]]) -> dict[str, frozenset[str]]:
    """The arms a plan may name: those with at least one plannable capability."""
    return {
        arm: frozenset(caps) & PLANNABLE_CAPABILITIES
        for arm, caps in capabilities.items()
        if frozenset(caps) & PLANNABLE_CAPABILITIES
    }


def validate_plan(
    data: Any,
    *,
    arms: Collection[str],
    max_steps: int = DEFAULT_MAX_STEPS,
    source: Literal["llm", "fallback"] = "llm",
) -> Plan:
    """Parse and check a proposed plan (a JSON string or an already-parsed object).

    Checks: well-formed steps, 1..max_steps of them, unique ids, every arm in `arms`, every
    dependency an existing other step, and no cycle. Raises `PlanError` naming the first problem.
    """
    if isinstance(data, str | bytes):
        try:
            data = json.loads(data)
        except ValueError as e:
            raise PlanError(f"plan is not JSON: {e}") from None
    if isinstance(data, list):  # a bare list of steps is a common model answer
        data = {"steps": data}
    if not isinstance(data, dict):
        raise PlanError(f"plan must be an object with 'steps', got {type(data).__name__}")
    data = {**data, "source": source}
    try:
        plan = Plan.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise PlanError(f"invalid plan at {where or 'top'}: {first['msg']}") from None
    if len(plan.steps) > max_steps:
        raise PlanError(f"plan has {len(plan.steps)} steps, more than the limit {max_steps}")
    ids = [s.id for s in plan.steps]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise PlanError(f"duplicate step ids: {', '.join(dupes)}")
    known = set(arms)
    for s in plan.steps:
        if s.arm not in known:
            raise PlanError(
                f"step {s.id} names unknown arm {s.arm!r} (known: {', '.join(sorted(known))})"
            )
        for d in s.depends_on:
            if d == s.id:
                raise PlanError(f"step {s.id} depends on itself")
            if d not in ids:
                raise PlanError(f"step {s.id} depends on missing step {d!r}")
    try:
        topological_order(plan)
    except graphlib.CycleError as e:
        cycle = " -> ".join(str(n) for n in e.args[1])
        raise PlanError(f"plan has a cycle: {cycle}") from None
    return plan


def topological_order(plan: Plan) -> list[StepId]:
    """Step ids in an order where every step comes after its dependencies."""
    ts: graphlib.TopologicalSorter[StepId] = graphlib.TopologicalSorter()
    for s in plan.steps:
        ts.add(s.id, *s.depends_on)
    return list(ts.static_order())


def ready_steps(plan: Plan, done: Iterable[StepId], started: Iterable[StepId]) -> list[Step]:
    """Steps not started yet whose dependencies are all done, in plan order."""
    done_set, started_set = set(done), set(started)
    return [
        s
        for s in plan.steps
        if s.id not in started_set
        and s.id not in done_set
        and all(d in done_set for d in s.depends_on)
    ]


def sink_steps(plan: Plan) -> list[Step]:
    """Steps no other step depends on: their outputs together are the draft answer."""
    needed = {d for s in plan.steps for d in s.depends_on}
    return [s for s in plan.steps if s.id not in needed]


def downstream_of(plan: Plan, step_id: StepId) -> set[StepId]:
    """Every step that depends, directly or not, on `step_id` (for retries and repairs)."""
    out: set[StepId] = set()
    frontier = {step_id}
    while frontier:
        nxt = {s.id for s in plan.steps if set(s.depends_on) & frontier} - out
        out |= nxt
        frontier = nxt
    return out


def _arm_with(capability: str, capabilities: Mapping[str, Collection[str]]) -> str | None:
    for arm in sorted(capabilities):
        if capability in capabilities[arm]:
            return arm
    return None


def fallback_plan(
    goal: str,
    *,
    tags: Collection[str],
    capabilities: Mapping[str, Collection[str]],
    note: str = "",
) -> Plan:
    """A deterministic plan from the reflex layer's tags when the model's plan is unusable.

    retrieval-tagged → a retrieval step first; code-tagged → a code step (else a reasoning step)
    that gets the retrieved passages. Only arms that are registered are used, so the plan is
    valid whatever arms a deployment runs.
    """
    steps: list[Step] = []
    retriever = _arm_with(CAP_RETRIEVE, capabilities) if "retrieval" in tags else None
    if retriever:
        steps.append(
            Step(id="retrieve", arm=retriever, instruction=_clip(f"Find passages for: {goal}"))
        )
    deps = tuple(s.id for s in steps)
    coder = _arm_with(CAP_CODE, capabilities) if "code" in tags else None
    if coder:
        steps.append(Step(id="code", arm=coder, instruction=_whole(goal), depends_on=deps))
    else:
        reasoner = _arm_with(CAP_REASON, capabilities)
        if reasoner is None:
            raise PlanError("no registered arm can answer (none has the 'reason' capability)")
        steps.append(Step(id="answer", arm=reasoner, instruction=_whole(goal), depends_on=deps))
    return Plan(steps=tuple(steps), source="fallback", note=note)


def _clip(text: str) -> str:
    text = text.strip() or "(empty goal)"
    return text[:MAX_INSTRUCTION_CHARS]


def _whole(goal: str) -> str:
    """The goal as a step's instruction, never cut: a cut goal would be answered in part and
    judged as if whole."""
    text = goal.strip() or "(empty goal)"
    if len(text) > MAX_INSTRUCTION_CHARS:
        raise InputTooLarge(
            f"input too large: the goal has {len(text)} characters and a step's instruction "
            f"holds at most {MAX_INSTRUCTION_CHARS}; send a shorter goal"
        )
    return text


def plan_json_schema(arms: Collection[str], max_steps: int = DEFAULT_MAX_STEPS) -> dict[str, Any]:
    """The JSON schema the planner gives the LLM (constrained decoding), arms as an enum."""
    return {
        "type": "object",
        "properties": {
            "steps": {
                "type": "array",
                "minItems": 1,
                "maxItems": max_steps,
                "items": {
                    "type": "object",
                    "properties": {
                        "id": {"type": "string"},
                        "arm": {"type": "string", "enum": sorted(arms)},
                        "instruction": {"type": "string"},
                        "depends_on": {"type": "array", "items": {"type": "string"}},
                    },
                    "required": ["id", "arm", "instruction", "depends_on"],
                },
            }
        },
        "required": ["steps"],
    }
