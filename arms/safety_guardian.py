"""The safety guardian arm: the last check on an output before it leaves the system.

It scans the output with the reflex layer's own detectors, through one long-running
`octollm-reflex scan` subprocess per worker (`octollm.runtime.reflex.ScanProcess`), so PII,
secret and injection findings here are exactly those of the streaming reflex layer.

Verdicts (output JSON {"verdict", "output", "pii", "injection", "reason", "task_injection"}):
- "blocked": the output leaks a secret type (private key, cloud or API token, credentials in
  a URL, JWT), or itself scores HIGH/CRITICAL for prompt injection (the model echoing an attack),
  or MEDIUM with a category the task itself was flagged for. The orchestrator then ends the
  task REJECTED with `reason`. The arm's status stays OK: the check itself worked.
- "redacted": PII was found and replaced by placeholders (`<EMAIL_1>`) in "output".
- "pass": nothing found; "output" is the text unchanged.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

from octollm.contracts.models import ArmRequest, ArmStatus, InjectionVerdict, Severity
from octollm.runtime.arm import Arm, ArmContext, ArmOutput
from octollm.runtime.reflex import ReflexError, ScanProcess, ScanResult

__all__ = ["SAFETY_STEP", "SECRET_TYPES", "SafetyGuardianArm", "decide"]

SAFETY_STEP = "safety"
#: PII types that are credentials: leaking one is never fixed by redaction alone, because the
#: model produced it from somewhere and the task's answer cannot be trusted.
SECRET_TYPES = frozenset(
    {
        "PRIVATE_KEY",
        "AWS_ACCESS_KEY",
        "GITHUB_TOKEN",
        "SLACK_TOKEN",
        "STRIPE_KEY",
        "JWT",
        "URL_CREDENTIALS",
    }
)
_RANK = {s.value: i for i, s in enumerate(Severity)}  # NONE < LOW < MEDIUM < HIGH < CRITICAL
#: The reflex layer's category when its learned stage, not a rule, set the severity. That stage
#: was trained on task inputs (attacks against benign instructions and questions); a model's
#: answer lies outside what it has seen (an e2e run had a benign summary scored CRITICAL), so
#: an output is blocked as an injection only when a rule names what it does.
LEARNED = "learned"


def _task_injection(raw: str | None) -> InjectionVerdict:
    if not raw:
        return InjectionVerdict()
    try:
        return InjectionVerdict.model_validate(json.loads(raw))
    except ValueError:  # pydantic's ValidationError is a ValueError too
        return InjectionVerdict()


def decide(text: str, scan: ScanResult, task: InjectionVerdict) -> dict[str, Any]:
    """The verdict for one scanned output (pure; the arm adds nothing but I/O around it)."""
    pii = scan.pii_types
    secrets = sorted(set(pii) & SECRET_TYPES)
    severity = _RANK.get(scan.injection.severity, 0)
    named = set(scan.injection.categories) - {LEARNED}
    echoed = sorted(set(scan.injection.categories) & set(task.categories))
    reason = ""
    if secrets:
        reason = f"the output leaks secrets: {', '.join(secrets)}"
    elif severity >= _RANK["HIGH"] and named:
        reason = (
            f"the output itself is a prompt-injection attempt ({scan.injection.severity}, "
            f"score {scan.injection.score:.2f}: {', '.join(scan.injection.categories)})"
        )
    elif severity >= _RANK["MEDIUM"] and echoed:
        reason = (
            f"the output echoes the injection the task was flagged for ({', '.join(echoed)}, "
            f"{scan.injection.severity})"
        )
    if reason:
        verdict = "blocked"
    elif pii or scan.redacted != text:  # leak-guard copies may be redacted without a finding
        verdict = "redacted"
    else:
        verdict = "pass"
    return {
        "verdict": verdict,
        "output": scan.redacted,
        "pii": pii,
        "injection": scan.injection.model_dump(mode="json"),
        "reason": reason,
        "task_injection": task.model_dump(mode="json"),
    }


class SafetyGuardianArm(Arm):
    name: ClassVar[str] = "safety_guardian"
    capabilities: ClassVar[frozenset[str]] = frozenset({"safety"})
    timeout_s: ClassVar[float] = 30.0

    def __init__(self, scanner: ScanProcess | None = None) -> None:
        self.scanner = scanner or ScanProcess()

    async def setup(self, ctx: ArmContext) -> None:
        # Start now so a missing binary shows at worker start, not on the first task.
        await self.scanner.start()
        ctx.log.info("safety scanner ready pid=%s", self.scanner.pid)

    async def handle(self, request: ArmRequest, ctx: ArmContext) -> ArmOutput:
        task_id = str(request.task_id)
        text = request.inputs.get("output")
        if text is None:
            return ArmOutput(status=ArmStatus.FAILED, reason="safety request has no 'output' input")
        task = _task_injection(request.inputs.get("injection"))
        try:
            scan = await self.scanner.scan(text, task_id=task_id)
        except ReflexError as e:
            # Fail closed: nothing leaves unscanned. The orchestrator retries or fails the task.
            ctx.log.error(
                "safety scan failed task_id=%s: %s", task_id, e, extra={"task_id": task_id}
            )
            return ArmOutput(status=ArmStatus.FAILED, reason=f"safety scan failed: {e}")
        result = decide(text, scan, task)
        ctx.log.info(
            "safety task_id=%s verdict=%s pii=%s injection=%s",
            task_id,
            result["verdict"],
            ",".join(result["pii"]) or "-",
            scan.injection.severity,
            extra={"task_id": task_id},
        )
        artifacts = {"verdict": result["verdict"]}
        return ArmOutput(
            output=json.dumps(result),
            reason=result["reason"] or None,
            artifacts=artifacts,
        )

    async def close(self) -> None:
        await self.scanner.aclose()
