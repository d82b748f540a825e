"""The coder arm on a labelled set of small Python function tasks: pass@1 against best-of-n.

`bench/data/coder_tasks.jsonl` (32 tasks) and `bench/data/coder_heldout.jsonl` (10 tasks, kept
out of development: `python -m bench coder-heldout`) hold a goal and runnable acceptance
criteria per task, as a user would send them. Each task runs through the real `CoderArm`
against the local LLM server (started here on a free port, stopped by PID):

- pass@1: one candidate, one round (`coder_candidates=1`, `coder_max_attempts=1`): the first
  sample at the coder's first temperature;
- best-of-n: `OCTO_CODER_CANDIDATES` candidates (default 4), one round: the first that passes.

A task passes when the arm's code passes every acceptance criterion in the sandbox. Same model,
same server, same run. `OCTO_BENCH_CODER_ROUNDS=3` adds the repair rounds (both configurations,
the failed attempt's error fed back), as the arm runs in the pipeline. Figures only: nothing is
asserted.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from bench.llm_concurrency import server_settings
from bench.report import Row, print_table
from octollm.arms.coder import CoderArm
from octollm.contracts.models import ArmRequest, ArmStatus
from octollm.runtime.arm import ArmContext
from octollm.settings import LLMServerKind, Settings, get_settings
from octollm.supervisor import llm

DATA = Path(__file__).resolve().parent / "data"
ROUNDS = int(os.environ.get("OCTO_BENCH_CODER_ROUNDS", "1"))


@dataclass(frozen=True)
class Task:
    id: str
    goal: str
    criteria: tuple[str, ...]


@dataclass
class Outcome:
    passed: int = 0
    tokens: int = 0
    wall_s: float = 0.0
    failed_ids: tuple[str, ...] = ()


def load(name: str) -> list[Task]:
    rows = [json.loads(line) for line in (DATA / name).read_text().splitlines() if line.strip()]
    return [Task(r["id"], r["goal"], tuple(r["acceptance_criteria"])) for r in rows]


def arm_request(task: Task) -> ArmRequest:
    return ArmRequest(
        request_id=uuid.uuid4(),
        task_id=uuid.uuid4(),
        tenant_id="bench",
        step_id="s1",
        arm="coder",
        instruction=task.goal,
        inputs={"acceptance_criteria": json.dumps(list(task.criteria))},
        created_at=datetime.now(UTC),
    )


async def run_config(
    settings: Settings, tasks: list[Task], at_once: int
) -> tuple[Outcome, dict[str, bool]]:
    """Every task through the coder arm with `settings`, `at_once` tasks at a time."""
    ctx = ArmContext(settings, "bench@coder", "coder")
    arm = CoderArm()
    gate = asyncio.Semaphore(at_once)
    results: dict[str, bool] = {}
    tokens = 0

    async def one(task: Task) -> None:
        nonlocal tokens
        async with gate:
            out = await arm.handle(arm_request(task), ctx)
        results[task.id] = out.status is ArmStatus.OK and out.artifacts.get("passed") == "true"
        if out.usage is not None:
            tokens += out.usage.prompt_tokens + out.usage.completion_tokens

    began = time.perf_counter()
    try:
        await asyncio.gather(*(one(t) for t in tasks))
    finally:
        await ctx.aclose()
    wall = time.perf_counter() - began
    failed = tuple(t.id for t in tasks if not results[t.id])
    return Outcome(sum(results.values()), tokens, wall, failed), results


def run(name: str, title: str) -> None:
    base = get_settings()
    tasks = load(name)
    n = base.coder_candidates
    kind = base.llm_server
    with tempfile.TemporaryDirectory(prefix="octollm-bench-coder-") as tmp:
        settings = server_settings(base, Path(tmp), kind, coder_max_attempts=ROUNDS)
        llm.start_llm(settings)
        try:
            slots = settings.llm_parallel if kind is LLMServerKind.LLAMA_SERVER else 1
            one = settings.model_copy(update={"coder_candidates": 1})
            many = settings.model_copy(update={"coder_candidates": n})
            single, _ = asyncio.run(run_config(one, tasks, max(slots, 1)))
            best, _ = asyncio.run(run_config(many, tasks, max(slots // n, 1)))
        finally:
            llm.stop_llm(settings)
    total = len(tasks)
    rows = [
        Row(f"tasks passed (of {total})", best.passed, single.passed, "", ">= 60%"),
        Row("pass rate", 100.0 * best.passed / total, 100.0 * single.passed / total, "%"),
        Row("tokens (prompt + completion)", best.tokens, single.tokens, ""),
        Row("wall clock", best.wall_s, single.wall_s, "s"),
    ]
    notes = [
        f"ours: best-of-{n} (OCTO_CODER_CANDIDATES); baseline: pass@1 (one candidate); "
        f"{ROUNDS} round(s) each (OCTO_BENCH_CODER_ROUNDS); model {settings.llm_model} on "
        f"{kind.value}",
        f"failed with best-of-{n}: {', '.join(best.failed_ids) or '-'}",
        f"failed with pass@1: {', '.join(single.failed_ids) or '-'}",
        f"load average (1 min) at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores",
    ]
    print_table(title, rows, notes)


def main() -> None:
    run("coder_tasks.jsonl", "coder: best-of-n vs pass@1 (labelled set)")


def heldout_main() -> None:
    run("coder_heldout.jsonl", "coder: best-of-n vs pass@1 (held-out set)")


if __name__ == "__main__":
    main()
