"""`octollm status`: consumer lag, topic rates, audit lag, DLQ count and worker health."""

from __future__ import annotations

import sys
import time
from typing import Annotated

import typer
from rich.console import Group
from rich.live import Live
from rich.table import Table

from octollm import jsonable
from octollm.ops.status import Report, StatusProbe
from octollm.settings import get_settings


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}/s"


def render(report: Report) -> Group:
    """The report as rich tables: groups, topics, components."""
    groups = Table(title="consumer groups", title_justify="left", expand=False)
    for column in ("group", "state", "members", "topic", "lag", "out"):
        groups.add_column(
            column,
            justify="right" if column in ("members", "lag", "out") else "left",
            no_wrap=column in ("group", "topic"),
        )
    for g in report.groups:
        topics = g["topics"] or [{"topic": "-", "lag": 0, "out_per_s": None}]
        for i, t in enumerate(topics):
            first = i == 0
            groups.add_row(
                g["group"] if first else "",
                g["state"] if first else "",
                str(g["members"]) if first else "",
                t["topic"],
                f"{t['lag']:,}",
                _rate(t["out_per_s"]),
            )
    topics = Table(title="topics", title_justify="left")
    topics.add_column("topic", no_wrap=True)
    topics.add_column("end offset", justify="right")
    topics.add_column("in", justify="right")
    for t in report.topics:
        topics.add_row(t["topic"], f"{t['end_offset']:,}", _rate(t["in_per_s"]))
    health = Table(title="components", title_justify="left")
    for column in ("component", "pid", "url", "health", "latency", "detail"):
        health.add_column(column)
    for h in report.components:
        health.add_row(
            h.component,
            str(h.pid or ""),
            h.url,
            "[green]up[/]" if h.up else "[red]down[/]",
            f"{h.latency_ms:.1f} ms" if h.latency_ms is not None else "-",
            h.detail,
        )
    audit = "-" if report.audit_lag is None else f"{report.audit_lag:,}"
    summary = f"audit lag ({report.audit_group}): {audit}    dead letters: {report.dlq_count:,}" + (
        f"    rates over {report.interval_s:g}s" if report.interval_s else ""
    )
    # Most telling first: a --watch view taller than the terminal is cut at the bottom.
    return Group(summary, groups, health, topics)


def status(
    watch: Annotated[bool, typer.Option("--watch", help="Refresh until Ctrl-C.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document.")] = False,
    interval: Annotated[
        float,
        typer.Option("--interval", min=0.0, help="Seconds between samples (rates); 0: no rates."),
    ] = 1.0,
) -> None:
    """Per group lag, per topic rates, audit lag, DLQ count and component health."""
    if watch and as_json:
        from octollm.cli.errors import CliError

        raise CliError("--watch and --json do not go together", 2)
    probe = StatusProbe(get_settings())
    try:
        previous = probe.sample()
        if not watch:
            current = previous
            if interval > 0:
                time.sleep(interval)
                current = probe.sample()
            report = probe.report(previous if interval > 0 else None, current)
            if as_json:
                sys.stdout.write(jsonable.dumps(report.as_dict()) + "\n")
            else:
                from rich.console import Console

                # Piped: wide lines rather than names wrapped at 80 columns.
                Console(width=None if sys.stdout.isatty() else 200).print(render(report))
            return
        step = interval or 1.0
        first = render(probe.report(None, previous))
        with Live(first, auto_refresh=False, vertical_overflow="crop") as live:
            try:
                while True:
                    time.sleep(step)
                    current = probe.sample()
                    live.update(render(probe.report(previous, current)), refresh=True)
                    previous = current
            except KeyboardInterrupt:
                pass
    finally:
        probe.close()
