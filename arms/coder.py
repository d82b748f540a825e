"""The coder arm: writes or edits code with the LLM and checks it before answering.

One request is a loop of at most `coder_max_attempts` rounds. Each round samples
`coder_candidates` answers at once (best-of-n, `octollm.arms.best_of_n`: the first at a low
temperature, the others hotter), repairs each deterministically (small models wrap code in
prose, forget the fence, indent the whole block, drop the `def` line, name the function
differently) and checks it as it arrives; the first that passes wins and the rest are
cancelled. When none passes, the best failure's error goes back to the model for the next
round. All candidates share the request's token budget (`coder_token_budget`, capped by the
task's) and its deadline. Python is parsed and compiled; the tests of the step
(`inputs["tests"]`) and the runnable acceptance criteria (`inputs["acceptance_criteria"]`, e.g.
`add(2, 3) == 5`) run in the sandbox. Other languages are syntax-checked where a checker is on
the machine (`node --check`, `gcc -fsyntax-only`, `bash -n`, ...), and the result says so when
none is. The answer is a short text around one fenced block (what the judge extracts); the
artifacts carry the code, the language, the checks and the attempts (docs/arms.md, "coder").
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import functools
import json
import logging
import re
import shutil
import tempfile
import textwrap
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

from octollm.arms.best_of_n import TokenBudget, first_passing
from octollm.arms.checks import looks_like_code, parses, python_check
from octollm.contracts.models import ArmRequest, ArmStatus, Usage
from octollm.llm import LLMClient, LLMError, UsageMeter
from octollm.orchestrator.plan import CAP_CODE
from octollm.runtime.arm import Arm, ArmContext, ArmOutput, request_timeout
from octollm.sandbox import PyCheck, Sandbox, SandboxPolicy, SandboxRefused, run_checks
from octollm.settings import Settings

__all__ = [
    "CheckRecord",
    "CodeTask",
    "CoderArm",
    "Draft",
    "build_messages",
    "check_code",
    "detect_language",
    "repair",
    "run_python_tests",
    "signature_hint",
    "syntax_check",
]

log = logging.getLogger("octollm.arms.coder")

#: A function for a step fits in this; more is the small model rambling.
MAX_TOKENS = 384
LLM_TIMEOUT_S = 60.0
#: Characters of context, reference passages and existing code put in the prompt (SmolLM2's
#: context is 4096 tokens, and long prompts make a small model copy instead of write).
CONTEXT_CHARS = 1500
CODE_CHARS = 4000
FEEDBACK_CHARS = 600
#: Characters of each raw model answer kept in the `history` artifact, for debugging prompts.
ANSWER_CHARS = 400
#: Seconds kept back from the request's time budget to answer with what we have.
RESERVE_S = 5.0
SYNTAX_TIMEOUT_S = 10.0
FIRST_TEMPERATURE = 0.1
RETRY_TEMPERATURE = 0.4
REPEAT_STEP = 0.3
#: The other candidates of a round (best-of-n): hot enough to differ from the first.
CANDIDATE_TEMPERATURE = 0.8
#: A candidate's completion is cut to fit n of them in the token budget, never below this.
MIN_CANDIDATE_TOKENS = 192
#: Inputs with a meaning of their own; every other input is a dependency's output (e.g. the
#: retriever's passages) and goes into the prompt as reference.
RESERVED_INPUTS = frozenset({"code", "language", "tests", "acceptance_criteria", "feedback"})


@dataclass(frozen=True)
class Language:
    name: str  # canonical name, as in the artifact
    fence: str  # the fence tag the answer uses
    label: str  # how the prompt names it
    suffix: str  # file suffix for an external checker
    checker: tuple[str, ...] = ()  # argv before the file path; empty = no external checker


LANGUAGES: dict[str, Language] = {
    lang.name: lang
    for lang in (
        Language("python", "python", "Python", ".py"),
        Language("javascript", "javascript", "JavaScript", ".js", ("node", "--check")),
        Language("c", "c", "C", ".c", ("gcc", "-fsyntax-only", "-x", "c")),
        Language("cpp", "cpp", "C++", ".cpp", ("g++", "-fsyntax-only", "-x", "c++")),
        Language("bash", "bash", "Bash", ".sh", ("bash", "-n")),
        Language("go", "go", "Go", ".go", ("gofmt", "-e")),
        Language("typescript", "typescript", "TypeScript", ".ts"),
        Language("rust", "rust", "Rust", ".rs"),
        Language("java", "java", "Java", ".java"),
    )
}
_ALIASES = {
    "py": "python", "python3": "python", "js": "javascript", "node": "javascript",
    "nodejs": "javascript", "c++": "cpp", "cxx": "cpp", "sh": "bash", "shell": "bash",
    "golang": "go", "ts": "typescript", "rs": "rust",
}  # fmt: skip
# Mentions in an instruction, most specific first ("JavaScript" before "Java").
_MENTIONS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\b(?:javascript|node\.?js)\b|\bJS\b", re.IGNORECASE), "javascript"),
    (re.compile(r"\btypescript\b", re.IGNORECASE), "typescript"),
    (re.compile(r"\bpython\b", re.IGNORECASE), "python"),
    (re.compile(r"\b(?:bash|shell\s+script)\b", re.IGNORECASE), "bash"),
    (re.compile(r"\bC\+\+|\bcpp\b", re.IGNORECASE), "cpp"),
    (re.compile(r"\bin\s+C\b|\bC\s+(?:function|program|code)\b"), "c"),
    (re.compile(r"\b(?:golang|in\s+Go|Go\s+(?:function|program|code))\b"), "go"),
    (re.compile(r"\brust\b", re.IGNORECASE), "rust"),
    (re.compile(r"\bjava\b", re.IGNORECASE), "java"),
)

_FENCE_OPEN = re.compile(r"```[ \t]*([A-Za-z0-9_+#-]*)[^\n]*\n")
_CODE_START = re.compile(
    r"^(?:def |async def |class |import |from \S+ import |@\w|[A-Za-z_]\w*\s*=[^=])"
)
_CALL = re.compile(r"\b([A-Za-z_]\w*)\s*\(([^()]*)\)")
_PARAM = re.compile(r"^\s*\*{0,2}[A-Za-z_]\w*\s*(?::\s*[\w\[\], .|]+?)?\s*(?:=\s*[^,]+)?\s*$")
# Words that are followed by a parenthesis in prose, not function names.
_NOT_NAMES = frozenset((
    "print", "len", "range", "list", "dict", "set", "tuple", "str", "int", "float", "bool",
    "type", "e.g", "i.e", "returns", "return", "function", "method", "def", "see", "note",
    "example",
))  # fmt: skip


@dataclass(frozen=True)
class CodeTask:
    """What a coder request asks for (see the request conventions in docs/arms.md)."""

    instruction: str
    language: Language
    context: str = ""
    references: Mapping[str, str] = field(default_factory=dict)
    existing_code: str = ""
    tests: tuple[str, ...] = ()
    criteria: tuple[str, ...] = ()
    feedback: str = ""

    @classmethod
    def from_request(cls, request: ArmRequest) -> CodeTask:
        inputs = request.inputs
        return cls(
            instruction=request.instruction,
            language=detect_language(request.instruction, inputs.get("language")),
            context=request.context,
            references={k: v for k, v in inputs.items() if k not in RESERVED_INPUTS},
            existing_code=inputs.get("code", ""),
            tests=_str_list(inputs.get("tests")),
            criteria=_str_list(inputs.get("acceptance_criteria")),
            feedback=inputs.get("feedback", "").strip(),
        )

    def runnable_tests(self) -> list[PyCheck]:
        """The step's tests and the criteria that are Python checks, in the runner's form.

        A criterion that is not runnable ("is well documented") is the judge's to decide."""
        specs: list[PyCheck] = []
        seen: set[str] = set()
        for text in (*self.tests, *self.criteria):
            spec = python_check(text)
            if spec is not None and spec.source not in seen:
                seen.add(spec.source)
                specs.append(spec)
        return specs


def _str_list(raw: str | None) -> tuple[str, ...]:
    """A JSON list of strings; a non-JSON string counts as one item (a hand-written request)."""
    if not raw or not raw.strip():
        return ()
    try:
        value = json.loads(raw)
    except ValueError:
        return (raw.strip(),)
    if isinstance(value, str):
        return (value,) if value.strip() else ()
    if isinstance(value, list):
        return tuple(str(v) for v in value if str(v).strip())
    return ()


def detect_language(instruction: str, declared: str | None = None) -> Language:
    """The declared language, else the first one the instruction names, else Python."""
    if declared and declared.strip():
        key = declared.strip().lower()
        key = _ALIASES.get(key, key)
        if key in LANGUAGES:
            return LANGUAGES[key]
        return Language(key, key, declared.strip(), ".txt")
    for pattern, name in _MENTIONS:
        if pattern.search(instruction):
            return LANGUAGES[name]
    return LANGUAGES["python"]


def signature_hint(instruction: str, tests: Sequence[str] = ()) -> tuple[str, str] | None:
    """(function name, Python `def` line) named by the instruction (`add(a, b)`), else by the
    first test that calls a function (`add(2, 3) == 5` → `def add(a, b):`); None if neither.

    The small model follows a given first line far better than a description of it."""
    for match in _CALL.finditer(instruction):
        name, params = match.group(1), match.group(2).strip()
        if name.lower() in _NOT_NAMES:
            continue
        if params and not all(_PARAM.match(p) for p in params.split(",")):
            continue  # `f(2, 3)` in prose is an example call, not a signature
        return name, f"def {name}({params}):"
    for test in tests:
        spec = python_check(test)
        if spec is None:
            continue
        source = spec.left or spec.source.removeprefix("assert ").strip()
        try:
            tree = ast.parse(source, mode="eval")
        except SyntaxError:
            continue
        call = next(
            (n for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)),
            None,
        )
        if call is None or not isinstance(call.func, ast.Name):
            continue
        if call.func.id in _NOT_NAMES:
            continue
        params = ", ".join("abcdefgh"[i] for i in range(min(len(call.args), 8)))
        return call.func.id, f"def {call.func.id}({params}):"
    return None


# --- the prompt -------------------------------------------------------------------------------


def build_messages(task: CodeTask, signature: str | None) -> list[dict[str, str]]:
    """A short prompt: the task, the first line to start from, reference and examples."""
    lang = task.language
    system = (
        f"You write {lang.label} code. Reply with one ```{lang.fence} code block and nothing "
        "else: no explanation, no example usage."
    )
    parts: list[str] = []
    reference = (
        "\n\n".join(v.strip() for _, v in sorted(task.references.items()) if v.strip())
        or task.context.strip()
    )
    if reference:
        parts.append(f"Reference:\n{reference[:CONTEXT_CHARS]}")
    if task.existing_code.strip():
        parts.append(
            f"Existing code:\n```{lang.fence}\n{task.existing_code.strip()[:CODE_CHARS]}\n```"
        )
        parts.append(f"Change it: {task.instruction.strip()}")
    else:
        parts.append(f"Task: {task.instruction.strip()}")
    if signature and lang.name == "python":
        parts.append(f"Start with: {signature}")
    examples = [s.source for s in task.runnable_tests()] if lang.name == "python" else []
    if examples:
        parts.append("It must pass: " + "; ".join(examples[:5]))
    if task.feedback:
        parts.append(f"A previous answer failed review: {task.feedback[:FEEDBACK_CHARS]}")
    return [
        {"role": "system", "content": system},
        {"role": "user", "content": "\n".join(parts)},
    ]


def retry_messages(
    messages: list[dict[str, str]], draft: Draft, error: str
) -> list[dict[str, str]]:
    """The conversation so far plus the failed code and its error, asking for a fix."""
    shown = draft.code.strip() or draft.raw.strip()
    return [
        *messages[:2],  # the first question only: earlier failures would crowd the context
        {"role": "assistant", "content": f"```{draft.language.fence}\n{shown[:CODE_CHARS]}\n```"},
        {
            "role": "user",
            "content": f"That code is wrong: {error[:FEEDBACK_CHARS]}\nFix it. Reply with the "
            f"whole corrected code in one ```{draft.language.fence} block.",
        },
    ]


# --- deterministic repair -----------------------------------------------------------------------


@dataclass
class Draft:
    """One answer of the model: the raw text, the code made of it, and how it was repaired."""

    raw: str
    code: str
    language: Language
    repairs: list[str] = field(default_factory=list)


def _fenced_blocks(text: str) -> tuple[list[tuple[str, str, bool]], str]:
    """(tag, body, closed) of each fenced block, and the text outside them. An unclosed last
    fence (cut at max_tokens, or the server stopped at the closing fence) runs to the end."""
    blocks: list[tuple[str, str, bool]] = []
    outside: list[str] = []
    pos = 0
    while (m := _FENCE_OPEN.search(text, pos)) is not None:
        outside.append(text[pos : m.start()])
        end = text.find("```", m.end())
        if end < 0:
            blocks.append((m.group(1).lower(), text[m.end() :], False))
            pos = len(text)
            break
        blocks.append((m.group(1).lower(), text[m.end() : end], True))
        pos = end + 3
    outside.append(text[pos:])
    return blocks, "".join(outside)


def _largest_parsing_span(code: str) -> tuple[str, list[str]] | None:
    """The code without prose before it and without trailing lines that do not parse (prose
    after the code, a statement cut off at the token limit), de-indented; None if no span of
    it parses as code. Returns the repairs it made."""
    whole = code.strip("\n")
    if whole.strip() and parses(textwrap.dedent(whole)):
        dedented = textwrap.dedent(whole)
        return dedented, ["de-indented the code"] if dedented != whole else []
    lines = code.splitlines()
    first = next((i for i, line in enumerate(lines) if _CODE_START.match(line.lstrip())), None)
    for start in dict.fromkeys(s for s in (first, 0) if s is not None):
        for end in range(len(lines), start, -1):
            span = "\n".join(lines[start:end]).strip("\n")
            candidate = textwrap.dedent(span)
            if not candidate.strip() or not parses(candidate):
                continue
            if (start, end) != (0, len(lines)) and not looks_like_code(candidate):
                continue
            done: list[str] = []
            if any(line.strip() for line in lines[:start]):
                done.append("dropped prose before the code")
            if any(line.strip() for line in lines[end:]):
                done.append("dropped trailing lines that did not parse")
            if candidate != span:
                done.append("de-indented the code")
            return candidate, done
    return None


def _defined_functions(tree: ast.Module) -> list[str]:
    return [n.name for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]


def _drop_demo_calls(code: str) -> tuple[str, int]:
    """Remove top-level demo statements: calls (`print(add(2, 3))`), the model's own asserts,
    and assignments of a call to a function defined here that nothing else uses
    (`add_2 = add(10)`). They run at import and can only make the real checks fail;
    docstrings, definitions and real module state stay. Returns the code and how many
    statements were dropped."""
    tree = ast.parse(code)
    lines = code.splitlines()
    defined = set(_defined_functions(tree)) | {
        n.name for n in tree.body if isinstance(n, ast.ClassDef)
    }

    def span(node: ast.stmt) -> set[int]:
        return set(range(node.lineno - 1, node.end_lineno or node.lineno))

    def calls_own(node: ast.AST) -> bool:
        return any(
            isinstance(c, ast.Call) and isinstance(c.func, ast.Name) and c.func.id in defined
            for c in ast.walk(node)
        )

    def stores(node: ast.stmt) -> set[str]:
        return {
            t.id for t in ast.walk(node) if isinstance(t, ast.Name) and isinstance(t.ctx, ast.Store)
        }

    def is_demo(node: ast.stmt) -> bool:
        if isinstance(node, ast.Assert):
            return True
        if isinstance(node, ast.Expr):
            return not isinstance(node.value, ast.Constant)
        if isinstance(node, ast.Assign | ast.AnnAssign) and node.value is not None:
            return calls_own(node.value)
        return False

    demo = [n for n in tree.body if is_demo(n)]
    # Only while nothing kept reads what a demo assigned, or shares a line with it.
    for _ in range(len(demo) + 1):
        kept_nodes = [n for n in tree.body if n not in demo]
        used = {
            x.id
            for n in kept_nodes
            for x in ast.walk(n)
            if isinstance(x, ast.Name) and isinstance(x.ctx, ast.Load)
        }
        keep_lines = set().union(*(span(n) for n in kept_nodes))
        still = [n for n in demo if not span(n) & keep_lines and not stores(n) & used]
        if still == demo:
            break
        demo = still
    if not demo:
        return code, 0
    drop = set().union(*(span(n) for n in demo))
    kept = "\n".join(line for i, line in enumerate(lines) if i not in drop).strip("\n")
    kept = re.sub(r"\n{3,}", "\n\n", kept)
    if not parses(kept):
        return code, 0
    return kept, len(demo)


def repair(
    raw: str,
    language: Language,
    signature: tuple[str, str] | None = None,
    *,
    has_tests: bool = False,
) -> Draft:
    """The code in a model's answer, repaired where a small model commonly goes wrong.

    Every repair applied is named in `Draft.repairs`, so the result says what was changed."""
    repairs: list[str] = []
    blocks, outside = _fenced_blocks(raw)
    wanted = {
        language.fence,
        language.name,
        *(k for k, v in _ALIASES.items() if v == language.name),
    }
    chosen = [b for b in blocks if b[0] in wanted] or [b for b in blocks if b[0] == ""]
    if chosen:
        code = "\n\n".join(textwrap.dedent(body).strip("\n") for _, body, _ in chosen)
        if len(chosen) > 1:
            repairs.append(f"joined {len(chosen)} code blocks")
        if not all(closed for _, _, closed in chosen):
            repairs.append("closed an unclosed code fence")
        if outside.strip():
            repairs.append("dropped the prose around the code block")
    elif blocks:
        repairs.append("used a code block with another language tag")
        code = "\n\n".join(textwrap.dedent(body).strip("\n") for _, body, _ in blocks)
    else:
        code = raw
        if raw.strip():
            repairs.append("no code fence: took the answer as code")
    if language.name != "python":
        return Draft(raw, textwrap.dedent(code).strip("\n"), language, repairs)
    span = _largest_parsing_span(code)
    if span is not None:
        code, done = span
        repairs.extend(done)
    else:
        code = code.strip("\n")
    if signature is not None:
        name, def_line = signature
        body = code.strip("\n")
        # Only the body came back (`return a + b`): put it under the signature we asked for.
        if body and not re.search(rf"^\s*(?:async\s+)?def\s+{re.escape(name)}\b", body, re.M):
            wrapped = def_line + "\n" + textwrap.indent(textwrap.dedent(body), "    ")
            if parses(wrapped) and not _parses_as_defs(body) and "return" in body:
                repairs.append(f"put the body under `{def_line}`")
                code = wrapped
    if parses(code):
        tree = ast.parse(code)
        if signature is not None:
            name = signature[0]
            defined = _defined_functions(tree)
            if name not in defined and len(defined) == 1:
                # The model named it differently (`sum_two`): keep its function, add the name.
                code = f"{code}\n\n{name} = {defined[0]}"
                repairs.append(f"aliased {defined[0]} as {name}")
        if has_tests:
            code, dropped = _drop_demo_calls(code)
            if dropped:
                repairs.append(f"dropped {dropped} top-level demo statement(s)")
    return Draft(raw, code, language, repairs)


def _parses_as_defs(code: str) -> bool:
    if not parses(code):
        return False
    return any(
        isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
        for n in ast.parse(code).body
    )


# --- checks ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckRecord:
    """One check of a draft: what, how, and how it went (`passed` None = not checked)."""

    name: str
    method: str
    passed: bool | None
    detail: str

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "method": self.method,
            "passed": self.passed,
            "detail": self.detail,
        }


def python_syntax(code: str) -> CheckRecord:
    """`ast.parse` then `compile`: the second catches what the parser lets through
    (`return` outside a function, `nonlocal` at module level, ...)."""
    if not code.strip():
        return CheckRecord("syntax", "ast.parse+compile", False, "no code in the answer")
    try:
        tree = ast.parse(code, filename="solution.py")
        compile(tree, "solution.py", "exec")
    except SyntaxError as e:
        where = f"line {e.lineno}: " if e.lineno else ""
        text = f" ({e.text.strip()[:80]})" if e.text else ""
        return CheckRecord(
            "syntax", "ast.parse+compile", False, f"SyntaxError: {where}{e.msg}{text}"
        )
    except ValueError as e:  # NUL bytes
        return CheckRecord("syntax", "ast.parse+compile", False, f"ValueError: {e}")
    return CheckRecord("syntax", "ast.parse+compile", True, "parses and compiles")


async def syntax_check(code: str, language: Language, task_id: str = "") -> CheckRecord:
    """The language's syntax check: Python in-process, others with a checker from PATH, and
    `passed=None` with the reason when none is installed."""
    if language.name == "python":
        return python_syntax(code)
    if not code.strip():
        return CheckRecord("syntax", "none", False, "no code in the answer")
    exe = shutil.which(language.checker[0]) if language.checker else None
    if exe is None:
        what = " ".join(language.checker[:1]) or f"a {language.label} checker"
        return CheckRecord(
            "syntax", "none", None, f"not checked: no {what} on this machine for {language.label}"
        )
    method = " ".join(language.checker)
    workdir = tempfile.mkdtemp(prefix="octo-coder-")
    path = Path(workdir) / f"solution{language.suffix}"
    path.write_text(code, encoding="utf-8")
    proc = await asyncio.create_subprocess_exec(
        exe,
        *language.checker[1:],
        str(path),
        cwd=workdir,
        # The checkers only parse; a scrubbed environment keeps our settings out of reach.
        env={"PATH": "/usr/bin:/bin:/usr/local/bin:/usr/local/go/bin", "LANG": "C.UTF-8"},
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), SYNTAX_TIMEOUT_S)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        return CheckRecord("syntax", method, False, f"the checker timed out ({SYNTAX_TIMEOUT_S}s)")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if proc.returncode == 0 and not (language.name == "go" and err.strip()):
        return CheckRecord("syntax", method, True, "syntax ok")
    message = (
        (err or out).decode("utf-8", "replace").replace(str(path), f"solution{language.suffix}")
    )
    return CheckRecord("syntax", method, False, message.strip()[:FEEDBACK_CHARS] or "failed")


#: Wall clock for one attempt's tests (all of them, in one sandboxed run).
TEST_TIMEOUT_S = 10.0


async def run_python_tests(
    code: str, tests: list[PyCheck], settings: Settings, task_id: str
) -> list[CheckRecord]:
    """Run `code` and its tests in the sandbox (`octollm.sandbox.run_checks`, the judge's
    harness too), one record per test. When the sandbox refuses to run on this machine, as
    the executor arm would, one record says the tests were not run (`passed` None)."""
    sandbox = Sandbox(SandboxPolicy.from_settings(settings))
    try:
        report = await run_checks(
            code, tests, sandbox=sandbox, timeout_s=TEST_TIMEOUT_S, task_id=task_id
        )
    except SandboxRefused as e:
        log.warning(
            "sandbox refused the tests task_id=%s: %s",
            task_id,
            e,
            extra={"task_id": task_id, "component": "arm.coder"},
        )
        return [CheckRecord("tests", "none", None, f"{len(tests)} test(s) not run: {e.reason}")]
    return [CheckRecord(o.source, "sandbox", o.passed, o.detail) for o in report.outcomes]


async def check_code(
    draft: Draft, tests: list[PyCheck], settings: Settings, task_id: str
) -> list[CheckRecord]:
    """Syntax, then (Python only, if it parsed) every test in the sandbox."""
    syntax = await syntax_check(draft.code, draft.language, task_id)
    records = [syntax]
    if not tests:
        return records
    if draft.language.name != "python":
        records.append(
            CheckRecord(
                "tests", "none", None, f"{len(tests)} test(s) not run: only Python tests run here"
            )
        )
        return records
    if not syntax.passed:
        records.extend(
            CheckRecord(t.source, "sandbox", False, "not run: the code does not compile")
            for t in tests
        )
        return records
    records.extend(await run_python_tests(draft.code, tests, settings, task_id))
    return records


def failures(records: Sequence[CheckRecord]) -> list[CheckRecord]:
    return [r for r in records if r.passed is False]


def feedback_for(records: Sequence[CheckRecord]) -> str:
    """The error text the model gets on a retry: the first few failures, briefly."""
    return "; ".join(_describe(r) for r in failures(records)[:3])


def _describe(record: CheckRecord) -> str:
    # "add(2, 3) returned -1, expected 5" names its call already; "assertion failed" does not.
    if record.name == "syntax" or " returned " in record.detail:
        return record.detail
    return f"{record.name}: {record.detail}"


# --- the arm ---------------------------------------------------------------------------------


@dataclass
class Attempt:
    number: int
    draft: Draft
    records: list[CheckRecord]
    llm_error: str = ""
    tokens: int = 0  # prompt + completion tokens of its LLM call
    temperature: float = 0.0

    @property
    def failed(self) -> int:
        return len(failures(self.records))

    @property
    def usable(self) -> bool:
        return not self.llm_error and bool(self.draft.code.strip())

    @property
    def passed(self) -> bool:
        return not self.llm_error and self.failed == 0

    def summary(self) -> dict[str, Any]:
        return {
            "attempt": self.number,
            "temperature": self.temperature,
            "passed": self.passed,
            "answer": self.draft.raw[:ANSWER_CHARS],
            "repairs": self.draft.repairs,
            "failures": [_describe(r) for r in failures(self.records)][:3],
            **({"llm_error": self.llm_error} if self.llm_error else {}),
        }


def _prompt_tokens_estimate(messages: Sequence[Mapping[str, str]]) -> int:
    """An upper estimate of a prompt's tokens (about 3 characters a token for code and
    English, plus the chat template's markers), for the token budget."""
    return sum(len(m.get("content", "")) // 3 + 8 for m in messages) + 8


def cited_sources(references: Mapping[str, str]) -> list[str]:
    """The sources of retrieved passages among the step's inputs (the retriever's JSON), in
    rank order without repeats: the answer cites what the code was written from."""
    sources: list[str] = []
    for value in references.values():
        try:
            data = json.loads(value)
        except ValueError:
            continue
        passages = data.get("passages") if isinstance(data, dict) else None
        for p in passages if isinstance(passages, list) else []:
            src = p.get("source") if isinstance(p, dict) else None
            if isinstance(src, str) and src and src not in sources:
                sources.append(src)
    return sources


def _answer_text(task: CodeTask, best: Attempt, max_attempts: int, signature: str | None) -> str:
    lang = task.language
    tests = [r for r in best.records[1:] if r.method != "none"]
    syntax = best.records[0]
    what = f"`{signature.removeprefix('def ').rstrip(':')}`" if signature else "the code"
    parts = [f"Here is {what} in {lang.label}."]
    if syntax.passed is None:
        parts.append(f"Syntax {syntax.detail}.")
    elif syntax.passed:
        parts.append(f"Checked: syntax ok ({syntax.method}).")
    else:
        parts.append(f"It does NOT pass its syntax check: {syntax.detail}")
    if tests:
        ok = sum(1 for r in tests if r.passed)
        parts.append(f"{ok}/{len(tests)} tests passed.")
        bad = [r for r in tests if not r.passed]
        if bad:
            parts.append(f"Failing: {bad[0].name}: {bad[0].detail}.")
    # Tests that could not run here (another language, no sandbox) are said, not hidden.
    parts.extend(f"{r.detail}." for r in best.records[1:] if r.method == "none")
    parts.append(f"Attempt {best.number} (of at most {max_attempts}).")
    text = " ".join(parts) + f"\n\n```{lang.fence}\n{best.draft.code.strip()}\n```"
    sources = cited_sources(task.references)
    if sources:
        text += "\n\nSources: " + ", ".join(sources[:5])
    return text


class CoderArm(Arm):
    name: ClassVar[str] = "coder"
    capabilities: ClassVar[frozenset[str]] = frozenset({CAP_CODE})
    timeout_s: ClassVar[float] = 240.0

    async def handle(self, request: ArmRequest, ctx: ArmContext) -> ArmOutput:
        began = time.monotonic()
        deadline = began + request_timeout(self, request, datetime.now(UTC)) - RESERVE_S
        max_tokens = MAX_TOKENS
        if request.max_tokens is not None:
            if request.max_tokens <= 0:
                return ArmOutput(status=ArmStatus.FAILED, reason="the task's token budget is spent")
            max_tokens = min(max_tokens, int(request.max_tokens))
        task = CodeTask.from_request(request)
        tests = task.runnable_tests() if task.language.name == "python" else []
        sig = signature_hint(task.instruction, [t.source for t in tests] or task.tests)
        if task.language.name != "python":
            sig = None
        messages = build_messages(task, sig[1] if sig else None)
        max_attempts = ctx.settings.coder_max_attempts
        n = ctx.settings.coder_candidates
        limit = ctx.settings.coder_token_budget
        if request.max_tokens is not None:
            limit = min(limit, int(request.max_tokens))
        budget = TokenBudget(limit)
        meter = UsageMeter()
        history: list[Attempt] = []
        winner: Attempt | None = None
        prompt = messages
        for round_no in range(1, max_attempts + 1):
            if deadline - time.monotonic() <= 1.0:
                break
            # A retry at a low temperature tends to repeat the wrong answer; each repeat so
            # far makes the next round's first try bolder. The other candidates run hot.
            repeats = len(history) - len({a.draft.code for a in history})
            first = (
                FIRST_TEMPERATURE
                if round_no == 1
                else round(min(RETRY_TEMPERATURE + REPEAT_STEP * repeats, 1.0), 2)
            )
            prompt_estimate = _prompt_tokens_estimate(prompt)
            # Cut each candidate's answer so that n of them fit in what is left.
            share = budget.left // n - prompt_estimate
            cap = max(min(max_tokens, share), min(max_tokens, MIN_CANDIDATE_TOKENS))
            sample = functools.partial(
                self._candidate,
                round_no=round_no,
                rounds=max_attempts,
                n=n,
                numbered=len(history),
                prompt=prompt,
                task=task,
                sig=sig,
                tests=tests,
                ctx=ctx,
                meter=meter,
                max_tokens=cap,
                deadline=deadline,
                first_temperature=first,
                request=request,
            )
            estimate = prompt_estimate + cap
            if round_no == 1:
                # The first round always gets one candidate, whatever the estimate says.
                estimate = min(estimate, max(budget.left, 1))
            selection = await first_passing(
                sample, n, budget=budget, estimate=estimate, deadline=deadline
            )
            history.extend(selection.finished)
            if selection.winner is not None:
                winner = selection.winner
                break
            best = selection.best
            if best is None or selection.stopped == "time":
                break  # the LLM failed every candidate (down, out of time), or time is up
            prompt = retry_messages(messages, best.draft, feedback_for(best.records))
        return self._result(task, history, max_attempts * n, sig, meter, winner)

    async def _candidate(
        self,
        i: int,
        *,
        round_no: int,
        rounds: int,
        n: int,
        numbered: int,
        prompt: list[dict[str, str]],
        task: CodeTask,
        sig: tuple[str, str] | None,
        tests: list[PyCheck],
        ctx: ArmContext,
        meter: UsageMeter,
        max_tokens: int,
        deadline: float,
        first_temperature: float,
        request: ArmRequest,
    ) -> Attempt:
        """Candidate `i` of a round: the first at `first_temperature`, the others hotter."""
        task_id = str(request.task_id)
        attempt = await self._attempt(
            numbered + i + 1,
            prompt,
            task,
            sig,
            tests,
            ctx,
            meter,
            max_tokens,
            deadline - time.monotonic(),
            task_id,
            first_temperature if i == 0 else CANDIDATE_TEMPERATURE,
        )
        ctx.log.info(
            "coder round %d/%d candidate %d/%d passed=%s failed_checks=%d repairs=%s",
            round_no,
            rounds,
            i + 1,
            n,
            attempt.passed,
            attempt.failed,
            ",".join(attempt.draft.repairs) or "-",
            extra={"task_id": task_id, "tenant_id": request.tenant_id},
        )
        return attempt

    async def _attempt(
        self,
        number: int,
        prompt: list[dict[str, str]],
        task: CodeTask,
        sig: tuple[str, str] | None,
        tests: list[PyCheck],
        ctx: ArmContext,
        meter: UsageMeter,
        max_tokens: int,
        remaining: float,
        task_id: str,
        temperature: float,
    ) -> Attempt:
        llm: LLMClient = ctx.llm
        try:
            completion = await llm.complete(
                prompt,
                max_tokens=max_tokens,
                temperature=temperature,
                timeout_s=max(min(LLM_TIMEOUT_S, remaining), 0.1),
                task_id=task_id,
            )
        except LLMError as e:
            empty = Draft("", "", task.language)
            error = f"{type(e).__name__}: {e}"
            return Attempt(number, empty, [], llm_error=error, temperature=temperature)
        meter.add(completion)
        draft = repair(completion.text, task.language, sig, has_tests=bool(tests))
        records = await check_code(draft, tests, ctx.settings, task_id)
        tokens = completion.prompt_tokens + completion.completion_tokens
        return Attempt(number, draft, records, tokens=tokens, temperature=temperature)

    def _result(
        self,
        task: CodeTask,
        history: list[Attempt],
        max_attempts: int,
        sig: tuple[str, str] | None,
        meter: UsageMeter,
        winner: Attempt | None = None,
    ) -> ArmOutput:
        usage = Usage(**meter.as_usage())
        usable = [a for a in history if not a.llm_error and a.draft.code.strip()]
        if not usable:
            why = history[-1].llm_error if history else "no time left for an attempt"
            return ArmOutput(
                status=ArmStatus.FAILED, reason=f"no code produced: {why}", usage=usage
            )
        # The candidate that passed; else, of those with the fewest failed checks, the latest:
        # it had the most feedback.
        best = winner or min(reversed(usable), key=lambda a: a.failed)
        syntax = best.records[0]
        artifacts = {
            "code": best.draft.code,
            "language": task.language.name,
            "checks": json.dumps([r.as_json() for r in best.records]),
            "attempts": str(len(history)),
            "passed": str(best.passed).lower(),
            "history": json.dumps([a.summary() for a in history]),
        }
        output = _answer_text(task, best, max_attempts, sig[1] if sig else None)
        if syntax.passed is False:
            # Code that does not even parse is no answer; the orchestrator may retry the step.
            return ArmOutput(
                status=ArmStatus.FAILED,
                output=output,
                reason=f"no attempt of {len(history)} compiles: {syntax.detail}"[:500],
                artifacts=artifacts,
                usage=usage,
            )
        # Code that compiles but fails a test is still an answer: the checks say how it went,
        # and the judge (with the task's repair round) decides what to do with it.
        return ArmOutput(output=output, artifacts=artifacts, usage=usage)
