"""The worker processes of a local stack: reflex layer, orchestrator and one process per arm.

`octollm run` starts them as children with PID files under `<data_dir>/run/workers/` (so an
`octollm infra down` from another shell still finds them), restarts one that dies with a short
back-off, and stops them all, in reverse order, on the way out. Each worker is the same
`octollm worker …` command a user can run on its own; scaling out is running more of them.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from octollm.runtime.pids import rss_mb
from octollm.settings import Settings
from octollm.supervisor.process import ManagedProcess

__all__ = [
    "Worker",
    "WorkerStack",
    "python_worker_commands",
    "stop_recorded_workers",
    "worker_commands",
    "workers_dir",
]

#: A worker that dies is restarted after this many seconds, doubling per death, at most this
#: many times in a row before it is left down (and shown as failed).
RESTART_BACKOFF_S = 1.0
MAX_RESTARTS = 5


def workers_dir(settings: Settings) -> Path:
    return Path(settings.data_dir).resolve() / "run" / "workers"


def worker_commands(settings: Settings, arms: list[str]) -> dict[str, list[str]]:
    """Worker name → argv: the reflex layer first, then the orchestrator, every arm, the audit
    sink.

    The reflex layer is the Rust binary itself (what `octollm worker reflex` execs), so its PID
    file names the binary; the others are `python -m octollm worker …`.
    """
    from octollm.runtime.reflex import reflex_run_argv

    return {"reflex": reflex_run_argv(settings), **python_worker_commands(arms)}


def python_worker_commands(arms: list[str]) -> dict[str, list[str]]:
    """The orchestrator, one worker per arm and the audit sink: `python -m octollm worker …`."""
    base = [sys.executable, "-m", "octollm", "worker"]
    commands = {"orchestrator": [*base, "orchestrator"]}
    for arm in arms:
        commands[f"arm.{arm}"] = [*base, "arm", arm]
    commands["audit"] = [*base, "audit"]
    return commands


@dataclass
class Worker:
    name: str
    process: ManagedProcess
    restarts: int = 0
    failed: bool = False
    last_exit: int | None = None
    _next_start: float = field(default=0.0, repr=False)

    @property
    def pid(self) -> int | None:
        return self.process.running_pid()

    def rss_mb(self) -> float | None:
        pid = self.pid
        return None if pid is None else rss_mb(pid)

    @property
    def state(self) -> str:
        if self.failed:
            return f"failed (exit {self.last_exit})"
        if self.pid is not None:
            return "running"
        return "restarting" if self.restarts else "stopped"


class WorkerStack:
    """Start, watch and stop a set of `octollm worker` processes."""

    def __init__(self, settings: Settings, commands: dict[str, list[str]]) -> None:
        self.settings = settings
        run_dir = workers_dir(settings)
        logs = Path(settings.data_dir).resolve() / "logs"
        env = {
            "OCTO_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
            # what the Faust changelogs and any topic a worker creates are replicated with
            "OCTO_REPLICATION_FACTOR": str(settings.replication_factor),
            "OCTO_MIN_INSYNC_REPLICAS": str(settings.min_insync_replicas),
            "PYTHONUNBUFFERED": "1",
        }
        self.workers = [
            Worker(
                name,
                ManagedProcess(
                    name,
                    run_dir,
                    argv,
                    log_file=logs / f"{name}.log",
                    env=env,
                    cwd=Path.cwd(),
                    # the reflex binary's last argument is the (maybe empty) topic prefix
                    marker=settings.bootstrap_servers if name == "reflex" else argv[-1],
                ),
            )
            for name, argv in commands.items()
        ]

    def start(self) -> list[str]:
        """Start every worker that is not already running; one line per worker."""
        lines = []
        for w in self.workers:
            pid = w.pid
            if pid is not None:
                lines.append(f"{w.name}: already running (pid {pid})")
                continue
            pid = w.process.start()
            lines.append(f"{w.name}: started (pid {pid}, log {w.process.log_file})")
        return lines

    def watch(self) -> list[str]:
        """Restart workers that died (with back-off); returns one line per event."""
        events = []
        now = time.monotonic()
        for w in self.workers:
            if w.failed or w.pid is not None:
                continue
            code = w.process.exit_code()
            if w._next_start == 0.0:
                w.last_exit = code
                if w.restarts >= MAX_RESTARTS:
                    w.failed = True
                    events.append(
                        f"{w.name}: exited ({code}) {w.restarts + 1} times; left down, "
                        f"see {w.process.log_file}"
                    )
                    continue
                w._next_start = now + RESTART_BACKOFF_S * 2**w.restarts
                events.append(f"{w.name}: exited ({code}); restarting")
            elif now >= w._next_start:
                w.restarts += 1
                w._next_start = 0.0
                w.process.start()
        return events

    def stop(self, timeout: float = 20.0) -> list[str]:
        """SIGTERM every worker (SIGKILL after `timeout`), downstream ones first."""
        lines = []
        for w in reversed(self.workers):
            if w.process.stop(timeout=timeout):
                lines.append(f"{w.name}: stopped")
        return lines


def stop_recorded_workers(settings: Settings, arms: list[str]) -> list[str]:
    """Stop workers a previous `octollm run` left behind (found by their PID files)."""
    from octollm.runtime.reflex import ReflexError

    if not workers_dir(settings).is_dir():
        return []
    try:
        commands = worker_commands(settings, arms)
    except ReflexError:  # no binary: no reflex worker can be running from this checkout
        commands = python_worker_commands(arms)
    return WorkerStack(settings, commands).stop()
