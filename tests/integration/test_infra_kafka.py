"""`octollm infra` against real Kafka 4.4 nodes started by the supervisor, on ports of their own.

Every cluster lives in a temporary data dir and is stopped by PID in a `finally`, so nothing is
left running and no one else's broker on this machine is touched.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from octollm.settings import Settings
from octollm.supervisor import kafka
from octollm.supervisor.process import pid_alive, port_in_use

pytestmark = pytest.mark.integration

OCTOLLM = str(Path(__file__).resolve().parents[2] / ".venv" / "bin" / "octollm")


def free_base_port(brokers: int) -> int:
    """A base port whose client and controller ports for `brokers` nodes are all free."""
    for attempt in range(200):
        base = 29000 + (os.getpid() * 7 + attempt * 13) % 800 * 2
        ports = [base + 100 * n + k for n in range(brokers) for k in (0, 1)]
        if not any(port_in_use("127.0.0.1", p) for p in ports):
            return base
    raise RuntimeError("no free ports for a local Kafka cluster")


def make_settings(tmp_path: Path, brokers: int) -> Settings:
    return Settings(data_dir=tmp_path / "data", kafka_port=free_base_port(brokers), partitions=3)


@pytest.fixture
def one_node(tmp_path: Path) -> Iterator[Settings]:
    settings = make_settings(tmp_path, 1)
    try:
        yield settings
    finally:
        kafka.down(settings)


def broker_ids(bootstrap: str) -> set[int]:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    return set(admin.list_topics(timeout=10).brokers)


def test_up_is_idempotent_and_down_stops_by_pid(one_node: Settings) -> None:
    first = kafka.up(one_node, brokers=1)
    assert not first.already_running
    assert [n.node for n in first.started] == [0]
    pid = first.nodes[0].pid
    assert pid is not None and pid_alive(pid)
    assert first.bootstrap_servers == f"127.0.0.1:{one_node.kafka_port}"
    assert broker_ids(first.bootstrap_servers) == {0}

    began = time.monotonic()
    second = kafka.up(one_node)
    assert second.already_running
    assert second.nodes[0].pid == pid
    assert time.monotonic() - began < 2

    st = kafka.status(one_node)
    assert st.answering and st.brokers_in_metadata == 1
    assert st.nodes[0].running and st.nodes[0].pid == pid
    assert Path(st.nodes[0].server_log).stat().st_size > 0  # log4j2 writes the server log

    assert kafka.down(one_node) == [(0, pid)]
    assert not pid_alive(pid)
    assert not list((one_node.data_dir / "run").glob("*.pid"))
    assert kafka.down(one_node) == []
    assert not kafka.status(one_node).answering

    # Restart on the same, already formatted data dir.
    again = kafka.up(one_node)
    assert not again.already_running
    assert broker_ids(again.bootstrap_servers) == {0}


def test_port_taken_by_someone_else(one_node: Settings) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", one_node.kafka_port))
        squatter.listen()
        with pytest.raises(kafka.InfraError) as err:
            kafka.up(one_node, brokers=1)
    assert f"port {one_node.kafka_port} on 127.0.0.1 is in use by another process" in str(err.value)
    assert "OCTO_KAFKA_PORT" in str(err.value)
    assert not list((one_node.data_dir / "run").glob("*.pid"))


def test_cli_up_status_down(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, 1)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OCTO_")}
    env["OCTO_KAFKA_PORT"] = str(settings.kafka_port)
    env["OCTO_CONFIG"] = str(tmp_path / "absent.toml")
    data_dir = str(settings.data_dir)

    def octollm(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [OCTOLLM, "infra", *args, "--data-dir", data_dir],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    try:
        up = octollm("up", "--no-llm")
        assert up.returncode == 0, up.stderr
        assert "kafka node 0 started (pid " in up.stdout
        assert f"on 127.0.0.1:{settings.kafka_port}" in up.stdout
        assert "server.log" in up.stdout

        again = octollm("up", "--no-llm")
        assert again.returncode == 0, again.stderr
        assert "already running" in again.stdout

        st = octollm("status")
        assert st.returncode == 0, st.stderr
        assert "1/1 node(s) running, answering" in st.stdout
        assert str(settings.data_dir / "kafka" / "node-0" / "logs" / "server.log") in st.stdout

        st_json = json.loads(octollm("status", "--json").stdout)
        assert st_json["answering"] is True
        pid = st_json["nodes"][0]["pid"]

        mismatch = octollm("up", "--brokers", "3")
        assert mismatch.returncode == 1
        assert "octollm infra reset" in mismatch.stderr

        down = octollm("down")
        assert down.returncode == 0, down.stderr
        assert f"kafka node 0 stopped (pid {pid})" in down.stdout
        assert not pid_alive(pid)

        reset = octollm("reset", "--yes")
        assert reset.returncode == 0, reset.stderr
        assert not (settings.data_dir / "kafka").exists()
    finally:
        kafka.down(settings)


def _produce(bootstrap: str, topic: str, values: list[str]) -> None:
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "acks": "all",
            "enable.idempotence": True,
            "message.timeout.ms": 30000,
        }
    )
    errors: list[str] = []

    def delivered(err: object, _msg: object) -> None:
        if err is not None:
            errors.append(str(err))

    for value in values:
        producer.produce(topic, value=value.encode(), on_delivery=delivered)
    assert producer.flush(40) == 0
    assert errors == []


def _consume(bootstrap: str, topic: str, count: int) -> list[str]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"g-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([topic])
    got: list[str] = []
    deadline = time.monotonic() + 60
    try:
        while len(got) < count and time.monotonic() < deadline:
            msg = consumer.poll(1.0)
            if msg is not None and msg.error() is None:
                got.append(msg.value().decode())
    finally:
        consumer.close()
    return got


def test_three_nodes_survive_one_broker_down(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, 3)
    try:
        result = kafka.up(settings, brokers=3)
        bootstrap = result.bootstrap_servers
        assert len(bootstrap.split(",")) == 3
        assert broker_ids(bootstrap) == {0, 1, 2}

        admin = AdminClient({"bootstrap.servers": bootstrap})
        (broker_config,) = admin.describe_configs(
            [ConfigResource(ConfigResource.Type.BROKER, "0")]
        ).values()
        config = broker_config.result(timeout=20)
        assert config["default.replication.factor"].value == "3"
        assert config["min.insync.replicas"].value == "2"
        assert config["offsets.topic.replication.factor"].value == "3"

        topic = f"replicated-{uuid.uuid4().hex[:8]}"
        for future in admin.create_topics([NewTopic(topic, 3, 3)]).values():
            future.result(timeout=30)
        partitions = admin.list_topics(topic, timeout=10).topics[topic].partitions
        assert all(len(p.replicas) == 3 for p in partitions.values())

        _produce(bootstrap, topic, [f"before-{i}" for i in range(20)])

        stopped = kafka.stop_node(settings, 2)
        assert stopped is not None and not pid_alive(stopped)
        st = kafka.status(settings)
        assert [n.running for n in st.nodes] == [True, True, False]

        # Two of three replicas are still in sync: acks=all keeps working.
        _produce(bootstrap, topic, [f"during-{i}" for i in range(20)])
        got = _consume(bootstrap, topic, 40)
        assert sorted(got) == sorted(
            [f"before-{i}" for i in range(20)] + [f"during-{i}" for i in range(20)]
        )

        new_pid = kafka.start_node(settings, 2)
        assert new_pid != stopped and pid_alive(new_pid)
        assert broker_ids(bootstrap) == {0, 1, 2}
    finally:
        stopped_nodes = kafka.down(settings)
    assert all(not pid_alive(pid) for _, pid in stopped_nodes)
