"""The executor arm on the real broker: `octollm worker arm executor` as a real subprocess,
requests produced to octo.arm.executor.requests, results read back from octo.arm.results."""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path

import pytest

from octollm.contracts.models import ArmResult, ArmStatus
from octollm.settings import Settings
from octollm.topics import ARM_RESULTS
from tests.conftest import cli_env
from tests.integration.test_arm_runtime import (
    create_topics,
    read_until,
    request,
    send_requests,
    stop,
)

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
OCTOLLM = str(ROOT / ".venv" / "bin" / "octollm")


def start_executor(settings: Settings) -> subprocess.Popen[bytes]:
    log_path = Path(settings.data_dir) / f"worker-executor-{uuid.uuid4().hex[:6]}.log"
    with open(log_path, "wb") as log:
        return subprocess.Popen(
            [OCTOLLM, "worker", "arm", "executor"],
            cwd=ROOT,
            env=cli_env(settings, OCTO_SANDBOX_WALL_S="5"),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def test_executor_runs_code_and_commands_and_refuses_what_the_policy_forbids(
    isolated: Settings,
) -> None:
    create_topics(isolated)
    reqs = {
        "code": request(
            "run it",
            arm="executor",
            inputs={
                "code": "import sys, helper\nprint(helper.add(2, 3), sys.stdin.read())",
                "language": "python",
                "stdin": "from stdin",
                "files": json.dumps({"helper.py": "def add(a, b):\n    return a + b\n"}),
            },
        ),
        "argv": request("count", arm="executor", inputs={"argv": '["wc", "-w"]', "stdin": "a b c"}),
        "fails": request("crash", arm="executor", inputs={"code": "raise SystemExit(3)"}),
        "loop": request(
            "spin", arm="executor", inputs={"code": "while True: pass", "timeout_s": "1"}
        ),
        "fenced": request("Run this:\n```python\nprint(6 * 7)\n```", arm="executor"),
        "unlisted": request("net", arm="executor", inputs={"argv": '["curl", "http://x"]'}),
        "bad": request("bad", arm="executor", inputs={"argv": "not json"}),
    }
    send_requests(isolated, list(reqs.values()), arm="executor")
    worker = start_executor(isolated)
    try:
        results = read_until(isolated, ARM_RESULTS, lambda got: len(got) >= len(reqs), settle=1)
    finally:
        assert stop(worker) == 0
    by_id = {r.request_id: r for r in results if isinstance(r, ArmResult)}
    assert len(by_id) == len(reqs), results

    def out(name: str) -> dict[str, object]:
        result = by_id[reqs[name].request_id]
        assert result.status is ArmStatus.OK and result.arm == "executor", result
        value: dict[str, object] = json.loads(result.output)
        return value

    assert out("code")["stdout"] == "5 from stdin\n" and out("code")["exit_code"] == 0
    assert out("code")["network_isolated"] is True
    assert out("argv")["stdout"] == "3\n"
    assert out("fails")["exit_code"] == 3  # the program failed; the arm did its job
    loop = out("loop")
    assert loop["limit"] == "timeout" and loop["signal"] == "SIGKILL"
    assert out("fenced")["stdout"] == "42\n"
    unlisted = by_id[reqs["unlisted"].request_id]
    assert unlisted.status is ArmStatus.REJECTED and "not allow-listed" in (unlisted.reason or "")
    bad = by_id[reqs["bad"].request_id]
    assert bad.status is ArmStatus.REJECTED and "argv is not JSON" in (bad.reason or "")
