"""Entry point of the `octollm` command.

Bad arguments print one line (`octollm: error: ...`) and exit 2, like the rest of our errors;
click's multi-line usage box is reserved for `--help`.
"""

from __future__ import annotations

import logging
import os
import sys

import click
import typer
from pydantic import ValidationError

from octollm import __version__
from octollm.cli.errors import CliError
from octollm.kafka.exceptions import KafkaClientError
from octollm.supervisor.errors import InfraError

app = typer.Typer(
    name="octollm",
    help="Event-driven LLM task orchestration on Kafka.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.command()
def version() -> None:
    """Print the installed OctoLLM version."""
    typer.echo(f"octollm {__version__}")


_registered = False


def _register() -> None:
    # Imported here so `octollm version` stays fast; each command group is one module.
    global _registered
    if _registered:
        return
    _registered = True
    from octollm.cli import (
        audit,
        dlq,
        infra,
        produce,
        replay,
        retrieval,
        run,
        status,
        tail,
        topics,
        worker,
    )
    from octollm.cli import exec as exec_cli

    app.add_typer(infra.app, name="infra")
    app.add_typer(topics.app, name="topics")
    app.command(name="produce")(produce.produce)
    app.command(name="tail")(tail.tail)
    app.command(name="run")(run.run)
    app.add_typer(worker.app, name="worker")
    app.command(name="exec")(exec_cli.exec_)
    app.command(name="ingest")(retrieval.ingest)
    app.command(name="search")(retrieval.search)
    app.add_typer(audit.app, name="audit")
    app.command(name="replay")(replay.replay)
    app.command(name="reprocess")(replay.reprocess)
    app.add_typer(dlq.app, name="dlq")
    app.command(name="status")(status.status)


def _configure_logging() -> None:
    """Warnings and errors as one line each; librdkafka's retry chatter only with OCTO_LOG_LEVEL.

    A command that cannot reach a broker says so itself, once, in one line.
    """
    level = os.environ.get("OCTO_LOG_LEVEL", "WARNING").upper()
    logging.basicConfig(level=level, format="octollm: %(levelname)s %(name)s: %(message)s")
    if "OCTO_LOG_LEVEL" not in os.environ:
        logging.getLogger("octollm.librdkafka").setLevel(logging.CRITICAL)


def main(argv: list[str] | None = None) -> None:
    _configure_logging()
    _register()
    try:
        app(args=argv, prog_name="octollm", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        typer.echo("octollm: aborted", err=True)
        sys.exit(130)
    except click.UsageError as exc:
        where = f" (in '{exc.ctx.command_path}')" if exc.ctx and exc.ctx.command_path else ""
        typer.echo(f"octollm: error: {exc.format_message()}{where}", err=True)
        sys.exit(2)
    except CliError as exc:
        typer.echo(f"octollm: error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KafkaClientError as exc:
        typer.echo(f"octollm: error: {exc}", err=True)
        sys.exit(1)
    except InfraError as exc:  # from any command that provisions a local service
        line, *rest = str(exc).splitlines() or [type(exc).__name__]
        if rest:
            logging.getLogger("octollm.cli").debug("%s", "\n".join(rest))
            line += f" (+{len(rest)} more line(s) with OCTO_LOG_LEVEL=DEBUG)"
        typer.echo(f"octollm: error: {line}", err=True)
        sys.exit(1)
    except ValidationError as exc:  # a bad OCTO_* variable or config file entry
        first = exc.errors()[0]
        loc = [str(p).upper() for p in first["loc"]]
        # a nested setting's variable joins its path with "__" (OCTO_LLM__ARMS__JUDGE__URL)
        name = f"setting OCTO_{'__'.join(loc)}" if loc else "settings"
        typer.echo(f"octollm: error: {name}: {first['msg']}", err=True)
        sys.exit(2)
