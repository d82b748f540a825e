"""`octollm exec`: the result as JSON (exit 0 even when the command fails), one line and exit 2
for bad arguments or a refused command. Run as the real console script."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

OCTOLLM = str(Path(__file__).resolve().parents[2] / ".venv" / "bin" / "octollm")


def octollm(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OCTO_")}
    env["OCTO_CONFIG"] = "/nonexistent/octollm.toml"
    return subprocess.run(
        [OCTOLLM, *args], input=stdin, capture_output=True, text=True, env=env, timeout=60
    )


def test_exec_prints_the_result_as_json() -> None:
    out = octollm("exec", "--", "python3", "-c", "import sys; print(sys.stdin.read().upper())",
                  stdin="hi")  # fmt: skip
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["stdout"] == "HI\n" and result["exit_code"] == 0
    assert result["network_isolated"] is True and result["limit"] is None


def test_exec_exits_0_when_the_command_fails_or_times_out() -> None:
    failed = octollm("exec", "--", "python3", "-c", "raise SystemExit(4)")
    assert failed.returncode == 0 and json.loads(failed.stdout)["exit_code"] == 4
    spun = octollm("exec", "--timeout", "0.5", "--", "python3", "-c", "while True: pass")
    assert spun.returncode == 0
    assert json.loads(spun.stdout)["limit"] == "timeout"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["exec", "--", "bash", "-c", "id"], "refused: command 'bash' is not allow-listed"),
        (["exec"], "Missing argument"),
        (["exec", "--timeout", "-1", "--", "true"], "--timeout"),
    ],
)
def test_bad_arguments_are_one_line_and_exit_2(args: list[str], message: str) -> None:
    out = octollm(*args)
    assert out.returncode == 2 and out.stdout == ""
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("octollm: error: ") and message in lines[0]
