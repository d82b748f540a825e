"""A small, PID-file based supervisor for local service processes.

Local services (Kafka nodes, later others) run detached from the CLI that started them, so a
later `octollm infra down` in another shell must find them again. We record each PID in a file
and only ever signal that PID, after checking `/proc/<pid>/cmdline` still looks like the
process we started: other people may run the same kind of service on the same machine, and a
recycled PID must never get our SIGTERM.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import psutil

from octollm.runtime.pids import pid_alive, rss_mb

if TYPE_CHECKING:
    from octollm.settings import Settings

__all__ = [
    "ManagedProcess",
    "absolute_dirs",
    "pid_alive",
    "port_in_use",
    "rss_mb",
    "wait_until",
]


def absolute_dirs(settings: Settings) -> Settings:
    """The settings with absolute data and cache dirs: services run with their own cwd, and
    PID matching compares the paths in their command lines."""
    data_dir = settings.data_dir.expanduser().resolve()
    cache_dir = settings.cache_dir.expanduser().resolve()
    if data_dir == settings.data_dir and cache_dir == settings.cache_dir:
        return settings
    return settings.model_copy(update={"data_dir": data_dir, "cache_dir": cache_dir})


def _cmdline(pid: int) -> list[str]:
    """The argv of `pid` ([] if it is gone or cannot be read)."""
    try:
        return list(psutil.Process(pid).cmdline())
    except psutil.Error:
        return []


def _settled_cmdline(pid: int, patience: float = 2.0) -> list[str]:
    """The command line of `pid`, waiting out an execve in progress.

    Popen (vfork) returns while the kernel is still building the new program's stack, and in
    that window /proc/<pid>/cmdline reads empty: without this wait a process we just started
    would look like a stranger, its pid file would be dropped and the process orphaned.
    """
    deadline = time.monotonic() + patience
    while True:
        cmdline = _cmdline(pid)
        if cmdline or time.monotonic() >= deadline or not pid_alive(pid):
            return cmdline
        time.sleep(0.01)


class ManagedProcess:
    """One detached process identified by `name`, with its PID in `run_dir/<name>.pid`.

    `marker` (default: the last argument of `argv`, usually a config path unique to this
    instance) must appear in the live process's command line for us to treat it as ours.
    """

    def __init__(
        self,
        name: str,
        run_dir: Path,
        argv: list[str],
        *,
        log_file: Path,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        marker: str | None = None,
    ) -> None:
        if not argv:
            raise ValueError("argv must not be empty")
        self.name = name
        self.run_dir = run_dir
        self.argv = list(argv)
        self.log_file = log_file
        self.env = env
        self.cwd = cwd
        self.marker = marker if marker is not None else argv[-1]
        self._popen: subprocess.Popen[bytes] | None = None

    @property
    def pid_file(self) -> Path:
        return self.run_dir / f"{self.name}.pid"

    def _recorded_pid(self) -> int | None:
        try:
            text = self.pid_file.read_text().strip()
        except FileNotFoundError:
            return None
        try:
            return int(text)
        except ValueError:
            return None

    def _is_ours(self, pid: int) -> bool:
        """The live process `pid` was started from our argv (guards against PID reuse)."""
        if not pid_alive(pid):
            return False
        cmdline = _settled_cmdline(pid)
        if not cmdline:
            return False  # a kernel thread, or a process that is exiting
        exe = os.path.basename(self.argv[0])
        exe_matches = any(os.path.basename(part) == exe for part in cmdline[:2])
        return exe_matches and any(self.marker in part for part in cmdline)

    def running_pid(self) -> int | None:
        """The PID of our process if it is alive; a stale pid file is removed."""
        pid = self._recorded_pid()
        if pid is None:
            if self.pid_file.exists():  # unreadable content
                self.pid_file.unlink(missing_ok=True)
            return None
        if self._is_ours(pid):
            return pid
        self._reap()
        self.pid_file.unlink(missing_ok=True)
        return None

    def start(self) -> int:
        """Start detached (own session, so a Ctrl-C in the CLI does not reach it); return its PID.

        Output goes to `log_file` (appended), stdin is closed. Starting while already running
        is an error: callers decide whether that means "already up".
        """
        existing = self.running_pid()
        if existing is not None:
            raise RuntimeError(f"{self.name} is already running (pid {existing})")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        env = None if self.env is None else {**os.environ, **self.env}
        with self.log_file.open("ab") as log:
            # A header per start, so a log tail shows where the latest run begins.
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            log.write(f"--- {stamp} starting {self.name} ---\n".encode())
            log.flush()
            self._popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.cwd,
                start_new_session=True,
                close_fds=True,
            )
        tmp = self.pid_file.with_suffix(".pid.tmp")
        tmp.write_text(f"{self._popen.pid}\n")
        tmp.replace(self.pid_file)
        _settled_cmdline(self._popen.pid)  # return once the new program is in place
        return self._popen.pid

    def exit_code(self) -> int | None:
        """The exit status if this object started the process and it has exited, else None."""
        return None if self._popen is None else self._popen.poll()

    def _reap(self) -> None:
        # A child we started ourselves stays a zombie until waited for.
        if self._popen is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._popen.wait(timeout=0)

    def stop(self, timeout: float = 30.0) -> bool:
        """SIGTERM the recorded PID, SIGKILL after `timeout`; False if nothing was running."""
        pid = self.running_pid()
        if pid is None and self._popen is not None and self._popen.poll() is None:
            pid = self._popen.pid  # our own child, certainly ours even without a pid file
        if pid is None:
            return False
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._reap()
            if not pid_alive(pid):
                break
            time.sleep(0.05)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            kill_deadline = time.monotonic() + 10.0
            while pid_alive(pid) and time.monotonic() < kill_deadline:
                self._reap()
                time.sleep(0.05)
        self._reap()
        self.pid_file.unlink(missing_ok=True)
        return True

    def kill(self) -> bool:
        """SIGKILL at once (a crash, for reliability tests); False if nothing was running."""
        return self.stop(timeout=0.0)


def port_in_use(host: str, port: int) -> bool:
    """True if something already holds `host:port`, so a server's bind() would fail.

    SO_REUSEADDR like the JVM's server sockets, so connections in TIME_WAIT left by a server we
    just stopped do not count as "in use", while any listener (or plain bound socket) does.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def wait_until(
    predicate: Callable[[], bool], *, timeout: float, interval: float = 0.2, what: str
) -> None:
    """Poll `predicate` until it is true; raise TimeoutError naming `what` when time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)
