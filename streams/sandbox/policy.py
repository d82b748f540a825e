"""The sandbox policy: resource limits and the command allow-list, and the checks made on a
request before anything runs (an unlisted command, an unsafe file name are refused here)."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field, replace
from pathlib import PurePosixPath
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from octollm.settings import Settings

__all__ = ["SANDBOX_PATH", "SandboxPolicy", "SandboxRefused"]

#: The only PATH the program sees and the only places a listed name is looked up. Deliberately
#: not /usr/local/bin or a venv: interpreters there may live under /root, unreadable to the
#: unprivileged user the program runs as; the system python3 and its stdlib are world-readable.
SANDBOX_PATH = "/usr/bin:/bin"

MAX_ARGV_BYTES = 64 * 1024
DEFAULT_ALLOWED = (
    "python3", "cat", "echo", "false", "grep", "head", "ls", "sort", "tail", "true", "wc",
)  # fmt: skip


class SandboxRefused(Exception):
    """The policy refuses this request; nothing was run. `reason` says why, in one line."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class SandboxPolicy:
    allowed_commands: tuple[str, ...] = DEFAULT_ALLOWED
    wall_s: float = 10.0  # default wall-clock timeout
    max_wall_s: float = 120.0  # a caller's timeout_s is clamped to this
    cpu_s: int = 10
    memory_mb: int = 512  # address space (RLIMIT_AS)
    file_mb: int = 16  # largest file the program may write (RLIMIT_FSIZE)
    processes: int = 32  # RLIMIT_NPROC for the program's own uid
    open_files: int = 64
    output_bytes: int = 64 * 1024  # kept of each of stdout and stderr
    output_kill_bytes: int = 4 * 1024 * 1024  # total output after which the run is killed
    require_network_isolation: bool = True
    pid_namespace: bool = True  # PID 1 of its own: stray children die with the program
    # Fresh tmpfs of tmp_mb each over these, the work dir inside /tmp's: what the program writes
    # is bounded in total and gone with its namespace. Empty: the real dirs.
    private_dirs: tuple[str, ...] = ("/tmp", "/var/tmp", "/dev/shm")
    tmp_mb: int = 64
    uid_base: int = 61000  # each run gets its own uid in [uid_base, uid_base + 4096) as root
    gid: int = 65534  # nogroup
    python: str = "python3"  # the interpreter `run_python` uses (must be allow-listed)
    extra_env: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: Settings) -> SandboxPolicy:
        return cls(
            allowed_commands=tuple(settings.sandbox_allowed_commands),
            wall_s=settings.sandbox_wall_s,
            max_wall_s=settings.sandbox_max_wall_s,
            cpu_s=settings.sandbox_cpu_s,
            memory_mb=settings.sandbox_memory_mb,
            file_mb=settings.sandbox_file_mb,
            processes=settings.sandbox_processes,
            open_files=settings.sandbox_open_files,
            output_bytes=settings.sandbox_output_bytes,
            require_network_isolation=settings.sandbox_require_network_isolation,
        )

    def with_changes(self, **changes: object) -> SandboxPolicy:
        return replace(self, **changes)  # type: ignore[arg-type]

    def timeout(self, timeout_s: float | None) -> float:
        """The wall-clock limit for one run: the caller's, clamped, else the default."""
        if timeout_s is None:
            return self.wall_s
        if timeout_s <= 0:
            raise SandboxRefused(f"timeout_s must be positive, got {timeout_s:g}")
        return min(timeout_s, self.max_wall_s)

    def resolve(self, argv: list[str]) -> str:
        """The absolute path to execute for `argv`, or SandboxRefused if it is not allowed.

        A bare name must be listed and is looked up on SANDBOX_PATH only; an absolute path
        must be listed itself or be what a listed name resolves to. Relative paths are refused:
        they would name something inside the work dir, which the caller controls.
        """
        if not argv or not all(isinstance(a, str) for a in argv):
            raise SandboxRefused("argv must be a non-empty list of strings")
        if any("\0" in a for a in argv):
            raise SandboxRefused("argv must not contain NUL bytes")
        if sum(len(a.encode()) for a in argv) > MAX_ARGV_BYTES:
            # It travels to the launcher as one argument (the kernel caps one at 128 KiB).
            raise SandboxRefused(f"argv is longer than {MAX_ARGV_BYTES} bytes; pass files instead")
        cmd = argv[0]
        allowed = self._allowed_paths()
        if "/" not in cmd:
            if cmd not in self.allowed_commands:
                raise SandboxRefused(
                    f"command {cmd!r} is not allow-listed (allowed: "
                    f"{', '.join(self.allowed_commands)})"
                )
            path = allowed.get(cmd)
            if path is None:
                raise SandboxRefused(f"allow-listed command {cmd!r} is not on {SANDBOX_PATH}")
            return path
        if not os.path.isabs(cmd):
            raise SandboxRefused(f"relative command path {cmd!r} is refused; give a listed name")
        if cmd in allowed.values() or cmd in self.allowed_commands:
            return cmd
        raise SandboxRefused(f"command {cmd!r} is not allow-listed")

    def _allowed_paths(self) -> dict[str, str]:
        found: dict[str, str] = {}
        for entry in self.allowed_commands:
            path = entry if os.path.isabs(entry) else shutil.which(entry, path=SANDBOX_PATH)
            if path and os.access(path, os.X_OK):
                found[entry] = path
        return found


def check_files(files: dict[str, str] | None) -> dict[str, str]:
    """The files to create in the work dir, after refusing any name that would land outside."""
    if not files:
        return {}
    checked: dict[str, str] = {}
    for name, content in files.items():
        if not isinstance(name, str) or not isinstance(content, str):
            raise SandboxRefused("files must map names to text")
        path = PurePosixPath(name)
        if not name or path.is_absolute() or ".." in path.parts or "\0" in name:
            raise SandboxRefused(f"file name {name!r} must be relative and stay in the work dir")
        checked[str(path)] = content
    return checked
