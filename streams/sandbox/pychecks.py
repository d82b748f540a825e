"""Run Python code and a list of checks against it, in the sandbox, in one run.

The one harness for code checks: the judge's code criteria and the coder's tests both come
here. A check is an `assert` statement or an expression (`add(2, 3) == 5`, `is_prime(7)`);
each is reported as passed, failed (false, or its assertion failed) or error (it raised, or it
never ran because the code did not load or the run was stopped), with a short reason. The run
is one `Sandbox.run_python` under the caller's `SandboxPolicy`, so it gets exactly the executor
arm's containment and limits (docs/executor.md); the child-side script is `_pychecks_child.py`.

    report = await run_checks(code, ["add(2, 3) == 5", "assert add(1, 1) == 2"], sandbox=sb)

Raises `SandboxRefused` when the policy refuses to run (no network isolation on this machine,
`python3` not allow-listed), like `Sandbox.run`; never for anything the code does.
"""

from __future__ import annotations

import ast
import contextlib
import json
import logging
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path
from typing import Any, Literal

from octollm.sandbox.policy import SandboxPolicy
from octollm.sandbox.result import Limit, SandboxResult
from octollm.sandbox.runner import Sandbox

__all__ = ["CheckOutcome", "ChecksReport", "PyCheck", "Status", "run_checks"]

log = logging.getLogger("octollm.sandbox.pychecks")

CHILD = Path(__file__).with_name("_pychecks_child.py")
SPEC_FILE = "checks.json"  # must match the child's
#: Characters kept of each of the code's stdout and stderr.
OUTPUT_CHARS = 4096
#: Characters of one report line besides the outputs (a check's detail is capped at 300).
_REPORT_CHARS = 400
#: Bytes per character in the worst case of JSON's ASCII escapes (a surrogate pair).
_ESCAPED = 12

Status = Literal["passed", "failed", "error"]
Mode = Literal["eq", "eval", "exec"]


@dataclass(frozen=True)
class PyCheck:
    """One runnable check. `eq` keeps both sides so a failure can say what came back."""

    source: str  # as written, and as reported
    mode: Mode
    left: str = ""  # eq only
    right: str = ""  # eq only

    @classmethod
    def parse(cls, source: str) -> PyCheck:
        """An `assert` (or other statement) runs as is; `a == b` compares and reports both
        sides; any other expression must be truthy. ValueError if it is not Python."""
        text = source.strip()
        try:
            expr = ast.parse(text, mode="eval").body
        except SyntaxError:
            try:
                ast.parse(text, mode="exec")
            except SyntaxError as exc:
                raise ValueError(f"not a Python check: {text!r}: {exc.msg}") from exc
            return cls(text, "exec")
        if isinstance(expr, ast.Compare) and len(expr.ops) == 1 and isinstance(expr.ops[0], ast.Eq):
            left = ast.get_source_segment(text, expr.left)
            right = ast.get_source_segment(text, expr.comparators[0])
            if left and right:
                return cls(text, "eq", left, right)
        return cls(text, "eval")


@dataclass(frozen=True)
class CheckOutcome:
    source: str
    status: Status
    detail: str

    @property
    def passed(self) -> bool:
        return self.status == "passed"


@dataclass(frozen=True)
class ChecksReport:
    outcomes: list[CheckOutcome]
    loaded: bool  # the code itself ran without an exception
    error: str  # why the run as a whole failed (load error, a limit, a crash); "" if it did not
    stdout: str  # what the code printed, capped
    stderr: str
    output_truncated: bool
    limit: Limit | None  # the sandbox limit that stopped the run, if one did
    network_isolated: bool
    duration_ms: float

    @property
    def passed(self) -> bool:
        return all(o.passed for o in self.outcomes)


@cache
def _child_source() -> str:
    return CHILD.read_text(encoding="utf-8")


async def run_checks(
    code: str,
    checks: Sequence[PyCheck | str],
    *,
    sandbox: Sandbox | None = None,
    timeout_s: float | None = None,
    output_chars: int = OUTPUT_CHARS,
    task_id: str | None = None,
) -> ChecksReport:
    """Load `code` as module `solution`, then run every check in its namespace, in one
    sandboxed run (`sandbox`, default: the default policy) stopped after `timeout_s` (default:
    the policy's wall clock). A string check goes through `PyCheck.parse` (ValueError)."""
    specs = [c if isinstance(c, PyCheck) else PyCheck.parse(c) for c in checks]
    sandbox = sandbox or Sandbox()
    # The marker tells our reports from anything the code prints; only the child knows it.
    mark = f"@@octo-checks-{secrets.token_hex(8)}@@"
    spec = {
        "mark": mark,
        "code": code,
        "checks": [{"mode": c.mode, "source": c.source, "left": c.left, "right": c.right}
                   for c in specs],
        "output_chars": output_chars,
    }  # fmt: skip
    # The reports must fit in what the sandbox keeps of stdout, whatever the code printed.
    room = _ESCAPED * (2 * output_chars + _REPORT_CHARS * (len(specs) + 4))
    if sandbox.policy.output_bytes < room:
        sandbox = Sandbox(sandbox.policy.with_changes(output_bytes=room))
    began = time.monotonic()
    result = await sandbox.run_python(
        _child_source(),
        timeout_s=timeout_s,
        files={SPEC_FILE: json.dumps(spec)},
        task_id=task_id,
    )
    stopped = _why_stopped(result, sandbox.policy, sandbox.policy.timeout(timeout_s))
    report = _report(specs, _events(result.stdout, mark), result, stopped, output_chars)
    report = replace(report, duration_ms=round((time.monotonic() - began) * 1000.0, 2))
    log.info(
        "python checks ran task_id=%s checks=%d passed=%d loaded=%s limit=%s ms=%.0f",
        task_id,
        len(specs),
        sum(o.passed for o in report.outcomes),
        report.loaded,
        report.limit,
        report.duration_ms,
        extra={"task_id": task_id, "component": "sandbox.pychecks"},
    )
    return report


def _events(stdout: str, mark: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    for line in stdout.splitlines():
        if line.startswith(mark):
            with contextlib.suppress(ValueError):
                event = json.loads(line[len(mark) :])
                if isinstance(event, dict):
                    events.append(event)
    return events


def _report(
    specs: list[PyCheck],
    events: list[dict[str, Any]],
    result: SandboxResult,
    stopped: str,
    output_chars: int,
) -> ChecksReport:
    """What the child reported, and for each check it did not report, why not."""
    outcomes: dict[int, CheckOutcome] = {}
    loaded = done = False
    error = ""
    final: dict[str, Any] = {}
    for ev in events:
        kind = ev.get("event")
        if kind == "loaded":
            loaded = True
        elif kind == "load_error":
            error = f"the code failed to run: {ev.get('error', '?')}"
            final = ev
        elif kind == "check" and isinstance(ev.get("index"), int):
            n = ev["index"]
            status = ev.get("status")
            if 0 <= n < len(specs) and status in ("passed", "failed", "error"):
                outcomes[n] = CheckOutcome(specs[n].source, status, str(ev.get("detail", "")))
        elif kind == "done":
            done, final = True, ev
    if not error and not done:
        error = stopped
    # The code's own stderr, then what reached fd 2 directly (raw writes, a crash's traceback).
    stderr = str(final.get("stderr", "")) + result.stderr
    return ChecksReport(
        outcomes=[
            outcomes.get(n) or CheckOutcome(c.source, "error", f"not run: {error or 'no report'}")
            for n, c in enumerate(specs)
        ],
        loaded=loaded,
        error=error,
        stdout=str(final.get("stdout", "")),
        stderr=stderr[:output_chars],
        output_truncated=bool(final.get("truncated"))
        or len(stderr) > output_chars
        or result.stderr_truncated,
        limit=result.limit,
        network_isolated=result.network_isolated,
        duration_ms=0.0,
    )


def _why_stopped(result: SandboxResult, policy: SandboxPolicy, timeout: float) -> str:
    """Why a run that did not finish its checks stopped, in the words a report uses."""
    if result.limit == "timeout":
        return f"timed out after {timeout:g}s wall clock (the run was killed)"
    if result.limit == "cpu":
        return f"stopped by the CPU limit ({policy.cpu_s}s)"
    if result.limit is not None:
        return f"stopped by the sandbox's {result.limit} limit"
    if result.stdout_truncated:
        return "the reports were cut off: the code wrote past the sandbox's output cap"
    tail = (result.stderr.strip().splitlines() or ["no output"])[-1]
    return f"the checks run ended early (exit {result.exit_code}): {tail[:300]}"
