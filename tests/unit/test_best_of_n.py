"""Best-of-n candidate selection (`octollm.arms.best_of_n`) on fake candidates: no LLM, no
sandbox. The coder's use of it, on recorded answers, is in test_arm_coder.py."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import pytest

from octollm.arms.best_of_n import (
    Selection,
    TokenBudget,
    best_failure,
    first_passing,
    temperatures,
)

pytestmark = pytest.mark.unit


@dataclass
class Fake:
    index: int
    passed: bool = False
    failed: int = 1
    tokens: int = 100
    usable: bool = True


def sampler(plan: dict[int, tuple[float, Fake]], started: list[int], cancelled: list[int]):  # type: ignore[no-untyped-def]
    """sample(i) waits plan[i][0] seconds, then returns plan[i][1]."""

    async def sample(i: int) -> Fake:
        started.append(i)
        delay, fake = plan[i]
        try:
            await asyncio.sleep(delay)
        except asyncio.CancelledError:
            cancelled.append(i)
            raise
        return fake

    return sample


async def run(
    plan: dict[int, tuple[float, Fake]],
    n: int,
    *,
    limit: int = 10_000,
    estimate: int = 100,
    within: float = 10.0,
) -> tuple[Selection[Fake], TokenBudget, list[int], list[int]]:
    started: list[int] = []
    cancelled: list[int] = []
    budget = TokenBudget(limit)
    selection = await first_passing(
        sampler(plan, started, cancelled),
        n,
        budget=budget,
        estimate=estimate,
        deadline=time.monotonic() + within,
    )
    return selection, budget, started, cancelled


async def test_the_first_candidate_to_pass_wins_and_the_others_are_cancelled() -> None:
    plan = {
        0: (0.05, Fake(0, failed=2)),  # the quick one fails
        1: (0.10, Fake(1, passed=True, failed=0)),  # the first to pass
        2: (0.15, Fake(2, passed=True, failed=0)),  # would pass too, later
        3: (5.00, Fake(3)),  # slow
    }
    selection, budget, started, cancelled = await run(plan, 4)
    assert selection.stopped == "passed" and selection.winner is plan[1][1]
    assert [c.index for c in selection.finished] == [0, 1]
    assert sorted(started) == [0, 1, 2, 3] and sorted(cancelled) == [2, 3]
    assert budget.spent == 200  # the finished ones only


async def test_the_budget_limits_how_many_are_sampled() -> None:
    plan = {i: (0.01, Fake(i)) for i in range(4)}
    selection, budget, started, _ = await run(plan, 4, limit=250, estimate=100)
    assert sorted(started) == [0, 1] and selection.launched == 2
    assert selection.stopped == "budget" and selection.winner is None
    assert budget.spent == 200 and budget.left == 50


async def test_a_spent_budget_samples_nothing() -> None:
    selection, _, started, _ = await run({0: (0.0, Fake(0))}, 4, limit=99, estimate=100)
    assert started == [] and selection.stopped == "budget" and selection.best is None


async def test_all_fail_then_the_best_error_is_reported() -> None:
    plan = {
        0: (0.03, Fake(0, failed=3)),
        1: (0.01, Fake(1, failed=0, usable=False)),  # an LLM error: nothing to report
        2: (0.02, Fake(2, failed=1)),
        3: (0.04, Fake(3, failed=1)),
    }
    selection, budget, _, cancelled = await run(plan, 4)
    assert selection.stopped == "exhausted" and selection.winner is None
    assert cancelled == [] and len(selection.finished) == 4
    # the fewest failed checks among usable candidates, the earliest to finish of equals
    assert selection.best is plan[2][1]
    assert budget.spent == 400


async def test_the_deadline_stops_the_round_with_what_finished() -> None:
    plan = {0: (0.01, Fake(0, failed=2)), 1: (5.0, Fake(1, passed=True, failed=0))}
    selection, _, _, cancelled = await run(plan, 2, within=0.3)
    assert selection.stopped == "time" and selection.winner is None
    assert selection.best is plan[0][1] and cancelled == [1]


async def test_candidates_run_concurrently() -> None:
    # each sample waits until all four have started: run one after another, none would finish
    everyone = asyncio.Event()
    started: list[int] = []

    async def sample(i: int) -> Fake:
        started.append(i)
        if len(started) == 4:
            everyone.set()
        await everyone.wait()
        return Fake(i)

    selection = await first_passing(
        sample, 4, budget=TokenBudget(10_000), estimate=100, deadline=time.monotonic() + 5.0
    )
    assert selection.stopped == "exhausted" and len(selection.finished) == 4


def test_best_failure_of_nothing_usable_is_none() -> None:
    assert best_failure([Fake(0, usable=False)]) is None
    assert best_failure([]) is None


def test_temperatures_keep_the_single_sample_first() -> None:
    assert temperatures(4, 0.1, 0.8) == [0.1, 0.8, 0.8, 0.8]
    assert temperatures(1, 0.1, 0.8) == [0.1]
