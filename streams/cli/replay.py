"""`octollm replay` and `octollm reprocess`: send a stretch of a topic through the pipeline again.

Every argument is checked, and every range resolved, before anything is sent: a bad invocation
exits 2 with one line and leaves the topics as they were.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Annotated

import typer
from confluent_kafka import Consumer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task, TextColumn
from rich.table import Table
from rich.text import Text

from octollm.cli.errors import CliError
from octollm.kafka.admin import partitions_of
from octollm.kafka.consumer import consumer_config
from octollm.kafka.exceptions import TopicNotFound
from octollm.replay.copy import Replay, ReplayReport
from octollm.replay.ranges import (
    PartitionRange,
    RangeArgs,
    RecordFilter,
    ReplayInputError,
    parse_filter,
    parse_offsets,
    parse_rate,
    parse_time,
    resolve_ranges,
)
from octollm.replay.reset import ResetRow, ResetTarget, apply_reset, plan_reset
from octollm.settings import Settings, get_settings
from octollm.topics import full_name

_TOPIC_HELP = "Topic name (the environment prefix is added)."


def _iso(ms: int | None) -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


def _partitions(settings: Settings, name: str, role: str) -> list[int]:
    try:
        return partitions_of(settings, name)
    except TopicNotFound:
        raise CliError(f"{role}topic {name!r} does not exist", exit_code=2) from None


class _EventsPerSecond(ProgressColumn):
    def render(self, task: Task) -> Text:
        return Text(f"{task.speed or 0:,.0f} events/s", style="progress.data.speed")


@contextmanager
def _progress(total: int, label: str) -> Iterator[Progress]:
    progress = Progress(
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        _EventsPerSecond(),
        console=Console(stderr=True),
        transient=True,
    )
    with progress:
        yield progress


def _parse_range_args(
    from_offset: str | None, from_time: str | None, to_offset: str | None, to_time: str | None
) -> RangeArgs:
    args = RangeArgs(
        from_offset=parse_offsets(from_offset, option="--from-offset") if from_offset else None,
        from_time=parse_time(from_time, option="--from-time") if from_time else None,
        to_offset=parse_offsets(to_offset, option="--to-offset") if to_offset else None,
        to_time=parse_time(to_time, option="--to-time") if to_time else None,
    )
    args.check()
    return args


def replay(
    topic: Annotated[str, typer.Option("--topic", help=_TOPIC_HELP)],
    from_offset: Annotated[
        str | None,
        typer.Option(help="Start offset: OFFSET for every partition, or P:O[,P:O] to pick them."),
    ] = None,
    from_time: Annotated[
        str | None,
        typer.Option(help="Start at the first event at or after this ISO-8601 time (naive = UTC)."),
    ] = None,
    to_offset: Annotated[
        str | None, typer.Option(help="Stop before this offset (OFFSET or P:O[,P:O]).")
    ] = None,
    to_time: Annotated[
        str | None, typer.Option(help="Stop before the first event at or after this time.")
    ] = None,
    filter_: Annotated[
        str | None,
        typer.Option(
            "--filter", help="Only events with tenant=…, status=…, task=… (comma-joined)."
        ),
    ] = None,
    target: Annotated[
        str | None, typer.Option(help="Copy into this topic instead of the same one.")
    ] = None,
    rate: Annotated[str | None, typer.Option(help="At most this many events a second: 500/s.")] = (
        None
    ),
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Count what would be replayed; send nothing.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="The report as one JSON object.")] = False,
) -> None:
    """Copy a stretch of a topic back into it (or --target), marked as a replay."""
    try:
        args = _parse_range_args(from_offset, from_time, to_offset, to_time)
        record_filter = parse_filter(filter_) if filter_ is not None else None
        per_second = parse_rate(rate) if rate is not None else None
    except ReplayInputError as exc:
        raise CliError(str(exc), exit_code=2) from None
    settings = get_settings()
    name = full_name(settings, topic)
    target_name = full_name(settings, target) if target else name
    partitions = _partitions(settings, name, "source ")
    target_partitions = _partitions(settings, target_name, "target ")
    consumer = Consumer(consumer_config(settings, client_id="octollm-replay-plan"))
    try:
        ranges = resolve_ranges(consumer, name, partitions, args, settings.connect_timeout_s)
    except ReplayInputError as exc:
        raise CliError(str(exc), exit_code=2) from None
    finally:
        consumer.close()
    report = _run(
        settings,
        name,
        target_name,
        len(target_partitions),
        ranges,
        record_filter,
        per_second,
        dry_run=dry_run,
    )
    _show_replay(report, as_json)
    if report.failed or report.errors:
        first = report.errors[0] if report.errors else "unknown error"
        raise CliError(f"{report.failed} event(s) failed to send to {target_name}; first: {first}")


def _run(
    settings: Settings,
    name: str,
    target: str,
    target_partitions: int,
    ranges: list[PartitionRange],
    record_filter: RecordFilter | None,
    rate: float | None,
    *,
    dry_run: bool,
) -> ReplayReport:
    total = sum(r.size for r in ranges)
    label = "counting" if dry_run else f"replaying {name}"
    with _progress(total, label) as progress:
        task = progress.add_task(label, total=total)
        job = Replay(
            settings,
            topic=name,
            target=target,
            target_partitions=target_partitions,
            ranges=ranges,
            record_filter=record_filter,
            rate=rate,
            dry_run=dry_run,
            on_progress=lambda n: progress.advance(task, n),
        )
        try:
            return job.run()
        except KeyboardInterrupt:
            raise CliError("interrupted; what was sent before stays sent", exit_code=130) from None


def _show_replay(report: ReplayReport, as_json: bool) -> None:
    rate = report.events / report.elapsed_s if report.elapsed_s else 0.0
    if as_json:
        out = {
            "topic": report.topic,
            "target": report.target,
            "dry_run": report.dry_run,
            "events": report.events,
            "skipped": report.skipped,
            "failed": report.failed,
            "elapsed_s": round(report.elapsed_s, 3),
            "events_per_s": round(rate, 1),
            "partitions": [
                {
                    "partition": p.partition,
                    "from_offset": p.start,
                    "to_offset": p.end,
                    "events": p.events,
                    "skipped": p.skipped,
                    "first_time": _iso(p.first_ts) if p.first_ts is not None else None,
                    "last_time": _iso(p.last_ts) if p.last_ts is not None else None,
                }
                for p in report.partitions
            ],
        }
        typer.echo(json.dumps(out))
        return
    verb = "would replay" if report.dry_run else "replayed"
    table = Table(
        title=f"{report.topic} → {report.target}" + (" (dry run)" if report.dry_run else "")
    )
    for column in ("partition", "offsets", "events", "filtered out", "first event", "last event"):
        table.add_column(column, justify="right" if column != "offsets" else "left")
    for p in report.partitions:
        table.add_row(
            str(p.partition),
            f"[{p.start}, {p.end})",
            f"{p.events:,}",
            f"{p.skipped:,}",
            _iso(p.first_ts),
            _iso(p.last_ts),
        )
    console = Console()
    console.print(table)
    console.print(
        f"{verb} {report.events:,} event(s) in {report.elapsed_s:.2f}s ({rate:,.0f} events/s)"
    )


def reprocess(
    group: Annotated[str, typer.Option("--group", help="The consumer group to move.")],
    topic: Annotated[str, typer.Option("--topic", help=_TOPIC_HELP)],
    to_time: Annotated[
        str | None, typer.Option(help="The first event at or after this ISO-8601 time.")
    ] = None,
    to_offset: Annotated[
        str | None, typer.Option(help="OFFSET for every partition, or P:O[,P:O] for those.")
    ] = None,
    to_earliest: Annotated[bool, typer.Option("--to-earliest", help="The oldest event kept.")] = (
        False
    ),
    to_latest: Annotated[bool, typer.Option("--to-latest", help="The end: skip the rest.")] = False,
    execute: Annotated[
        bool, typer.Option("--execute", help="Apply the plan (without it, only show it).")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="The plan as one JSON object.")] = False,
) -> None:
    """Reset a stopped consumer group's offsets so it reads part of a topic again."""
    chosen = [to_time is not None, to_offset is not None, to_earliest, to_latest]
    if sum(chosen) != 1:
        raise CliError(
            "give exactly one of --to-time, --to-offset, --to-earliest, --to-latest", exit_code=2
        )
    try:
        if to_time is not None:
            target = ResetTarget("time", time=parse_time(to_time, option="--to-time"))
        elif to_offset is not None:
            target = ResetTarget("offset", offsets=parse_offsets(to_offset, option="--to-offset"))
        else:
            target = ResetTarget("earliest" if to_earliest else "latest")
    except ReplayInputError as exc:
        raise CliError(str(exc), exit_code=2) from None
    settings = get_settings()
    name = full_name(settings, topic)
    partitions = _partitions(settings, name, "")
    try:
        rows = plan_reset(settings, group, name, partitions, target)
    except ReplayInputError as exc:
        raise CliError(str(exc), exit_code=2) from None
    if execute:
        apply_reset(settings, group, name, rows)
    _show_plan(group, name, rows, execute, as_json)


def _show_plan(group: str, topic: str, rows: list[ResetRow], executed: bool, as_json: bool) -> None:
    if as_json:
        out = {
            "group": group,
            "topic": topic,
            "executed": executed,
            "partitions": [
                {
                    "partition": r.partition,
                    "current": r.current,
                    "new": r.new,
                    "lag_before": r.lag_before,
                    "lag_after": r.lag_after,
                }
                for r in rows
            ],
        }
        typer.echo(json.dumps(out))
        return
    table = Table(title=f"group {group} on {topic}")
    for column in ("partition", "committed", "new", "lag now", "lag after", "change"):
        table.add_column(column, justify="right")
    for r in rows:
        change = "-" if r.lag_before is None else f"{r.lag_after - r.lag_before:+,}"
        table.add_row(
            str(r.partition),
            "-" if r.current is None else f"{r.current:,}",
            f"{r.new:,}",
            "-" if r.lag_before is None else f"{r.lag_before:,}",
            f"{r.lag_after:,}",
            change,
        )
    console = Console()
    console.print(table)
    console.print(
        f"reset {len(rows)} partition(s)"
        if executed
        else "plan only: nothing changed; add --execute to apply it"
    )
