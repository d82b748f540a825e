"""Text into something to run (arms/checks.py): the code in a draft, a criterion as a check.
Running checks is the sandbox's (tests/unit/test_sandbox_pychecks.py)."""

from __future__ import annotations

import pytest

from octollm.arms.checks import extract_python, python_check

pytestmark = pytest.mark.unit

ADD = "def add(a, b):\n    return a + b\n"


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
    assert {k: getattr(got, k) for k in expected} == expected


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


def test_a_returns_phrase_becomes_the_comparison_it_means():
    check = python_check("add(2, 3) returns 5")
    assert check is not None and check.source == "add(2, 3) == 5"
