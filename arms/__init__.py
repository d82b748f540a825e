"""The arm registry: one line per arm. Adding an arm is one module here and one `ArmSpec` line.

Capabilities route plan steps to arms (`reason`, `code`, `retrieve`, `execute` are plannable;
`judge` and `safety` are the orchestrator's own stages). Modules are imported only when an arm
is loaded, so the registry is cheap to read and one arm's dependencies never burden another.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from octollm.runtime.arm import Arm


@dataclass(frozen=True)
class ArmSpec:
    name: str
    target: str  # "module:Class"
    capabilities: frozenset[str]


ARMS: dict[str, ArmSpec] = {
    spec.name: spec
    for spec in (
        ArmSpec("planner", "octollm.arms.planner:PlannerArm", frozenset({"plan", "reason"})),
        ArmSpec("judge", "octollm.arms.judge:JudgeArm", frozenset({"judge"})),
        ArmSpec("retriever", "octollm.arms.retriever:RetrieverArm", frozenset({"retrieve"})),
        ArmSpec("coder", "octollm.arms.coder:CoderArm", frozenset({"code"})),
        ArmSpec(
            "safety_guardian",
            "octollm.arms.safety_guardian:SafetyGuardianArm",
            frozenset({"safety"}),
        ),
        ArmSpec("executor", "octollm.arms.executor:ExecutorArm", frozenset({"execute"})),
    )
}


class UnknownArm(KeyError):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name

    def __str__(self) -> str:
        return f"unknown arm {self.name!r}; registered: {', '.join(sorted(ARMS))}"


def load_arm(name: str) -> Arm:
    """An instance of the registered arm `name` (imports its module now)."""
    spec = ARMS.get(name)
    if spec is None:
        raise UnknownArm(name)
    module_name, _, class_name = spec.target.partition(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    arm: Arm = cls()
    return arm


def capabilities() -> dict[str, frozenset[str]]:
    """What each registered arm can do, by arm name."""
    return {name: spec.capabilities for name, spec in ARMS.items()}
