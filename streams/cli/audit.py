"""`octollm audit migrate | trace | stats | search`: the audit log for people (docs/audit.md).

Arguments are checked before the store is touched (a bad time or `--by` exits 2); the store is
read through `octollm.audit.reader`, directly or through the sink's endpoint when it owns chDB.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from octollm import jsonable
from octollm.audit import queries
from octollm.audit.reader import (
    AuditReader,
    AuditReadError,
    chdb_owner,
    endpoint_url,
    open_reader,
    owned_message,
    probe_endpoint,
)
from octollm.audit.store import AuditStoreError, describe, migrations, open_store
from octollm.cli.errors import CliError
from octollm.settings import get_settings

app = typer.Typer(help="The audit log: migrate, trace a task, stats, search.", no_args_is_help=True)

JSON = typer.Option("--json", help="JSON instead of a table.")
WHEN_HELP = "ISO-8601 time (no offset: UTC) or a duration back from now: 15m, 2h, 7d."
#: Wide enough that a piped table is not folded into unreadable columns.
WIDTH = 200


def _when(text: str | None, option: str, now: datetime) -> datetime | None:
    if text is None:
        return None
    try:
        return queries.parse_when(text, option=option, now=now)
    except queries.QueryInputError as exc:
        raise CliError(str(exc), 2) from None


@contextmanager
def _reader() -> Iterator[AuditReader]:
    try:
        reader = open_reader(get_settings())
    except AuditReadError as exc:
        raise CliError(str(exc), 1) from None
    try:
        yield reader
    except AuditReadError as exc:
        raise CliError(str(exc), 1) from None
    except queries.QueryInputError as exc:
        raise CliError(str(exc), 2) from None
    finally:
        reader.close()


def _print_json(value: object) -> None:
    sys.stdout.write(jsonable.dumps(value) + "\n")


def _clip(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _ms(value: float | None) -> str:
    return "" if value is None else f"{value:,.1f}"


def _rate(per_s: float) -> str:
    return f"{per_s:,.2f}" if per_s >= 1 else f"{per_s:.3g}"


# --- migrate -----------------------------------------------------------------------------------


@app.command("migrate")
def migrate() -> None:
    """Create or update the audit tables (versioned, idempotent)."""
    settings = get_settings()
    names = {m.version: m.name for m in migrations()}
    if not settings.clickhouse_url:
        health = probe_endpoint(settings)
        if health is not None:
            # The sink owns chDB (one owner per directory) and migrates it when it starts.
            done = set(health.get("migrations", []))
            pending = [n for v, n in sorted(names.items()) if v not in done]
            typer.echo(
                f"the audit sink (pid {health.get('pid')}, {endpoint_url(settings)}) owns "
                f"{describe(settings)} and migrates it when it starts"
            )
            typer.echo(
                f"pending: {', '.join(pending)} (applied when the sink restarts)"
                if pending
                else "up to date"
            )
            return
        owner = chdb_owner(settings.audit_store_dir)
        if owner is not None:
            raise CliError(owned_message(settings, owner), 1)
    try:
        store = open_store(settings, migrate=False)
    except AuditStoreError as exc:
        raise CliError(str(exc), 1) from None
    try:
        applied = store.migrate()
    except AuditStoreError as exc:
        raise CliError(str(exc), 1) from None
    finally:
        store.close()
    for name in applied:
        typer.echo(f"applied {name}")
    typer.echo(f"{describe(settings)}: " + ("migrated" if applied else "up to date"))


# --- trace -------------------------------------------------------------------------------------


def _details_text(details: dict[str, str]) -> str:
    # The reason first: it is what a person reading a failed trace is looking for.
    ordered = sorted(details.items(), key=lambda kv: (kv[0] != "reason", kv[0]))
    return ", ".join(f"{k}={_clip(v, 80)}" for k, v in ordered)


@app.command("trace")
def trace(
    task_id: Annotated[str, typer.Argument(metavar="TASK_ID", help="The task's id.")],
    as_json: Annotated[bool, JSON] = False,
) -> None:
    """Every stage of one task in order: component, status, duration and any failure's reason."""
    task_id = task_id.strip()
    if not task_id:
        raise CliError("TASK_ID is empty", 2)
    with _reader() as reader:
        rows = reader.trace(task_id)
        where = reader.where
    if not rows:
        raise CliError(f"no audit record of task {task_id} in {where}", 1)
    if as_json:
        _print_json(rows)
        return
    start = datetime.fromisoformat(rows[0]["ts"])
    tenants = sorted({r["tenant_id"] for r in rows if r["tenant_id"]})
    stages = sum(r["kind"] == "stage" for r in rows)
    table = Table(
        title=f"task {task_id} · tenant {', '.join(tenants) or '-'} · {stages} stage(s)",
        title_justify="left",
    )
    for column in ("time (UTC)", "+ms", "gen", "stage", "component", "status", "ms", "details"):
        table.add_column(column, justify="right" if column in ("+ms", "gen", "ms") else "left")
    for r in rows:
        ts = datetime.fromisoformat(r["ts"])
        offset = (ts - start).total_seconds() * 1000
        table.add_row(
            r["ts"][:23].replace("T", " "),
            f"{offset:,.0f}",
            str(r["generation"]),
            r["stage"],
            r["component"],
            r["status"],
            "" if r["duration_ms"] is None else f"{r['duration_ms']:,}",
            _details_text(r["details"]),
        )
    Console(width=WIDTH).print(table)


# --- stats -------------------------------------------------------------------------------------


@app.command("stats")
def stats(
    since: Annotated[str, typer.Option("--since", help=WHEN_HELP)] = "1h",
    until: Annotated[str, typer.Option("--until", help=WHEN_HELP + " Default: now.")] = "now",
    by: Annotated[
        str, typer.Option("--by", help=f"Group events by: {' | '.join(queries.BY)}.")
    ] = "tenant",
    as_json: Annotated[bool, JSON] = False,
) -> None:
    """Events, tasks, events/s and p50/p95/p99 stage durations per group over a window."""
    now = datetime.now(UTC)
    start = _when(since, "--since", now)
    end = _when(until, "--until", now)
    assert start is not None and end is not None
    try:
        queries.check_by(by)
        queries.check_window(start, end)
    except queries.QueryInputError as exc:
        raise CliError(str(exc), 2) from None
    with _reader() as reader:
        document = reader.stats(start, end, by)
    if as_json:
        _print_json(document)
        return
    groups: list[dict[str, Any]] = document["groups"]
    window = f"{document['since'][:19]}Z → {document['until'][:19]}Z"
    if not groups:
        typer.echo(f"no audit events between {window}")
        return
    typer.echo(f"audit events by {by}, {window}")  # a title would wrap at the table's width
    table = Table()
    table.add_column(by)
    for column in ("events", "tasks", "events/s", "p50 ms", "p95 ms", "p99 ms"):
        table.add_column(column, justify="right")
    for g in groups:
        table.add_row(
            g["key"] or "(none)",
            f"{g['events']:,}",
            f"{g['tasks']:,}",
            _rate(g["rate_per_s"]),
            _ms(g["p50_ms"]),
            _ms(g["p95_ms"]),
            _ms(g["p99_ms"]),
        )
    Console(width=WIDTH).print(table)


# --- search ------------------------------------------------------------------------------------


@app.command("search")
def search(
    tenant: Annotated[str | None, typer.Option("--tenant", help="Only this tenant.")] = None,
    status: Annotated[
        str | None, typer.Option("--status", help="Only this status (SUCCEEDED, FAILED, …).")
    ] = None,
    since: Annotated[str | None, typer.Option("--since", help=WHEN_HELP)] = None,
    until: Annotated[str | None, typer.Option("--until", help=WHEN_HELP)] = None,
    contains: Annotated[
        str | None,
        typer.Option("--contains", help="Text in the output, the reason or any audit detail."),
    ] = None,
    limit: Annotated[int, typer.Option("--limit", help="At most this many rows.")] = 50,
    as_json: Annotated[bool, JSON] = False,
) -> None:
    """Finished tasks, newest first, filtered by tenant, status, time and text."""
    now = datetime.now(UTC)
    start = _when(since, "--since", now)
    end = _when(until, "--until", now)
    try:
        queries.check_limit(limit)
        if start is not None and end is not None:
            queries.check_window(start, end)
    except queries.QueryInputError as exc:
        raise CliError(str(exc), 2) from None
    with _reader() as reader:
        rows = reader.search(
            tenant=tenant, status=status, since=start, until=end, contains=contains, limit=limit
        )
    if as_json:
        _print_json(rows)
        return
    if not rows:
        typer.echo("no finished task matches")
        return
    table = Table(title=f"{len(rows)} task(s), newest first", title_justify="left")
    for column in ("completed (UTC)", "task_id", "gen", "tenant", "status", "ms", "matched"):
        table.add_column(column, justify="right" if column in ("gen", "ms") else "left")
    table.add_column("reason / output")
    for r in rows:
        text = r["reason"] or r["output"] or ""
        table.add_row(
            r["completed_at"][:19].replace("T", " "),
            r["task_id"],
            str(r["generation"]),
            r["tenant_id"],
            r["status"],
            f"{r['duration_ms']:,}",
            r["matched"],
            _clip(text, 60),
        )
    Console(width=WIDTH).print(table)
