"""The executor arm: runs code or an allow-listed command in the sandbox for other arms.

Inputs (`ArmRequest.inputs`, all strings):
- "code" with "language": "python" (the default), or "argv": a JSON list of strings;
  with neither, the Python in the instruction's ```python block (or the instruction itself);
- optional "stdin", "files" (a JSON object of relative name -> text), "timeout_s".

Output: the `SandboxResult` JSON. Status OK whenever the program ran, even if it failed or a
limit fired (the JSON says how); REJECTED when the policy refuses the request (unlisted command,
unsafe file name, no network isolation) or the inputs are malformed, with the reason.
The sandbox itself is `octollm.sandbox` (docs/executor.md).
"""

from __future__ import annotations

import json
from typing import ClassVar

from octollm.arms.checks import extract_python
from octollm.contracts.models import ArmRequest, ArmStatus
from octollm.runtime.arm import Arm, ArmContext, ArmOutput
from octollm.sandbox import Sandbox, SandboxPolicy, SandboxRefused, SandboxResult

__all__ = ["BadInputs", "ExecutorArm", "parse_inputs"]

PYTHON_LANGUAGES = frozenset({"python", "python3", "py"})


class BadInputs(ValueError):
    """The request's inputs do not describe something to run."""


def parse_inputs(request: ArmRequest) -> dict[str, object]:
    """{"code" | "argv", "stdin", "files", "timeout_s"} from the request; BadInputs if unusable."""
    inputs = request.inputs
    job: dict[str, object] = {"stdin": inputs.get("stdin", "")}
    if "argv" in inputs:
        try:
            argv = json.loads(inputs["argv"])
        except ValueError as exc:
            raise BadInputs(f"argv is not JSON: {exc}") from exc
        if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
            raise BadInputs("argv must be a non-empty JSON list of strings")
        job["argv"] = argv
    else:
        language = inputs.get("language", "python").strip().lower()
        if language not in PYTHON_LANGUAGES:
            raise BadInputs(f"language {language!r} is not supported; give argv instead")
        code = inputs.get("code") or extract_python(request.instruction)
        if not code:
            raise BadInputs("nothing to run: no code, no argv, no Python in the instruction")
        job["code"] = code
    if "files" in inputs:
        try:
            files = json.loads(inputs["files"])
        except ValueError as exc:
            raise BadInputs(f"files is not JSON: {exc}") from exc
        if not isinstance(files, dict):
            raise BadInputs("files must be a JSON object of name -> text")
        job["files"] = files
    if "timeout_s" in inputs:
        try:
            job["timeout_s"] = float(inputs["timeout_s"])
        except ValueError as exc:
            raise BadInputs(f"timeout_s is not a number: {inputs['timeout_s']!r}") from exc
    return job


class ExecutorArm(Arm):
    name: ClassVar[str] = "executor"
    capabilities: ClassVar[frozenset[str]] = frozenset({"execute"})
    # Above the sandbox's own clamp (sandbox_max_wall_s, 120 s by default), so the sandbox's
    # kill, which reports what the program printed, fires before the runtime's timeout.
    timeout_s: ClassVar[float] = 150.0

    def __init__(self) -> None:
        self._sandbox: Sandbox | None = None

    async def setup(self, ctx: ArmContext) -> None:
        self._sandbox = Sandbox(SandboxPolicy.from_settings(ctx.settings))
        isolated, why = await self._sandbox.network_isolation()
        ctx.log.info("executor ready network_isolated=%s (%s)", isolated, why)

    async def handle(self, request: ArmRequest, ctx: ArmContext) -> ArmOutput:
        if self._sandbox is None:
            await self.setup(ctx)
        assert self._sandbox is not None
        log_extra = {"task_id": str(request.task_id), "tenant_id": request.tenant_id}
        try:
            job = parse_inputs(request)
            result = await self._run(job, str(request.task_id))
        except (BadInputs, SandboxRefused) as exc:
            ctx.log.warning("executor refused: %s", exc, extra=log_extra)
            return ArmOutput(status=ArmStatus.REJECTED, reason=str(exc))
        ctx.log.info(
            "executor ran exit=%s limit=%s ms=%.0f",
            result.exit_code,
            result.limit,
            result.duration_ms,
            extra=log_extra,
        )
        return ArmOutput(
            output=result.to_json(),
            artifacts={
                "exit_code": "" if result.exit_code is None else str(result.exit_code),
                "limit": result.limit or "",
            },
        )

    async def _run(self, job: dict[str, object], task_id: str) -> SandboxResult:
        assert self._sandbox is not None
        stdin = str(job.get("stdin", ""))
        timeout = job.get("timeout_s")
        timeout_s = float(timeout) if isinstance(timeout, float) else None
        files = job.get("files")
        files_ = {str(k): v for k, v in files.items()} if isinstance(files, dict) else None
        if "argv" in job:
            argv = job["argv"]
            assert isinstance(argv, list)
            return await self._sandbox.run(
                argv, stdin=stdin, timeout_s=timeout_s, files=files_, task_id=task_id
            )
        return await self._sandbox.run_python(
            str(job["code"]), stdin=stdin, timeout_s=timeout_s, files=files_, task_id=task_id
        )
