"""Plan validation, scheduling helpers and the deterministic fallback plan."""

from __future__ import annotations

import json

import pytest

from octollm.orchestrator.plan import (
    MAX_INSTRUCTION_CHARS,
    InputTooLarge,
    Plan,
    PlanError,
    Step,
    downstream_of,
    fallback_plan,
    plan_json_schema,
    plannable_arms,
    ready_steps,
    sink_steps,
    topological_order,
    validate_plan,
)

pytestmark = pytest.mark.unit

ARMS = ["planner", "coder", "retriever"]
CAPS = {
    "planner": {"plan", "reason"},
    "coder": {"code"},
    "retriever": {"retrieve"},
    "judge": {"judge"},
    "safety_guardian": {"safety"},
}


def step(i: str, arm: str = "planner", deps: tuple[str, ...] = ()) -> dict[str, object]:
    return {"id": i, "arm": arm, "instruction": f"do {i}", "depends_on": list(deps)}


def test_valid_plan_from_json_text() -> None:
    raw = json.dumps({"steps": [step("a", "retriever"), step("b", "coder", ("a",))]})
    plan = validate_plan(raw, arms=ARMS)
    assert [s.id for s in plan.steps] == ["a", "b"]
    assert plan.source == "llm"
    assert topological_order(plan) == ["a", "b"]


def test_a_bare_list_of_steps_is_accepted() -> None:
    assert len(validate_plan([step("a")], arms=ARMS).steps) == 1


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ("not json", "not JSON"),
        (42, "must be an object"),
        ({"steps": []}, "invalid plan at steps"),
        ({"steps": [step("a", "painter")]}, "unknown arm 'painter'"),
        ({"steps": [step("a"), step("a")]}, "duplicate step ids: a"),
        ({"steps": [step("a", deps=("a",))]}, "depends on itself"),
        ({"steps": [step("a", deps=("zz",))]}, "missing step 'zz'"),
        ({"steps": [step("a", deps=("b",)), step("b", deps=("a",))]}, "cycle"),
        ({"steps": [step(f"s{i}") for i in range(9)]}, "more than the limit 8"),
        ({"steps": [{"id": "a", "arm": "planner", "instruction": ""}]}, "instruction"),
        ({"steps": [{**step("a"), "id": "has space"}]}, "steps.0.id"),
    ],
)
def test_invalid_plans_are_rejected_with_the_reason(data: object, message: str) -> None:
    with pytest.raises(PlanError, match=message):
        validate_plan(data, arms=ARMS)


def test_ready_steps_follow_dependencies() -> None:
    plan = validate_plan(
        [step("a"), step("b"), step("c", deps=("a", "b")), step("d", deps=("c",))], arms=ARMS
    )
    assert [s.id for s in ready_steps(plan, done=[], started=[])] == ["a", "b"]
    assert [s.id for s in ready_steps(plan, done=["a"], started=["b"])] == []
    assert [s.id for s in ready_steps(plan, done=["a", "b"], started=["a", "b"])] == ["c"]
    assert [s.id for s in sink_steps(plan)] == ["d"]
    assert downstream_of(plan, "a") == {"c", "d"}
    assert downstream_of(plan, "d") == set()


def test_fallback_plan_uses_tags_and_only_registered_arms() -> None:
    plannable = plannable_arms(CAPS)
    assert "judge" not in plannable and "safety_guardian" not in plannable

    code = fallback_plan("write add(a, b)", tags=["code", "retrieval"], capabilities=plannable)
    assert [(s.id, s.arm, s.depends_on) for s in code.steps] == [
        ("retrieve", "retriever", ()),
        ("code", "coder", ("retrieve",)),
    ]
    assert code.source == "fallback"

    # no coder registered: the reasoning arm answers instead
    no_coder = plannable_arms({"planner": {"plan", "reason"}})
    prose = fallback_plan("write add(a, b)", tags=["code"], capabilities=no_coder, note="why")
    assert [(s.id, s.arm) for s in prose.steps] == [("answer", "planner")]
    assert prose.note == "why"
    # the fallback always validates against the arms it was built from
    validate_plan(prose.model_dump(), arms=no_coder, source="fallback")

    with pytest.raises(PlanError, match="reason"):
        fallback_plan("x", tags=[], capabilities={})


def test_plan_round_trips_through_json_and_schema_lists_arms() -> None:
    plan = Plan(steps=(Step(id="a", arm="planner", instruction="x"),), source="fallback")
    assert validate_plan(plan.to_json(), arms=ARMS, source="fallback") == plan
    schema = plan_json_schema(["planner", "coder"], max_steps=3)
    items = schema["properties"]["steps"]
    assert items["maxItems"] == 3
    assert items["items"]["properties"]["arm"]["enum"] == ["coder", "planner"]


def test_fallback_plan_never_cuts_the_goal() -> None:
    plannable = plannable_arms(CAPS)
    fits = "a" * MAX_INSTRUCTION_CHARS
    assert fallback_plan(fits, tags=[], capabilities=plannable).steps[-1].instruction == fits
    with pytest.raises(InputTooLarge, match="input too large: the goal has 4001 characters"):
        fallback_plan(fits + "b", tags=["code"], capabilities=plannable)
