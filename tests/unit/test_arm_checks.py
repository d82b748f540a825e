"""The judge's contained Python runner (arms/checks.py): extraction, criterion parsing, and
hostile code that must be contained (infinite loop, huge allocation, forks, floods)."""

from __future__ import annotations

import os
import time

import pytest

from octollm.arms import checks
from octollm.arms.checks import Limits, extract_python, python_check, run_python_checks

pytestmark = pytest.mark.unit

ADD = "def add(a, b):\n    return a + b\n"
FAST = Limits(cpu_s=2, wall_s=4.0)


def test_extract_python_prefers_fenced_blocks():
    draft = f"Here you go:\n```python\n{ADD}```\nAnd a usage line:\n```\nprint(add(1, 2))\n```\n"
    code = extract_python(draft)
    assert code is not None and "def add" in code and "print(add(1, 2))" in code


def test_extract_python_skips_non_python_fences_and_broken_joins():
    draft = "```bash\nls -la\n```\n```python\ndef f(:\n```\n```python\n" + ADD + "```"
    assert extract_python(draft).strip() == ADD.strip()


def test_extract_python_takes_a_whole_draft_only_if_it_is_code():
    assert extract_python(ADD) == ADD.strip()
    assert extract_python("Paris") is None  # parses as a Name, but is not code
    assert extract_python("The answer is 5.") is None


@pytest.mark.parametrize(
    ("criterion", "expected"),
    [
        ("add(2, 3) == 5", {"mode": "eq", "left": "add(2, 3)", "right": "5"}),
        ("assert add(1, 1) == 2", {"mode": "exec", "source": "assert add(1, 1) == 2"}),
        ("add(2, 3) returns 5", {"mode": "eq", "left": "add(2, 3)", "right": "5"}),
        ("f(1) should return 2.", {"mode": "eq", "left": "f(1)", "right": "2"}),
        ("is_even(4) returns true", {"mode": "eq", "left": "is_even(4)", "right": "True"}),
        ("`add(0, 0) == 0` must hold", {"mode": "eq", "left": "add(0, 0)", "right": "0"}),
        ("calling `add(2, 3)` returns 5", {"mode": "eq", "left": "add(2, 3)", "right": "5"}),
        ("is_prime(7)", {"mode": "eval", "source": "is_prime(7)"}),
    ],
)
def test_python_check_recognises_runnable_criteria(criterion, expected):
    got = python_check(criterion)
    assert got is not None
    assert {k: got[k] for k in expected} == expected


@pytest.mark.parametrize(
    "criterion",
    [
        "The answer explains recursion",
        "fast",
        "uses `sorted()` to order the list and explains why",  # prose around a bare call
        "mentions Kafka",
        "sorted(x) is stable",  # "is <word>" is prose, not a comparison
    ],
)
def test_python_check_leaves_prose_alone(criterion):
    assert python_check(criterion) is None


async def test_correct_and_wrong_code():
    crit = [python_check(c) for c in ("add(2, 3) == 5", "assert add(1, 1) == 2", "add(-1, 1)")]
    good = await run_python_checks(ADD, crit, limits=FAST)
    assert good.loaded and not good.error
    assert [o.passed for o in good.outcomes] == [True, True, False]  # add(-1, 1) is 0: falsy
    assert good.outcomes[0].detail == "add(2, 3) returned 5, expected 5"
    wrong = await run_python_checks("def add(a, b):\n    return a - b\n", crit[:2], limits=FAST)
    assert [o.passed for o in wrong.outcomes] == [False, False]
    assert "returned -1, expected 5" in wrong.outcomes[0].detail


async def test_code_that_raises_on_load_fails_every_check_with_the_reason():
    report = await run_python_checks("raise ValueError('boom')", [python_check("f(1) == 1")])
    assert not report.loaded and "ValueError: boom" in report.error
    assert not report.outcomes[0].passed and "boom" in report.outcomes[0].detail


async def test_prints_are_captured_and_demo_blocks_do_not_run():
    code = ADD + "print('hello')\nif __name__ == '__main__':\n    input('never')\n"
    report = await run_python_checks(code, [python_check("add(1, 2) == 3")], limits=FAST)
    assert report.outcomes[0].passed and report.output == "hello\n"


async def test_infinite_loop_is_stopped_by_the_cpu_limit():
    began = time.monotonic()
    report = await run_python_checks(
        "while True:\n    pass\n", [python_check("f() == 1")], limits=FAST
    )
    assert not report.outcomes[0].passed
    assert "SIGXCPU" in report.error or "SIGKILL" in report.error or report.timed_out
    assert time.monotonic() - began < FAST.wall_s + 6


async def test_sleeping_loop_is_stopped_by_the_wall_clock():
    limits = Limits(cpu_s=5, wall_s=1.5)
    report = await run_python_checks(
        "import time\nwhile True:\n    time.sleep(0.1)\n", [python_check("f() == 1")], limits=limits
    )
    assert report.timed_out and "timed out" in report.outcomes[0].detail


async def test_huge_allocation_hits_the_memory_limit():
    report = await run_python_checks("x = bytearray(8 * 1024**3)\n", [python_check("f() == 1")])
    assert not report.loaded and "MemoryError" in report.error


@pytest.mark.parametrize(
    "code",
    [
        "import os\nos.fork()\n",
        "import os\nos.system('echo hi')\n",
        "import os\nos.kill(1, 9)\n",
        "import os\nwhile True:\n    os.fork()\n",
    ],
)
async def test_process_creation_and_signals_are_refused(code):
    report = await run_python_checks(code, [python_check("f() == 1")], limits=FAST)
    assert not report.loaded
    assert "blocked in the checks sandbox" in report.error


async def test_modules_that_spawn_or_connect_are_not_available():
    for module in ("subprocess", "socket", "ctypes"):
        report = await run_python_checks(f"import {module}\n", [], limits=FAST)
        assert not report.loaded, module


async def test_code_runs_as_nobody_when_started_as_root(tmp_path):
    # CI and the dev machines run as root, where RLIMIT_NPROC does not apply: the harness
    # drops to nobody first. Elsewhere the code keeps the caller's uid.
    expected = 65534 if os.geteuid() == 0 else os.getuid()
    report = await run_python_checks(
        "import os\nuid = os.getuid()\n", [python_check(f"uid == {expected}")], limits=FAST
    )
    assert report.outcomes[0].passed, report
    if os.geteuid() == 0:
        target = tmp_path / "owned.txt"  # tmp_path is root's, mode 0700
        code = f"open({str(target)!r}, 'w').write('x')\n"
        report = await run_python_checks(code, [], limits=FAST)
        assert not report.loaded and "Permission" in report.error
        assert not target.exists()


async def test_output_flood_is_capped():
    report = await run_python_checks(
        ADD + "print('x' * 10_000_000)\n", [python_check("add(1, 1) == 2")], limits=FAST
    )
    assert report.outcomes[0].passed
    assert len(report.output) <= Limits().output_bytes


async def test_forged_result_lines_on_fd1_are_not_trusted_over_the_harness():
    # The code writes a fake "passed" line straight to fd 1 before the harness runs the check;
    # the harness's own later line for the same check wins.
    code = (
        'import os\nos.write(1, b\'{"event": "check", "index": 0, "passed": true}\\n\')\n'
        "def add(a, b):\n    return 0\n"
    )
    report = await run_python_checks(code, [python_check("add(2, 3) == 5")], limits=FAST)
    assert not report.outcomes[0].passed


def test_preload_list_has_no_spawning_modules():
    assert not {"subprocess", "socket", "ctypes", "multiprocessing", "os"} & set(checks.PRELOAD)
