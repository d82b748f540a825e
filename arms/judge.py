"""The judge arm: checks a draft against the task's acceptance criteria.

Each criterion is classified once (`classify`) and checked the cheapest reliable way:
- Python criteria (`add(2, 3) == 5`, `assert f(1) == 2`, `f(1) returns 2`) run against the code in
  the draft in the executor's sandbox (`octollm.sandbox.run_checks`, method "tests"); when
  the sandbox refuses to run (no network isolation on this machine) they are "unverified";
- text criteria (contains / mentions X, at most N words / lines, valid JSON, no TODO, valid
  Python, defines a function X) with small regexes and parsers (method "deterministic");
- everything else asks the LLM for {"passed", "reason"} (method "llm");
- the answer itself, whatever the criteria, through `checks_text.check_answer` (method
  "deterministic"): not empty, and for prose not a refusal, not an echo of the goal, the length
  and language the goal asks for; redaction placeholders kept. A draft failing one of these gets
  no LLM call: its LLM criteria are "unverified" (the model's opinion of an echo is noise).

The verdict says what checked the draft (`verification`: TESTS when code criteria ran in the
sandbox, LLM_JUDGE when the LLM judged a criterion, DETERMINISTIC when only rules did, NONE when
nothing ran); the orchestrator copies it into the TaskResult.

Policy: a criterion the LLM could not answer (server down, unusable answer) is "unverified" and
counts as failed: the judge never reports "passed" for what nobody checked (fail closed). With no
criteria only the answer checks decide (no LLM call: the small local model's opinion of an
unconstrained draft adds noise, not signal). A draft made by a step that cut its input or its
answer (the orchestrator's `truncated` input) never passes.
"""

from __future__ import annotations

import ast
import json
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar

from octollm.arms import checks, checks_text
from octollm.contracts.models import (
    ArmRequest,
    ArmStatus,
    Usage,
    Verification,
    VerificationCheck,
    VerificationMethod,
)
from octollm.llm import LLMClient, LLMError, LLMOutputError, UsageMeter
from octollm.runtime.arm import Arm, ArmContext, ArmOutput
from octollm.sandbox import PyCheck, Sandbox, SandboxPolicy, SandboxRefused, run_checks

__all__ = [
    "JUDGE_STEP",
    "Check",
    "Criterion",
    "JudgeArm",
    "Kind",
    "Verdict",
    "build_llm_messages",
    "classify",
    "judge_draft",
    "verification",
]

log = logging.getLogger("octollm.arms.judge")

JUDGE_STEP = "judge"
LLM_MAX_TOKENS = 96
LLM_TIMEOUT_S = 30.0
LLM_DRAFT_CHARS = 3000
#: The check a draft fails when a step cut its input or output (docs/arms.md, `truncated`).
COMPLETE_CRITERION = "(always) no step cut its input or its answer"
VERDICT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"passed": {"type": "boolean"}, "reason": {"type": "string"}},
    "required": ["passed", "reason"],
}


class Kind(StrEnum):
    PYTHON = "python"  # runnable expression / assertion
    CONTAINS = "contains"
    LENGTH = "length"
    JSON = "json"
    NO_TODO = "no_todo"
    PYTHON_SYNTAX = "python_syntax"
    DEFINES = "defines"
    LLM = "llm"


@dataclass(frozen=True)
class Criterion:
    text: str
    kind: Kind
    params: Mapping[str, Any]


@dataclass(frozen=True)
class Check:
    criterion: str
    passed: bool
    method: str  # deterministic | tests (run in the sandbox) | llm
    detail: str
    unverified: bool = False

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "criterion": self.criterion,
            "passed": self.passed,
            "method": self.method,
            "detail": self.detail,
        }
        if self.unverified:
            out["unverified"] = True
        return out


@dataclass(frozen=True)
class Verdict:
    passed: bool
    score: float
    reasons: list[str]
    checks: list[Check]

    def to_json(self) -> str:
        return json.dumps(
            {
                "passed": self.passed,
                "score": self.score,
                "reasons": self.reasons,
                "checks": [c.as_json() for c in self.checks],
                "verification": verification(self.checks).to_avro(),
            }
        )


_VERIFICATION_NAMES = {"tests": "tests", "llm": "llm_judge", "deterministic": "deterministic"}


def verification(checks: Sequence[Check]) -> Verification:
    """What checked a draft: the strongest method among the checks that ran (an unverified check
    did not run), and every check with whether it passed."""
    ran = {c.method for c in checks if not c.unverified}
    if "tests" in ran:
        method = VerificationMethod.TESTS
    elif "llm" in ran:
        method = VerificationMethod.LLM_JUDGE
    elif ran:
        method = VerificationMethod.DETERMINISTIC
    else:
        method = VerificationMethod.NONE
    return Verification(
        method=method,
        checks=[
            VerificationCheck(
                name=c.criterion[:200], method=_VERIFICATION_NAMES[c.method], passed=c.passed
            )
            for c in checks
        ],
    )


# --- classification -----------------------------------------------------------------------

_SUBJECT = (
    r"(?:(?:the|your|its|an?)\s+)?(?:answer|output|draft|response|reply|text|result|summary|"
    r"code|solution|function|program|explanation|it)"
)
_MODAL = r"(?:must|should|shall|has\s+to|needs\s+to|will)"
_NEG = (
    r"(?:not|never|does\s+not|doesn't|do\s+not|don't|must\s+not|mustn't|should\s+not|"
    r"shouldn't)"
)
_CONTAINS = re.compile(
    rf"^(?:{_SUBJECT}\s+)?(?:{_MODAL}\s+)?(?P<neg>{_NEG}\s+)?"
    r"(?P<verb>contains?|mentions?|includes?|says?|names?|refers?\s+to)\s+"
    r"(?:the\s+(?:word|phrase|string|term|name|text)\s+)?(?P<x>.+?)\s*\.?$",
    re.IGNORECASE | re.DOTALL,
)
_QUOTED = re.compile(r"""^(["'`\u201c\u2018])(?P<x>.+)(["'`\u201d\u2019])$""", re.DOTALL)
_CMP = {
    "at most": "<=",
    "no more than": "<=",
    "not more than": "<=",
    "up to": "<=",
    "max": "<=",
    "maximum": "<=",
    "maximum of": "<=",
    "a maximum of": "<=",
    "fewer than": "<",
    "less than": "<",
    "under": "<",
    "at least": ">=",
    "no fewer than": ">=",
    "no less than": ">=",
    "a minimum of": ">=",
    "minimum": ">=",
    "more than": ">",
    "over": ">",
    "exactly": "==",
}
_UNITS = {
    "word": "words",
    "line": "lines",
    "character": "characters",
    "char": "characters",
    "sentence": "sentences",
    "paragraph": "paragraphs",
    "bullet": "bullets",
    "bullet point": "bullets",
    "item": "bullets",
}
_LENGTH = re.compile(
    rf"^(?:{_SUBJECT}\s+)?(?:(?:{_MODAL}\s+)?(?:be|have|use|is|has|contain|stay|keep\s+it)\s+)?"
    r"(?:(?:kept\s+)?(?:to|in|within|with)\s+)?"
    rf"(?P<cmp>{'|'.join(sorted(map(re.escape, _CMP), key=len, reverse=True))})\s+"
    r"(?P<n>\d{1,6})\s+(?P<unit>bullet\s+points?|bullets?|items?|words?|lines?|characters?|chars?|"
    r"sentences?|paragraphs?)(?:\s+(?:long|in\s+length|or\s+(?:less|fewer)))?\s*\.?$",
    re.IGNORECASE,
)
_JSON = re.compile(
    rf"^(?:{_SUBJECT}\s+)?(?:(?:{_MODAL}\s+)?(?:is|be|parses?\s+as)\s+)?(?:an?\s+)?"
    r"(?:valid\s+)?json(?:\s+(?P<shape>object|array|list|document))?\s*\.?$",
    re.IGNORECASE,
)
_NO_TODO = re.compile(
    rf"^(?:{_SUBJECT}\s+)?(?:(?:{_MODAL}\s+)?(?:have|has|contain|contains|leave|leaves)\s+)?"
    r"(?:no|without)\s+(?:todos?|fixmes?|placeholders?|todo\s+comments?)(?:\s+(?:left|comments?))?"
    r"\s*\.?$",
    re.IGNORECASE,
)
_PY_SYNTAX = re.compile(
    rf"^(?:{_SUBJECT}\s+)?(?:(?:{_MODAL}\s+)?(?:is|be)\s+)?(?:syntactically\s+)?valid\s+python"
    r"(?:\s+code)?\s*\.?$|^(?:the\s+)?code\s+(?:compiles|parses|runs\s+without\s+syntax\s+errors)"
    r"\s*\.?$",
    re.IGNORECASE,
)
_DEFINES = re.compile(
    rf"^(?:{_SUBJECT}\s+)?(?:{_MODAL}\s+)?(?:defines?|implements?|provides?|has)\s+"
    r"(?:an?\s+|the\s+)?(?:(?:python\s+)?(?:function|class|method))\s+(?:named\s+|called\s+)?"
    r"`?(?P<name>[A-Za-z_]\w*)`?(?:\s*\(\s*\))?\s*\.?$",
    re.IGNORECASE,
)


def classify(criterion: str) -> Criterion:
    """Which check a criterion gets. Text patterns come first (a quoted call in "contains
    `f()`" is text), then runnable Python, else the LLM."""
    text = " ".join(criterion.split())
    if m := _NO_TODO.match(text):
        return Criterion(criterion, Kind.NO_TODO, {})
    if m := _LENGTH.match(text):
        unit = m["unit"].lower().rstrip("s")
        unit = "bullet point" if unit.startswith("bullet point") else unit
        return Criterion(
            criterion,
            Kind.LENGTH,
            {
                "cmp": _CMP[m["cmp"].lower()],
                "n": int(m["n"]),
                "unit": _UNITS.get(unit, _UNITS.get(unit.split()[0], "words")),
            },
        )
    if m := _JSON.match(text):
        return Criterion(criterion, Kind.JSON, {"shape": (m["shape"] or "").lower()})
    if _PY_SYNTAX.match(text):
        return Criterion(criterion, Kind.PYTHON_SYNTAX, {})
    if m := _DEFINES.match(text):
        return Criterion(criterion, Kind.DEFINES, {"name": m["name"]})
    if m := _CONTAINS.match(text):
        target = m["x"].strip()
        quoted = _QUOTED.match(target)
        # Unquoted, only a short name or term is a literal check; "mentions the trade-offs of
        # caching" is about meaning, which the LLM judges.
        if quoted or len(target.split()) <= 3:
            return Criterion(
                criterion,
                Kind.CONTAINS,
                {
                    "x": quoted["x"] if quoted else target,
                    "negate": bool(m["neg"]),
                    "exact": bool(quoted),
                },
            )
    if (runnable := checks.python_check(text)) is not None:
        return Criterion(criterion, Kind.PYTHON, {"check": runnable})
    return Criterion(criterion, Kind.LLM, {})


# --- deterministic text checks --------------------------------------------------------------


def _json_value(draft: str) -> Any:
    text = draft.strip()
    fenced = re.fullmatch(r"```(?:json)?\s*\n(.*?)\n?```", text, re.DOTALL)
    return json.loads(fenced.group(1) if fenced else text)


def text_check(c: Criterion, draft: str) -> Check:
    """Run a deterministic non-Python criterion against the draft."""
    p = c.params
    if c.kind is Kind.CONTAINS:
        x = str(p["x"])
        if p["exact"]:
            found = x.lower() in draft.lower()
        else:
            found = re.search(rf"(?<!\w){re.escape(x)}(?!\w)", draft, re.IGNORECASE) is not None
        passed = found != p["negate"]
        verb = "contains" if found else "does not contain"
        return Check(c.text, passed, "deterministic", f"the draft {verb} {x!r}")
    if c.kind is Kind.LENGTH:
        n = checks_text.count_units(draft, p["unit"])
        passed = checks_text.COMPARE[p["cmp"]](n, p["n"])
        return Check(
            c.text, passed, "deterministic", f"{n} {p['unit']} (required {p['cmp']} {p['n']})"
        )
    if c.kind is Kind.JSON:
        try:
            value = _json_value(draft)
        except ValueError as e:
            return Check(c.text, False, "deterministic", f"not valid JSON: {e}")
        shape = p["shape"]
        if shape == "object" and not isinstance(value, dict):
            return Check(c.text, False, "deterministic", "valid JSON but not an object")
        if shape in ("array", "list") and not isinstance(value, list):
            return Check(c.text, False, "deterministic", "valid JSON but not an array")
        return Check(c.text, True, "deterministic", f"valid JSON ({type(value).__name__})")
    if c.kind is Kind.NO_TODO:
        hits = re.findall(r"\b(?:TODO|FIXME|XXX)\b", draft)
        detail = f"found {len(hits)} TODO/FIXME marker(s)" if hits else "no TODO/FIXME markers"
        return Check(c.text, not hits, "deterministic", detail)
    code = checks.extract_python(draft)
    if c.kind is Kind.PYTHON_SYNTAX:
        if code is None:
            return Check(c.text, False, "deterministic", "no parseable Python code in the draft")
        return Check(c.text, True, "deterministic", "the draft's Python code parses")
    if c.kind is Kind.DEFINES:
        name = str(p["name"])
        if code is None:
            return Check(c.text, False, "deterministic", "no parseable Python code in the draft")
        defined = {
            n.name
            for n in ast.walk(ast.parse(code))
            if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
        }
        ok = name in defined
        return Check(c.text, ok, "deterministic", f"{name} is {'defined' if ok else 'not defined'}")
    raise ValueError(f"{c.kind} is not a text check")


# --- the LLM path ---------------------------------------------------------------------------


def build_llm_messages(goal: str, criterion: str, draft: str) -> list[dict[str, str]]:
    clipped = draft.strip()[:LLM_DRAFT_CHARS]
    return [
        {
            "role": "system",
            "content": "Does the draft meet the criterion? Reply with JSON: passed is true or "
            "false, reason says why in a few words of your own.",
        },
        {
            "role": "user",
            "content": f"Task: {goal.strip()}\nCriterion: {criterion.strip()}\nDraft:\n{clipped}",
        },
    ]


async def _llm_check(
    llm: LLMClient, goal: str, criterion: str, draft: str, meter: UsageMeter, task_id: str
) -> Check:
    try:
        value, completion = await llm.complete_json(
            build_llm_messages(goal, criterion, draft),
            VERDICT_SCHEMA,
            max_tokens=LLM_MAX_TOKENS,
            temperature=0.0,
            timeout_s=LLM_TIMEOUT_S,
            task_id=task_id,
        )
    except LLMOutputError as e:
        meter.add(e.completion)
        return Check(criterion, False, "llm", f"unverified: unusable LLM answer: {e}", True)
    except LLMError as e:
        return Check(criterion, False, "llm", f"unverified: LLM unavailable: {e}", True)
    meter.add(completion)
    reason = str(value.get("reason", "")).strip()[:300] or "(no reason given)"
    return Check(criterion, bool(value["passed"]), "llm", reason)


# --- the whole verdict ----------------------------------------------------------------------


async def judge_draft(
    goal: str,
    draft: str,
    criteria: list[str],
    *,
    llm: LLMClient | None,
    meter: UsageMeter,
    task_id: str = "",
    steps: Mapping[str, str] | None = None,
    sandbox: Sandbox | None = None,
    truncated: Mapping[str, str] | None = None,
    context: str = "",
    feedback: Sequence[str] = (),
) -> Verdict:
    """Check `draft` against every criterion (deterministic first, the LLM for the rest), then as
    an answer to `goal` (`checks_text`; `context` and the repair `feedback` tell it what the task
    already said). Python criteria run in `sandbox` (default: the default `SandboxPolicy`).
    `truncated` (step → what its arm cut) fails the draft whatever the criteria say."""
    answer = [
        Check(t.name, t.passed, "deterministic", t.detail, t.unverified)
        for t in checks_text.check_answer(goal, draft, context=context, feedback=feedback)
    ]
    failed = [c.criterion for c in answer if not c.passed]
    skip_llm = f"unverified: not judged, the answer failed {', '.join(failed)}" if failed else ""
    found = await _judge_criteria(
        goal,
        draft,
        criteria,
        llm=llm,
        meter=meter,
        task_id=task_id,
        steps=steps,
        sandbox=sandbox,
        skip_llm=skip_llm,
    )
    found += answer
    if truncated:
        cuts = "; ".join(f"step {s} cut its {what}" for s, what in sorted(truncated.items()))
        found.append(
            Check(COMPLETE_CRITERION, False, "deterministic", f"the answer is partial: {cuts}")
        )
    passed_count = sum(c.passed for c in found)
    return Verdict(
        passed=passed_count == len(found),
        score=round(passed_count / len(found), 4),
        reasons=[f"{c.criterion}: {c.detail}" for c in found if not c.passed],
        checks=found,
    )


async def _judge_criteria(
    goal: str,
    draft: str,
    criteria: list[str],
    *,
    llm: LLMClient | None,
    meter: UsageMeter,
    task_id: str,
    steps: Mapping[str, str] | None,
    sandbox: Sandbox | None,
    skip_llm: str,
) -> list[Check]:
    """One check per criterion, in order; `skip_llm` (why) leaves the LLM criteria unverified."""
    classified = [classify(c) for c in criteria]
    results: dict[int, Check] = {}
    python = [(i, c) for i, c in enumerate(classified) if c.kind is Kind.PYTHON]
    if python:
        code = checks.extract_python(draft)
        if code is None and steps:
            # The draft may be prose around the code; the steps' raw outputs may hold it.
            code = checks.extract_python("\n\n".join(steps.values()))
        if code is None:
            for i, c in python:
                results[i] = Check(c.text, False, "deterministic", "no Python code in the draft")
        else:
            results.update(await _run_python(code, python, sandbox, task_id))
    for i, c in enumerate(classified):
        if c.kind not in (Kind.PYTHON, Kind.LLM):
            results[i] = text_check(c, draft)
    for i, c in enumerate(classified):
        if c.kind is Kind.LLM:
            if skip_llm:
                results[i] = Check(c.text, False, "llm", skip_llm, True)
            elif llm is None:
                results[i] = Check(c.text, False, "llm", "unverified: no LLM configured", True)
            else:
                results[i] = await _llm_check(llm, goal, c.text, draft, meter, task_id)
    return [results[i] for i in range(len(classified))]


async def _run_python(
    code: str, python: list[tuple[int, Criterion]], sandbox: Sandbox | None, task_id: str
) -> dict[int, Check]:
    """The Python criteria, all in one sandboxed run; unverified (fail closed) when the sandbox
    refuses to run here, as the executor arm refuses."""
    runnable: list[PyCheck] = [c.params["check"] for _, c in python]
    try:
        report = await run_checks(code, runnable, sandbox=sandbox, task_id=task_id)
    except SandboxRefused as e:
        log.warning(
            "sandbox refused the code criteria task_id=%s: %s",
            task_id,
            e,
            extra={"task_id": task_id, "component": "arm.judge"},
        )
        why = f"unverified: the sandbox refused to run the code: {e.reason}"
        return {i: Check(c.text, False, "tests", why, True) for i, c in python}
    return {
        i: Check(c.text, outcome.passed, "tests", outcome.detail)
        for (i, c), outcome in zip(python, report.outcomes, strict=True)
    }


def _criteria(raw: str | None) -> list[str]:
    if not raw or not raw.strip():
        return []
    try:
        value = json.loads(raw)
    except ValueError:
        return [raw.strip()]  # one criterion sent as plain text
    if isinstance(value, str):
        return [value] if value.strip() else []
    if isinstance(value, list):
        return [str(v) for v in value if str(v).strip()]
    return [raw.strip()]


def _truncated(raw: str | None) -> dict[str, str]:
    # the orchestrator's step → what it cut; unreadable counts as cut (fail closed)
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        return {"?": raw[:100]}
    if not isinstance(value, dict):
        return {"?": raw[:100]}
    return {str(k): str(v) for k, v in value.items() if str(v)}


def _steps(raw: str | None) -> dict[str, str]:
    try:
        value = json.loads(raw) if raw else {}
    except ValueError:
        return {}
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}


class JudgeArm(Arm):
    name: ClassVar[str] = "judge"
    capabilities: ClassVar[frozenset[str]] = frozenset({"judge"})
    timeout_s: ClassVar[float] = 180.0

    async def handle(self, request: ArmRequest, ctx: ArmContext) -> ArmOutput:
        task_id = str(request.task_id)
        if "draft" not in request.inputs:
            return ArmOutput(status=ArmStatus.FAILED, reason="judge request has no 'draft' input")
        meter = UsageMeter()
        criteria = _criteria(request.inputs.get("criteria"))
        needs_llm = any(classify(c).kind is Kind.LLM for c in criteria)
        verdict = await judge_draft(
            request.instruction,
            request.inputs["draft"],
            criteria,
            llm=ctx.llm if needs_llm else None,
            meter=meter,
            task_id=task_id,
            steps=_steps(request.inputs.get("steps")),
            sandbox=Sandbox(SandboxPolicy.from_settings(ctx.settings)),
            truncated=_truncated(request.inputs.get("truncated")),
            context=request.context,
            feedback=_criteria(request.inputs.get("feedback")),
        )
        ctx.log.info(
            "judged task_id=%s passed=%s score=%.2f checks=%s",
            task_id,
            verdict.passed,
            verdict.score,
            ",".join(f"{c.method}:{'ok' if c.passed else 'fail'}" for c in verdict.checks),
            extra={"task_id": task_id},
        )
        return ArmOutput(
            output=verdict.to_json(),
            artifacts={"passed": str(verdict.passed).lower(), "score": f"{verdict.score:.4f}"},
            usage=Usage(**meter.as_usage()),
        )
