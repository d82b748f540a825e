"""`octollm run`: the local all-in-one on the embedded defaults.

It starts (or reuses) the local services (Kafka, the local LLM server), creates the topics,
starts the reflex layer, the orchestrator and one worker per arm, sends the example tasks and
shows a one-screen live status (workers, results by status, the latest results) until Ctrl-C or
SIGTERM, then stops every worker and the services it started itself. `--once` ends as soon as
every example task has its terminal result (what the end-to-end tests and CI use).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from octollm import jsonable
from octollm.cli.errors import CliError
from octollm.client import OctoClient
from octollm.contracts.models import TaskRequest, TaskResult
from octollm.kafka.admin import ensure_topics
from octollm.kafka.consumer import StartPosition
from octollm.settings import PROJECT_ROOT, Settings, get_settings
from octollm.supervisor import kafka
from octollm.supervisor.stack import WorkerStack, worker_commands
from octollm.tasks import TaskInputError, parse_jsonl
from octollm.topics import TopicSpec, full_name, topic_specs

RECENT = 8  # latest results shown on the status screen


#: With --once, how long to wait for the audit sink to store the last steps.
AUDIT_CATCH_UP_S = 60.0


def _registered_arms() -> list[str]:
    from octollm.arms import ARMS

    return list(ARMS)


def _start_llm(settings: Settings, no_llm: bool) -> tuple[list[str], bool]:
    """Start the local LLM server unless told not to or pointed at another server.

    Returns the lines to print and whether this call started it (so we stop it on the way out).
    """
    if no_llm or not settings.llm_is_local:
        where = "skipped (--no-llm)" if no_llm else f"using {settings.llm_base_url}"
        return [f"llm: {where}"], False
    from octollm.supervisor import llm as llm_server

    was_running = llm_server.llm_status(settings).running
    url = llm_server.ensure_llm(settings)
    state = "already running" if was_running else "started"
    return [f"llm: {state} at {url}"], not was_running


def _summary(result: TaskResult, width: int = 100) -> str:
    text = (result.reason or result.output or "").replace("\n", " ")
    return text if len(text) <= width else text[: width - 1] + "…"


class Board:
    """What the status screen shows; also printed line by line when stdout is not a terminal."""

    def __init__(self, stack: WorkerStack, submitted: set[str]) -> None:
        self.stack = stack
        self.submitted = submitted
        self.results: dict[str, TaskResult] = {}
        self.recent: list[TaskResult] = []
        self.events: list[str] = []
        self.started = time.monotonic()

    def add(self, result: TaskResult) -> bool:
        """Record a result; False if this task already had one (a duplicate would show here)."""
        first = str(result.task_id) not in self.results
        self.results.setdefault(str(result.task_id), result)
        self.recent = [result, *self.recent][:RECENT]
        return first

    @property
    def pending(self) -> set[str]:
        return self.submitted - self.results.keys()

    def render(self) -> Group:
        workers = Table(title="workers", expand=True)
        for col in ("worker", "state", "pid", "RSS MB", "restarts"):
            workers.add_column(col)
        for w in self.stack.workers:
            rss = w.rss_mb()
            workers.add_row(
                w.name,
                w.state,
                str(w.pid or "-"),
                f"{rss:.0f}" if rss is not None else "-",
                str(w.restarts),
            )
        counts = Counter(str(r.status) for r in self.results.values())
        elapsed = time.monotonic() - self.started
        tasks = Table(title=f"tasks ({elapsed:.0f}s)", expand=True)
        tasks.add_column("submitted")
        tasks.add_column("pending")
        tasks.add_column("results by status")
        tasks.add_row(
            str(len(self.submitted)),
            str(len(self.pending)),
            ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "-",
        )
        recent = Table(title="latest results", expand=True)
        for col in ("task", "tenant", "status", "output / reason"):
            recent.add_column(col, overflow="fold")
        for r in self.recent:
            recent.add_row(str(r.task_id)[:8], r.tenant_id, str(r.status), _summary(r))
        parts: list[Table | str] = [workers, tasks, recent]
        parts += self.events[-3:]
        return Group(*parts)


@contextlib.contextmanager
def _stop_on_sigterm() -> Iterator[None]:
    """SIGTERM ends the run like Ctrl-C does (KeyboardInterrupt), so cleanup runs once."""

    def raise_interrupt(_sig: int, _frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


async def _serve(
    settings: Settings,
    stack: WorkerStack,
    tasks: list[TaskRequest],
    *,
    once: bool,
    timeout: float,
) -> Board:
    console = Console()
    live_screen = console.is_terminal and not once
    since = StartPosition(kind="time", time=datetime.now(UTC) - timedelta(seconds=1))
    async with OctoClient(settings, client_id="octollm-run") as octo:
        ids = await octo.submit_many(tasks) if tasks else []
        goals = {i: t.goal[:80] for i, t in zip(ids, tasks, strict=True)}
        board = Board(stack, set(ids))
        if ids:
            typer.echo(f"submitted {len(ids)} example task(s) to {octo.tasks_topic}")

        async def follow() -> None:
            async for result in octo.results(start=since):
                if board.add(result) and not live_screen:
                    typer.echo(
                        jsonable.dumps(
                            {
                                "task_id": str(result.task_id),
                                "tenant_id": result.tenant_id,
                                "goal": goals.get(str(result.task_id), ""),
                                "status": str(result.status),
                                "component": result.component,
                                "summary": _summary(result, 300),
                            }
                        )
                    )

        follower = asyncio.create_task(follow(), name="octollm-run-results")
        # Ctrl-C / SIGTERM end the loop below, so the reader and the client close in order
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        deadline = time.monotonic() + timeout
        live = Live(board.render(), console=console, auto_refresh=False) if live_screen else None
        try:
            if live is not None:
                live.start()
            while True:
                for event in stack.watch():
                    board.events.append(event)
                    if live is None:
                        typer.echo(f"worker {event}", err=True)
                if live is not None:
                    live.update(board.render(), refresh=True)
                if follower.done():
                    follower.result()  # surfaces the reader's error
                    raise CliError("the results reader stopped")
                if stop.is_set():
                    typer.echo("stopping (signal)")
                    break
                if once and not board.pending:
                    break
                if once and time.monotonic() > deadline:
                    missing = ", ".join(sorted(board.pending))
                    raise CliError(f"no result within {timeout:g}s for: {missing}")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.5)
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
            if live is not None:
                live.stop()
            follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await follower
    return board


def _wait_for_audit(settings: Settings, within_s: float) -> str:
    """With --once: let the audit sink store every step of the examples before it is stopped,
    so `octollm audit trace` answers right after the run."""
    from octollm.audit.sink import GROUP, SOURCE_TOPICS
    from octollm.kafka.admin import admin_client
    from octollm.ops.lag import behind

    admin = admin_client(settings)
    group = f"{settings.topic_prefix}{GROUP}"
    topics = [full_name(settings, t) for t in SOURCE_TOPICS]
    deadline = time.monotonic() + within_s
    left = -1
    while time.monotonic() < deadline:
        left = behind(settings, admin, group, topics, timeout=5.0)
        if left == 0:
            return "audit: every step stored (octollm audit trace TASK_ID shows one task)"
        time.sleep(0.5)
    return f"audit: {left} record(s) not stored yet; the sink stores them on its next start"


def run(
    examples: Annotated[
        Path, typer.Option("--examples", help="JSONL tasks to send through the pipeline.")
    ] = PROJECT_ROOT / "examples" / "tasks.jsonl",
    no_examples: Annotated[
        bool, typer.Option("--no-examples", help="Start the stack without sending examples.")
    ] = False,
    once: Annotated[
        bool,
        typer.Option("--once", help="Stop once every example task has its terminal result."),
    ] = False,
    timeout: Annotated[
        float, typer.Option("--timeout", min=1, help="With --once: seconds to wait for results.")
    ] = 600.0,
    no_llm: Annotated[
        bool, typer.Option("--no-llm", help="Do not start the local LLM server.")
    ] = False,
    brokers: Annotated[
        int | None,
        typer.Option(
            "--brokers",
            help="Local Kafka nodes, 1 or 3 (a KRaft cluster whose topics keep 3 replicas). "
            "Default: the cluster the data dir already holds (running or not), else 1.",
        ),
    ] = None,
) -> None:
    """Start everything locally, send the example tasks, show their results live."""
    if brokers is not None and brokers not in kafka.ALLOWED_BROKER_COUNTS:
        raise CliError(f"invalid value for '--brokers': {brokers} (must be 1 or 3)", exit_code=2)
    settings = get_settings()
    tasks: list[TaskRequest] = []
    if not no_examples:
        try:
            lines = examples.read_text(encoding="utf-8").splitlines()
            tasks = [p.task for p in parse_jsonl(lines)]
        except OSError as exc:
            raise CliError(f"cannot read {examples}: {exc.strerror}", exit_code=2) from None
        except TaskInputError as exc:
            raise CliError(f"{examples}: {exc}", exit_code=2) from None

    up = kafka.up(settings, brokers)
    for line in up.lines():
        typer.echo(line)
    settings = kafka.client_settings(settings, up)
    stack: WorkerStack | None = None
    llm_started = False
    board: Board | None = None
    try:
        llm_lines, llm_started = _start_llm(settings, no_llm)
        for line in llm_lines:
            typer.echo(line)
        created = ensure_topics(settings, topic_specs(settings))
        typer.echo(
            f"topics: {sum(o.action == 'created' for o in created)} created, {len(created)} total"
        )
        # The examples' reply topics stand for the callers' own topics: create them here so
        # the demo shows replies arriving (the pipeline itself never creates a caller's topic).
        replies = sorted({t.reply_topic for t in tasks if t.reply_topic})
        if replies:
            unprefixed = settings.model_copy(update={"topic_prefix": ""})
            ensure_topics(unprefixed, [TopicSpec(r, "reply topic of an example") for r in replies])
            typer.echo(f"reply topics: {', '.join(replies)}")
        if "retriever" in _registered_arms():
            # the sample corpus (examples/corpus), so a retrieval task works out of the box;
            # unchanged files are skipped, so this is quick after the first run
            from octollm.retrieval import ensure_sample_corpus

            report = ensure_sample_corpus(settings)
            if report is not None:
                typer.echo(
                    f"retrieval: sample corpus ready ({report.files} files, "
                    f"{report.skipped} unchanged, {report.chunks} chunks)"
                )
        stack = WorkerStack(settings, worker_commands(settings, _registered_arms()))
        for line in stack.start():
            typer.echo(line)
        with _stop_on_sigterm():
            try:
                board = asyncio.run(_serve(settings, stack, tasks, once=once, timeout=timeout))
                if once:
                    typer.echo(_wait_for_audit(settings, AUDIT_CATCH_UP_S))
            except KeyboardInterrupt:
                typer.echo("stopping (interrupted)")
    finally:
        if stack is not None:
            for line in stack.stop():
                typer.echo(line)
        if llm_started:
            from octollm.supervisor import llm as llm_server

            pid = llm_server.stop_llm(settings)
            if pid is not None:
                typer.echo(f"llm: stopped (pid {pid})")
        if up.started:
            for node, pid in kafka.down(settings):
                typer.echo(f"kafka node {node} stopped (pid {pid})")
    if board is not None and once:
        counts = Counter(str(r.status) for r in board.results.values())
        typer.echo(
            f"all {len(board.results)} task(s) answered: "
            + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
        )
    sys.stdout.flush()
