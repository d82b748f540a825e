"""docker-compose.yml must offer what the local provisioning does: same ports, same topics."""

from __future__ import annotations

import re

import pytest
import yaml

from octollm.settings import PROJECT_ROOT, Settings
from octollm.topics import topic_specs

pytestmark = pytest.mark.unit

COMPOSE = yaml.safe_load((PROJECT_ROOT / "docker-compose.yml").read_text())


def _published(service: str) -> set[int]:
    ports = COMPOSE["services"][service].get("ports", [])
    return {int(p.split(":")[-2]) for p in ports}


def test_compose_parses_and_has_every_service() -> None:
    assert {"kafka", "kafka-topics", "clickhouse", "qdrant"} <= set(COMPOSE["services"])


def test_kafka_port_matches_local_default() -> None:
    settings = Settings()
    assert settings.kafka_port in _published("kafka")
    assert f"127.0.0.1:{settings.kafka_port}" in settings.bootstrap_servers
    env = COMPOSE["services"]["kafka"]["environment"]
    assert env["KAFKA_ADVERTISED_LISTENERS"] == f"PLAINTEXT://127.0.0.1:{settings.kafka_port}"
    assert env["KAFKA_NUM_PARTITIONS"] == str(settings.partitions)


def test_topics_match_local_provisioning() -> None:
    script = COMPOSE["services"]["kafka-topics"]["command"][0]
    names = set(re.findall(r"\bocto\.[a-z0-9_.]+", script))
    assert names == {spec.name for spec in topic_specs(Settings(topic_prefix=""))}
    assert f"--partitions {Settings().partitions}" in script


def test_every_port_binds_loopback_only() -> None:
    for name, service in COMPOSE["services"].items():
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"
