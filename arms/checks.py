"""Turn text into something to run: the Python code in a draft, and a criterion as a check.

`extract_python` finds the code in a model's answer; `python_check` reads an acceptance
criterion or a step's test (`add(2, 3) == 5`, `assert f(1) == 2`, "f(1) returns 2") as an
`octollm.sandbox.PyCheck`, or None when it is prose for the judge's other checks. Running the
checks is `octollm.sandbox.run_checks` (docs/executor.md), shared by the judge and the coder.
"""

from __future__ import annotations

import ast
import re
from typing import Literal

from octollm.sandbox import PyCheck

__all__ = ["extract_python", "python_check"]

_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)```", re.DOTALL)
_PY_TAGS = frozenset({"", "python", "py", "python3"})
# "add(2, 3) returns 5", "f(1) should return 2", "f(1) -> 2", "f(1) gives 2"
_RETURNS = re.compile(
    r"^(?P<call>[A-Za-z_][\w.]*\s*\(.*\))\s*(?:should\s+return|must\s+return|returns?|->|=>|"
    r"gives|evaluates\s+to|is)\s+(?P<value>.+?)\.?$",
    re.IGNORECASE | re.DOTALL,
)

_LITERALS = {"true": "True", "false": "False", "none": "None"}


def extract_python(text: str) -> str | None:
    """The Python code in a draft: its ```python blocks (or untagged ones) joined, else the
    largest such block that parses, else the whole draft if it parses, else None."""
    blocks = [body for tag, body in _FENCE.findall(text) if tag.lower() in _PY_TAGS]
    if blocks:
        joined = "\n\n".join(b.strip("\n") for b in blocks)
        if parses(joined):
            return joined
        parsing = [b for b in blocks if parses(b)]
        return max(parsing, key=len) if parsing else None
    stripped = text.strip()
    if stripped and parses(stripped) and looks_like_code(stripped):
        return stripped
    return None


def parses(code: str, mode: Literal["exec", "eval"] = "exec") -> bool:
    """Whether `code` is valid Python (a module, or with mode "eval" an expression)."""
    try:
        ast.parse(code, mode=mode)
    except (SyntaxError, ValueError):
        return False
    return True


def looks_like_code(code: str) -> bool:
    """Whether parsed Python is code rather than prose: a one-word answer ("Paris") or a prose
    line ("Hello") parses too, so code must define, import, assign or return something."""
    return any(
        isinstance(
            n,
            ast.FunctionDef
            | ast.AsyncFunctionDef
            | ast.ClassDef
            | ast.Import
            | ast.ImportFrom
            | ast.Assign
            | ast.Return,
        )
        for n in ast.parse(code).body
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


def python_check(criterion: str) -> PyCheck | None:
    """The runnable form of a criterion, or None if it is not a Python check.

    Accepted: an expression with a call or comparison (`add(2, 3) == 5`, `is_prime(7)`), an
    `assert ...` statement, `call returns value` phrasing, each optionally inside backticks.
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
        if m and parses(m["call"], "eval") and _is_literal(value):
            return PyCheck.parse(f"{m['call'].strip()} == {value}")
        if cand.startswith("assert ") and parses(cand):
            return PyCheck.parse(cand)
        if parses(cand, "eval"):
            expr = ast.parse(cand, mode="eval").body
            if not _has_call_or_compare(expr) or _prose_is(expr):
                continue
            if in_ticks and prose and not isinstance(expr, ast.Compare):
                continue
            return PyCheck.parse(cand)
    return None
