"""`octollm infra`: run the local services on 127.0.0.1: a real Kafka (KRaft, 1 or 3 nodes; see
docs/kafka.md) and the local LLM server (llama.cpp, OpenAI API; see docs/llm.md)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from octollm.cli.errors import CliError
from octollm.settings import Settings, get_settings
from octollm.supervisor import kafka, llm
from octollm.supervisor.stack import stop_recorded_workers

app = typer.Typer(
    help="Run the local services on 127.0.0.1: the Kafka cluster (Apache Kafka in KRaft mode, "
    "no Docker) and the LLM server (llama.cpp's OpenAI-compatible server).",
    no_args_is_help=True,
)


DataDirOption = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        help="Where Kafka data, logs and pid files live (default: OCTO_DATA_DIR or ./.data).",
        file_okay=False,
    ),
]
BrokersOption = Annotated[
    int | None,
    typer.Option(
        "--brokers",
        help="Number of nodes: 1, or 3 for replication tests (default: what the data dir has, "
        "else 1).",
    ),
]
NoLLMOption = Annotated[
    bool,
    typer.Option(
        "--no-llm",
        help="Do not start the local LLM server (skipped anyway when OCTO_LLM_BASE_URL points "
        "at another server).",
    ),
]


def _settings(data_dir: Path | None) -> Settings:
    settings = get_settings()  # a bad OCTO_* value is reported in one line by main()
    if data_dir is not None:
        settings = settings.model_copy(update={"data_dir": data_dir.expanduser().resolve()})
    return settings


@app.command()
def up(
    brokers: BrokersOption = None, data_dir: DataDirOption = None, no_llm: NoLLMOption = False
) -> None:
    """Start the cluster and the LLM server (idempotent) and wait until they answer."""
    if brokers is not None and brokers not in kafka.ALLOWED_BROKER_COUNTS:
        # A usage error (exit 2) raised as CliError, so it prints one line like the others.
        raise CliError(f"invalid value for '--brokers': {brokers} (must be 1 or 3)", exit_code=2)
    settings = _settings(data_dir)
    if not kafka.jars_cached(settings):
        typer.echo(
            f"kafka: fetching Apache Kafka {settings.kafka_version} jars from Maven Central into "
            f"{kafka.jars_dir(settings)} (first run only)..."
        )
    try:
        result = kafka.up(settings, brokers)
    except TimeoutError as exc:  # InfraError is reported by main() like every command's
        raise CliError(str(exc), exit_code=1) from exc
    for line in result.lines():
        typer.echo(line)
    if not no_llm:
        _llm_up(settings)


def _llm_up(settings: Settings) -> None:
    if not settings.llm_is_local:
        typer.echo(f"llm: using {settings.llm_base_url} (OCTO_LLM_BASE_URL); no local server")
        return
    before = llm.llm_status(settings, probe_timeout=1.0)
    url = llm.start_llm(settings)
    st = llm.llm_status(settings, probe_timeout=1.0)
    model = Path(st.model_path).name if st.model_path else settings.llm_model
    verb = "already running" if before.running and before.pid == st.pid else "started"
    typer.echo(f"llm server {verb} (pid {st.pid}) at {url}, model {model}; log {st.log_file}")


@app.command()
def fetch() -> None:
    """Download the Kafka jars from Maven Central into the cache (no-op when already there)."""
    settings = _settings(None)
    cached = kafka.jars_cached(settings)
    if not cached:
        typer.echo(
            f"kafka: fetching Apache Kafka {settings.kafka_version} jars from Maven Central "
            f"into {kafka.jars_dir(settings)}..."
        )
    libs = kafka.ensure_jars(settings)
    jars = len(list(libs.glob("*.jar")))
    typer.echo(f"kafka: {jars} jars {'already ' if cached else ''}in {libs}")


@app.command()
def down(data_dir: DataDirOption = None) -> None:
    """Stop the workers a `octollm run` left behind, the LLM server and the cluster's nodes
    (only the processes recorded in our pid files)."""
    settings = _settings(data_dir)
    from octollm.arms import ARMS

    for line in stop_recorded_workers(settings, list(ARMS)):
        typer.echo(f"worker {line}")
    stopped = kafka.down(settings)
    if not stopped:
        typer.echo("kafka: not running")
    for node, pid in stopped:
        typer.echo(f"kafka node {node} stopped (pid {pid})")
    llm_pid = llm.stop_llm(settings)
    typer.echo(
        "llm server: not running" if llm_pid is None else f"llm server stopped (pid {llm_pid})"
    )


@app.command()
def status(
    data_dir: DataDirOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
) -> None:
    """Show each node's pid, ports, data dir and log files, whether the cluster answers, and
    the LLM server."""
    settings = _settings(data_dir)
    st = kafka.status(settings)
    llm_st = llm.llm_status(settings)
    if as_json:
        typer.echo(json.dumps({**st.to_dict(), "llm": llm_st.to_dict()}, indent=2))
        return
    _echo_kafka_status(st)
    _echo_llm_status(settings, llm_st)


def _echo_llm_status(settings: Settings, st: llm.LLMServerStatus) -> None:
    if not st.running:
        where = "" if settings.llm_is_local else f"; the client uses {settings.llm_base_url}"
        typer.echo(f"llm server: not running{where}")
        return
    health = "answering" if st.answering else "not answering"
    rss = f", rss {st.rss_mb:.0f} MB" if st.rss_mb is not None else ""
    typer.echo(f"llm server: running (pid {st.pid}{rss}), {health} at {st.url}")
    typer.echo(f"  model: {st.model_path}")
    typer.echo(f"  log: {st.log_file}")


def _echo_kafka_status(st: kafka.ClusterStatus) -> None:
    if not st.formatted and not st.nodes:
        typer.echo(f"kafka: no cluster in {st.data_dir} (run `octollm infra up`)")
        return
    running = sum(n.running for n in st.nodes)
    if st.answering:
        health = f"answering, {st.brokers_in_metadata} broker(s) in metadata"
    else:
        health = "not answering"
    typer.echo(
        f"kafka: {running}/{len(st.nodes)} node(s) running, {health}; "
        f"bootstrap servers {st.bootstrap_servers}"
    )
    for n in st.nodes:
        state = f"running (pid {n.pid})" if n.running else "stopped"
        typer.echo(
            f"  node {n.node}: {state}, client {kafka.HOST}:{n.client_port}, "
            f"controller {kafka.HOST}:{n.controller_port}"
        )
        typer.echo(f"    data: {n.data_dir}")
        typer.echo(f"    logs: {n.server_log} (stdout/stderr: {n.stdout_log})")


@app.command()
def reset(
    data_dir: DataDirOption = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Stop the cluster and delete its local data and logs (<data-dir>/kafka)."""
    settings = _settings(data_dir)
    target = kafka.kafka_dir(settings)
    if not yes:
        if not sys.stdin.isatty():
            raise CliError(
                f"reset deletes {target}; stdin is not a terminal to confirm, pass --yes",
                exit_code=1,
            )
        typer.confirm(f"Stop Kafka and delete {target}?", abort=True)
    removed = kafka.reset(settings)
    if any(path == target.resolve() for path in removed):
        typer.echo(f"kafka: deleted {target}")
    else:
        typer.echo(f"kafka: nothing to delete in {settings.data_dir}")
