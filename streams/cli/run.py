"""`octollm run`: the local all-in-one on the embedded defaults.

Today it brings up Kafka, creates the topics, produces the example tasks and reads them back.
The reflex layer, orchestrator and arms join it as they land (see the issues in docs/roadmap.md).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer

from octollm import jsonable
from octollm.cli.errors import CliError
from octollm.client import OctoClient
from octollm.kafka.admin import ensure_topics
from octollm.kafka.consumer import StartPosition
from octollm.settings import PROJECT_ROOT, get_settings
from octollm.supervisor import kafka
from octollm.tasks import TaskInputError, parse_jsonl
from octollm.topics import TASKS, topic_specs


def run(
    examples: Annotated[
        Path, typer.Option("--examples", help="JSONL tasks to send through the pipeline.")
    ] = PROJECT_ROOT / "examples" / "tasks.jsonl",
) -> None:
    """Start the local services, create topics, send the example tasks and read them back."""
    settings = get_settings()
    try:
        tasks = [p.task for p in parse_jsonl(examples.read_text(encoding="utf-8").splitlines())]
    except OSError as exc:
        raise CliError(f"cannot read {examples}: {exc.strerror}", exit_code=2) from None
    except TaskInputError as exc:
        raise CliError(f"{examples}: {exc}", exit_code=2) from None

    for line in kafka.up(settings, brokers=1).lines():
        typer.echo(line)
    created = ensure_topics(settings, topic_specs(settings))
    typer.echo(
        f"topics: {sum(o.action == 'created' for o in created)} created, {len(created)} total"
    )

    async def round_trip() -> int:
        since = datetime.now(UTC) - timedelta(seconds=1)
        async with OctoClient(settings, client_id="octollm-run") as octo:
            ids = set(await octo.submit_many(tasks))
            typer.echo(f"produced {len(ids)} example task(s) to {octo.tasks_topic}")
            back = 0
            start = StartPosition(kind="time", time=since)
            async for decoded in octo.records(TASKS, start=start, stop_at_end=True):
                if str(decoded.record["task_id"]) in ids:
                    back += 1
                    typer.echo(jsonable.dumps(decoded.record))
            return back

    back = asyncio.run(round_trip())
    if back != len(tasks):
        raise CliError(f"read back {back} of {len(tasks)} example tasks from {TASKS}")
    typer.echo(
        f"read back all {back} example task(s) from {TASKS}. Kafka keeps running: "
        "`octollm infra down` stops it."
    )
