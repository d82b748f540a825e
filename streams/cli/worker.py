"""`octollm worker orchestrator | arm <name> | reflex | audit`: one long-running worker each.

Each is a member of a Kafka consumer group, so starting more processes adds throughput. Each
stops cleanly on SIGTERM / SIGINT: Faust's worker commits what is done and leaves the group;
the reflex worker is the Rust binary itself (exec'd), which handles the signals on its own;
the audit sink stores and commits its current batch, then leaves the group.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Annotated

import typer

from octollm.cli.errors import CliError
from octollm.kafka.logs import throttle_connection_errors
from octollm.ops.endpoint import serve_faust_worker
from octollm.settings import Settings, get_settings

if TYPE_CHECKING:
    import faust

app = typer.Typer(help="Run one worker (a consumer group member) in the foreground.")

LOG_LEVEL = typer.Option("--log-level", help="Faust/worker log level (info, warning, debug).")


def _ensure_topics(settings: Settings) -> None:
    from octollm.kafka.admin import ensure_topics
    from octollm.topics import topic_specs

    # Idempotent, and a clear one-line error now if the broker is unreachable.
    ensure_topics(settings, topic_specs(settings))


def _run_faust(app: faust.App, log_level: str) -> None:
    from octollm.runtime.app import run_worker

    throttle_connection_errors()
    # Faust's worker owns the event loop and the signal handlers (SIGTERM/SIGINT: stop, commit,
    # leave the group) and exits the process when it stops.
    run_worker(app, log_level)


def _settings(**changes: object) -> Settings:
    """The process settings with this command's options (those given) on top."""
    given = {k: v for k, v in changes.items() if v is not None}
    return get_settings().model_copy(update=given)


@app.command("orchestrator")
def orchestrator(
    concurrency: Annotated[
        int | None,
        typer.Option("--concurrency", min=1, help="Agent instances per routed topic."),
    ] = None,
    web_port: Annotated[
        int | None, typer.Option("--web-port", help="Faust web server port on 127.0.0.1.")
    ] = None,
    log_level: Annotated[str, LOG_LEVEL] = "warning",
) -> None:
    """The orchestrator: plan, dispatch, judge, safety, exactly one result per task."""
    from octollm.arms import capabilities
    from octollm.orchestrator.agent import Orchestrator

    settings = _settings(worker_web_port=web_port, orchestrator_concurrency=concurrency)
    _ensure_topics(settings)
    orch = Orchestrator(settings, capabilities())
    orch.ensure_topics()
    serve_faust_worker(orch.app, settings, "orchestrator")
    _run_faust(orch.app, log_level)


@app.command("arm")
def arm(
    name: Annotated[str, typer.Argument(help="A registered arm, e.g. planner, judge.")],
    concurrency: Annotated[
        int | None, typer.Option("--concurrency", min=1, help="Requests handled at once.")
    ] = None,
    web_port: Annotated[
        int | None, typer.Option("--web-port", help="Faust web server port on 127.0.0.1.")
    ] = None,
    log_level: Annotated[str, LOG_LEVEL] = "warning",
) -> None:
    """One arm: consume its requests, answer on octo.arm.results."""
    from octollm.arms import ARMS, load_arm
    from octollm.runtime.arm import build_arm_app

    if name not in ARMS:
        raise CliError(f"unknown arm {name!r}; registered: {', '.join(sorted(ARMS))}", 2)
    settings = _settings(worker_web_port=web_port, arm_concurrency=concurrency)
    _ensure_topics(settings)
    arm_app = build_arm_app(settings, load_arm(name))
    serve_faust_worker(arm_app, settings, f"arm.{name}")
    _run_faust(arm_app, log_level)


@app.command("reflex")
def reflex(
    instance: Annotated[
        str | None, typer.Option("--instance", help="Distinct id per reflex process.")
    ] = None,
) -> None:
    """The Rust reflex layer's streaming path (`octollm-reflex run`), in this process."""
    from octollm.runtime.reflex import ReflexError, reflex_run_argv

    settings = get_settings()
    try:
        argv = reflex_run_argv(settings, instance=instance)
    except ReflexError as exc:
        raise CliError(str(exc), 1) from None
    _ensure_topics(settings)
    logging.shutdown()
    # exec: the binary becomes this process, so signals reach it directly and it exits cleanly.
    os.execv(argv[0], argv)


@app.command("audit")
def audit(log_level: Annotated[str, LOG_LEVEL] = "info") -> None:
    """The audit sink: audit events, results and dead letters into ClickHouse (docs/audit.md)."""
    import signal
    import threading

    from octollm.audit.endpoint import EndpointError, serve_in_thread
    from octollm.audit.sink import AuditSink
    from octollm.audit.store import AuditStoreError, open_store

    logging.getLogger("octollm.audit").setLevel(log_level.upper())
    throttle_connection_errors()
    settings = get_settings()
    _ensure_topics(settings)
    try:
        store = open_store(settings)  # migrates; with chDB this process now owns the data dir
    except AuditStoreError as exc:
        raise CliError(str(exc), 1) from None
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    # chDB has one owner: this process. Everyone else (the CLI) asks through the endpoint,
    # which also serves /metrics and /healthz. Without it the sink still stores.
    endpoint = None
    try:
        endpoint = serve_in_thread(store, settings)
    except EndpointError as exc:
        logging.getLogger("octollm.audit").warning("%s; queries go elsewhere", exc)
    try:
        AuditSink(settings, store).run(stop)
    finally:
        if endpoint is not None:
            endpoint.stop()
        store.close()
