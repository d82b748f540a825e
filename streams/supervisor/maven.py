"""Provisioning from Maven Central: one way to fetch a service's artifacts into the cache.

Maven runs into a staging folder, offline first (a warm ~/.m2 needs no network) and then online;
the caller checks what arrived and names the marker's content; the marker is written and the
folder renamed into place only then, so an interrupted fetch is redone and a complete one never
runs Maven again. A file lock keeps two processes (parallel test sessions, `make setup` and
`infra up`) from fetching the same thing at once.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

MARKER = ".octollm-complete"
TIMEOUT_S = 1200.0


class MavenError(RuntimeError):
    """Maven is missing, or could not fetch the artifacts (the message says which, and why)."""


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock on `path` (created if missing), held for the `with` block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def read_marker(dest: Path) -> dict[str, Any] | None:
    """The marker of a complete provisioning of `dest`, or None."""
    try:
        data = json.loads((dest / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def provision(
    dest: Path,
    *,
    pom: Path,
    goal: str,
    properties: dict[str, str],
    what: str,
    inspect: Callable[[Path], dict[str, Any] | None],
) -> dict[str, Any]:
    """Run `mvn <goal>` with `pom` into `dest`, unless a marker says it is already there.

    `inspect(staging)` returns the marker's content when what Maven produced is usable, None
    when it is not (then the next attempt runs). Returns the marker's content.
    """
    marker = read_marker(dest)
    if marker is not None:
        return marker
    mvn = shutil.which("mvn")
    if mvn is None:
        raise MavenError(
            f"{what} is not cached in {dest} and Maven (mvn) is not installed to fetch it from "
            "Maven Central; install maven and retry"
        )
    if not pom.is_file():
        raise MavenError(f"{pom} is missing: run from an octollm checkout")
    with file_lock(dest.parent / f"{dest.name}.lock"):
        marker = read_marker(dest)  # another process may have finished meanwhile
        if marker is None:
            marker = _fetch(mvn, dest, pom, goal, properties, what, inspect)
    return marker


def _fetch(
    mvn: str,
    dest: Path,
    pom: Path,
    goal: str,
    properties: dict[str, str],
    what: str,
    inspect: Callable[[Path], dict[str, Any] | None],
) -> dict[str, Any]:
    staging = dest.parent / f"{dest.name}.tmp-{os.getpid()}"
    argv = [mvn, "-q", "-B", "-f", str(pom), goal, f"-DoutputDirectory={staging}"]
    argv += [f"-D{key}={value}" for key, value in properties.items()]
    output = ""
    try:
        for attempt in ([argv[0], "-o", *argv[1:]], argv):
            shutil.rmtree(staging, ignore_errors=True)
            try:
                proc = subprocess.run(
                    attempt, capture_output=True, text=True, check=False, timeout=TIMEOUT_S
                )
            except subprocess.TimeoutExpired as exc:
                output = f"mvn timed out after {exc.timeout:.0f}s"
                continue
            output = proc.stdout + proc.stderr
            marker = inspect(staging) if proc.returncode == 0 else None
            if marker is not None:
                (staging / MARKER).write_text(json.dumps(marker) + "\n")
                shutil.rmtree(dest, ignore_errors=True)
                staging.replace(dest)
                return marker
        lines = output.strip().splitlines()
        goal_line = [line for line in lines if "Failed to execute goal" in line][:1]
        tail = "\n".join(goal_line + [line for line in lines[-10:] if line not in goal_line])
        raise MavenError(f"could not fetch {what} with Maven:\n{tail}")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
