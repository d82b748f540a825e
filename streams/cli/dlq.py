"""`octollm dlq list | show | retry`: look at dead letters, send them back (docs/operations.md)."""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from octollm import jsonable
from octollm.cli.errors import CliError
from octollm.ops.deadletters import (
    StoredDeadLetter,
    details,
    find_dead_letter,
    parse_id,
    parse_since,
    plan_retry,
    read_dead_letters,
    send_retries,
    summary,
)
from octollm.settings import get_settings

app = typer.Typer(help="Dead letters on octo.dlq: list, show, retry.", no_args_is_help=True)

JSON = typer.Option("--json", help="JSON instead of a table.")
REASON_HELP = "the error class exactly, or part of the reason (any case)."


def _since(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        return parse_since(text)
    except ValueError as exc:
        raise CliError(f"--since: {exc}", 2) from None


def _load(id_text: str) -> StoredDeadLetter:
    try:
        wanted = parse_id(id_text)
    except ValueError as exc:
        raise CliError(str(exc), 2) from None
    stored = find_dead_letter(get_settings(), wanted)
    if stored is None:
        raise CliError(f"no dead letter with id {wanted} on the DLQ", 1)
    return stored


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


@app.command("list")
def list_(
    since: Annotated[
        str | None,
        typer.Option(
            "--since", help="ISO-8601 time (…Z) or a duration back from now: 15m, 2h, 7d."
        ),
    ] = None,
    reason: Annotated[str | None, typer.Option("--reason", help="Only " + REASON_HELP)] = None,
    as_json: Annotated[bool, JSON] = False,
) -> None:
    """The dead letters, oldest first."""
    moment = _since(since)
    found = read_dead_letters(get_settings(), since=moment, reason=reason)
    if as_json:
        sys.stdout.write(jsonable.dumps([summary(s) for s in found]) + "\n")
        return
    table = Table(title=f"{len(found)} dead letter(s)", title_justify="left")
    for column in ("id", "when", "component", "origin", "error_class", "reason"):
        table.add_column(column, overflow="fold" if column == "id" else "ellipsis")
    for stored in found:
        row = summary(stored)
        origin = row["origin"]
        table.add_row(
            row["id"],
            row["when"][:19].replace("T", " "),
            row["component"],
            f"{origin['topic']}/{origin['partition']}@{origin['offset']}",
            row["error_class"],
            _clip(row["reason"], 60),
        )
    Console(width=200).print(table)


@app.command("show")
def show(
    dead_letter_id: Annotated[str, typer.Argument(metavar="ID", help="A dead letter id.")],
    as_json: Annotated[bool, JSON] = False,
) -> None:
    """Everything about one dead letter: origin, reason, key, headers and the payload."""
    info = details(_load(dead_letter_id))
    if as_json:
        sys.stdout.write(jsonable.dumps(info) + "\n")
        return
    origin = info["origin"]
    payload = info["payload"]
    lines = [
        f"id           {info['id']}",
        f"when         {info['when']}",
        f"component    {info['component']}",
        f"origin       {origin['topic']} partition {origin['partition']} offset {origin['offset']}",
        f"error_class  {info['error_class']}",
        f"reason       {info['reason']}",
        f"key          {info['key']}",
        "headers      " + (", ".join(f"{k}={v}" for k, v in info["headers"].items()) or "(none)"),
        f"payload      {payload['bytes']} bytes"
        + (" (first 256 shown)" if payload["truncated"] else ""),
        f"  hex        {payload['hex']}",
        f"  utf-8      {payload['utf8'] if payload['utf8'] is not None else '(not UTF-8)'}",
        f"dlq          partition {info['dlq']['partition']} offset {info['dlq']['offset']}",
    ]
    sys.stdout.write("\n".join(lines) + "\n")


@app.command("retry")
def retry(
    dead_letter_id: Annotated[
        str | None, typer.Argument(metavar="[ID]", help="The dead letter to resend.")
    ] = None,
    reason: Annotated[
        str | None,
        typer.Option("--reason", help="Resend every match: " + REASON_HELP),
    ] = None,
    fixed_file: Annotated[
        Path | None,
        typer.Option(
            "--fixed-file",
            help="Send this file's bytes instead of the original payload (one ID only).",
            exists=True,
            dir_okay=False,
            readable=True,
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would be sent; send nothing.")
    ] = False,
) -> None:
    """Resend dead letters to their original topic (key and headers kept, plus
    octo-dlq-retry-of), each recorded by an AuditEvent on octo.audit.v1."""
    if (dead_letter_id is None) == (reason is None):
        raise CliError("give either a dead letter ID or --reason, not both", 2)
    if fixed_file is not None and dead_letter_id is None:
        raise CliError("--fixed-file needs a single dead letter ID, not --reason", 2)
    fixed = fixed_file.read_bytes() if fixed_file is not None else None
    if dead_letter_id is not None:
        targets = [_load(dead_letter_id)]
    else:
        assert reason is not None
        targets = read_dead_letters(get_settings(), reason=reason)
        if not targets:
            raise CliError(f"no dead letter matches --reason {reason!r}", 1)
    retries = [plan_retry(stored, fixed=fixed) for stored in targets]
    verb = "would resend" if dry_run else "resent"
    if not dry_run:
        send_retries(get_settings(), retries)
    for r in retries:
        what = "fixed payload" if r.fixed else "original payload"
        typer.echo(
            f"{verb} {r.dead_letter.id} → {r.topic} ({what}, {len(r.value)} bytes; "
            f"audit event {r.audit.event_id})"
        )
    typer.echo(f"{len(retries)} dead letter(s) {verb}" + (" (dry run)" if dry_run else ""))
