"""The Rust reflex binary (`octollm-reflex`): where it is, and one long-running `scan` process.

`reflex_binary()` is the single lookup every Python component uses (the safety guardian arm and
`octollm worker reflex`), so an override set once in `OCTO_REFLEX_BIN` reaches both.

`ScanProcess` keeps one `octollm-reflex scan` subprocess per worker and talks JSON lines to it
(protocol in docs/reflex.md): the safety guardian's PII, secret and injection findings come from
the very detectors the streaming reflex layer runs, never from a second copy of the patterns.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from octollm.contracts.schemas import schemas_dir
from octollm.settings import PROJECT_ROOT, Settings

__all__ = [
    "BINARY_NAME",
    "InjectionScan",
    "PiiSpan",
    "ReflexError",
    "ReflexNotBuilt",
    "ScanProcess",
    "ScanResult",
    "reflex_binary",
]

log = logging.getLogger("octollm.runtime.reflex")

BINARY_NAME = "octollm-reflex"
DEFAULT_CARGO_TARGET = Path.home() / ".cache" / "octollm" / "cargo-target"
#: One scanned text is one line on a pipe; asyncio's default 64 KiB line limit is too small for
#: a long answer, so allow lines up to this size.
MAX_LINE_BYTES = 32 * 1024 * 1024


class ReflexError(RuntimeError):
    """The reflex binary is missing, died, or answered something that is not a scan result."""


class ReflexNotBuilt(ReflexError, FileNotFoundError):
    """No `octollm-reflex` binary where we look; the message names the places and `make setup`."""


def _candidates(env: dict[str, str]) -> list[Path]:
    target = env.get("CARGO_TARGET_DIR")
    paths = [Path(target) / "release" / BINARY_NAME] if target else []
    paths.append(DEFAULT_CARGO_TARGET / "release" / BINARY_NAME)
    paths.append(PROJECT_ROOT / "reflex-layer" / "target" / "release" / BINARY_NAME)
    return paths


def reflex_binary(env: dict[str, str] | None = None) -> Path:
    """The `octollm-reflex` executable to run.

    Order: `OCTO_REFLEX_BIN` (taken as given: a wrong override is an error, not a silent
    fallback to another build), then `$CARGO_TARGET_DIR/release`, `~/.cache/octollm/
    cargo-target/release` (where `make setup` builds it), `reflex-layer/target/release`.
    """
    env = dict(os.environ) if env is None else env
    override = env.get("OCTO_REFLEX_BIN")
    if override:
        path = Path(override)
        if path.is_file() and os.access(path, os.X_OK):
            return path
        raise ReflexNotBuilt(f"OCTO_REFLEX_BIN={override} is not an executable file")
    candidates = _candidates(env)
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return path
    looked = ", ".join(str(p) for p in dict.fromkeys(candidates))
    raise ReflexNotBuilt(
        f"the reflex binary {BINARY_NAME} is not built (looked in {looked}): run `make setup`, "
        "or point OCTO_REFLEX_BIN at it"
    )


def injection_model(env: dict[str, str] | None = None) -> Path:
    """The learned injection stage's weights: `OCTO_REFLEX_INJECTION_MODEL`, else this checkout's
    `reflex-layer/model/injection.v1.bin`. Passed explicitly like `--schemas-dir`: the binary's
    own default is the checkout it was built in (a missing file makes it exit 1 at start)."""
    override = (os.environ if env is None else env).get("OCTO_REFLEX_INJECTION_MODEL")
    if override:
        return Path(override)
    return PROJECT_ROOT / "reflex-layer" / "model" / "injection.v1.bin"


def reflex_run_argv(settings: Settings, *, instance: str | None = None) -> list[str]:
    """The command line of the streaming path, `octollm-reflex run`, for these settings.

    `octollm worker reflex` execs it and `octollm run` starts it directly, so the process a PID
    file names is the binary itself.
    """
    argv = [
        str(reflex_binary()),
        "run",
        "--bootstrap-servers",
        settings.bootstrap_servers,
        "--topic-prefix",
        settings.topic_prefix,
        # The binary's own default is the checkout it was built in, which a shared cargo
        # cache may have moved or deleted; the contracts are where this package has them.
        "--schemas-dir",
        str(schemas_dir()),  # octollm.contracts.schemas: a folder in a checkout or a wheel
        # explicit, so a limit set in octollm.toml (which the binary does not read) applies
        "--max-goal-bytes",
        str(settings.reflex_max_goal_bytes),
        "--injection-model",
        str(injection_model()),
    ]
    if instance:
        argv += ["--instance", instance]
    return argv


class PiiSpan(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    type: str
    start: int  # code-point offsets: Python's text[start:end]
    end: int
    confidence: float


class InjectionScan(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    score: float
    severity: str  # NONE | LOW | MEDIUM | HIGH | CRITICAL
    categories: tuple[str, ...] = ()


class ScanResult(BaseModel):
    """One answer line of `octollm-reflex scan`."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    pii: tuple[PiiSpan, ...] = ()
    injection: InjectionScan
    redacted: str

    @property
    def pii_types(self) -> list[str]:
        return sorted({p.type for p in self.pii})


class ScanProcess:
    """One long-running `octollm-reflex scan` subprocess, used one line at a time.

    Calls are serialised by a lock (the protocol is strictly one answer per line, in order). If
    the process has died (or never started) it is started again before the next line; a scan
    that fails because the process died mid-line is retried once on a fresh process.
    """

    def __init__(self, binary: Path | None = None, *, timeout_s: float = 10.0) -> None:
        self._binary = binary
        self.timeout_s = timeout_s
        self._proc: asyncio.subprocess.Process | None = None
        self._lock = asyncio.Lock()
        self._next_id = 0
        self._stderr_tail: collections.deque[str] = collections.deque(maxlen=20)
        self._stderr_task: asyncio.Task[None] | None = None
        self.starts = 0  # how many processes were started (restarts show up here)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    async def start(self) -> None:
        """Start the subprocess if it is not running (idempotent)."""
        if self.running:
            return
        await self._reap()
        binary = self._binary or reflex_binary()
        self._proc = await asyncio.create_subprocess_exec(
            str(binary),
            "scan",
            "--injection-model",
            str(injection_model()),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            limit=MAX_LINE_BYTES,
        )
        self.starts += 1
        self._stderr_task = asyncio.create_task(self._drain_stderr(self._proc))
        log.info(
            "reflex scan started pid=%s binary=%s",
            self._proc.pid,
            binary,
            extra={"component": "reflex-scan"},
        )

    async def _drain_stderr(self, proc: asyncio.subprocess.Process) -> None:
        # Kept so a crash can be explained; drained so a chatty binary never blocks on a full pipe.
        assert proc.stderr is not None
        while line := await proc.stderr.readline():
            self._stderr_tail.append(line.decode(errors="replace").rstrip())

    async def scan(self, text: str, *, task_id: str | None = None) -> ScanResult:
        """Scan `text`; restarts a dead process and retries once before giving up."""
        async with self._lock:
            try:
                return await self._scan_once(text)
            except ReflexError as first:
                log.warning(
                    "reflex scan failed, restarting task_id=%s error=%s",
                    task_id,
                    first,
                    extra={"task_id": task_id, "component": "reflex-scan"},
                )
                await self._kill()
                return await self._scan_once(text)

    async def _scan_once(self, text: str) -> ScanResult:
        await self.start()
        proc = self._proc
        assert proc is not None and proc.stdin is not None and proc.stdout is not None
        self._next_id += 1
        line_id = self._next_id
        line = json.dumps({"id": line_id, "text": text}, ensure_ascii=False) + "\n"
        try:
            proc.stdin.write(line.encode())
            await proc.stdin.drain()
            raw = await asyncio.wait_for(proc.stdout.readline(), self.timeout_s)
        except TimeoutError:
            await self._kill()
            raise ReflexError(f"reflex scan gave no answer within {self.timeout_s:g}s") from None
        except (BrokenPipeError, ConnectionResetError, ValueError) as e:
            # ValueError: an answer line longer than MAX_LINE_BYTES.
            await self._reap()
            if proc.returncode is not None:
                raise self._exited(proc) from None
            raise ReflexError(f"reflex scan pipe failed: {type(e).__name__}: {e}") from None
        if not raw:
            await self._reap()
            raise self._exited(proc)
        return self._parse(raw, line_id)

    def _exited(self, proc: asyncio.subprocess.Process) -> ReflexError:
        tail = " | ".join(self._stderr_tail) or "no stderr"
        return ReflexError(f"reflex scan exited (status {proc.returncode}): {tail}")

    @staticmethod
    def _parse(raw: bytes, line_id: int) -> ScanResult:
        try:
            data: Any = json.loads(raw)
        except ValueError as e:
            raise ReflexError(f"reflex scan answered non-JSON: {raw[:200]!r}") from e
        if not isinstance(data, dict):
            raise ReflexError(f"reflex scan answered {type(data).__name__}, not an object")
        if "error" in data:
            raise ReflexError(f"reflex scan rejected the line: {data['error']}")
        if data.get("id") != line_id:
            # Out of step with the process: its answers can no longer be matched to our lines.
            raise ReflexError(f"reflex scan answered id {data.get('id')!r}, expected {line_id}")
        try:
            return ScanResult.model_validate(data)
        except ValidationError as e:
            raise ReflexError(f"reflex scan answer has an unexpected shape: {e}") from None

    async def _reap(self) -> None:
        if self._stderr_task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._stderr_task, 1.0)
            self._stderr_task = None
        if self._proc is not None and self._proc.returncode is None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._proc.wait(), 1.0)

    async def _kill(self) -> None:
        proc = self._proc
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
        if self._stderr_task is not None:
            self._stderr_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._stderr_task
            self._stderr_task = None
        self._proc = None

    async def aclose(self) -> None:
        """End the subprocess: EOF on stdin lets it exit on its own; killed if it lingers."""
        async with self._lock:
            proc = self._proc
            if proc is None:
                return
            if proc.returncode is None and proc.stdin is not None:
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    proc.stdin.close()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(proc.wait(), 2.0)
            await self._kill()
