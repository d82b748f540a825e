"""The child side of `octollm.sandbox.pychecks`: runs inside the sandbox as its `main.py`.

It reads `checks.json` (then deletes it, so the run's report marker is only in memory), loads
the code as module `solution` (a `__main__` demo does not run), runs each check in the same
namespace and reports one line per event: the marker, then JSON. Reports go to a private copy of
fd 1; fd 1 itself then points at fd 2, so the code's raw writes cannot bury or fake them, and
the code's `print`s go to capped buffers handed back in the last report. Standard library only,
for whatever `python3` the sandbox runs (3.8+); it must start fast.
"""

from __future__ import annotations

import io
import json
import os
import sys

SPEC_FILE = "checks.json"
DETAIL_CHARS = 300


class Capped(io.StringIO):
    """Keeps the first `cap` characters written; remembers that more came."""

    def __init__(self, cap: int) -> None:
        super().__init__()
        self.cap = cap
        self.truncated = False

    def write(self, s: str) -> int:
        room = self.cap - self.tell()
        if len(s) > room:
            self.truncated = True
        if room > 0:
            super().write(s[:room])
        return len(s)


def short_repr(value: object) -> str:
    try:
        text = repr(value)
    except Exception as exc:  # a broken __repr__ is the code's problem, not the report's
        return f"<unrepresentable {type(value).__name__}: {type(exc).__name__}>"
    return text if len(text) <= 200 else text[:197] + "..."


def describe(exc: BaseException) -> str:
    text = str(exc)
    return (f"{type(exc).__name__}: {text}" if text else type(exc).__name__)[:DETAIL_CHARS]


def run_check(check: dict[str, str], ns: dict[str, object], label: str) -> tuple[str, str]:
    """(status, detail) of one check: passed, failed (false / assertion) or error (raised)."""
    mode = check["mode"]
    try:
        if mode == "eq":
            left = eval(compile(check["left"], label, "eval"), ns)
            right = eval(compile(check["right"], label, "eval"), ns)
            ok = bool(left == right)
            detail = f"{check['left']} returned {short_repr(left)}, expected {short_repr(right)}"
        elif mode == "eval":
            value = eval(compile(check["source"], label, "eval"), ns)
            ok, detail = bool(value), f"evaluated to {short_repr(value)}"
        else:
            exec(compile(check["source"], label, "exec"), ns)
            ok, detail = True, "assertion held"
    except AssertionError as exc:
        return "failed", ("assertion failed: " + str(exc) if str(exc) else "assertion failed")[
            :DETAIL_CHARS
        ]
    except BaseException as exc:  # SystemExit, RecursionError, MemoryError: all the check's
        return "error", "raised " + describe(exc)
    return ("passed" if ok else "failed"), detail[:DETAIL_CHARS]


def main() -> None:
    with open(SPEC_FILE, encoding="utf-8") as f:
        spec = json.load(f)
    os.unlink(SPEC_FILE)
    mark = spec["mark"]
    reports = os.fdopen(os.dup(1), "w", encoding="utf-8", buffering=1)
    os.dup2(2, 1)

    def emit(**event: object) -> None:
        reports.write(mark + json.dumps(event) + "\n")
        reports.flush()

    out, err = Capped(spec["output_chars"]), Capped(spec["output_chars"])
    sys.stdout, sys.stderr, sys.stdin = out, err, io.StringIO("")

    def outputs() -> dict[str, object]:
        return {
            "stdout": out.getvalue(),
            "stderr": err.getvalue(),
            "truncated": out.truncated or err.truncated,
        }

    ns: dict[str, object] = {"__name__": "solution", "__builtins__": __builtins__}
    try:
        exec(compile(spec["code"], "solution.py", "exec"), ns)
    except BaseException as exc:
        emit(event="load_error", error=describe(exc), **outputs())
        return
    emit(event="loaded")
    for i, check in enumerate(spec["checks"]):
        status, detail = run_check(check, ns, f"<check {i}>")
        emit(event="check", index=i, status=status, detail=detail)
    emit(event="done", **outputs())


if __name__ == "__main__":
    main()
