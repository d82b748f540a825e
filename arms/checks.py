"""Run Python check expressions against a draft's code in a contained subprocess.

The judge's runner for code criteria (`add(2, 3) == 5`, `assert f(1) == 2`) until the executor
arm exists; then this module is the one to swap. It is pragmatic containment, not a security
boundary: the code comes from our own model, which an injected prompt may steer, so a runaway
or hostile snippet must not hurt the worker or the machine, but a determined attacker with code
execution is the executor arm's problem.

Containment (see docs/arms.md, "The checks runner"):
- `python -I -S`: isolated mode, no site-packages, no PYTHON* variables; a scrubbed environment;
  stdin from /dev/null; a fresh temporary working directory, removed afterwards.
- Resource limits set by the trusted harness before the untrusted code runs: CPU seconds,
  address space, file size, open files, no core dumps. When started as root the harness drops
  to `nobody`, so RLIMIT_NPROC (ignored for root) caps forks and the tree is not writable.
- An audit hook refuses process creation, signals, sockets and ctypes.
- Its own session and process group, killed with SIGKILL at the wall-clock timeout (and after a
  normal exit, for stray children); output read is capped.

The limits are applied inside the child rather than in a `preexec_fn`, because `preexec_fn`
is not safe in a process that runs threads (Kafka clients, the asyncio child watcher).
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import json
import logging
import os
import re
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "CheckOutcome",
    "Limits",
    "RunReport",
    "extract_python",
    "python_check",
    "run_python_checks",
]

log = logging.getLogger("octollm.arms.checks")

NOBODY_UID = 65534
NOBODY_GID = 65534

#: Imported by the harness before it drops to `nobody`: the interpreter's standard library may
#: live where `nobody` cannot read it (here under /root), so the code can use these modules and
#: any other import fails. Pure-computation modules only: nothing that spawns or connects.
PRELOAD = (
    "__future__", "abc", "array", "base64", "bisect", "calendar", "cmath", "collections",
    "collections.abc", "contextlib", "copy", "csv", "dataclasses", "datetime", "decimal",
    "difflib", "enum", "fractions", "functools", "graphlib", "hashlib", "heapq", "itertools",
    "json", "keyword", "math", "numbers", "operator", "pprint", "random", "re", "statistics",
    "string", "struct", "textwrap", "time", "types", "typing", "unicodedata", "unittest",
    "warnings", "weakref", "zlib",
)  # fmt: skip

_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)```", re.DOTALL)
_PY_TAGS = frozenset({"", "python", "py", "python3"})
# "add(2, 3) returns 5", "f(1) should return 2", "f(1) -> 2", "f(1) gives 2"
_RETURNS = re.compile(
    r"^(?P<call>[A-Za-z_][\w.]*\s*\(.*\))\s*(?:should\s+return|must\s+return|returns?|->|=>|"
    r"gives|evaluates\s+to|is)\s+(?P<value>.+?)\.?$",
    re.IGNORECASE | re.DOTALL,
)

_LITERALS = {"true": "True", "false": "False", "none": "None"}


@dataclass(frozen=True)
class Limits:
    cpu_s: int = 5
    wall_s: float = 10.0
    memory_mb: int = 256
    file_mb: int = 4
    open_files: int = 64
    processes: int = 16  # only enforced when the harness can drop to `nobody`
    output_bytes: int = 64 * 1024  # of the code's own prints kept for the report


@dataclass(frozen=True)
class CheckOutcome:
    source: str
    passed: bool
    detail: str


@dataclass
class RunReport:
    outcomes: list[CheckOutcome]
    loaded: bool  # the draft's code itself ran without an exception
    error: str = ""  # why the run as a whole failed (load error, timeout, crash)
    output: str = ""  # what the code printed, capped
    duration_ms: float = 0.0
    timed_out: bool = False
    exit_status: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def extract_python(text: str) -> str | None:
    """The Python code in a draft: its ```python blocks (or untagged ones) joined, else the
    largest such block that parses, else the whole draft if it parses, else None."""
    blocks = [body for tag, body in _FENCE.findall(text) if tag.lower() in _PY_TAGS]
    if blocks:
        joined = "\n\n".join(b.strip("\n") for b in blocks)
        if _parses(joined):
            return joined
        parsing = [b for b in blocks if _parses(b)]
        return max(parsing, key=len) if parsing else None
    stripped = text.strip()
    if stripped and _parses(stripped) and _looks_like_code(stripped):
        return stripped
    return None


def _parses(code: str, mode: Literal["exec", "eval"] = "exec") -> bool:
    try:
        ast.parse(code, mode=mode)
    except (SyntaxError, ValueError):
        return False
    return True


def _looks_like_code(code: str) -> bool:
    # A one-word answer ("Paris") parses as Python too; a draft counts as code only if it
    # defines, imports or assigns something.
    tree = ast.parse(code)
    return any(
        isinstance(
            n,
            ast.FunctionDef
            | ast.AsyncFunctionDef
            | ast.ClassDef
            | ast.Import
            | ast.ImportFrom
            | ast.Assign,
        )
        for n in tree.body
    )


def _is_literal(source: str) -> bool:
    try:
        ast.literal_eval(source)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return False
    return True


def _prose_is(expr: ast.expr) -> bool:
    # `sorted(x) is stable` parses, but `is <bare word>` is English; `is None` / `is True` stay.
    return isinstance(expr, ast.Compare) and any(
        isinstance(op, ast.Is | ast.IsNot) and not isinstance(right, ast.Constant)
        for op, right in zip(expr.ops, expr.comparators, strict=True)
    )


def _has_call_or_compare(node: ast.AST) -> bool:
    return any(isinstance(n, ast.Call | ast.Compare) for n in ast.walk(node))


def python_check(criterion: str) -> dict[str, str] | None:
    """The runnable form of a criterion, or None if it is not a Python check.

    Accepted: an expression with a call or comparison (`add(2, 3) == 5`, `is_prime(7)`), an
    `assert ...` statement, `call returns value` phrasing, each optionally inside backticks.
    Returns {"mode": "eq"|"eval"|"exec", "source", "left"?, "right"?}.
    """
    text = criterion.strip()
    ticked = re.findall(r"`([^`]+)`", text)
    # Prose around a ticked call ("calling `f(2)` gives 5") can change its meaning; only a
    # comparison or assertion is taken from inside ticks then, never a bare truthy call.
    prose = len(re.sub(r"`[^`]+`", " ", text).split()) > 2
    candidates = [t.strip() for t in ticked] if ticked else []
    candidates.append(re.sub(r"^calling\s+", "", text.replace("`", "").rstrip(".").strip()))
    for n, cand in enumerate(candidates):
        in_ticks = n < len(ticked)
        m = _RETURNS.match(cand)
        value = _LITERALS.get(m["value"].strip().lower(), m["value"].strip()) if m else ""
        # Only a literal result: "f(x) is fast" is prose, "f(1) returns 2" a check.
        if m and _parses(m["call"], "eval") and _is_literal(value):
            return {
                "mode": "eq",
                "source": f"{m['call'].strip()} == {value}",
                "left": m["call"].strip(),
                "right": value,
            }
        if cand.startswith("assert ") and _parses(cand):
            return {"mode": "exec", "source": cand}
        if _parses(cand, "eval"):
            expr = ast.parse(cand, mode="eval").body
            if not _has_call_or_compare(expr) or _prose_is(expr):
                continue
            if (
                isinstance(expr, ast.Compare)
                and len(expr.ops) == 1
                and isinstance(expr.ops[0], ast.Eq)
            ):
                left = ast.get_source_segment(cand, expr.left)
                right = ast.get_source_segment(cand, expr.comparators[0])
                if left and right:
                    return {"mode": "eq", "source": cand, "left": left, "right": right}
            if in_ticks and prose and not isinstance(expr, ast.Compare):
                continue
            return {"mode": "eval", "source": cand}
    return None


# The harness runs in the child: trusted code that reads the spec, applies the limits, drops
# privileges, installs the audit hook, then runs the draft's code and each check, emitting one
# JSON line per event on a private copy of stdout (the code's own prints are captured).
_HARNESS = r"""
import io, json, os, resource, sys
spec_path = sys.argv[1]
with open(spec_path, encoding="utf-8") as f:
    spec = json.load(f)
os.unlink(spec_path)
out = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
def emit(**event):
    out.write(json.dumps(event) + "\n")
    out.flush()
lim = spec["limits"]
def setlimit(kind, value):
    resource.setrlimit(kind, (value, value))
resource.setrlimit(resource.RLIMIT_CPU, (lim["cpu_s"], lim["cpu_s"] + 1))
setlimit(resource.RLIMIT_AS, lim["memory_mb"] * 1024 * 1024)
setlimit(resource.RLIMIT_FSIZE, lim["file_mb"] * 1024 * 1024)
setlimit(resource.RLIMIT_NOFILE, lim["open_files"])
setlimit(resource.RLIMIT_CORE, 0)
for name in spec["preload"]:
    try:
        __import__(name)
    except ImportError:
        pass
dropped = False
if os.geteuid() == 0:
    os.setgroups([])
    os.setgid(spec["gid"])
    os.setuid(spec["uid"])
    setlimit(resource.RLIMIT_NPROC, lim["processes"])
    dropped = True
emit(event="ready", dropped=dropped)
BLOCKED = ("os.fork", "os.forkpty", "os.system", "os.exec", "os.posix_spawn", "os.spawn",
           "subprocess.Popen", "pty.spawn", "os.kill", "os.killpg", "signal.pthread_kill",
           "socket.connect", "socket.bind", "socket.sendto", "socket.getaddrinfo",
           "ctypes.dlopen", "ctypes.dlsym", "ctypes.cdata", "os.setuid", "os.chroot")
def hook(event, args):
    if event.startswith(BLOCKED):
        raise PermissionError(f"blocked in the checks sandbox: {event}")
sys.addaudithook(hook)
class Capped(io.StringIO):
    def write(self, s):
        room = lim["output_bytes"] - self.tell()
        return super().write(s[:max(room, 0)]) if room > 0 else len(s)
captured = Capped()
sys.stdout = sys.stderr = captured
sys.stdin = io.StringIO("")
def describe(exc):
    text = str(exc)
    return f"{type(exc).__name__}: {text}"[:300] if text else type(exc).__name__
ns = {"__name__": "solution", "__builtins__": __builtins__}
try:
    exec(compile(spec["code"], "solution.py", "exec"), ns)
except BaseException as exc:
    emit(event="load_error", error=describe(exc), output=captured.getvalue())
    raise SystemExit(0)
emit(event="loaded")
for i, check in enumerate(spec["checks"]):
    try:
        if check["mode"] == "eq":
            left = eval(compile(check["left"], f"<check {i}>", "eval"), ns)
            right = eval(compile(check["right"], f"<check {i}>", "eval"), ns)
            ok = bool(left == right)
            detail = f"{check['left']} returned {left!r:.200}, expected {right!r:.200}"
        elif check["mode"] == "eval":
            value = eval(compile(check["source"], f"<check {i}>", "eval"), ns)
            ok = bool(value)
            detail = f"evaluated to {value!r:.200}"
        else:
            exec(compile(check["source"], f"<check {i}>", "exec"), ns)
            ok, detail = True, "assertion held"
    except AssertionError as exc:
        ok, detail = False, f"assertion failed{': ' + str(exc)[:200] if str(exc) else ''}"
    except BaseException as exc:
        ok, detail = False, f"raised {describe(exc)}"
    emit(event="check", index=i, passed=ok, detail=detail)
emit(event="done", output=captured.getvalue())
"""


def _scrubbed_env() -> dict[str, str]:
    return {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": "/nonexistent"}


async def run_python_checks(
    code: str,
    checks: list[dict[str, str]],
    *,
    limits: Limits | None = None,
    task_id: str | None = None,
) -> RunReport:
    """Run `code`, then each check (from `python_check`), in one contained subprocess.

    Never raises for anything the code does: a load error, a timeout or a crash fails every
    check not yet reported, with the reason in `detail`.
    """
    limits = limits or Limits()
    workdir = tempfile.mkdtemp(prefix="octo-check-")
    began = time.monotonic()
    as_root = os.geteuid() == 0
    spec = {
        "code": code,
        "checks": checks,
        "limits": limits.__dict__,
        "preload": PRELOAD if as_root else [],
        "uid": NOBODY_UID,
        "gid": NOBODY_GID,
    }
    spec_path = os.path.join(workdir, "spec.json")
    # A small local file: writing it inline costs less than a thread hop.
    with open(spec_path, "w", encoding="utf-8") as f:  # noqa: ASYNC230
        json.dump(spec, f)
    if as_root:
        # The dropped child works in this directory; the spec (read before dropping) stays root's.
        os.chown(workdir, NOBODY_UID, NOBODY_GID)
    events: list[dict[str, Any]] = []
    timed_out = False
    read_cap = limits.output_bytes * 4 + 64 * 1024 * (len(checks) + 2)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-I",
        "-S",
        "-c",
        _HARNESS,
        spec_path,
        cwd=workdir,
        env=_scrubbed_env(),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
        limit=read_cap,
    )
    try:
        events, truncated = await asyncio.wait_for(_read_events(proc, read_cap), limits.wall_s)
        if truncated:
            events.append({"event": "crash", "error": f"output exceeded {read_cap} bytes"})
    except TimeoutError:
        timed_out = True
    finally:
        _kill_group(proc.pid)
        stderr = b""
        if proc.stderr is not None:
            with contextlib.suppress(TimeoutError, ValueError):
                stderr = await asyncio.wait_for(proc.stderr.read(4096), 2.0)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), 5.0)
        shutil.rmtree(workdir, ignore_errors=True)
    report = _report(checks, events, timed_out, limits, proc.returncode, stderr)
    report.duration_ms = (time.monotonic() - began) * 1000.0
    log.info(
        "python checks ran task_id=%s checks=%d passed=%d loaded=%s timed_out=%s ms=%.0f",
        task_id,
        len(checks),
        sum(o.passed for o in report.outcomes),
        report.loaded,
        timed_out,
        report.duration_ms,
        extra={"task_id": task_id, "component": "arm.judge.checks"},
    )
    return report


async def _read_events(
    proc: asyncio.subprocess.Process, cap: int
) -> tuple[list[dict[str, Any]], bool]:
    assert proc.stdout is not None
    events: list[dict[str, Any]] = []
    total = 0
    while True:
        try:
            line = await proc.stdout.readline()
        except ValueError:  # one line longer than the cap
            return events, True
        if not line:
            return events, False
        total += len(line)
        if total > cap:
            return events, True
        try:
            event = json.loads(line)
        except ValueError:
            continue  # the code wrote to fd 1 directly; not ours
        if isinstance(event, dict) and "event" in event:
            events.append(event)


def _kill_group(pgid: int) -> None:
    # The child leads its own session, so its group id is its pid; SIGKILL takes the whole tree,
    # including anything it managed to start. ProcessLookupError: the group is already gone.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _report(
    checks: list[dict[str, str]],
    events: list[dict[str, Any]],
    timed_out: bool,
    limits: Limits,
    status: int | None,
    stderr: bytes,
) -> RunReport:
    results: dict[int, CheckOutcome] = {}
    loaded = False
    error = ""
    output = ""
    done = False
    for ev in events:
        kind = ev.get("event")
        if kind == "loaded":
            loaded = True
        elif kind == "load_error":
            error = f"the draft's code failed to run: {ev.get('error', '?')}"
            output = str(ev.get("output", ""))
        elif kind == "check" and isinstance(ev.get("index"), int) and ev["index"] < len(checks):
            i = ev["index"]
            results[i] = CheckOutcome(
                checks[i]["source"], bool(ev.get("passed")), str(ev.get("detail", ""))[:400]
            )
        elif kind == "done":
            done = True
            output = str(ev.get("output", ""))
        elif kind == "crash":
            error = str(ev.get("error"))
    if not error and not done:
        if timed_out:
            error = f"timed out after {limits.wall_s:g}s wall clock (process group killed)"
        elif status is not None and status < 0:
            sig = signal.Signals(-status).name if -status in signal.valid_signals() else -status
            hint = " (CPU limit)" if sig in ("SIGXCPU", "SIGKILL") else ""
            error = f"killed by {sig}{hint}"
        else:
            tail = stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
            error = f"the checks process exited with status {status}: {tail[0][:300]}"
    outcomes = [
        results.get(i) or CheckOutcome(c["source"], False, f"not run: {error or 'no result'}")
        for i, c in enumerate(checks)
    ]
    return RunReport(
        outcomes=outcomes,
        loaded=loaded,
        error=error,
        output=output[: limits.output_bytes],
        timed_out=timed_out,
        exit_status=status,
    )
