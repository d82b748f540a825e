"""A local Apache Kafka (KRaft, no ZooKeeper, no Docker) cluster of 1 or 3 nodes on 127.0.0.1.

Provisioning: the broker jars come from Maven Central through `infra/kafka/pom.xml` and are
cached once per version under `<cache_dir>/kafka-<version>/libs`, so later starts are offline.
Every node runs in combined mode (`process.roles=broker,controller`) with a static controller
quorum, keeps its data, config and logs under `<data_dir>/kafka/node-<i>/`, and is tracked by a
PID file in `<data_dir>/run/` (see `ManagedProcess`).

Ports, for node i (0-based) and `kafka_port` P (default 9092): client listener P + 100*i,
controller listener P + 100*i + 1. One node: 9092/9093; three nodes add 9192/9193 and 9292/9293.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import logging
import os
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from octollm.settings import PROJECT_ROOT, Settings
from octollm.supervisor import maven
from octollm.supervisor.errors import InfraError
from octollm.supervisor.process import ManagedProcess, absolute_dirs, port_in_use, wait_until

__all__ = [
    "HOST",
    "ClusterStatus",
    "InfraError",
    "KafkaCluster",
    "NodeStatus",
    "UpResult",
    "bootstrap_servers",
    "client_settings",
    "down",
    "ensure_jars",
    "jars_cached",
    "reset",
    "server_properties",
    "start_node",
    "status",
    "stop_node",
    "up",
]

HOST = "127.0.0.1"
ALLOWED_BROKER_COUNTS = (1, 3)
INFRA_DIR = PROJECT_ROOT / "infra" / "kafka"
POM = INFRA_DIR / "pom.xml"
LOG4J2_CONFIG = INFRA_DIR / "log4j2.yaml"
CLUSTER_FILE = "cluster.json"
PORT_STRIDE = 100


# --- layout --------------------------------------------------------------------------------


def kafka_dir(settings: Settings) -> Path:
    return settings.data_dir / "kafka"


def run_dir(settings: Settings) -> Path:
    return settings.data_dir / "run"


def node_dir(settings: Settings, node: int) -> Path:
    return kafka_dir(settings) / f"node-{node}"


def client_port(settings: Settings, node: int) -> int:
    return settings.kafka_port + PORT_STRIDE * node


def controller_port(settings: Settings, node: int) -> int:
    return settings.kafka_port + PORT_STRIDE * node + 1


def bootstrap_servers(settings: Settings, brokers: int) -> str:
    """The `bootstrap.servers` string for a local cluster of `brokers` nodes."""
    return ",".join(f"{HOST}:{client_port(settings, i)}" for i in range(brokers))


def jars_cached(settings: Settings) -> bool:
    """True if the jars are on disk, so `up` will not need Maven (or the network)."""
    return _jars_complete(jars_dir(settings))


def jars_dir(settings: Settings) -> Path:
    return settings.cache_dir.expanduser() / f"kafka-{settings.kafka_version}" / "libs"


# --- jars ----------------------------------------------------------------------------------


def _java() -> str:
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").is_file():
        return str(Path(java_home) / "bin" / "java")
    found = shutil.which("java")
    if found is None:
        raise InfraError(
            "java not found: Kafka needs a Java 17+ runtime on PATH (or JAVA_HOME), "
            "e.g. `apt-get install openjdk-17-jre-headless`"
        )
    return found


def _jars_complete(libs: Path) -> bool:
    return maven.read_marker(libs) is not None and any(libs.glob("kafka_2.13-*.jar"))


def ensure_jars(settings: Settings) -> Path:
    """The directory holding every Kafka runtime jar, fetched with Maven the first time.

    Once cached, Maven never runs again, so a second `up` starts offline (see maven.py).
    """
    settings = absolute_dirs(settings)
    libs = jars_dir(settings)
    if _jars_complete(libs):
        return libs
    _java()

    def inspect(staging: Path) -> dict[str, Any] | None:
        if not any(staging.glob("kafka_2.13-*.jar")):
            return None
        jars = len(list(staging.glob("*.jar")))
        return {"kafka_version": settings.kafka_version, "jars": jars}

    try:
        maven.provision(
            libs,
            pom=POM,
            goal="dependency:copy-dependencies",
            properties={"includeScope": "runtime", "kafka.version": settings.kafka_version},
            what=f"Apache Kafka {settings.kafka_version} jars",
            inspect=inspect,
        )
    except maven.MavenError as exc:
        raise InfraError(str(exc)) from exc
    return libs


# --- configuration -------------------------------------------------------------------------


def server_properties(settings: Settings, node: int, brokers: int) -> dict[str, str]:
    """The broker+controller configuration of `node` in a `brokers`-node local cluster."""
    if brokers not in ALLOWED_BROKER_COUNTS:
        raise InfraError(f"brokers must be 1 or 3, got {brokers}")
    if not 0 <= node < brokers:
        raise InfraError(f"node must be between 0 and {brokers - 1}, got {node}")
    replication = 3 if brokers == 3 else 1
    min_isr = 2 if brokers == 3 else 1
    voters = ",".join(f"{i}@{HOST}:{controller_port(settings, i)}" for i in range(brokers))
    client = f"{HOST}:{client_port(settings, node)}"
    controller = f"{HOST}:{controller_port(settings, node)}"
    return {
        "process.roles": "broker,controller",
        "node.id": str(node),
        "controller.quorum.voters": voters,
        "listeners": f"PLAINTEXT://{client},CONTROLLER://{controller}",
        "advertised.listeners": f"PLAINTEXT://{client},CONTROLLER://{controller}",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "log.dirs": str(node_dir(settings, node) / "data"),
        # Topics are created explicitly (octollm topics), so a typo never creates one.
        "auto.create.topics.enable": "false",
        "num.partitions": str(settings.partitions),
        "default.replication.factor": str(replication),
        "min.insync.replicas": str(min_isr),
        "offsets.topic.replication.factor": str(replication),
        "offsets.topic.num.partitions": "12",
        "transaction.state.log.replication.factor": str(replication),
        "transaction.state.log.min.isr": str(min_isr),
        "transaction.state.log.num.partitions": "12",
        "share.coordinator.state.topic.replication.factor": str(replication),
        "share.coordinator.state.topic.min.isr": str(min_isr),
        "group.initial.rebalance.delay.ms": "0",
        # A small machine: few threads, and leave the heap to settings.kafka_heap_mb.
        "num.network.threads": "2",
        "num.io.threads": "4",
        "num.recovery.threads.per.data.dir": "1",
        "log.retention.hours": "168",
        "log.segment.bytes": str(256 * 1024 * 1024),
        "delete.topic.enable": "true",
    }


def render_properties(props: dict[str, str]) -> str:
    lines = ["# Generated by octollm infra up on every start; edits are overwritten."]
    lines += [f"{key}={value}" for key, value in props.items()]
    return "\n".join(lines) + "\n"


def _random_cluster_id() -> str:
    """A Kafka Uuid string (base64url of 16 random bytes) without starting Java for it."""
    while True:
        raw = uuid.uuid4().bytes
        text = base64.urlsafe_b64encode(raw).decode().rstrip("=")
        if not text.startswith("-"):  # Kafka avoids these so the id never looks like a flag
            return text


@dataclass
class ClusterInfo:
    """What `<data_dir>/kafka/cluster.json` records: fixed when the storage is formatted,
    except `kafka_port`, the base port of the latest start."""

    cluster_id: str
    brokers: int
    kafka_version: str
    created: float = field(default_factory=time.time)
    kafka_port: int | None = None


def read_cluster_info(settings: Settings) -> ClusterInfo | None:
    path = kafka_dir(settings) / CLUSTER_FILE
    try:
        data = json.loads(path.read_text())
        return ClusterInfo(
            cluster_id=str(data["cluster_id"]),
            brokers=int(data["brokers"]),
            kafka_version=str(data.get("kafka_version", "")),
            created=float(data.get("created", 0.0)),
            kafka_port=int(data["kafka_port"]) if data.get("kafka_port") else None,
        )
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError) as exc:
        raise InfraError(
            f"{path} is unreadable ({exc}); run `octollm infra reset` to start from scratch"
        ) from exc


def write_cluster_info(settings: Settings, info: ClusterInfo) -> None:
    path = kafka_dir(settings) / CLUSTER_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(asdict(info), indent=2) + "\n")
    tmp.replace(path)


def broker_count_mismatch(data_dir: Path, existing: int, requested: int) -> str:
    """The message for `--brokers N` (infra up, run) against a data dir formatted for another
    count: the same option on either command uses the cluster that is there."""
    return (
        f"the Kafka data in {data_dir / 'kafka'} belongs to a {existing}-broker cluster, "
        f"but {requested} broker(s) were requested; pass --brokers {existing} (or leave it out) "
        f"to use that cluster, or run `octollm infra reset` to wipe it "
        f"(or use another --data-dir)"
    )


# --- the cluster ---------------------------------------------------------------------------


@dataclass
class NodeStatus:
    node: int
    running: bool
    pid: int | None
    client_port: int
    controller_port: int
    data_dir: str
    server_log: str
    stdout_log: str


@dataclass
class ClusterStatus:
    data_dir: str
    formatted: bool
    brokers: int | None
    cluster_id: str | None
    bootstrap_servers: str | None
    answering: bool
    brokers_in_metadata: int
    nodes: list[NodeStatus]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class UpResult:
    already_running: bool
    brokers: int
    bootstrap_servers: str
    started: list[NodeStatus]
    nodes: list[NodeStatus]
    seconds: float
    #: What clients are configured with (settings.bootstrap_servers), for a hint if it differs.
    configured_bootstrap: str = ""

    def lines(self) -> list[str]:
        """Short human-readable report, printed by `octollm infra up` and `octollm run`."""
        if self.already_running:
            out = [
                f"kafka: already running ({self.brokers} node(s)), "
                f"bootstrap servers {self.bootstrap_servers}"
            ]
        else:
            out = [
                f"kafka node {n.node} started (pid {n.pid}) on {HOST}:{n.client_port}, "
                f"logs: {n.server_log}"
                for n in self.started
            ]
            out.append(
                f"kafka: {self.brokers} node(s) ready in {self.seconds:.1f}s, "
                f"bootstrap servers {self.bootstrap_servers}"
            )
        if self.configured_bootstrap and self.configured_bootstrap != self.bootstrap_servers:
            out.append(f"kafka: clients need OCTO_BOOTSTRAP_SERVERS={self.bootstrap_servers}")
        return out


class KafkaCluster:
    """The local cluster that lives in `settings.data_dir` (0..brokers-1 nodes)."""

    def __init__(self, settings: Settings, brokers: int) -> None:
        if brokers not in ALLOWED_BROKER_COUNTS:
            raise InfraError(f"brokers must be 1 or 3, got {brokers}")
        self.settings = absolute_dirs(settings)
        self.brokers = brokers

    # layout
    def node_dir(self, node: int) -> Path:
        return node_dir(self.settings, node)

    def config_file(self, node: int) -> Path:
        return self.node_dir(node) / "server.properties"

    def logs_dir(self, node: int) -> Path:
        return self.node_dir(node) / "logs"

    def server_log(self, node: int) -> Path:
        return self.logs_dir(node) / "server.log"

    def stdout_log(self, node: int) -> Path:
        return self.logs_dir(node) / "stdout.log"

    @property
    def bootstrap(self) -> str:
        return bootstrap_servers(self.settings, self.brokers)

    def process(self, node: int, libs: Path | None = None) -> ManagedProcess:
        """The managed JVM of `node`; argv only matters for starting (and `java` for matching)."""
        libs = libs if libs is not None else jars_dir(self.settings)
        heap = self.settings.kafka_heap_mb
        argv = [
            _java_or_placeholder(),
            f"-Xms{heap}m",
            f"-Xmx{heap}m",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-XX:+ExitOnOutOfMemoryError",
            "-Djava.awt.headless=true",
            f"-Dkafka.logs.dir={self.logs_dir(node)}",
            f"-Dlog4j2.configurationFile={LOG4J2_CONFIG}",
            "-cp",
            f"{libs}/*",
            "kafka.Kafka",
            str(self.config_file(node)),
        ]
        return ManagedProcess(
            f"kafka-node-{node}",
            run_dir(self.settings),
            argv,
            log_file=self.stdout_log(node),
            cwd=self.node_dir(node),
            marker=str(self.config_file(node)),
        )

    def node_status(self, node: int) -> NodeStatus:
        pid = self.process(node).running_pid()
        return NodeStatus(
            node=node,
            running=pid is not None,
            pid=pid,
            client_port=client_port(self.settings, node),
            controller_port=controller_port(self.settings, node),
            data_dir=str(self.node_dir(node)),
            server_log=str(self.server_log(node)),
            stdout_log=str(self.stdout_log(node)),
        )

    # storage
    def _formatted(self, node: int) -> bool:
        return (self.node_dir(node) / "data" / "meta.properties").is_file()

    def prepare(self, libs: Path) -> ClusterInfo:
        """Write every node's config and format storage that is not formatted yet."""
        info = read_cluster_info(self.settings)
        if info is not None and info.brokers != self.brokers:
            raise InfraError(
                broker_count_mismatch(self.settings.data_dir, info.brokers, self.brokers)
            )
        if info is None:
            stray = [n for n in range(3) if self._formatted(n)]
            if stray:
                raise InfraError(
                    f"{kafka_dir(self.settings)} holds Kafka data without {CLUSTER_FILE}; "
                    "run `octollm infra reset` to wipe it"
                )
            info = ClusterInfo(_random_cluster_id(), self.brokers, self.settings.kafka_version)
        info.kafka_port = self.settings.kafka_port
        write_cluster_info(self.settings, info)
        for node in range(self.brokers):
            self.logs_dir(node).mkdir(parents=True, exist_ok=True)
            props = server_properties(self.settings, node, self.brokers)
            self.config_file(node).write_text(render_properties(props))
        unformatted = [n for n in range(self.brokers) if not self._formatted(n)]
        procs = {n: self._format(libs, info.cluster_id, n) for n in unformatted}
        for node, proc in procs.items():
            out, _ = proc.communicate(timeout=120)
            if proc.returncode != 0:
                tail = "\n".join(out.strip().splitlines()[-10:])
                raise InfraError(f"formatting the storage of kafka node {node} failed:\n{tail}")
        return info

    def _format(self, libs: Path, cluster_id: str, node: int) -> subprocess.Popen[str]:
        argv = [
            _java(),
            "-Xmx256m",
            f"-Dkafka.logs.dir={self.logs_dir(node)}",
            f"-Dlog4j2.configurationFile={LOG4J2_CONFIG}",
            "-cp",
            f"{libs}/*",
            "kafka.tools.StorageTool",
            "format",
            "-t",
            cluster_id,
            "-c",
            str(self.config_file(node)),
            "--ignore-formatted",
        ]
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    # lifecycle
    def check_ports(self, node: int) -> None:
        for port in (client_port(self.settings, node), controller_port(self.settings, node)):
            if port_in_use(HOST, port):
                raise InfraError(
                    f"port {port} on {HOST} is in use by another process; stop it or set "
                    "OCTO_KAFKA_PORT to another base port (node i uses "
                    f"OCTO_KAFKA_PORT+{PORT_STRIDE}*i and +1)"
                )

    def start(self, node: int, libs: Path) -> ManagedProcess:
        proc = self.process(node, libs)
        if proc.running_pid() is None:
            self.check_ports(node)
            proc.start()
        return proc

    def metadata_brokers(self, timeout: float = 3.0) -> int:
        """How many brokers the cluster reports in a metadata response (0 if it does not answer)."""
        reachable = [i for i in range(self.brokers) if _port_open(client_port(self.settings, i))]
        if not reachable:
            return 0
        return _count_brokers(bootstrap_servers(self.settings, self.brokers), timeout)

    def wait_ready(
        self, procs: dict[int, ManagedProcess], timeout: float, expect: int | None = None
    ) -> None:
        """Wait until the metadata lists `expect` (default: all) brokers; fail fast on a crash."""
        expect = self.brokers if expect is None else expect

        def ready() -> bool:
            for node, proc in procs.items():
                if proc.running_pid() is None:
                    raise InfraError(
                        f"kafka node {node} exited during startup (exit code "
                        f"{proc.exit_code()}); last lines of its logs:\n{self.log_tail(node)}"
                    )
            return self.metadata_brokers() >= expect

        try:
            wait_until(ready, timeout=timeout, interval=0.5, what=f"{expect} kafka broker(s)")
        except TimeoutError as exc:
            tails = "\n".join(
                f"--- node {n} ({self.server_log(n)}):\n{self.log_tail(n)}" for n in procs
            )
            raise InfraError(f"{exc}; last log lines:\n{tails}") from exc

    def log_tail(self, node: int, lines: int = 20) -> str:
        chunks = []
        for path in (self.stdout_log(node), self.server_log(node)):
            with contextlib.suppress(OSError):
                text = path.read_text(errors="replace").strip().splitlines()
                starts = [i for i, line in enumerate(text) if line.startswith("--- ")]
                text = text[starts[-1] if starts else 0 :][-lines:]  # the latest run only
                if text:
                    chunks.append(f"[{path.name}]\n" + "\n".join(text))
        return "\n".join(chunks) or "(no log output)"


def _java_or_placeholder() -> str:
    # Status/stop only need argv to match /proc cmdline ("java"), not a usable java binary.
    try:
        return _java()
    except InfraError:
        return "java"


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((HOST, port)) == 0


class _QuietLogger(logging.Logger):
    """Swallows librdkafka's connection-refused chatter while a node is still starting."""

    def __init__(self) -> None:
        super().__init__("octollm.supervisor.librdkafka", level=logging.CRITICAL + 1)


def _count_brokers(bootstrap: str, timeout: float) -> int:
    from confluent_kafka.admin import AdminClient

    config: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "socket.connection.setup.timeout.ms": int(timeout * 1000),
        "logger": _QuietLogger(),
    }
    admin = AdminClient(config)
    try:
        metadata = admin.list_topics(timeout=timeout)
    except Exception:
        return 0
    return len(metadata.brokers)


@contextlib.contextmanager
def _lock(settings: Settings) -> Iterator[None]:
    """Serialise up/down/reset on one data dir (two shells running `up` at once)."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(settings.data_dir, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _cluster_for(settings: Settings, brokers: int | None) -> KafkaCluster:
    info = read_cluster_info(settings)
    if brokers is None:
        brokers = info.brokers if info is not None else 1
    elif info is not None and info.brokers != brokers:
        raise InfraError(broker_count_mismatch(settings.data_dir, info.brokers, brokers))
    return KafkaCluster(settings, brokers)


def _known_cluster(settings: Settings) -> KafkaCluster:
    """The cluster recorded in the data dir, or a 3-node view so stray pid files are found.

    While nodes run, their ports are the ones they were started with, whatever
    OCTO_KAFKA_PORT says now.
    """
    info = read_cluster_info(settings)
    cluster = KafkaCluster(settings, info.brokers if info is not None else 3)
    if info is None or info.kafka_port in (None, settings.kafka_port):
        return cluster
    if any(cluster.process(n).running_pid() is not None for n in range(cluster.brokers)):
        return KafkaCluster(
            settings.model_copy(update={"kafka_port": info.kafka_port}), info.brokers
        )
    return cluster


def _default_timeout(brokers: int) -> float:
    return 60.0 if brokers == 1 else 90.0


def client_settings(settings: Settings, up: UpResult) -> Settings:
    """The settings the workers of `octollm run` use against the cluster `up` reports.

    A bootstrap list other than the local default (node 0), and OCTO_REPLICATION_FACTOR or
    OCTO_MIN_INSYNC_REPLICAS, stay as set. Otherwise clients bootstrap from every node, so losing
    node 0 does not strand a restarting worker, and on a 3-node cluster our topics get three
    replicas with two in sync, so one broker can die without losing a write (the nodes' own
    defaults for the internal topics are the same).
    """
    update: dict[str, Any] = {}
    if settings.bootstrap_servers == f"{HOST}:{settings.kafka_port}":  # the default: node 0
        update["bootstrap_servers"] = up.bootstrap_servers
    if up.brokers >= 3 and not {"replication_factor", "min_insync_replicas"} & (
        settings.model_fields_set
    ):
        update.update(replication_factor=3, min_insync_replicas=2)
    return settings.model_copy(update=update) if update else settings


def up(settings: Settings, brokers: int | None = None, *, timeout: float | None = None) -> UpResult:
    """Start the local cluster (idempotent) and wait until all brokers answer metadata.

    `brokers=None` reuses the count recorded in the data dir (1 for a fresh one). Nodes that
    already run are left alone; only the missing ones start.
    """
    settings = absolute_dirs(settings)
    began = time.monotonic()
    with _lock(settings):
        cluster = _cluster_for(settings, brokers)
        timeout = _default_timeout(cluster.brokers) if timeout is None else timeout
        statuses = [cluster.node_status(n) for n in range(cluster.brokers)]
        info = read_cluster_info(settings)
        if (
            info is not None
            and info.kafka_port not in (None, settings.kafka_port)
            and any(s.running for s in statuses)
        ):
            raise InfraError(
                f"the local Kafka in {settings.data_dir} runs on base port {info.kafka_port}, "
                f"not {settings.kafka_port}; run `octollm infra down` first to move it"
            )
        if all(s.running for s in statuses) and info is not None:
            # Running already: report it at once (status probes whether it answers).
            return UpResult(
                True,
                cluster.brokers,
                cluster.bootstrap,
                [],
                statuses,
                time.monotonic() - began,
                settings.bootstrap_servers,
            )
        for s in statuses:
            if not s.running:
                cluster.check_ports(s.node)
        libs = ensure_jars(settings)
        cluster.prepare(libs)
        procs: dict[int, ManagedProcess] = {}
        started: list[int] = []
        for s in statuses:
            proc = cluster.process(s.node, libs)
            if not s.running:
                proc.start()
                started.append(s.node)
            procs[s.node] = proc
        try:
            cluster.wait_ready(procs, timeout)
        except BaseException:
            for node in started:  # leave nothing half-started behind
                procs[node].stop(timeout=10.0)
            raise
        nodes = [cluster.node_status(n) for n in range(cluster.brokers)]
        return UpResult(
            False,
            cluster.brokers,
            cluster.bootstrap,
            [nodes[n] for n in started],
            nodes,
            time.monotonic() - began,
            settings.bootstrap_servers,
        )


def _stop_all(procs: list[tuple[int, ManagedProcess]], timeout: float) -> list[tuple[int, int]]:
    """Stop in parallel: a combined-mode node waits for the quorum while shutting down, so
    stopping nodes one by one would leave the last ones waiting for peers already gone."""
    stopped: list[tuple[int, int]] = []
    lock = threading.Lock()

    def stop_one(node: int, proc: ManagedProcess) -> None:
        pid = proc.running_pid()
        if pid is not None and proc.stop(timeout=timeout):
            with lock:
                stopped.append((node, pid))

    threads = [threading.Thread(target=stop_one, args=item) for item in procs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sorted(stopped)


def down(settings: Settings, *, timeout: float = 30.0) -> list[tuple[int, int]]:
    """Stop our nodes (only PIDs from our pid files); returns (node, pid) of what was stopped."""
    settings = absolute_dirs(settings)
    with _lock(settings):
        cluster = _known_cluster(settings)
        procs = [(n, cluster.process(n)) for n in range(cluster.brokers)]
        return _stop_all(procs, timeout)


def stop_node(settings: Settings, node: int, *, timeout: float = 30.0) -> int | None:
    """Stop one node (a broker outage for reliability tests); its PID, or None if not running."""
    settings = absolute_dirs(settings)
    cluster = _known_cluster(settings)
    if not 0 <= node < cluster.brokers:
        raise InfraError(f"node must be between 0 and {cluster.brokers - 1}, got {node}")
    proc = cluster.process(node)
    pid = proc.running_pid()
    if pid is None:
        return None
    proc.stop(timeout=timeout)
    return pid


def start_node(settings: Settings, node: int, *, timeout: float | None = None) -> int:
    """Start one stopped node again and wait until the cluster lists every broker; its PID."""
    settings = absolute_dirs(settings)
    cluster = _known_cluster(settings)
    if read_cluster_info(settings) is None:
        raise InfraError("no local Kafka cluster in this data dir; run `octollm infra up` first")
    if not 0 <= node < cluster.brokers:
        raise InfraError(f"node must be between 0 and {cluster.brokers - 1}, got {node}")
    libs = ensure_jars(settings)
    proc = cluster.start(node, libs)
    pid = proc.running_pid()
    if pid is None:
        raise InfraError(
            f"kafka node {node} exited at once (exit code {proc.exit_code()}):\n"
            f"{cluster.log_tail(node)}"
        )
    wait_timeout = _default_timeout(cluster.brokers) if timeout is None else timeout
    cluster.wait_ready({node: proc}, wait_timeout)
    return pid


def status(settings: Settings, *, probe_timeout: float = 3.0) -> ClusterStatus:
    """Per-node PID, ports, data and log paths, and whether the cluster answers metadata."""
    settings = absolute_dirs(settings)
    info = read_cluster_info(settings)
    cluster = _known_cluster(settings)
    nodes = [cluster.node_status(n) for n in range(cluster.brokers)]
    if info is None:
        nodes = [n for n in nodes if n.running]  # stray processes only
    seen = cluster.metadata_brokers(probe_timeout) if any(n.running for n in nodes) else 0
    return ClusterStatus(
        data_dir=str(settings.data_dir),
        formatted=info is not None,
        brokers=info.brokers if info is not None else None,
        cluster_id=info.cluster_id if info is not None else None,
        bootstrap_servers=cluster.bootstrap if info is not None else None,
        answering=seen > 0,
        brokers_in_metadata=seen,
        nodes=nodes,
    )


def reset(settings: Settings) -> list[Path]:
    """Stop the cluster, then delete its data and pid files (nothing outside `data_dir`)."""
    settings = absolute_dirs(settings)
    down(settings)
    removed: list[Path] = []
    with _lock(settings):
        root = settings.data_dir.resolve()
        target = kafka_dir(settings)
        if target.exists() or target.is_symlink():
            if target.is_symlink() or not target.resolve().is_relative_to(root):
                raise InfraError(f"refusing to delete {target}: it points outside {root}")
            shutil.rmtree(target)
            removed.append(target)
        runs = run_dir(settings)
        if runs.is_dir() and not runs.is_symlink():
            for pid_file in runs.glob("kafka-node-*.pid*"):
                pid_file.unlink(missing_ok=True)
                removed.append(pid_file)
            with contextlib.suppress(OSError):
                runs.rmdir()  # only if empty: other services may keep pid files there too
    return removed
