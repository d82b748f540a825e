"""What one sandboxed run reports: how it ended, what it printed, which limit fired."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

#: The limit that ended (or, for "output", truncated and then ended) a run; None when none did.
Limit = Literal["timeout", "cpu", "memory", "file_size", "processes", "output", "network"]


class SandboxResult(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    exit_code: int | None  # None when a signal ended the program
    signal: str | None  # "SIGKILL", "SIGXCPU", ... or None
    stdout: str
    stderr: str
    stdout_truncated: bool
    stderr_truncated: bool
    duration_ms: float
    peak_memory_kb: int  # ru_maxrss of the program (includes the ~9 MB launcher before exec)
    limit: Limit | None
    network_isolated: bool

    @property
    def ok(self) -> bool:
        """The program ran to completion and exited 0."""
        return self.exit_code == 0 and self.limit is None

    def to_json(self) -> str:
        return self.model_dump_json()
