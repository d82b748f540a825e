"""`octollm produce`: JSONL tasks in, Avro records on Kafka, task ids out.

Every line is validated before anything is sent, so a bad file sends nothing.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from octollm.cli.errors import CliError
from octollm.codec import Codec
from octollm.kafka.admin import partitions_of
from octollm.kafka.producer import Producer
from octollm.settings import WireFormat, get_settings
from octollm.tasks import TaskInputError, parse_jsonl
from octollm.topics import TASKS, full_name


def produce(
    file: Annotated[
        str, typer.Option("--file", "-f", help="JSONL file of tasks, one per line; '-' for stdin.")
    ] = "-",
    topic: Annotated[
        str, typer.Option("--topic", "-t", help="Topic name (the environment prefix is added).")
    ] = TASKS,
    wire_format: Annotated[
        WireFormat | None,
        typer.Option("--format", help="Wire format; default from OCTO_WIRE_FORMAT."),
    ] = None,
) -> None:
    """Validate a JSONL file of tasks and produce them, keyed by task_id; print the ids."""
    settings = get_settings()
    fmt = wire_format or settings.wire_format
    if fmt is WireFormat.CONFLUENT and not settings.schema_registry_url:
        raise CliError("--format confluent needs OCTO_SCHEMA_REGISTRY_URL", exit_code=2)
    try:
        text = sys.stdin.read() if file == "-" else Path(file).read_text(encoding="utf-8")
    except OSError as exc:
        raise CliError(f"cannot read {file}: {exc.strerror}", exit_code=2) from None
    try:
        tasks = [parsed.task for parsed in parse_jsonl(text.splitlines())]
    except TaskInputError as exc:
        raise CliError(f"{file}: {exc}; nothing was sent", exit_code=2) from None
    if not tasks:
        raise CliError(f"{file}: no tasks found; nothing was sent", exit_code=2)

    name = full_name(settings, topic)
    partitions_of(settings, name)  # fail fast, before encoding, if the broker or topic is missing
    codec = Codec(wire_format=fmt, registry_url=settings.schema_registry_url)
    producer = Producer(settings, client_id="octollm-cli")
    for task in tasks:
        producer.produce(
            name,
            codec.encode(task, topic=name),
            key=str(task.task_id),
        )
    producer.flush()
    for task in tasks:
        typer.echo(str(task.task_id))
    typer.echo(f"produced {len(tasks)} task(s) to {name}", err=True)
