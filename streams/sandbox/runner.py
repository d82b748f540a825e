"""`Sandbox`: run one program under a `SandboxPolicy` and report a `SandboxResult`.

The parent side: make the work dir, start the launcher (`_launcher.py`) in its own session,
feed stdin, read stdout/stderr with caps, enforce the wall clock by killing the whole process
group, reap with `wait4` for the rusage, name the limit that fired, remove the work dir.
The blocking part runs in a worker thread, so the event loop of an arm is never held.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from octollm.sandbox.policy import SANDBOX_PATH, SandboxPolicy, SandboxRefused, check_files
from octollm.sandbox.result import Limit, SandboxResult

__all__ = ["Sandbox"]

log = logging.getLogger("octollm.sandbox")

LAUNCHER = str(Path(__file__).with_name("_launcher.py"))
MAIN_FILE = "main.py"
_READ = 64 * 1024
_UID_SPAN = 4096
# What a program prints when a limit refuses it something (the limit itself sends no signal).
_HINTS: tuple[tuple[Limit, tuple[str, ...]], ...] = (
    ("memory", ("MemoryError", "Cannot allocate memory", "std::bad_alloc", "out of memory")),
    ("file_size", ("File too large", "No space left on device")),
    ("processes", ("Resource temporarily unavailable", "BlockingIOError", "fork: retry")),
)


@dataclass
class _Captured:
    limit: int
    data: bytearray
    total: int = 0

    def add(self, chunk: bytes) -> None:
        self.total += len(chunk)
        room = self.limit - len(self.data)
        if room > 0:
            self.data += chunk[:room]

    @property
    def truncated(self) -> bool:
        return self.total > len(self.data)

    def text(self) -> str:
        return self.data.decode("utf-8", errors="replace")


class Sandbox:
    """Runs programs under one policy; cheap to make, safe to share between tasks."""

    _isolation: tuple[bool, str] | None = None  # probed once per process

    def __init__(self, policy: SandboxPolicy | None = None) -> None:
        self.policy = policy or SandboxPolicy()

    async def run_python(
        self,
        code: str,
        *,
        stdin: str = "",
        timeout_s: float | None = None,
        files: dict[str, str] | None = None,
        task_id: str | None = None,
    ) -> SandboxResult:
        """Run `code` as `main.py` with the policy's python3; `files` are importable beside it.

        `-E -s` (no PYTHON* variables, no user site) rather than `-I`, which would also drop the
        script's directory from sys.path, so `import helper` of a given file would fail."""
        files = dict(check_files(files))
        if MAIN_FILE in files:
            raise SandboxRefused(f"files must not contain {MAIN_FILE!r}: the code is written there")
        files[MAIN_FILE] = code
        return await self.run(
            [self.policy.python, "-E", "-s", MAIN_FILE],
            stdin=stdin,
            timeout_s=timeout_s,
            files=files,
            task_id=task_id,
        )

    async def run(
        self,
        argv: list[str],
        *,
        stdin: str = "",
        timeout_s: float | None = None,
        files: dict[str, str] | None = None,
        task_id: str | None = None,
    ) -> SandboxResult:
        """Run `argv` (its first item allow-listed) in a fresh work dir; SandboxRefused if the
        policy refuses it. Never raises for what the program does: the result says."""
        exe = self.policy.resolve(argv)
        checked = check_files(files)
        timeout = self.policy.timeout(timeout_s)
        isolated, why = await self.network_isolation()
        if not isolated and self.policy.require_network_isolation:
            raise SandboxRefused(f"no network isolation on this machine ({why}); refusing to run")
        result = await asyncio.to_thread(
            self._run_blocking, exe, list(argv), stdin, timeout, checked, isolated
        )
        log.info(
            "sandbox ran task_id=%s cmd=%s exit=%s signal=%s limit=%s ms=%.0f peak_kb=%d",
            task_id,
            argv[0],
            result.exit_code,
            result.signal,
            result.limit,
            result.duration_ms,
            result.peak_memory_kb,
            extra={"task_id": task_id, "component": "sandbox"},
        )
        return result

    async def network_isolation(self) -> tuple[bool, str]:
        """Whether this process can give a child its own network namespace (probed once)."""
        if Sandbox._isolation is None:
            Sandbox._isolation = await asyncio.to_thread(_probe_isolation)
        return Sandbox._isolation

    # --- the blocking part -------------------------------------------------------------------

    def _run_blocking(
        self,
        exe: str,
        argv: list[str],
        stdin: str,
        timeout: float,
        files: dict[str, str],
        isolated: bool,
    ) -> SandboxResult:
        policy = self.policy
        root = os.geteuid() == 0
        # A uid of its own per run: RLIMIT_NPROC counts per uid, so one run's fork bomb cannot
        # starve another's, and runs cannot signal or read each other.
        uid = policy.uid_base + secrets.randbelow(_UID_SPAN) if root else os.getuid()
        # Under /tmp, not $TMPDIR: the launcher's private /tmp recreates it in the program's view.
        workdir = tempfile.mkdtemp(prefix="octo-sbx-", dir="/tmp")
        try:
            _populate(workdir, files, uid if root else None, policy.gid if root else None)
            return self._launch(exe, argv, stdin, timeout, workdir, uid, isolated)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    def _launch(
        self,
        exe: str,
        argv: list[str],
        stdin: str,
        timeout: float,
        workdir: str,
        uid: int,
        isolated: bool,
    ) -> SandboxResult:
        policy = self.policy
        status_r, status_w = os.pipe()
        spec = {
            "status_fd": status_w,
            "netns": isolated,
            "pidns": policy.pid_namespace,
            "private_dirs": list(policy.private_dirs),
            "tmp_mb": policy.tmp_mb,
            "uid": uid,
            "gid": policy.gid,
            "cwd": workdir,
            "exe": exe,
            "argv": argv,
            "env": {
                "PATH": SANDBOX_PATH,
                "LANG": "C.UTF-8",
                "HOME": workdir,
                "TMPDIR": workdir,
                **policy.extra_env,
            },
            "limits": {
                "cpu_s": policy.cpu_s,
                "memory_bytes": policy.memory_mb * 1024 * 1024,
                "file_bytes": policy.file_mb * 1024 * 1024,
                "open_files": policy.open_files,
                "processes": policy.processes,
            },
        }
        began = time.monotonic()
        try:
            proc = subprocess.Popen(
                [sys.executable, "-I", "-S", LAUNCHER, json.dumps(spec)],
                stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                pass_fds=(status_w,),
                start_new_session=True,  # its own process group: one killpg takes the tree
                cwd=workdir,
                env={"PATH": SANDBOX_PATH, "LANG": "C.UTF-8"},
            )
        finally:
            os.close(status_w)
        out = _Captured(policy.output_bytes, bytearray())
        err = _Captured(policy.output_bytes, bytearray())
        status = bytearray()
        try:
            limit = self._pump(proc, stdin.encode(), out, err, status_r, status, began + timeout)
        finally:
            os.close(status_r)
            # Kill the group whatever happened: a child left in the background dies too.
            _kill_group(proc.pid)
            proc.wait()
        duration_ms = (time.monotonic() - began) * 1000.0
        reports = _reports(bytes(status))
        for warning in (r["warning"] for r in reports if "warning" in r):
            log.warning("sandbox: %s", warning)
        failure = next((r for r in reports if "stage" in r), None)
        done = next((r for r in reports if "wstatus" in r), None)
        exit_code: int | None
        sig: str | None = None
        peak_kb = 0
        if failure is not None:  # the program never started
            exit_code = 125
            limit = limit or ("network" if failure["stage"] == "network" else None)
            err.add(f"sandbox: {failure['stage']}: {failure.get('error')}\n".encode())
        elif done is not None:
            code = os.waitstatus_to_exitcode(int(done["wstatus"]))
            exit_code, sig = (None, signal.Signals(-code).name) if code < 0 else (code, None)
            peak_kb = int(done["maxrss_kb"])
            if limit is None:
                limit = _which_limit(sig, float(done["cpu_s"]), policy, err.text())
        else:  # we killed it (timeout, output) before the launcher could report
            exit_code, sig = None, "SIGKILL"
        return SandboxResult(
            exit_code=exit_code,
            signal=sig,
            stdout=out.text(),
            stderr=err.text(),
            stdout_truncated=out.truncated,
            stderr_truncated=err.truncated,
            duration_ms=round(duration_ms, 2),
            peak_memory_kb=peak_kb,
            limit=limit,
            network_isolated=isolated,
        )

    def _pump(
        self,
        proc: subprocess.Popen[bytes],
        stdin: bytes,
        out: _Captured,
        err: _Captured,
        status_fd: int,
        status: bytearray,
        deadline: float,
    ) -> Limit | None:
        """Move bytes until the launcher has reported and the outputs are closed; the limit
        that stopped the program early, if any."""
        assert proc.stdout is not None and proc.stderr is not None
        sel = selectors.DefaultSelector()
        sinks = {proc.stdout.fileno(): out, proc.stderr.fileno(): err}
        for fd in sinks:
            sel.register(fd, selectors.EVENT_READ)
        sel.register(status_fd, selectors.EVENT_READ)
        pending = memoryview(stdin)
        stdin_fd = -1
        if proc.stdin is not None:
            stdin_fd = proc.stdin.fileno()
            os.set_blocking(stdin_fd, False)
            sel.register(stdin_fd, selectors.EVENT_WRITE)
        try:
            while any(k.fd != stdin_fd for k in sel.get_map().values()):
                left = deadline - time.monotonic()
                if left <= 0:
                    return "timeout"
                for key, _ in sel.select(left):
                    fd = key.fd
                    if fd == stdin_fd:
                        try:
                            pending = pending[os.write(fd, pending[:_READ]) :]
                        except BlockingIOError:
                            continue
                        except BrokenPipeError:  # the program stopped reading: fine
                            pending = pending[:0]
                        if not pending and proc.stdin is not None:
                            sel.unregister(fd)
                            proc.stdin.close()
                        continue
                    chunk = os.read(fd, _READ)
                    if chunk and fd == status_fd:
                        status += chunk
                    elif chunk:
                        sinks[fd].add(chunk)
                    else:
                        sel.unregister(fd)
                        if fd == status_fd:
                            # The launcher is gone, so the program has exited: whatever still
                            # holds its outputs open is a stray child. Kill it, keep reading.
                            _kill_group(proc.pid)
                if out.total + err.total > self.policy.output_kill_bytes:
                    return "output"
            return None
        finally:
            sel.close()
            if proc.stdin is not None and not proc.stdin.closed:
                with contextlib.suppress(OSError):
                    proc.stdin.close()

    def __repr__(self) -> str:
        return f"Sandbox({self.policy!r})"


def _populate(workdir: str, files: dict[str, str], uid: int | None, gid: int | None) -> None:
    for name, content in files.items():
        path = os.path.join(workdir, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.write(content)
    if uid is not None and gid is not None:
        # The work dir and its files belong to the run's uid alone (0700), so the program can
        # write there and no other run can look in.
        for dirpath, _dirs, filenames in os.walk(workdir):
            os.chown(dirpath, uid, gid)
            for name in filenames:
                os.chown(os.path.join(dirpath, name), uid, gid)
    os.chmod(workdir, 0o700)


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _reports(raw: bytes) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for line in raw.splitlines():
        with contextlib.suppress(ValueError):
            value = json.loads(line)
            if isinstance(value, dict):
                found.append(value)
    return found


def _which_limit(sig: str | None, cpu: float, policy: SandboxPolicy, stderr: str) -> Limit | None:
    if sig == "SIGXCPU" or (sig == "SIGKILL" and cpu >= policy.cpu_s - 0.05):
        return "cpu"
    if sig == "SIGXFSZ":
        return "file_size"
    for limit, hints in _HINTS:
        if any(h in stderr for h in hints):
            return limit
    return None


def _probe_isolation() -> tuple[bool, str]:
    """Run the launcher once with `true`: can it enter a new network namespace here?"""
    true = shutil.which("true", path=SANDBOX_PATH)
    if true is None:
        return False, "no `true` on the sandbox PATH to probe with"
    probe = Sandbox(SandboxPolicy(allowed_commands=("true",), wall_s=10.0))
    uid = os.getuid() if os.geteuid() != 0 else probe.policy.uid_base
    workdir = tempfile.mkdtemp(prefix="octo-sbx-probe-")
    try:
        _populate(workdir, {}, uid if os.geteuid() == 0 else None, probe.policy.gid)
        result = probe._launch(true, ["true"], "", 10.0, workdir, uid, True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if result.limit == "network":
        return False, result.stderr.strip().splitlines()[-1]
    if result.exit_code != 0:
        return False, f"probe exited {result.exit_code}: {result.stderr.strip()[:200]}"
    return True, "new network namespace"
