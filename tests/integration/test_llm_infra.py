"""`octollm infra up/status/down` with the local LLM server, as a user runs them.

Kafka and the LLM server start on free ports in a temporary data dir and are stopped by PID
in a `finally`, so no one else's services on this machine are touched.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
from pathlib import Path

import pytest

from octollm.settings import Settings
from octollm.supervisor import kafka, llm
from octollm.supervisor.process import pid_alive, port_in_use

pytestmark = pytest.mark.integration

OCTOLLM = str(Path(__file__).resolve().parents[2] / ".venv" / "bin" / "octollm")


def free_port(pair: bool = False) -> int:
    for _ in range(50):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if not pair or (port < 65000 and not port_in_use("127.0.0.1", port + 1)):
            return port
    raise RuntimeError("no free port on 127.0.0.1")


def test_infra_up_status_down_with_the_llm(tmp_path: Path) -> None:
    kafka_port, llm_port = free_port(pair=True), free_port()
    settings = Settings(data_dir=tmp_path / "data", kafka_port=kafka_port, llm_port=llm_port)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OCTO_")}
    env.update(
        OCTO_KAFKA_PORT=str(kafka_port),
        OCTO_LLM_PORT=str(llm_port),
        OCTO_CONFIG=str(tmp_path / "absent.toml"),
    )

    def octollm(*args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [OCTOLLM, "infra", *args, "--data-dir", str(settings.data_dir)],
            env={**env, **extra},
            capture_output=True,
            text=True,
            timeout=180,
        )

    try:
        up = octollm("up")
        assert up.returncode == 0, up.stderr
        url = f"http://127.0.0.1:{llm_port}/v1"
        assert "llm server started (pid " in up.stdout and url in up.stdout, up.stdout

        again = octollm("up")
        assert again.returncode == 0, again.stderr
        assert "llm server already running" in again.stdout

        remote = octollm("up", OCTO_LLM_BASE_URL="http://127.0.0.1:9/v1")
        assert remote.returncode == 0, remote.stderr
        assert "llm: using http://127.0.0.1:9/v1 (OCTO_LLM_BASE_URL); no local server" in (
            remote.stdout
        )

        st = octollm("status")
        assert st.returncode == 0, st.stderr
        assert "llm server: running (pid " in st.stdout and f"answering at {url}" in st.stdout
        st_json = json.loads(octollm("status", "--json").stdout)
        assert st_json["answering"] is True  # Kafka's keys stay where they were
        assert st_json["llm"]["answering"] is True and st_json["llm"]["port"] == llm_port
        pid = st_json["llm"]["pid"]

        down = octollm("down")
        assert down.returncode == 0, down.stderr
        assert f"llm server stopped (pid {pid})" in down.stdout
        assert not pid_alive(pid)
        assert "llm server: not running" in octollm("status").stdout
    finally:
        llm.stop_llm(settings)
        kafka.down(settings)


def test_infra_up_no_llm_and_a_taken_port(tmp_path: Path) -> None:
    kafka_port = free_port(pair=True)
    settings = Settings(data_dir=tmp_path / "data", kafka_port=kafka_port)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        llm_port = taken.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith("OCTO_")}
        env.update(
            OCTO_KAFKA_PORT=str(kafka_port),
            OCTO_LLM_PORT=str(llm_port),
            OCTO_CONFIG=str(tmp_path / "absent.toml"),
        )
        try:
            argv = [OCTOLLM, "infra", "up", "--data-dir", str(settings.data_dir)]
            skipped = subprocess.run(
                [*argv, "--no-llm"], env=env, capture_output=True, text=True, timeout=180
            )
            assert skipped.returncode == 0, skipped.stderr
            assert "llm server" not in skipped.stdout and "llm:" not in skipped.stdout

            clash = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=180)
            assert clash.returncode == 1
            assert f"port 127.0.0.1:{llm_port} is taken by another process" in clash.stderr
            assert "OCTO_LLM_PORT" in clash.stderr
            assert "Traceback" not in clash.stderr
        finally:
            llm.stop_llm(settings)
            kafka.down(settings)
