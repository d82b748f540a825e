"""The reflex layer's decision core on 1 KB texts: runs the criterion bench and tabulates p99.

`cargo bench --bench decision_core` (reflex-layer/benches/decision_core.rs) times every case
call by call before criterion runs and prints one `PCTL {json}` line per case; this driver
streams criterion's own output through and turns those lines into the usual table. The
baseline of every row is the same run's pass-through record (Avro decode + RoutedTask encode of
the same 1 KB task, no checks), so the ratio says how many codec-costs the checks are.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from bench.report import Row, print_table

REPO = Path(__file__).resolve().parent.parent
TARGET_DIR = os.environ.get("CARGO_TARGET_DIR", str(Path.home() / ".cache/octollm/cargo-target"))
TARGET_US_PER_KB = 20.0


class BenchError(RuntimeError):
    """cargo bench failed or printed no percentile lines."""


def run_cargo_bench() -> list[dict[str, float | str]]:
    cmd = ["cargo", "bench", "--bench", "decision_core"]
    env = {**os.environ, "CARGO_TARGET_DIR": TARGET_DIR}
    proc = subprocess.Popen(
        cmd,
        cwd=REPO / "reflex-layer",
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    rows: list[dict[str, float | str]] = []
    for line in proc.stdout:
        if line.startswith("PCTL "):
            rows.append(json.loads(line[5:]))
        else:
            sys.stdout.write(line)
    if proc.wait() != 0:
        raise BenchError(f"{' '.join(cmd)} exited {proc.returncode}")
    if not rows:
        raise BenchError("cargo bench printed no PCTL lines")
    return rows


def main() -> None:
    pctl = {str(r["case"]): r for r in run_cargo_bench()}
    rows = []
    for case, r in pctl.items():
        if case.endswith("/passthrough"):
            continue
        text = case.split("/")[1]
        base = pctl[f"process/{text}/passthrough"]
        rows.append(
            Row(
                f"{case} p99", float(r["p99"]), float(base["p99"]), "us", f"<= {TARGET_US_PER_KB:g}"
            )
        )
    p50 = {case: float(r["p50"]) for case, r in pctl.items()}
    print_table(
        "reflex decision core, per KB (call-by-call p99; baseline: pass-through record, same text)",
        rows,
        [
            "units: µs per KB; scan = scan_text (detect + redact + offsets + injection); "
            "assess_task = the streaming checks on a decoded task; process = decode + checks + "
            "encode of one record",
            "p50: " + ", ".join(f"{c} {v:.1f}" for c, v in p50.items()),
            f"samples per case: {int(next(iter(pctl.values()))['samples']):,}; "
            "criterion's mean/median with CIs are above",
        ],
    )
