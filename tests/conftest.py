"""Shared fixtures. Services are real and started here, once per session, then stopped.

The session broker comes from testcontainers where a Docker engine answers (set
OCTO_TEST_DOCKER=0 to opt out) and otherwise is the same Kafka that `octollm infra up` runs,
started locally on ports of its own with its data in a temporary directory and stopped by PID.
Either way the tests run against a real broker and never skip. (Our machines and CI have no
Docker engine, so the local path is the one exercised there; tests that are about the local
supervisor itself, like `octollm infra` and `octollm run`, always use it.)
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from octollm.settings import Settings, get_settings
from octollm.supervisor import kafka
from octollm.supervisor.process import port_in_use


def free_port_pair() -> int:
    """A port p with p and p+1 free (client and controller listeners)."""
    for _ in range(50):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port < 65000 and not port_in_use("127.0.0.1", port + 1):
            return int(port)
    raise RuntimeError("no free pair of ports on 127.0.0.1")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test is marked by the folder it lives in (unit, integration, e2e), so `make
    test-unit` and friends select by `-m` without a file that forgot its `pytestmark`."""
    for item in items:
        folder = item.path.parent.name
        if folder in ("unit", "integration", "e2e"):
            item.add_marker(folder)


@pytest.fixture(autouse=True)
def _fresh_settings_cache() -> Iterator[None]:
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def llm_settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """One real local LLM server (llama.cpp + SmolLM2) for the session, stopped by PID after."""
    from octollm.supervisor import llm

    settings = Settings(data_dir=tmp_path_factory.mktemp("llm"), llm_port=free_port())
    url = llm.start_llm(settings)
    try:
        yield settings.model_copy(update={"llm_base_url": url})
    finally:
        llm.stop_llm(settings)


def docker_engine_answers() -> bool:
    if os.environ.get("OCTO_TEST_DOCKER") == "0":
        return False
    try:
        import docker

        docker.from_env(timeout=3).ping()
    except Exception:  # no engine, no socket, no permission: all mean "use the local broker"
        return False
    return True


@pytest.fixture(scope="session")
def kafka_settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """A real one-node Kafka (KRaft) for the whole session."""
    data_dir = tmp_path_factory.mktemp("kafka-1")
    if docker_engine_answers():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer().with_kraft() as container:
            yield Settings(
                data_dir=data_dir, bootstrap_servers=container.get_bootstrap_server(), partitions=3
            )
        return
    settings = Settings(data_dir=data_dir, kafka_port=free_port_pair(), partitions=3)
    kafka.up(settings, brokers=1)
    try:
        yield settings
    finally:
        kafka.down(settings)


@pytest.fixture
def isolated(kafka_settings: Settings) -> Settings:
    """The session broker with a topic prefix of this test's own, so tests never share topics."""
    return kafka_settings.model_copy(update={"topic_prefix": f"t{uuid.uuid4().hex[:10]}."})


def cli_env(settings: Settings, **extra: str) -> dict[str, str]:
    """Environment for running `octollm` in a subprocess against `settings`' cluster."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OCTO_")}
    env.update(
        OCTO_BOOTSTRAP_SERVERS=settings.bootstrap_servers,
        OCTO_KAFKA_PORT=str(settings.kafka_port),
        OCTO_DATA_DIR=str(settings.data_dir),
        OCTO_TOPIC_PREFIX=settings.topic_prefix,
        OCTO_PARTITIONS=str(settings.partitions),
        OCTO_CONFIG=str(Path(settings.data_dir) / "no-config.toml"),
        # for the reflex binary, whose built-in default is the checkout cargo built it in
        OCTO_SCHEMAS_DIR=str(Path(__file__).resolve().parent.parent / "schemas"),
    )
    env.update(extra)
    return env


OCTOLLM = str(Path(__file__).resolve().parent.parent / ".venv" / "bin" / "octollm")
