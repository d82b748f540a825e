"""Process facts a worker needs at run time (psutil): is a process alive, how big is it.

The local dev stack (`octollm.supervisor`) uses them too; the runtime never imports the dev
stack, so they live here.
"""

from __future__ import annotations

import psutil


def pid_alive(pid: int) -> bool:
    """True if `pid` exists and is not a zombie (a zombie has exited, it only awaits reaping)."""
    if pid <= 0:
        return False
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True  # exists, but belongs to someone else


def rss_mb(pid: int) -> float | None:
    """Resident memory of `pid` in MB, None when it is gone or cannot be read."""
    try:
        return float(psutil.Process(pid).memory_info().rss) / (1024 * 1024)
    except psutil.Error:
        return None
