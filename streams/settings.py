"""Settings for every Python component: `OCTO_*` environment variables, then a TOML config file.

Precedence (highest first): explicit keyword arguments, environment variables, the file named by
`OCTO_CONFIG` (default `./octollm.toml` when present), built-in defaults. The Rust reflex layer
reads the same `OCTO_*` variables, so one environment configures the whole pipeline.
"""

from __future__ import annotations

import logging
import os
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

#: The checkout this package runs from (streams/ is the package, its parent the repository).
PROJECT_ROOT = Path(__file__).resolve().parent.parent

ARMS: tuple[str, ...] = ("planner", "coder", "retriever", "executor", "judge", "safety_guardian")
ROUTES: tuple[str, ...] = ("orchestrator", "priority")


class SecurityProtocol(StrEnum):
    PLAINTEXT = "PLAINTEXT"
    SSL = "SSL"
    SASL_PLAINTEXT = "SASL_PLAINTEXT"
    SASL_SSL = "SASL_SSL"


class SaslMechanism(StrEnum):
    PLAIN = "PLAIN"
    SCRAM_SHA_256 = "SCRAM-SHA-256"
    SCRAM_SHA_512 = "SCRAM-SHA-512"


class WireFormat(StrEnum):
    """How records are framed on the wire; see docs/wire-formats.md."""

    AVRO = "avro"  # Avro single-object encoding: C3 01 + CRC-64-AVRO fingerprint, no registry
    CONFLUENT = "confluent"  # 0x00 + 4-byte schema id, needs a schema registry


def _config_file() -> Path:
    return Path(os.environ.get("OCTO_CONFIG", "octollm.toml"))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="OCTO_",
        extra="forbid",
        validate_default=True,
    )

    # --- Kafka connection -----------------------------------------------------------------
    bootstrap_servers: str = Field(
        "",
        description="Comma-separated host:port list of Kafka brokers; "
        "empty means the local cluster on kafka_port.",
    )
    security_protocol: SecurityProtocol = SecurityProtocol.PLAINTEXT
    sasl_mechanism: SaslMechanism | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_ca_location: Path | None = None
    connect_timeout_s: float = Field(
        5.0, gt=0, description="How long a client waits for a broker before a clear error."
    )

    # --- Topics ---------------------------------------------------------------------------
    topic_prefix: str = Field(
        "", description="Prepended to every topic name so environments can share a cluster."
    )
    partitions: int = Field(6, ge=1, le=10_000)
    replication_factor: int = Field(1, ge=1, le=32)
    min_insync_replicas: int = Field(1, ge=1, le=32)
    routes: tuple[str, ...] = ROUTES
    arms: tuple[str, ...] = ARMS

    # --- Wire format ----------------------------------------------------------------------
    wire_format: WireFormat = WireFormat.AVRO
    schema_registry_url: str | None = Field(
        None, description="Confluent-compatible schema registry, needed for wire_format=confluent."
    )

    # --- Local services -------------------------------------------------------------------
    data_dir: Path = Field(PROJECT_ROOT / ".data", description="Local service data and logs.")
    cache_dir: Path = Field(
        Path.home() / ".cache" / "octollm",
        description="Downloaded artifacts kept across checkouts (Kafka jars).",
    )
    kafka_version: str = "4.4.0"
    kafka_port: int = Field(9092, ge=1024, le=65000, description="First broker's client port.")
    kafka_heap_mb: int = Field(512, ge=128)
    registry_version: str = Field(
        default="3.3.3",
        description="Apicurio Registry release run as the local Confluent-compatible schema "
        "registry (docs/schema-registry.md); 3.3.x needs Java 21+, 3.0.x runs on Java 17.",
    )
    registry_port: int = Field(
        default=8081, ge=1024, le=65000, description="Local schema registry's HTTP port."
    )
    registry_heap_mb: int = Field(
        default=256, ge=96, description="Local schema registry's max heap."
    )
    registry_java_home: Path | None = Field(
        default=None,
        description="JDK to run the schema registry with; default: the first of JAVA_HOME, "
        "`java` on PATH and /usr/lib/jvm/* new enough for registry_version.",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (
            init_settings,
            env_settings,
            TomlConfigSettingsSource(settings_cls, toml_file=_config_file()),
        )

    @field_validator("bootstrap_servers")
    @classmethod
    def _check_bootstrap(cls, value: str) -> str:
        if not value:
            return value
        for server in value.split(","):
            host, sep, port = server.strip().rpartition(":")
            if not sep or not host or not port.isdigit():
                raise ValueError(f"expected host:port[,host:port...], got {server.strip()!r}")
        return value

    @field_validator("topic_prefix")
    @classmethod
    def _check_prefix(cls, value: str) -> str:
        allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
        if not set(value) <= allowed:
            raise ValueError("topic prefix may only contain letters, digits, '.', '_' and '-'")
        return value

    @model_validator(mode="after")
    def _check_combinations(self) -> Settings:
        if not self.bootstrap_servers:
            self.bootstrap_servers = f"127.0.0.1:{self.kafka_port}"
        sasl = self.security_protocol in (
            SecurityProtocol.SASL_SSL,
            SecurityProtocol.SASL_PLAINTEXT,
        )
        if sasl and not (self.sasl_mechanism and self.sasl_username and self.sasl_password):
            raise ValueError(
                f"security_protocol={self.security_protocol} needs OCTO_SASL_MECHANISM, "
                "OCTO_SASL_USERNAME and OCTO_SASL_PASSWORD"
            )
        if self.wire_format is WireFormat.CONFLUENT and not self.schema_registry_url:
            raise ValueError("wire_format=confluent needs OCTO_SCHEMA_REGISTRY_URL")
        if self.min_insync_replicas > self.replication_factor:
            raise ValueError("min_insync_replicas cannot exceed replication_factor")
        return self

    def kafka_client_config(self) -> dict[str, Any]:
        """librdkafka settings shared by every producer, consumer and admin client."""
        config: dict[str, Any] = {
            # librdkafka's own log lines go to Python logging, where the application decides
            # what is shown; left alone they are printed straight to stderr.
            "logger": logging.getLogger("octollm.librdkafka"),
            "bootstrap.servers": self.bootstrap_servers,
            "security.protocol": self.security_protocol.value,
            "socket.connection.setup.timeout.ms": int(self.connect_timeout_s * 1000),
        }
        if self.sasl_mechanism:
            config["sasl.mechanism"] = self.sasl_mechanism.value
        if self.sasl_username:
            config["sasl.username"] = self.sasl_username
        if self.sasl_password:
            config["sasl.password"] = self.sasl_password.get_secret_value()
        if self.ssl_ca_location:
            config["ssl.ca.location"] = str(self.ssl_ca_location)
        return config


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()
