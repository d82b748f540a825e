"""The README's main job from the outside: `octollm run` on a data dir and ports of its own."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from octollm.settings import Settings
from tests.conftest import OCTOLLM, cli_env, free_port_pair

pytestmark = pytest.mark.e2e

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "tasks.jsonl"


def test_run_starts_kafka_and_round_trips_the_examples(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", kafka_port=free_port_pair())
    env = cli_env(settings)
    try:
        result = subprocess.run(
            [OCTOLLM, "run"], env=env, capture_output=True, text=True, timeout=300
        )
        assert result.returncode == 0, result.stdout + result.stderr
        n = sum(1 for line in EXAMPLES.read_text().splitlines() if line.strip())
        assert f"read back all {n} example task(s)" in result.stdout
        echoed = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
        assert {t["goal"] for t in echoed} == {
            json.loads(line)["goal"] for line in EXAMPLES.read_text().splitlines() if line.strip()
        }

        again = subprocess.run(
            [OCTOLLM, "run"], env=env, capture_output=True, text=True, timeout=300
        )
        assert again.returncode == 0, again.stderr
        assert "already running" in again.stdout

        status = subprocess.run(
            [OCTOLLM, "infra", "status", "--json"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert status.returncode == 0, status.stderr
        assert json.loads(status.stdout)["answering"] is True
    finally:
        down = subprocess.run(
            [OCTOLLM, "infra", "down"], env=env, capture_output=True, text=True, timeout=120
        )
        assert down.returncode == 0, down.stderr
