from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from octollm.settings import SaslMechanism, SecurityProtocol, Settings, WireFormat
from octollm.topics import TASKS, arm_requests, full_name, routed, topic_specs

pytestmark = pytest.mark.unit


def test_defaults_are_local() -> None:
    s = Settings()
    assert s.bootstrap_servers == "127.0.0.1:9092"
    assert s.wire_format is WireFormat.AVRO
    assert s.kafka_client_config()["security.protocol"] == "PLAINTEXT"


def test_env_vars_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OCTO_BOOTSTRAP_SERVERS", "k1:9092,k2:9092")
    monkeypatch.setenv("OCTO_TOPIC_PREFIX", "staging.")
    monkeypatch.setenv("OCTO_PARTITIONS", "12")
    s = Settings()
    assert s.bootstrap_servers == "k1:9092,k2:9092"
    assert s.partitions == 12
    assert full_name(s, TASKS) == "staging.octo.tasks.v1"


def test_config_file_is_read_and_env_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "octo.toml"
    config.write_text('topic_prefix = "file."\npartitions = 3\n')
    monkeypatch.setenv("OCTO_CONFIG", str(config))
    monkeypatch.setenv("OCTO_PARTITIONS", "4")
    s = Settings()
    assert s.topic_prefix == "file."
    assert s.partitions == 4


def test_sasl_scram_config(monkeypatch: pytest.MonkeyPatch) -> None:
    s = Settings(
        security_protocol=SecurityProtocol.SASL_SSL,
        sasl_mechanism=SaslMechanism.SCRAM_SHA_512,
        sasl_username="octo",
        sasl_password="s3cret",  # type: ignore[arg-type]
        ssl_ca_location=Path("/etc/ssl/certs/ca-certificates.crt"),
    )
    cfg = s.kafka_client_config()
    assert cfg["security.protocol"] == "SASL_SSL"
    assert cfg["sasl.mechanism"] == "SCRAM-SHA-512"
    assert cfg["sasl.password"] == "s3cret"
    assert "s3cret" not in repr(s)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"security_protocol": "SASL_SSL"}, "needs OCTO_SASL_MECHANISM"),
        ({"wire_format": "confluent"}, "needs OCTO_SCHEMA_REGISTRY_URL"),
        ({"bootstrap_servers": "localhost"}, "expected host:port"),
        ({"topic_prefix": "bad prefix/"}, "topic prefix may only contain"),
        ({"partitions": 0}, "greater than or equal to 1"),
        ({"replication_factor": 1, "min_insync_replicas": 2}, "cannot exceed"),
    ],
)
def test_invalid_settings_are_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Settings(**kwargs)  # type: ignore[arg-type]


def test_topic_specs_cover_the_data_path() -> None:
    names = [spec.name for spec in topic_specs(Settings())]
    assert names[0] == TASKS
    for route in ("orchestrator", "priority"):
        assert routed(route) in names
    for arm in ("planner", "coder", "retriever", "executor", "judge", "safety_guardian"):
        assert arm_requests(arm) in names
    assert {
        "octo.tasks.quarantine",
        "octo.arm.results",
        "octo.results.v1",
        "octo.audit.v1",
        "octo.dlq",
    } <= set(names)
    assert len(names) == len(set(names))
