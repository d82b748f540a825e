"""Sandbox start-up overhead per run: `Sandbox.run_python` / `Sandbox.run(["true"])` against a bare
`subprocess.run` of the same program in the same run, interleaved so load affects both alike.

The sandbox's extra work per run: a work dir (made, chowned, removed), the launcher interpreter
(`python -I -S`, ~15 ms), network, PID and mount namespaces with three private tmpfs, two forks,
rlimits and a uid drop, the capped reader thread.
`OCTO_BENCH_EXECUTOR_RUNS` sets the runs per case (default 60).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import tempfile
import time
from pathlib import Path

from bench.report import Row, percentile, print_table
from octollm.sandbox import Sandbox, SandboxPolicy

CODE = "print(sum(range(1000)))\n"
TARGET_EXTRA_MS_P50 = 40.0  # what the sandbox may add per run, at the median


def _bare(argv: list[str], cwd: str) -> float:
    began = time.perf_counter()
    subprocess.run(argv, cwd=cwd, capture_output=True, check=True, timeout=30)
    return (time.perf_counter() - began) * 1000.0


async def _sandboxed(sandbox: Sandbox, argv: list[str] | None) -> float:
    began = time.perf_counter()
    if argv is None:
        result = await sandbox.run_python(CODE)
    else:
        result = await sandbox.run(argv)
    assert result.exit_code == 0 and result.limit is None, result
    return (time.perf_counter() - began) * 1000.0


async def _measure(runs: int, tmp: str) -> dict[str, tuple[list[float], list[float]]]:
    sandbox = Sandbox(SandboxPolicy())
    await sandbox.network_isolation()  # probed once per process; not a per-run cost
    true = SandboxPolicy().resolve(["true"])
    python = SandboxPolicy().resolve(["python3"])
    samples: dict[str, tuple[list[float], list[float]]] = {"python": ([], []), "true": ([], [])}
    for i in range(runs + 3):
        ours_py = await _sandboxed(sandbox, None)
        bare_py = _bare([python, "-E", "-s", "main.py"], tmp)
        ours_true = await _sandboxed(sandbox, ["true"])
        bare_true = _bare([true], tmp)
        if i >= 3:  # warm-up
            samples["python"][0].append(ours_py)
            samples["python"][1].append(bare_py)
            samples["true"][0].append(ours_true)
            samples["true"][1].append(bare_true)
    return samples


def main() -> None:
    runs = int(os.environ.get("OCTO_BENCH_EXECUTOR_RUNS", "60"))
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "main.py").write_text(CODE)
        samples = asyncio.run(_measure(runs, tmp))
    rows: list[Row] = []
    for case, label in (("python", "python3 main.py"), ("true", "true")):
        ours, bare = samples[case]
        for q in (50, 99):
            target = f"+{TARGET_EXTRA_MS_P50:g} ms over bare" if (case, q) == ("python", 50) else ""
            rows.append(
                Row(
                    f"{label} p{q} (ms/run)", percentile(ours, q), percentile(bare, q), "ms", target
                )
            )
    extra = percentile(samples["python"][0], 50) - percentile(samples["python"][1], 50)
    verdict = "meets" if extra <= TARGET_EXTRA_MS_P50 else "MISSES"
    print_table(
        f"executor sandbox start-up overhead ({runs} runs per case; baseline: bare subprocess.run)",
        rows,
        [
            f"median extra per python run: {extra:.1f} ms ({verdict} the +{TARGET_EXTRA_MS_P50:g}"
            " ms target)",
            "ours = Sandbox (launcher, net/pid/mount namespaces, rlimits, uid drop, work dir)",
        ],
    )


if __name__ == "__main__":
    main()
