"""Best-of-n: sample several candidates at once, check each as it arrives, keep the first that
passes, within a token and a time budget.

A small model that writes a wrong function at one temperature often writes a right one at
another; with a batching server (llama-server's parallel slots, docs/llm.md) n concurrent
samples cost little more wall clock than one. The coder (arms/coder.py) calls `first_passing`
once per round; the sampling and the checks are its own (`sample`), so this module knows
nothing of prompts or sandboxes and its unit tests need neither.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

__all__ = [
    "Candidate",
    "Selection",
    "TokenBudget",
    "best_failure",
    "first_passing",
    "temperatures",
]


class Candidate(Protocol):
    """What `sample` returns: a checked candidate."""

    @property
    def passed(self) -> bool: ...

    @property
    def failed(self) -> int:
        """How many checks it failed (fewer is better among failures)."""
        ...

    @property
    def tokens(self) -> int:
        """Prompt + completion tokens it cost."""
        ...

    @property
    def usable(self) -> bool:
        """It produced something to check (not an LLM error, not empty)."""
        ...


C = TypeVar("C", bound=Candidate)


@dataclass
class TokenBudget:
    """Tokens one request may spend over all its rounds; `spent` grows as candidates finish."""

    limit: int
    spent: int = 0

    @property
    def left(self) -> int:
        return max(self.limit - self.spent, 0)

    def affordable(self, estimate: int) -> int:
        """How many candidates of about `estimate` tokens the budget still pays for."""
        return self.left // max(estimate, 1)


@dataclass
class Selection(Generic[C]):
    """One round: the winner (None if nothing passed), every finished candidate in the order
    they finished, and why sampling stopped."""

    winner: C | None
    finished: list[C] = field(default_factory=list)
    launched: int = 0
    #: "passed", "exhausted" (all n checked, none passed), "budget" (the tokens left paid for
    #: fewer than n, or for none) or "time" (the deadline cut the round short).
    stopped: str = "exhausted"

    @property
    def best(self) -> C | None:
        """The winner, else the best failure."""
        return self.winner if self.winner is not None else best_failure(self.finished)


def best_failure(candidates: Sequence[C]) -> C | None:
    """The usable candidate with the fewest failed checks (the earliest of equals): its error
    is the one worth reporting and feeding back; None if none produced anything."""
    usable = [c for c in candidates if c.usable]
    return min(usable, key=lambda c: c.failed) if usable else None


def temperatures(n: int, first: float, rest: float) -> list[float]:
    """The first candidate at `first` (what a single sample would use: pass@1 stays in the
    set), the others at `rest` for diversity."""
    return [first] + [rest] * (n - 1)


async def first_passing(
    sample: Callable[[int], Coroutine[Any, Any, C]],
    n: int,
    *,
    budget: TokenBudget,
    estimate: int,
    deadline: float,
    clock: Callable[[], float] = time.monotonic,
) -> Selection[C]:
    """Launch up to `n` concurrent `sample(i)` calls (as many as `budget` affords at `estimate`
    tokens each), return as soon as one passes (the others are cancelled), else when all are
    done or `deadline` (a `clock` time) is reached. Every finished candidate's tokens are
    charged to `budget`."""
    count = min(n, budget.affordable(estimate))
    selection: Selection[C] = Selection(None, launched=count)
    if count <= 0:
        selection.stopped = "budget"
        return selection
    pending: set[asyncio.Task[C]] = {
        asyncio.create_task(sample(i), name=f"candidate-{i:04d}") for i in range(count)
    }
    try:
        while pending:
            left = deadline - clock()
            if left <= 0:
                selection.stopped = "time"
                break
            done, pending = await asyncio.wait(
                pending, timeout=left, return_when=asyncio.FIRST_COMPLETED
            )
            # Several can finish together: take them in launch order, so ties are stable.
            for task in sorted(done, key=_launch_order):
                candidate = task.result()
                budget.spent += candidate.tokens
                selection.finished.append(candidate)
                if candidate.passed and selection.winner is None:
                    selection.winner = candidate
            if selection.winner is not None:
                selection.stopped = "passed"
                break
        else:
            selection.stopped = "budget" if count < n else "exhausted"
    finally:
        for task in pending:
            task.cancel()
        for task in pending:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
    return selection


def _launch_order(task: asyncio.Task[object]) -> str:
    return task.get_name()
