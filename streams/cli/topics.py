"""`octollm topics`: create the pipeline's topics (idempotent) and list them."""

from __future__ import annotations

import typer

from octollm.kafka.admin import cluster_metadata, ensure_topics
from octollm.settings import get_settings
from octollm.topics import full_name, topic_specs

app = typer.Typer(help="Create and list the pipeline's topics.", no_args_is_help=True)


@app.command()
def create() -> None:
    """Create every topic the pipeline uses; topics that exist are reported, not changed."""
    settings = get_settings()
    outcomes = ensure_topics(settings, topic_specs(settings))
    for o in outcomes:
        typer.echo(
            f"{o.action:8} {o.name}  "
            f"(partitions={o.partitions}, replication={o.replication_factor})"
        )
    created = sum(o.action == "created" for o in outcomes)
    typer.echo(f"{created} created, {len(outcomes) - created} already existed")


@app.command(name="list")
def list_() -> None:
    """Show the pipeline's topics and whether each exists on the cluster."""
    settings = get_settings()
    existing = cluster_metadata(settings).topics
    for spec in topic_specs(settings):
        name = full_name(settings, spec.name)
        info = existing.get(name)
        state = f"{len(info.partitions)} partitions" if info else "missing"
        typer.echo(f"{name:40} {state:15} {spec.purpose}")
