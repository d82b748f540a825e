"""The coder arm: language and signature detection, the prompt, the deterministic repair of
small-model answers, the syntax checkers on this machine, and the whole arm, including the
retry-on-failed-test loop, on recorded LLM responses (no network). The checks themselves run
for real in the sandbox (`octollm.sandbox.run_checks`)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import httpx
import pytest

from octollm.arms import capabilities, load_arm
from octollm.arms.coder import (
    LANGUAGES,
    CoderArm,
    CodeTask,
    Language,
    build_messages,
    detect_language,
    python_syntax,
    repair,
    run_python_tests,
    signature_hint,
    syntax_check,
)
from octollm.contracts.models import ArmRequest, ArmStatus
from octollm.llm import LLMClient
from octollm.sandbox import PyCheck
from octollm.settings import Settings
from tests.arm_helpers import Ctx, chat_completion

pytestmark = pytest.mark.unit

PY = LANGUAGES["python"]
ADD = ("add", "def add(a, b):")

# Recorded responses of SmolLM2-135M-Instruct (llama.cpp, the local default) to the coder's
# prompt: the server stops at the closing fence, so the fence is usually left open.
RECORDED_ADD = "```python\ndef add(a, b):\n    return a + b"
RECORDED_ADD_RAMBLING = (
    "```python\ndef add(a, b):\n    return a + b\nadd(-2, 3) == -1: None, expected -1, but it "
    "returns 5. Add the two numbers and return the result as an integer."
)
RECORDED_FIZZ_WRONG = (
    "```python\ndef fizz(n):\n    return str(n) % 3 == 0 and str(n) % 4 == 0 if n > 1 else "
    "'Fizz'\n```"
)
RECORDED_ADD_WITH_DEMO = (
    "```python\ndef add(a, b):\n    return a + b\nadd_2 = add(10)  # This is not allowed in "
    "Python. It must be: def add(): return a + b\nprint(add_2())  # Outputs: 5\n```"
)
# Hand-written responses in the shapes small models produce (labelled as such, not recorded).
WRONG_ADD = "```python\ndef add(a, b):\n    return a - b\n```"
BROKEN_ADD = "```python\ndef add(a, b)\n    return a + b\n```"


class Recorded:
    """Replays recorded chat completions in order and keeps each request's messages."""

    def __init__(self, *contents: str) -> None:
        self.contents = list(contents)
        self.requests: list[dict[str, object]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(json.loads(request.content))
        content = self.contents[min(len(self.requests), len(self.contents)) - 1]
        return httpx.Response(200, json=chat_completion(content, 80, 20))

    def user_messages(self, n: int) -> list[str]:
        messages = self.requests[n]["messages"]
        assert isinstance(messages, list)
        return [m["content"] for m in messages if m["role"] == "user"]


def request(instruction: str, **inputs: str) -> ArmRequest:
    return ArmRequest(
        request_id=uuid.uuid4(),
        task_id=uuid.uuid4(),
        tenant_id="acme",
        step_id="s1",
        arm="coder",
        instruction=instruction,
        inputs=inputs,
        created_at=datetime.now(UTC),
    )


ONE = Settings(coder_candidates=1)


async def run(
    req: ArmRequest, recorded: Recorded, settings: Settings | None = None
) -> tuple[ArmStatus, str, dict[str, str], str | None]:
    # One candidate a round: these tests follow the retry loop answer by answer (best-of-n has
    # its own tests below and in test_best_of_n.py).
    settings = settings or ONE
    llm = LLMClient(settings, transport=httpx.MockTransport(recorded))
    try:
        out = await CoderArm().handle(req, Ctx(settings, llm))  # type: ignore[arg-type]
    finally:
        await llm.aclose()
    return out.status, out.output, out.artifacts, out.reason


# --- detection --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("instruction", "declared", "language"),
    [
        ("Write a function add(a, b).", None, "python"),
        ("Write a Python function add(a, b).", None, "python"),
        ("Write a JavaScript function add(a, b).", None, "javascript"),
        ("Write it in node.js", None, "javascript"),
        ("Write a Java class Point.", None, "java"),
        ("Write a bash script that counts lines.", None, "bash"),
        ("Write a C function that adds two ints.", None, "c"),
        ("Implement it in C++.", None, "cpp"),
        ("Write add(a, b).", "js", "javascript"),
        ("Write add(a, b).", "Python3", "python"),
    ],
)
def test_detect_language(instruction, declared, language):
    assert detect_language(instruction, declared).name == language


def test_an_unknown_declared_language_is_kept():
    lang = detect_language("Write it.", "Haskell")
    assert lang.name == "haskell" and lang.checker == ()


@pytest.mark.parametrize(
    ("instruction", "tests", "hint"),
    [
        ("Write a Python function add(a, b) that returns a + b.", [], ADD),
        ("Write is_even(n: int) -> bool.", [], ("is_even", "def is_even(n: int):")),
        ("Write a function that sums two numbers.", ["add(2, 3) == 5"], ADD),
        ("Write a function that sums two numbers.", ["assert add(1, 1) == 2"], ADD),
        ("Write one so that f(2, 3) is 5.", ["mul(2, 3) == 6"], ("mul", "def mul(a, b):")),
        ("Print (nicely) a greeting.", [], None),
    ],
)
def test_signature_hint(instruction, tests, hint):
    assert signature_hint(instruction, tests) == hint


def test_runnable_tests_merge_step_tests_and_criteria():
    req = request(
        "Write add(a, b).",
        tests=json.dumps(["add(2, 3) == 5"]),
        acceptance_criteria=json.dumps(["add(2, 3) == 5", "add(1, 1) returns 2", "is tidy"]),
    )
    sources = [t.source for t in CodeTask.from_request(req).runnable_tests()]
    assert sources == ["add(2, 3) == 5", "add(1, 1) == 2"]  # deduplicated, prose left out


# --- the prompt -------------------------------------------------------------------------------


def test_prompt_is_short_and_gives_the_signature_and_examples():
    req = request(
        "Write a function that sums two numbers.",
        tests=json.dumps(["add(2, 3) == 5"]),
        s1="Reference passage: " + "x" * 5000,
    )
    task = CodeTask.from_request(req)
    messages = build_messages(task, "def add(a, b):")
    user = messages[1]["content"]
    assert "Start with: def add(a, b):" in user
    assert "It must pass: add(2, 3) == 5" in user
    assert "Reference:\nReference passage:" in user
    assert len(user) < 1800  # the passage is clipped for the small model's context
    assert "```python" in messages[0]["content"]


def test_prompt_for_an_edit_carries_the_existing_code():
    req = request("Make it return the product.", code="def f(a, b):\n    return a + b")
    user = build_messages(CodeTask.from_request(req), None)[1]["content"]
    assert "Existing code:\n```python\ndef f(a, b):" in user
    assert "Change it: Make it return the product." in user


# --- deterministic repair ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "code", "repairs"),
    [
        (RECORDED_ADD, "def add(a, b):\n    return a + b", ["closed an unclosed code fence"]),
        (
            RECORDED_ADD_WITH_DEMO,
            "def add(a, b):\n    return a + b",
            ["dropped 2 top-level demo statement(s)"],
        ),
        (
            RECORDED_ADD_RAMBLING,
            "def add(a, b):\n    return a + b",
            ["closed an unclosed code fence", "dropped trailing lines that did not parse"],
        ),
        (
            "Sure! Here it is:\n\n    def add(a, b):\n        return a + b\n\nThis adds them.",
            "def add(a, b):\n    return a + b",
            [
                "no code fence: took the answer as code",
                "dropped prose before the code",
                "dropped trailing lines that did not parse",
                "de-indented the code",
            ],
        ),
        (
            "Here you go:\n```python\n    def add(a, b):\n        return a + b\n```\nEnjoy!",
            "def add(a, b):\n    return a + b",
            ["dropped the prose around the code block"],
        ),
        (
            "```\ndef add(a, b):\n    return a + b\n```",
            "def add(a, b):\n    return a + b",
            [],
        ),
        (
            "return a + b",
            "def add(a, b):\n    return a + b",
            ["no code fence: took the answer as code", "put the body under `def add(a, b):`"],
        ),
        (
            "```python\ndef sum_two(x, y):\n    return x + y\n\nprint(sum_two(2, 3))\n```",
            "def sum_two(x, y):\n    return x + y\n\nadd = sum_two",
            ["aliased sum_two as add", "dropped 1 top-level demo statement(s)"],
        ),
    ],
    ids=[
        "recorded-open-fence",
        "recorded-demo-assignment",
        "recorded-rambling",
        "prose-indented",
        "fenced-indented",
        "untagged",
        "body-only",
        "renamed-with-demo",
    ],
)
def test_repair(raw, code, repairs):
    draft = repair(raw, PY, ADD, has_tests=True)
    assert draft.code == code
    assert draft.repairs == repairs


def test_repair_leaves_code_that_cannot_parse_for_the_syntax_check():
    draft = repair("```python\ndef add(a, b):\n    return (a +", PY, ADD)
    assert draft.code == "def add(a, b):\n    return (a +"
    assert python_syntax(draft.code).passed is False


def test_repair_drops_the_models_own_asserts_but_not_shared_lines():
    raw = "```python\ndef add(a, b):\n    return a + b\nassert add(2, 3) == 6\nx = 1; print(x)\n```"
    draft = repair(raw, PY, ADD, has_tests=True)
    assert draft.code == "def add(a, b):\n    return a + b\nx = 1; print(x)"
    assert draft.repairs == ["dropped 1 top-level demo statement(s)"]


def test_repair_keeps_module_state_the_code_uses():
    raw = (
        "```python\ndef make():\n    return {}\nCACHE = make()\n"
        "def get(k):\n    return CACHE.get(k)\n```"
    )
    draft = repair(raw, PY, ("get", "def get(k):"), has_tests=True)
    assert "CACHE = make()" in draft.code and draft.repairs == []


def test_repair_keeps_demo_calls_without_tests():
    draft = repair("```python\ndef hi():\n    print('hi')\n\nhi()\n```", PY, None)
    assert draft.code.endswith("hi()") and draft.repairs == []


def test_repair_of_another_language_takes_its_block():
    raw = "Here:\n```javascript\nfunction add(a, b) { return a + b; }\n```"
    draft = repair(raw, LANGUAGES["javascript"])
    assert draft.code == "function add(a, b) { return a + b; }"


# --- syntax checks ----------------------------------------------------------------------------


def test_python_syntax_uses_the_compiler_too():
    assert python_syntax("def f():\n    return 1").passed is True
    bad = python_syntax("def f()\n    return 1")
    assert bad.passed is False and "line 1" in bad.detail
    # ast.parse accepts this; compile() does not
    outside = python_syntax("return 1")
    assert outside.passed is False and "'return' outside function" in outside.detail


@pytest.mark.parametrize(
    ("language", "good", "bad", "method"),
    [
        ("javascript", "function f(a) { return a; }", "function f(a { return a; }", "node --check"),
        ("bash", "for i in 1 2; do echo $i; done", "for i in 1 2; do echo $i", "bash -n"),
        ("c", "int add(int a, int b) { return a + b; }", "int add(int a { return a; }", "gcc"),
    ],
)
async def test_external_syntax_checkers(language, good, bad, method):
    lang = LANGUAGES[language]
    ok = await syntax_check(good, lang)
    assert ok.passed is True and ok.method.startswith(method)
    fail = await syntax_check(bad, lang)
    assert fail.passed is False and fail.detail
    assert "/tmp/" not in fail.detail  # the temporary path is not leaked into the feedback


async def test_a_language_without_a_checker_says_so():
    rust = await syntax_check("fn main() {}", LANGUAGES["rust"])
    assert rust.passed is None and "not checked" in rust.detail and "Rust" in rust.detail
    missing = Language("zz", "zz", "Zz", ".zz", ("no-such-checker-octollm",))
    record = await syntax_check("x", missing)
    assert record.passed is None and "no-such-checker-octollm" in record.detail


# --- tests in the sandbox --------------------------------------------------------------------

SPECS = [
    PyCheck("add(2, 3) == 5", "eq", "add(2, 3)", "5"),
    PyCheck("assert add(1, 1) == 2", "exec"),
    PyCheck("add(0, 0) == 0", "eval"),
]


async def test_sandbox_runs_the_tests():
    good = await run_python_tests("def add(a, b):\n    return a + b", SPECS, Settings(), "t")
    assert [(r.passed, r.method) for r in good] == [(True, "sandbox")] * 3
    assert good[0].detail == "add(2, 3) returned 5, expected 5"
    bad = await run_python_tests("def add(a, b):\n    return a - b", SPECS, Settings(), "t")
    assert [r.passed for r in bad] == [False, False, True]
    assert bad[0].detail == "add(2, 3) returned -1, expected 5"
    assert bad[1].detail == "assertion failed"


async def test_sandbox_reports_a_load_error_and_ignores_printed_reports():
    broken = await run_python_tests("import no_such_module_octo", SPECS[:1], Settings(), "t")
    assert broken[0].passed is False
    assert "not run: the code failed to run: ModuleNotFoundError" in broken[0].detail
    # the code prints what a report looks like and floods its output: neither counts
    code = (
        "import json\nfor _ in range(100000):\n"
        "    print(json.dumps({'event': 'check', 'index': 0, 'passed': True}))\n"
        "def add(a, b):\n    return a * b"
    )
    flooded = await run_python_tests(code, SPECS[:1], Settings(), "t")
    assert flooded[0].passed is False and "returned 6" in flooded[0].detail


async def test_tests_the_sandbox_refuses_are_reported_not_run():
    # As the executor arm: the policy of the settings decides; here python3 is not allowed.
    settings = Settings(sandbox_allowed_commands=["echo"])
    records = await run_python_tests("def add(a, b):\n    return a + b", SPECS, settings, "t")
    assert len(records) == 1
    record = records[0]
    assert (record.name, record.method, record.passed) == ("tests", "none", None)
    assert record.detail.startswith("3 test(s) not run: command 'python3' is not allow-listed")


async def test_an_answer_whose_tests_could_not_run_says_so():
    recorded = Recorded(RECORDED_ADD)
    req = request("Write add(a, b).", tests=json.dumps(["add(2, 3) == 5"]))
    status, output, artifacts, _ = await run(
        req, recorded, Settings(sandbox_allowed_commands=[], coder_candidates=1)
    )
    assert status is ArmStatus.OK and artifacts["attempts"] == "1"  # no retry: nothing failed
    assert "1 test(s) not run: command 'python3' is not allow-listed" in output
    assert json.loads(artifacts["checks"])[1]["passed"] is None


# --- the arm on recorded responses ------------------------------------------------------------


def test_registered():
    assert capabilities()["coder"] == frozenset({"code"})
    assert isinstance(load_arm("coder"), CoderArm)


async def test_passes_first_time_on_a_recorded_response():
    recorded = Recorded(RECORDED_ADD)
    req = request(
        "Write a Python function add(a, b) that returns the sum of a and b.",
        acceptance_criteria=json.dumps(["add(2, 3) == 5", "is well named"]),
    )
    status, output, artifacts, _ = await run(req, recorded)
    assert status is ArmStatus.OK
    assert "```python\ndef add(a, b):\n    return a + b\n```" in output
    assert "2/2" not in output and "1/1 tests passed" in output
    assert artifacts["language"] == "python" and artifacts["attempts"] == "1"
    assert artifacts["passed"] == "true" and artifacts["code"].startswith("def add(a, b):")
    checks = json.loads(artifacts["checks"])
    assert [c["name"] for c in checks] == ["syntax", "add(2, 3) == 5"]
    assert all(c["passed"] for c in checks) and checks[1]["method"] == "sandbox"
    assert len(recorded.requests) == 1


async def test_a_failed_test_is_retried_with_its_error():
    # first a wrong answer (hand-written), then the recorded right one
    recorded = Recorded(WRONG_ADD, RECORDED_ADD)
    req = request("Write add(a, b).", tests=json.dumps(["add(2, 3) == 5"]))
    status, _, artifacts, _ = await run(req, recorded)
    assert status is ArmStatus.OK and artifacts["passed"] == "true"
    assert artifacts["attempts"] == "2" and "return a + b" in artifacts["code"]
    retry = recorded.user_messages(1)
    assert "add(2, 3) returned -1, expected 5" in retry[-1]
    assert recorded.requests[1]["messages"][2]["content"].startswith("```python\ndef add")
    history = json.loads(artifacts["history"])
    assert [h["passed"] for h in history] == [False, True]
    assert "returned -1, expected 5" in history[0]["failures"][0]


async def test_a_syntax_error_is_retried_with_the_compiler_message():
    recorded = Recorded(BROKEN_ADD, RECORDED_ADD)
    status, _, artifacts, _ = await run(request("Write add(a, b)."), recorded)
    assert status is ArmStatus.OK and artifacts["attempts"] == "2"
    assert "SyntaxError" in recorded.user_messages(1)[-1]


async def test_gives_up_after_max_attempts_with_the_best_code_and_its_failures():
    recorded = Recorded(RECORDED_FIZZ_WRONG)
    req = request(
        "Write a Python function fizz(n) returning 'Fizz' if n is divisible by 3 else str(n).",
        tests=json.dumps(["fizz(3) == 'Fizz'", "fizz(4) == '4'"]),
    )
    status, output, artifacts, _ = await run(req, recorded)
    # compiling code that fails its tests is still an answer: the checks say how it went
    assert status is ArmStatus.OK
    assert artifacts["passed"] == "false" and artifacts["attempts"] == "3"
    assert len(recorded.requests) == 3
    # the same wrong answer each time: every repeat raises the next try's temperature
    assert [r["temperature"] for r in recorded.requests] == [0.1, 0.4, 0.7]
    assert "0/2 tests passed" in output or "1/2 tests passed" in output
    assert "Failing: fizz(" in output
    checks = json.loads(artifacts["checks"])
    assert any(c["passed"] is False and "TypeError" in c["detail"] for c in checks)


async def test_max_attempts_is_a_setting():
    recorded = Recorded(WRONG_ADD)
    req = request("Write add(a, b).", tests=json.dumps(["add(2, 3) == 5"]))
    _, _, artifacts, _ = await run(
        req, recorded, Settings(coder_max_attempts=1, coder_candidates=1)
    )
    assert artifacts["attempts"] == "1" and len(recorded.requests) == 1


async def test_code_that_never_compiles_fails_the_step_with_its_artifacts():
    recorded = Recorded(BROKEN_ADD)
    status, output, artifacts, reason = await run(request("Write add(a, b)."), recorded)
    assert status is ArmStatus.FAILED
    assert reason and reason.startswith("no attempt of 3 compiles: SyntaxError")
    assert "does NOT pass its syntax check" in output and artifacts["passed"] == "false"


async def test_javascript_is_syntax_checked_and_its_tests_not_run():
    recorded = Recorded("```javascript\nfunction add(a, b) {\n  return a + b;\n}\n```")
    req = request("Write a JavaScript function add(a, b).", tests=json.dumps(["add(2, 3) == 5"]))
    status, output, artifacts, _ = await run(req, recorded)
    assert status is ArmStatus.OK and artifacts["language"] == "javascript"
    assert "```javascript\nfunction add(a, b)" in output and "node --check" in output
    checks = json.loads(artifacts["checks"])
    assert checks[0] == {
        "name": "syntax",
        "method": "node --check",
        "passed": True,
        "detail": "syntax ok",
    }


async def test_a_language_without_checker_is_answered_and_says_so():
    recorded = Recorded("```rust\nfn add(a: i32, b: i32) -> i32 { a + b }\n```")
    status, output, artifacts, _ = await run(request("Write add in Rust."), recorded)
    assert status is ArmStatus.OK and "not checked" in output
    assert json.loads(artifacts["checks"])[0]["passed"] is None


async def test_llm_down_fails_with_the_reason():
    # A real connection refused: nothing listens on port 9 of 127.0.0.1.
    settings = Settings(llm_base_url="http://127.0.0.1:9/v1", llm_max_retries=0, llm_timeout_s=2)
    llm = LLMClient(settings)
    try:
        out = await CoderArm().handle(request("Write add(a, b)."), Ctx(settings, llm))  # type: ignore[arg-type]
    finally:
        await llm.aclose()
    assert out.status is ArmStatus.FAILED
    assert out.reason and out.reason.startswith("no code produced: LLMUnavailable")


async def test_a_spent_token_budget_fails_without_calling_the_llm():
    recorded = Recorded(RECORDED_ADD)
    req = request("Write add(a, b).").model_copy(update={"max_tokens": 0})
    status, _, _, reason = await run(req, recorded)
    assert status is ArmStatus.FAILED and reason == "the task's token budget is spent"
    assert recorded.requests == []


def test_retrieved_sources_are_cited_in_rank_order_without_repeats() -> None:
    from octollm.arms.coder import cited_sources

    passages = {
        "passages": [
            {"text": "…", "source": "examples/corpus/coding-conventions.md", "score": 0.9},
            {"text": "…", "source": "examples/corpus/arm-runtime.md", "score": 0.5},
            {"text": "…", "source": "examples/corpus/coding-conventions.md", "score": 0.4},
        ]
    }
    refs = {"retrieve": json.dumps(passages), "other": "plain prose, not JSON"}
    assert cited_sources(refs) == [
        "examples/corpus/coding-conventions.md",
        "examples/corpus/arm-runtime.md",
    ]
    assert cited_sources({"x": '{"passages": "nope"}', "y": "[1, 2]"}) == []


# --- best-of-n (the selection itself: test_best_of_n.py) ----------------------------------


class ByTemperature:
    """Answers by the request's temperature: the low first candidate gets `cold`, the hot
    ones `hot` (hand-written and recorded answers, as above)."""

    def __init__(self, cold: str, hot: str) -> None:
        self.cold, self.hot = cold, hot
        self.requests: list[dict[str, object]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.requests.append(body)
        content = self.cold if float(body["temperature"]) < 0.5 else self.hot
        return httpx.Response(200, json=chat_completion(content, 80, 20))


async def test_best_of_n_a_hot_candidate_that_passes_wins_in_one_round():
    answers = ByTemperature(WRONG_ADD, RECORDED_ADD)
    req = request("Write add(a, b).", tests=json.dumps(["add(2, 3) == 5"]))
    status, output, artifacts, _ = await run(req, answers, Settings(coder_candidates=4))  # type: ignore[arg-type]
    assert status is ArmStatus.OK and artifacts["passed"] == "true"
    assert "return a + b" in artifacts["code"] and "1/1 tests passed" in output
    temps = sorted(float(r["temperature"]) for r in answers.requests)  # type: ignore[arg-type]
    assert temps[0] == 0.1 and all(t == 0.8 for t in temps[1:]) and len(temps) <= 4
    # one round: no request carries a failed answer back to the model
    assert all(len(r["messages"]) == 2 for r in answers.requests)  # type: ignore[arg-type]
    history = json.loads(artifacts["history"])
    assert any(h["passed"] for h in history)


async def test_best_of_n_the_token_budget_stops_sampling():
    answers = ByTemperature(WRONG_ADD, WRONG_ADD)
    req = request("Write add(a, b).", tests=json.dumps(["add(2, 3) == 5"]))
    # each candidate is estimated at its prompt plus MIN_CANDIDATE_TOKENS; 700 pays for 2
    settings = Settings(coder_candidates=4, coder_token_budget=700, coder_max_attempts=3)
    status, _, artifacts, _ = await run(req, answers, settings)  # type: ignore[arg-type]
    assert status is ArmStatus.OK and artifacts["passed"] == "false"
    assert 1 <= len(answers.requests) <= 4  # far fewer than 3 rounds of 4
    spent = 100 * len(answers.requests)  # 80 + 20 tokens each
    assert spent <= 700


async def test_best_of_n_all_fail_reports_the_best_error():
    answers = ByTemperature(BROKEN_ADD, WRONG_ADD)  # cold: no compile; hot: compiles, wrong
    req = request("Write add(a, b).", tests=json.dumps(["add(2, 3) == 5"]))
    settings = Settings(coder_candidates=3, coder_max_attempts=1)
    status, output, artifacts, _ = await run(req, answers, settings)  # type: ignore[arg-type]
    assert status is ArmStatus.OK and artifacts["passed"] == "false"
    assert len(answers.requests) == 3
    assert "return a - b" in artifacts["code"]  # the one that compiles, not the syntax error
    assert "Failing: add(2, 3) == 5: add(2, 3) returned -1, expected 5" in output
