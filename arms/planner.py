"""The planner arm: a goal → a small DAG of steps (step "plan"), and "reason" steps of a plan.

Plan: the LLM answers under the JSON schema of `plan_json_schema`; `validate_plan` and the cheap
sanity checks below decide whether the answer is usable, otherwise the rule-based
`fallback_plan` from the task's tags is used and the reason recorded (`source: "fallback"`,
`note`, artifact `plan_source`). The local model is small and weak: prompts are short, the
answer is capped, and a bad plan degrades to the fallback, never to a broken task.

Reason steps (any other step id): the LLM answers the instruction, given the outputs of the
steps it depends on; with the LLM down the step FAILs with the reason.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from octollm.contracts.models import ArmRequest, ArmStatus, Usage
from octollm.llm import LLMClient, LLMError, LLMOutputError, UsageMeter
from octollm.orchestrator.plan import (
    CAP_CODE,
    CAP_REASON,
    CAP_RETRIEVE,
    DEFAULT_MAX_STEPS,
    InputTooLarge,
    Plan,
    PlanError,
    fallback_plan,
    plan_json_schema,
    plannable_arms,
    validate_plan,
)
from octollm.runtime.arm import TRUNCATED, Arm, ArmContext, ArmOutput, clip

__all__ = [
    "PLAN_STEP",
    "PlanInputs",
    "PlannerArm",
    "build_plan_messages",
    "build_reason_messages",
    "choose_plan",
    "sanity_problem",
]

PLAN_STEP = "plan"
#: A plan for a short goal fits in this; a longer answer is the model rambling.
PLAN_MAX_TOKENS = 320
PLAN_TIMEOUT_S = 60.0
REASON_MAX_TOKENS = 512
REASON_TIMEOUT_S = 90.0
#: Characters of context and dependency outputs given to a reason step (the local model's
#: context is 4096 tokens; the answer needs room too).
REASON_INPUT_CHARS = 6000
#: A one-sentence goal never needs more steps than this.
SHORT_GOAL_MAX_STEPS = 3
SHORT_GOAL_WORDS = 30

_SYSTEM_PLAN = (
    "You split a task into the fewest steps for worker arms. Arms and what they do:\n"
    "{arms}\n"
    'Reply with JSON only: {{"steps": [{{"id": "s1", "arm": ..., "instruction": ..., '
    '"depends_on": []}}]}}. An instruction says in your own words what that arm must do. '
    "depends_on lists ids of earlier steps in this plan whose output the step needs; the first "
    'step has "depends_on": []. One step is enough for a simple task.'
)
_SYSTEM_REASON = (
    "You are a precise assistant. Answer the instruction directly and concisely, using the "
    "results of earlier steps when given."
)
_CAPABILITY_WORDS = {
    CAP_REASON: "answers, explains, summarises in prose",
    CAP_CODE: "writes code",
    CAP_RETRIEVE: "finds reference passages",
    "execute": "runs code and reports the result",
}
_STOPWORDS_TEXT = (
    "the a an and or of to in on for with from that this these those what which who how why "
    "when where write explain give make list find show tell please about into using use your "
    "their there them then than over under some any each every should would could must does "
    "doing done function python code short simple"
)
_STOPWORDS = frozenset(_STOPWORDS_TEXT.split())
# A key-value pair or the plan's own field names: the model pasted JSON into an instruction.
_JSON_DEBRIS = re.compile(r'"\w+"\s*:|\bdepends_on\b|"steps"', re.IGNORECASE)


@dataclass(frozen=True)
class PlanInputs:
    """What a "plan" request carries (see the request conventions in docs/arms.md)."""

    goal: str
    context: str = ""
    constraints: tuple[str, ...] = ()
    criteria: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    arms: Mapping[str, frozenset[str]] | None = None
    max_steps: int = DEFAULT_MAX_STEPS
    feedback: str = ""

    @classmethod
    def from_request(cls, request: ArmRequest) -> PlanInputs:
        inputs = request.inputs
        arms_raw = _json(inputs.get("arms"), dict)
        arms = (
            {str(k): frozenset(map(str, v)) for k, v in arms_raw.items() if isinstance(v, list)}
            if arms_raw
            else None
        )
        try:
            max_steps = max(1, min(int(inputs.get("max_steps", DEFAULT_MAX_STEPS)), 32))
        except ValueError:
            max_steps = DEFAULT_MAX_STEPS
        return cls(
            goal=request.instruction,
            context=request.context,
            constraints=_str_list(inputs.get("constraints")),
            criteria=_str_list(inputs.get("acceptance_criteria")),
            tags=_str_list(inputs.get("tags")),
            arms=arms,
            max_steps=max_steps,
            feedback=_feedback(inputs.get("feedback")),
        )


def _json(raw: str | None, kind: type) -> Any:
    if not raw:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, kind) else None


def _str_list(raw: str | None) -> tuple[str, ...]:
    value = _json(raw, list)
    return tuple(str(v) for v in value if str(v).strip()) if value else ()


def _feedback(raw: str | None) -> str:
    """The judge's reasons: a JSON list from the orchestrator, or plain text."""
    if not raw or not raw.strip():
        return ""
    reasons = _json(raw, list)
    return "; ".join(str(r) for r in reasons if str(r).strip()) if reasons else raw.strip()


def _first_arm(arms: Mapping[str, Collection[str]], capability: str) -> str | None:
    return next((a for a in sorted(arms) if capability in arms[a]), None)


def _examples(arms: Mapping[str, Collection[str]]) -> list[tuple[str, dict[str, Any]]]:
    """Few-shot (goal, plan) pairs naming only arms that exist in this deployment."""
    examples: list[tuple[str, dict[str, Any]]] = []
    coder, reasoner = _first_arm(arms, CAP_CODE), _first_arm(arms, CAP_REASON)
    retriever = _first_arm(arms, CAP_RETRIEVE)
    if coder:
        examples.append(
            (
                "Write a Python function that reverses a string.",
                {
                    "steps": [
                        {
                            "id": "s1",
                            "arm": coder,
                            "instruction": "Write a Python function reverse(s) returning s "
                            "reversed.",
                            "depends_on": [],
                        }
                    ]
                },
            )
        )
    if reasoner and retriever:
        examples.append(
            (
                "Summarise what our docs say about consumer groups.",
                {
                    "steps": [
                        {
                            "id": "s1",
                            "arm": retriever,
                            "instruction": "Find passages about consumer groups.",
                            "depends_on": [],
                        },
                        {
                            "id": "s2",
                            "arm": reasoner,
                            "instruction": "Summarise the passages about consumer groups.",
                            "depends_on": ["s1"],
                        },
                    ]
                },
            )
        )
    elif reasoner:
        examples.append(
            (
                "Explain why the sky is blue.",
                {
                    "steps": [
                        {
                            "id": "s1",
                            "arm": reasoner,
                            "instruction": "Explain briefly why the sky is blue.",
                            "depends_on": [],
                        }
                    ]
                },
            )
        )
    return examples


def _task_text(inputs: PlanInputs) -> str:
    parts = [f"Task: {inputs.goal.strip()}"]
    if inputs.constraints:
        parts.append("Constraints: " + "; ".join(inputs.constraints))
    if inputs.criteria:
        parts.append("Must satisfy: " + "; ".join(inputs.criteria))
    if inputs.feedback:
        parts.append(f"A previous answer failed review: {inputs.feedback[:600]}")
    return "\n".join(parts)


def build_plan_messages(
    inputs: PlanInputs, arms: Mapping[str, Collection[str]]
) -> list[dict[str, str]]:
    """System prompt listing the arms, few-shot turns, then the task (context left out: it is
    for the steps, and the small model copies long text into instructions)."""
    arm_lines = "\n".join(
        f"- {arm}: " + ", ".join(_CAPABILITY_WORDS.get(c, c) for c in sorted(caps))
        for arm, caps in sorted(arms.items())
    )
    messages = [{"role": "system", "content": _SYSTEM_PLAN.format(arms=arm_lines)}]
    for goal, plan in _examples(arms):
        messages.append({"role": "user", "content": f"Task: {goal}"})
        messages.append({"role": "assistant", "content": json.dumps(plan)})
    messages.append({"role": "user", "content": _task_text(inputs)})
    return messages


def _stems(text: str) -> set[str]:
    words = re.findall(r"[a-z][a-z0-9]{3,}", text.lower())
    return {w[:5] for w in words if w not in _STOPWORDS}


def step_budget(inputs: PlanInputs) -> int:
    """How many steps the goal warrants: a one-sentence goal gets at most a few."""
    goal = inputs.goal.strip()
    sentences = [s for s in re.split(r"(?<=[.!?])\s+", goal) if s.strip()]
    if len(sentences) <= 1 and len(goal.split()) <= SHORT_GOAL_WORDS:
        return min(SHORT_GOAL_MAX_STEPS, inputs.max_steps)
    return inputs.max_steps


def sanity_problem(
    plan: Plan, inputs: PlanInputs, arms: Mapping[str, Collection[str]]
) -> str | None:
    """Why a schema-valid plan is still unusable (None if it looks fine).

    Cheap checks aimed at what a small model gets wrong: empty or copied instructions, JSON
    debris in an instruction, too many steps for a short goal, no step that produces an answer,
    a code goal planned without the coder, instructions unrelated to the goal.
    """
    example_instructions = {
        s["instruction"].strip().lower() for _, p in _examples(arms) for s in p["steps"]
    }
    goal_stems = _stems(inputs.goal)
    # words of the few-shot examples that the goal does not use: a small model often pastes
    # the example's topic ("why the sky is blue") into the real plan
    example_only = {
        stem
        for g, p in _examples(arms)
        for text in [g, *(st["instruction"] for st in p["steps"])]
        for stem in _stems(text)
    } - goal_stems
    budget = step_budget(inputs)
    if len(plan.steps) > budget:
        return f"{len(plan.steps)} steps for a goal that warrants at most {budget}"
    seen: set[str] = set()
    for s in plan.steps:
        text = s.instruction.strip()
        if len(re.findall(r"[A-Za-z]", text)) < 3:
            return f"step {s.id} has an empty instruction"
        if text.lower() in example_instructions:
            return f"step {s.id} copies the prompt's example instruction"
        borrowed = _stems(text) & example_only
        if len(borrowed) >= 2:
            return f"step {s.id} borrows the prompt example's topic ({', '.join(sorted(borrowed))})"
        if _JSON_DEBRIS.search(text):
            return f"step {s.id}'s instruction contains JSON debris"
        words = re.findall(r"\w+", text.lower())
        if len(words) >= 6 and Counter(words).most_common(1)[0][1] > len(words) / 2:
            return f"step {s.id}'s instruction repeats itself"
        if text.lower() in seen:
            return f"step {s.id} repeats another step's instruction"
        seen.add(text.lower())
    producing = {CAP_REASON, CAP_CODE}
    if not any(producing & set(arms.get(s.arm, ())) for s in plan.steps):
        return "no step uses an arm that can reason or write code"
    has_code_step = any(CAP_CODE in arms.get(s.arm, ()) for s in plan.steps)
    if "code" in inputs.tags and _first_arm(arms, CAP_CODE) and not has_code_step:
        return "the goal is tagged code but no step uses a code arm"
    if goal_stems and not any(goal_stems & _stems(s.instruction) for s in plan.steps):
        return "no instruction relates to the goal (shares none of its words)"
    return None


def choose_plan(answer: Any, inputs: PlanInputs, arms: Mapping[str, Collection[str]]) -> Plan:
    """The plan to use, from the model's parsed answer or the exception its call raised.

    Pure: no LLM call here, so recorded answers can be replayed in unit tests.
    """
    if isinstance(answer, BaseException):
        kind = "unusable model answer" if isinstance(answer, LLMOutputError) else "LLM failed"
        return _fallback(inputs, arms, f"{kind}: {answer}")
    try:
        plan = validate_plan(answer, arms=arms, max_steps=inputs.max_steps)
    except PlanError as e:
        return _fallback(inputs, arms, f"invalid plan: {e}")
    problem = sanity_problem(plan, inputs, arms)
    if problem:
        return _fallback(inputs, arms, f"implausible plan: {problem}")
    return plan


def _fallback(inputs: PlanInputs, arms: Mapping[str, Collection[str]], note: str) -> Plan:
    goal = inputs.goal
    if inputs.feedback:
        # A repair round: the answering step gets the reviewer's complaints with the goal.
        goal = f"{goal}\n\nA previous answer failed review; fix this: {inputs.feedback[:600]}"
    return fallback_plan(goal, tags=inputs.tags, capabilities=arms, note=note[:500])


def build_reason_messages(
    instruction: str,
    context: str,
    dependencies: Mapping[str, str],
    cut: list[str] | None = None,
) -> list[dict[str, str]]:
    """The prompt of a reason step: context and earlier results (clipped, each clipped part
    named in `cut`), then the question."""
    cut = [] if cut is None else cut
    budget = REASON_INPUT_CHARS
    parts: list[str] = []
    if context.strip():
        kept = clip(context.strip(), budget // 3, "context", cut)
        parts.append(f"Context:\n{kept}")
        budget -= len(kept)
    if dependencies:
        share = max(200, budget // len(dependencies))
        for step_id, output in sorted(dependencies.items()):
            kept = clip(output.strip(), share, f"result of {step_id}", cut)
            parts.append(f"Result of step {step_id}:\n{kept}")
    parts.append(f"Instruction: {instruction.strip()}")
    return [
        {"role": "system", "content": _SYSTEM_REASON},
        {"role": "user", "content": "\n\n".join(parts)},
    ]


class PlannerArm(Arm):
    name: ClassVar[str] = "planner"
    capabilities: ClassVar[frozenset[str]] = frozenset({"plan", CAP_REASON})
    timeout_s: ClassVar[float] = 120.0

    async def handle(self, request: ArmRequest, ctx: ArmContext) -> ArmOutput:
        if request.step_id == PLAN_STEP:
            return await self.plan(request, ctx)
        return await self.reason(request, ctx)

    async def plan(self, request: ArmRequest, ctx: ArmContext) -> ArmOutput:
        task_id = str(request.task_id)
        inputs = PlanInputs.from_request(request)
        registered = inputs.arms
        if registered is None:
            # The orchestrator always sends the registry; without it only this arm is known.
            ctx.log.warning("plan request without arms task_id=%s: using planner only", task_id)
            registered = {self.name: self.capabilities}
        arms = plannable_arms(registered)
        meter = UsageMeter()
        answer = await self._ask_for_plan(inputs, arms, ctx.llm, meter, task_id)
        try:
            plan = choose_plan(answer, inputs, arms)
        except InputTooLarge as e:  # no retry can help: the task is refused, saying why
            return ArmOutput(status=ArmStatus.REJECTED, reason=str(e))
        except PlanError as e:  # even the fallback is impossible: no arm can answer
            return ArmOutput(status=ArmStatus.FAILED, reason=f"no plan possible: {e}")
        ctx.log.info(
            "plan task_id=%s source=%s steps=%d note=%s",
            task_id,
            plan.source,
            len(plan.steps),
            plan.note or "-",
        )
        artifacts: dict[str, str] = {"plan_source": plan.source}
        if plan.note:
            artifacts["plan_note"] = plan.note
        return ArmOutput(output=plan.to_json(), artifacts=artifacts, usage=_usage(meter))

    async def _ask_for_plan(
        self,
        inputs: PlanInputs,
        arms: Mapping[str, Collection[str]],
        llm: LLMClient,
        meter: UsageMeter,
        task_id: str,
    ) -> Any:
        """The model's parsed answer, or the exception that stands for it (never raises)."""
        if not arms:
            return PlanError("no plannable arm registered")
        try:
            value, completion = await llm.complete_json(
                build_plan_messages(inputs, arms),
                plan_json_schema(arms, inputs.max_steps),
                max_tokens=PLAN_MAX_TOKENS,
                temperature=0.0,
                timeout_s=PLAN_TIMEOUT_S,
                task_id=task_id,
            )
        except LLMOutputError as e:
            meter.add(e.completion)
            return e
        except LLMError as e:
            return e
        meter.add(completion)
        return value

    async def reason(self, request: ArmRequest, ctx: ArmContext) -> ArmOutput:
        task_id = str(request.task_id)
        max_tokens = REASON_MAX_TOKENS
        if request.max_tokens is not None:
            if request.max_tokens <= 0:
                return ArmOutput(status=ArmStatus.FAILED, reason="the task's token budget is spent")
            max_tokens = min(max_tokens, int(request.max_tokens))
        cut: list[str] = []
        messages = build_reason_messages(request.instruction, request.context, request.inputs, cut)
        try:
            completion = await ctx.llm.complete(
                messages,
                max_tokens=max_tokens,
                temperature=0.2,
                timeout_s=REASON_TIMEOUT_S,
                task_id=task_id,
            )
        except LLMError as e:
            ctx.log.warning(
                "reason step failed task_id=%s step=%s: %s",
                task_id,
                request.step_id,
                e,
                extra={"task_id": task_id},
            )
            return ArmOutput(status=ArmStatus.FAILED, reason=f"LLM failed: {e}")
        meter = UsageMeter()
        meter.add(completion)
        answer = completion.text.strip()
        if not answer:
            reason = "the LLM returned an empty answer"
            return ArmOutput(status=ArmStatus.FAILED, reason=reason, usage=_usage(meter))
        artifacts = {"model": completion.model}
        if completion.truncated:  # stopped at max_tokens: the answer itself is cut
            cut.append("output")
        if cut:
            artifacts[TRUNCATED] = ",".join(cut)
        return ArmOutput(output=answer, artifacts=artifacts, usage=_usage(meter))


def _usage(meter: UsageMeter) -> Usage:
    return Usage(**meter.as_usage())
