"""The small table every benchmark prints: figure, ours, baseline, ratio, target."""

from __future__ import annotations

import resource
import statistics
from dataclasses import dataclass


@dataclass
class Row:
    figure: str
    ours: float
    baseline: float
    unit: str
    target: str = ""

    @property
    def ratio(self) -> float:
        return self.ours / self.baseline if self.baseline else float("nan")


def print_table(title: str, rows: list[Row], notes: list[str] | None = None) -> None:
    print(f"\n== {title}")
    print(f"{'figure':34} {'ours':>14} {'baseline':>14} {'ratio':>7}  target")
    for r in rows:
        print(
            f"{r.figure:34} {r.ours:>11,.1f} {r.unit:2} {r.baseline:>11,.1f} {r.unit:2}"
            f" {r.ratio:>6.2f}  {r.target}"
        )
    for note in notes or []:
        print(f"  - {note}")


def percentile(samples: list[float], q: float) -> float:
    if len(samples) < 2:
        return samples[0] if samples else float("nan")
    return statistics.quantiles(samples, n=100, method="inclusive")[int(q) - 1]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
