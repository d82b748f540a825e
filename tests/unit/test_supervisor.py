"""The process supervisor and the Kafka configuration, without starting Kafka."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from octollm.cli.main import main
from octollm.settings import Settings
from octollm.supervisor import kafka
from octollm.supervisor.process import ManagedProcess, pid_alive, port_in_use, wait_until

pytestmark = pytest.mark.unit


def sleeper(tmp_path: Path, name: str = "sleeper") -> ManagedProcess:
    return ManagedProcess(name, tmp_path / "run", ["sleep", "1000"], log_file=tmp_path / "s.log")


def test_start_writes_pid_file_and_stop_removes_it(tmp_path: Path) -> None:
    proc = sleeper(tmp_path)
    pid = proc.start()
    try:
        assert proc.pid_file == tmp_path / "run" / "sleeper.pid"
        assert proc.pid_file.read_text().strip() == str(pid)
        assert proc.running_pid() == pid
        # A second object (another CLI invocation) finds it through the pid file.
        assert sleeper(tmp_path).running_pid() == pid
        with pytest.raises(RuntimeError, match="already running"):
            proc.start()
    finally:
        assert sleeper(tmp_path).stop(timeout=5)
    assert not pid_alive(pid)
    assert not proc.pid_file.exists()
    assert proc.running_pid() is None
    assert proc.stop() is False


def test_a_process_just_started_is_recognised_at_once(tmp_path: Path) -> None:
    # Popen returns while execve is still building the new program, when /proc/<pid>/cmdline
    # reads empty; that must not make our own process look like a stranger (and orphan it).
    for i in range(15):
        proc = sleeper(tmp_path, f"quick-{i}")
        pid = proc.start()
        try:
            assert proc.running_pid() == pid
        finally:
            proc.stop(timeout=5)


def test_stop_finds_our_own_child_even_without_its_pid_file(tmp_path: Path) -> None:
    proc = sleeper(tmp_path)
    pid = proc.start()
    proc.pid_file.unlink()
    assert proc.stop(timeout=5)
    assert not pid_alive(pid)


def test_output_is_appended_to_the_log_file(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "out.log"
    log.parent.mkdir()
    log.write_text("earlier run\n")
    proc = ManagedProcess(
        "echo", tmp_path, ["sh", "-c", "echo hello; echo oops >&2; sleep 1000"], log_file=log
    )
    proc.start()
    try:
        wait_until(lambda: "oops" in log.read_text(), timeout=5, what="output")
    finally:
        proc.stop(timeout=5)
    lines = log.read_text().splitlines()
    assert lines[0] == "earlier run"
    assert lines[1].startswith("--- ") and lines[1].endswith(" starting echo ---")
    assert lines[2:] == ["hello", "oops"]


def test_stale_pid_file_is_removed(tmp_path: Path) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    proc = sleeper(tmp_path)
    proc.pid_file.parent.mkdir(parents=True)
    proc.pid_file.write_text(f"{dead.pid}\n")
    assert proc.running_pid() is None
    assert not proc.pid_file.exists()


def test_a_live_pid_that_is_not_ours_is_never_signalled(tmp_path: Path) -> None:
    # The pid file points at this pytest process (PID reuse): not a `sleep 1000`.
    proc = sleeper(tmp_path)
    proc.pid_file.parent.mkdir(parents=True)
    proc.pid_file.write_text(f"{os.getpid()}\n")
    assert proc.running_pid() is None
    assert proc.stop(timeout=1) is False  # would have SIGTERMed pytest otherwise
    assert not proc.pid_file.exists()


def test_garbage_pid_file_is_ignored(tmp_path: Path) -> None:
    proc = sleeper(tmp_path)
    proc.pid_file.parent.mkdir(parents=True)
    proc.pid_file.write_text("not a pid")
    assert proc.running_pid() is None
    assert not proc.pid_file.exists()


def test_stop_escalates_to_sigkill(tmp_path: Path) -> None:
    code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(1000)"
    proc = ManagedProcess(
        "stubborn", tmp_path, [sys.executable, "-c", code], log_file=tmp_path / "x.log"
    )
    pid = proc.start()
    time.sleep(0.3)  # let it install the handler
    began = time.monotonic()
    assert proc.stop(timeout=0.5)
    assert time.monotonic() - began < 5
    assert not pid_alive(pid)


def test_port_in_use() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        assert port_in_use("127.0.0.1", port)
    assert not port_in_use("127.0.0.1", port)


def test_wait_until() -> None:
    calls = iter([False, False, True])
    wait_until(lambda: next(calls), timeout=5, interval=0.01, what="third call")
    began = time.monotonic()
    with pytest.raises(TimeoutError, match=r"timed out after 0.3s waiting for the moon"):
        wait_until(lambda: False, timeout=0.3, interval=0.05, what="the moon")
    assert 0.3 <= time.monotonic() - began < 2


# --- Kafka configuration -------------------------------------------------------------------


def settings_for(tmp_path: Path, port: int = 29092) -> Settings:
    return Settings(data_dir=tmp_path, cache_dir=tmp_path / "cache", kafka_port=port)


def test_single_node_properties(tmp_path: Path) -> None:
    props = kafka.server_properties(settings_for(tmp_path), 0, 1)
    assert props["process.roles"] == "broker,controller"
    assert props["node.id"] == "0"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:29092,CONTROLLER://127.0.0.1:29093"
    assert props["controller.quorum.voters"] == "0@127.0.0.1:29093"
    assert props["log.dirs"] == str(tmp_path / "kafka" / "node-0" / "data")
    for key in (
        "default.replication.factor",
        "min.insync.replicas",
        "offsets.topic.replication.factor",
        "transaction.state.log.replication.factor",
        "transaction.state.log.min.isr",
    ):
        assert props[key] == "1", key
    assert props["auto.create.topics.enable"] == "false"
    assert props["group.initial.rebalance.delay.ms"] == "0"
    assert props["num.partitions"] == "6"


def test_three_node_properties(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    all_props = [kafka.server_properties(settings, n, 3) for n in range(3)]
    voters = "0@127.0.0.1:29093,1@127.0.0.1:29193,2@127.0.0.1:29293"
    for node, props in enumerate(all_props):
        client, controller = 29092 + 100 * node, 29093 + 100 * node
        assert props["node.id"] == str(node)
        assert props["controller.quorum.voters"] == voters
        assert props["listeners"] == (
            f"PLAINTEXT://127.0.0.1:{client},CONTROLLER://127.0.0.1:{controller}"
        )
        assert props["log.dirs"] == str(tmp_path / "kafka" / f"node-{node}" / "data")
        assert props["default.replication.factor"] == "3"
        assert props["min.insync.replicas"] == "2"
        assert props["offsets.topic.replication.factor"] == "3"
        assert props["transaction.state.log.replication.factor"] == "3"
        assert props["transaction.state.log.min.isr"] == "2"
    # Every listener binds loopback only.
    for props in all_props:
        for key in ("listeners", "advertised.listeners"):
            for listener in props[key].split(","):
                assert listener.split("://")[1].startswith("127.0.0.1:"), listener
    assert kafka.bootstrap_servers(settings, 3) == (
        "127.0.0.1:29092,127.0.0.1:29192,127.0.0.1:29292"
    )
    assert kafka.bootstrap_servers(settings, 1) == "127.0.0.1:29092"


def test_rendered_properties_are_key_value_lines(tmp_path: Path) -> None:
    text = kafka.render_properties(kafka.server_properties(settings_for(tmp_path), 0, 1))
    lines = [line for line in text.splitlines() if not line.startswith("#")]
    assert all("=" in line for line in lines)
    assert "node.id=0" in lines


@pytest.mark.parametrize("brokers", [0, 2, 4])
def test_only_one_or_three_brokers(tmp_path: Path, brokers: int) -> None:
    with pytest.raises(kafka.InfraError, match="1 or 3"):
        kafka.KafkaCluster(settings_for(tmp_path), brokers)


def test_broker_count_mismatch_names_reset(tmp_path: Path) -> None:
    (tmp_path / "kafka").mkdir()
    (tmp_path / "kafka" / "cluster.json").write_text(
        json.dumps({"cluster_id": "abc", "brokers": 1, "kafka_version": "4.4.0"})
    )
    with pytest.raises(kafka.InfraError) as err:
        kafka.up(settings_for(tmp_path), brokers=3)
    message = str(err.value)
    assert "1-broker cluster" in message
    assert "3 broker(s) were requested" in message
    assert "octollm infra reset" in message
    assert str(tmp_path / "kafka") in message


def test_cluster_id_looks_like_a_kafka_uuid() -> None:
    ids = {kafka._random_cluster_id() for _ in range(200)}
    assert len(ids) == 200
    for cluster_id in ids:
        assert len(cluster_id) == 22
        assert not cluster_id.startswith("-")


def test_status_of_an_empty_data_dir(tmp_path: Path) -> None:
    st = kafka.status(settings_for(tmp_path))
    assert not st.formatted
    assert st.nodes == []
    assert not st.answering


def test_reset_stays_inside_the_data_dir(tmp_path: Path) -> None:
    outside = tmp_path / "precious"
    outside.mkdir()
    (outside / "keep.txt").write_text("keep")
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "kafka").symlink_to(outside)
    with pytest.raises(kafka.InfraError, match="refusing"):
        kafka.reset(settings_for(data_dir))
    assert (outside / "keep.txt").read_text() == "keep"


def test_reset_deletes_kafka_data_but_not_other_services(tmp_path: Path) -> None:
    (tmp_path / "kafka" / "node-0" / "data").mkdir(parents=True)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "registry.pid").write_text("1\n")
    (tmp_path / "other").mkdir()
    kafka.reset(settings_for(tmp_path))
    assert not (tmp_path / "kafka").exists()
    assert (tmp_path / "run" / "registry.pid").exists()
    assert (tmp_path / "other").exists()


def test_cli_rejects_two_brokers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["infra", "up", "--brokers", "2", "--data-dir", str(tmp_path)])
    assert exc.value.code == 2
    assert "must be 1 or 3" in capsys.readouterr().err


def test_cli_reset_refuses_without_a_terminal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "kafka").mkdir()
    monkeypatch.setattr("sys.stdin.isatty", lambda: False)
    with pytest.raises(SystemExit) as exc:
        main(["infra", "reset", "--data-dir", str(tmp_path)])
    assert exc.value.code == 1
    assert "pass --yes" in capsys.readouterr().err
    assert (tmp_path / "kafka").exists()


def _up(brokers: int, bootstrap: str) -> kafka.UpResult:
    return kafka.UpResult(True, brokers, bootstrap, [], [], 0.0)


def test_run_clients_use_every_node_and_three_replicas_on_a_three_node_cluster(
    tmp_path: Path,
) -> None:
    settings = Settings(data_dir=tmp_path, kafka_port=29400)
    three = "127.0.0.1:29400,127.0.0.1:29500,127.0.0.1:29600"
    got = kafka.client_settings(settings, _up(3, three))
    assert got.bootstrap_servers == three
    assert (got.replication_factor, got.min_insync_replicas) == (3, 2)
    one = kafka.client_settings(settings, _up(1, "127.0.0.1:29400"))
    assert (one.bootstrap_servers, one.replication_factor, one.min_insync_replicas) == (
        "127.0.0.1:29400",
        1,
        1,
    )


def test_run_clients_keep_what_the_user_set(tmp_path: Path) -> None:
    mine = Settings(
        data_dir=tmp_path,
        kafka_port=29400,
        bootstrap_servers="kafka.example.internal:9092",
        replication_factor=2,
    )
    got = kafka.client_settings(mine, _up(3, "127.0.0.1:29400,127.0.0.1:29500,127.0.0.1:29600"))
    assert got.bootstrap_servers == "kafka.example.internal:9092"
    assert (got.replication_factor, got.min_insync_replicas) == (2, 1)


def test_reflex_run_argv_passes_the_goal_limit(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from octollm.runtime.reflex import reflex_run_argv

    fake = tmp_path / "octollm-reflex"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    monkeypatch.setenv("OCTO_REFLEX_BIN", str(fake))
    argv = reflex_run_argv(Settings(reflex_max_goal_bytes=1234))
    assert argv[argv.index("--max-goal-bytes") + 1] == "1234"
    default = reflex_run_argv(Settings())
    assert default[default.index("--max-goal-bytes") + 1] == str(64 * 1024)
