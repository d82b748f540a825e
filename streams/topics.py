"""Every topic the pipeline uses, named in one place.

Records are keyed by `task_id`, so all events of one task land in one partition and keep their
order. `OCTO_TOPIC_PREFIX` is prepended to every name so several environments can share a cluster.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from octollm.settings import Settings

TASKS = "octo.tasks.v1"
QUARANTINE = "octo.tasks.quarantine"
ARM_RESULTS = "octo.arm.results"
RESULTS = "octo.results.v1"
AUDIT = "octo.audit.v1"
DLQ = "octo.dlq"
#: The reflex layer's dedupe state: task ids it admitted, written in the same transaction as
#: the routed task, read back on start-up and on partition assignment (docs/reflex.md).
REFLEX_DEDUPE = "octo.reflex.dedupe"
#: The orchestrator's clock: one tick per partition per interval, so deadlines and step timeouts
#: are decided inside the partition's own stream (and transaction), like any other event.
#: Internal, like the table's changelog: the orchestrator creates it, not `topics create`.
ORCHESTRATOR_TICKS = "octo.orchestrator.ticks"


def routed(route: str) -> str:
    return f"octo.tasks.routed.{route}"


def arm_requests(arm: str) -> str:
    return f"octo.arm.{arm}.requests"


@dataclass(frozen=True)
class TopicSpec:
    name: str  # without the prefix
    purpose: str
    config: dict[str, str] = field(default_factory=dict)


def topic_specs(settings: Settings) -> list[TopicSpec]:
    """The topics `octollm topics create` makes, in data-path order."""
    specs = [TopicSpec(TASKS, "inbound tasks (TaskRequest)")]
    specs += [TopicSpec(routed(r), f"tasks routed to '{r}' (RoutedTask)") for r in settings.routes]
    specs.append(TopicSpec(QUARANTINE, "tasks held back by the reflex layer (RoutedTask)"))
    specs.append(
        TopicSpec(
            REFLEX_DEDUPE,
            "task ids the reflex layer admitted (dedupe state, compacted)",
            # one day = the default dedupe window (OCTO_REFLEX_DEDUPE_WINDOW)
            {"cleanup.policy": "compact,delete", "retention.ms": "86400000"},
        )
    )
    specs += [
        TopicSpec(arm_requests(a), f"work for the {a} arm (ArmRequest)") for a in settings.arms
    ]
    specs += [
        TopicSpec(ARM_RESULTS, "arm outputs (ArmResult)"),
        TopicSpec(RESULTS, "terminal results (TaskResult)"),
        TopicSpec(AUDIT, "every step of every task (AuditEvent)"),
        # Dead letters are evidence: keep them a month even on a cluster with short defaults.
        TopicSpec(
            DLQ, "undecodable or rejected events (DeadLetter)", {"retention.ms": "2592000000"}
        ),
    ]
    return specs


def full_name(settings: Settings, name: str) -> str:
    """The topic's name on the cluster, with the environment prefix."""
    return f"{settings.topic_prefix}{name}"
