"""`octollm exec [--timeout S] -- CMD ...`: run a command in the executor's sandbox, print the
result as JSON, so people can try the policy from the shell (docs/executor.md).

Exit 0 whenever the command ran, even if it failed or a limit fired: the JSON says how. Exit 2,
with one line, when the arguments are bad or the policy refuses the command.
Standard input is passed on when it is not a terminal (`echo hi | octollm exec -- wc -l`).
"""

from __future__ import annotations

import asyncio
import sys
from typing import Annotated

import typer

from octollm.cli.errors import CliError
from octollm.sandbox import Sandbox, SandboxPolicy, SandboxRefused
from octollm.settings import get_settings


def exec_(
    command: Annotated[
        list[str],
        typer.Argument(help="The command and its arguments, after `--`.", show_default=False),
    ],
    timeout: Annotated[
        float | None,
        typer.Option("--timeout", min=0.001, help="Wall-clock seconds (default from settings)."),
    ] = None,
) -> None:
    """Run CMD in the sandbox (allow-listed commands only) and print its result as JSON."""
    policy = SandboxPolicy.from_settings(get_settings())
    stdin = "" if sys.stdin is None or sys.stdin.isatty() else sys.stdin.read()
    try:
        result = asyncio.run(Sandbox(policy).run(command, stdin=stdin, timeout_s=timeout))
    except SandboxRefused as exc:
        raise CliError(f"refused: {exc.reason}", exit_code=2) from exc
    typer.echo(result.to_json())
