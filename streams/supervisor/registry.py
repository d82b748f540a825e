"""A local Confluent-compatible schema registry: Apicurio Registry, in memory, on 127.0.0.1.

Provisioning: `infra/registry/pom.xml` unpacks the release distribution
`io.apicurio:apicurio-registry-app:<registry_version>:tar.gz:all` from Maven Central into
`<cache_dir>/registry-<version>/`, once per version (a marker file records a complete unpack,
so later starts run no Maven and need no network). The distribution is the Quarkus application
as Apicurio ships it: `apicurio-registry-app-<v>-runner.jar` + `lib/` for 3.0.x, the fast-jar
layout (`quarkus-run.jar`) for 3.1+.

Running: `java -jar` with a capped heap, H2 in-memory storage (Apicurio 3's default, so every
start is an empty registry), the HTTP server on 127.0.0.1:<port>, and the Confluent API at
`http://127.0.0.1:<port>/apis/ccompat/v7` -- the URL `start_registry` returns, to give to
`SchemaRegistryClient` or `Codec(registry_url=...)`. The process is tracked by
`<data_dir>/run/schema-registry.pid`, logs to `<data_dir>/registry/registry.log`, and the port it
was started on is kept in `<data_dir>/run/schema-registry.json`. See docs/schema-registry.md.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from octollm.runtime.pids import rss_mb
from octollm.settings import PROJECT_ROOT, Settings
from octollm.supervisor import maven
from octollm.supervisor.kafka import InfraError
from octollm.supervisor.process import ManagedProcess, pid_alive, port_in_use, wait_until

__all__ = [
    "CCOMPAT_PATH",
    "HOST",
    "RegistryError",
    "RegistryInstall",
    "RegistryStatus",
    "ensure_registry",
    "find_java",
    "registry_home",
    "registry_status",
    "registry_url",
    "start_registry",
    "stop_registry",
]

HOST = "127.0.0.1"
CCOMPAT_PATH = "/apis/ccompat/v7"
POM = PROJECT_ROOT / "infra" / "registry" / "pom.xml"
PROCESS_NAME = "schema-registry"
START_TIMEOUT_S = 120.0
#: Confluent Schema Registry's default global compatibility level.
DEFAULT_COMPATIBILITY = "BACKWARD"

log = logging.getLogger(__name__)


class RegistryError(InfraError):
    """The schema registry could not be provisioned, started or reached (one line to fix it)."""


# --- layout --------------------------------------------------------------------------------


def registry_home(settings: Settings) -> Path:
    """Where the distribution of `settings.registry_version` is unpacked (shared, cached)."""
    return settings.cache_dir / f"registry-{settings.registry_version}"


def registry_dir(settings: Settings) -> Path:
    """This instance's log and scratch folder."""
    return settings.data_dir / "registry"


def log_file(settings: Settings) -> Path:
    return registry_dir(settings) / "registry.log"


def run_dir(settings: Settings) -> Path:
    return settings.data_dir / "run"


def state_file(settings: Settings) -> Path:
    return run_dir(settings) / f"{PROCESS_NAME}.json"


def registry_url(port: int) -> str:
    """The Confluent-compatible base URL of a local registry on `port`."""
    return f"http://{HOST}:{port}{CCOMPAT_PATH}"


# --- provisioning --------------------------------------------------------------------------


@dataclass(frozen=True)
class RegistryInstall:
    """A complete unpacked distribution: what to `java -jar`, and the Java it was built for."""

    home: Path
    version: str
    launcher: Path
    java_major: int


def _find_launcher(home: Path) -> Path | None:
    fast_jar = home / "quarkus-run.jar"  # 3.1+: fast-jar layout
    if fast_jar.is_file():
        return fast_jar
    runners = sorted(home.glob("*-runner.jar"))  # 3.0.x: legacy runner jar + lib/
    return runners[0] if runners else None


def _class_file_java(jar: Path) -> int:
    """The Java release the Apicurio classes in `jar` were compiled for (0 if none found)."""
    with zipfile.ZipFile(jar) as archive:
        for name in archive.namelist():
            if name.startswith("io/apicurio/") and name.endswith(".class"):
                header = archive.read(name)[:8]
                if header[:4] == b"\xca\xfe\xba\xbe":
                    return int.from_bytes(header[6:8], "big") - 44
    return 0


def _required_java(home: Path, launcher: Path) -> int:
    """The newest class-file release among the launcher and the registry's own jars (min. 17)."""
    jars = [launcher, *sorted((home / "app").glob("*.jar"))]
    jars += sorted((home / "lib").glob("io.apicurio.apicurio-registry-common-*.jar"))
    jars += sorted((home / "lib" / "main").glob("io.apicurio.apicurio-registry-common-*.jar"))
    return max([17, *(_class_file_java(jar) for jar in jars if jar.is_file())])


def _read_install(home: Path) -> RegistryInstall | None:
    data = maven.read_marker(home)
    if data is None:
        return None
    try:
        launcher = home / str(data["launcher"])
        if not launcher.is_file():
            return None
        return RegistryInstall(
            home=home,
            version=str(data["version"]),
            launcher=launcher,
            java_major=int(data["java_major"]),
        )
    except (KeyError, TypeError, ValueError):
        return None


def install_info(settings: Settings) -> RegistryInstall:
    """The cached distribution of `settings.registry_version`, provisioning it if needed."""
    info = _read_install(ensure_registry(settings))
    if info is None:
        raise RegistryError(f"schema registry install in {registry_home(settings)} is incomplete")
    return info


def ensure_registry(settings: Settings) -> Path:
    """The unpacked Apicurio Registry distribution, fetched with Maven the first time."""
    home = registry_home(settings)
    if _read_install(home) is not None:
        return home
    version = settings.registry_version
    started = time.monotonic()

    def inspect(staging: Path) -> dict[str, Any] | None:
        launcher = _find_launcher(staging)
        if launcher is None:
            return None
        return {
            "version": version,
            "launcher": launcher.relative_to(staging).as_posix(),
            "java_major": _required_java(staging, launcher),
            "provisioned_s": round(time.monotonic() - started, 1),
        }

    try:
        maven.provision(
            home,
            pom=POM,
            goal="dependency:unpack",
            properties={"apicurio.version": version},
            what=f"Apicurio Registry {version} "
            f"(io.apicurio:apicurio-registry-app:{version}:tar.gz:all)",
            inspect=inspect,
        )
    except maven.MavenError as exc:
        raise RegistryError(str(exc)) from exc
    log.info("provisioned Apicurio Registry %s in %s", version, home)
    return home


# --- java ------------------------------------------------------------------------------------


_VERSION_RE = re.compile(r'version "(?P<v>[0-9][^"]*)"')


def _major(version: str) -> int | None:
    parts = version.strip().split(".")
    try:
        first = int(re.sub(r"\D.*", "", parts[0]) or "x")
        if first == 1 and len(parts) > 1:  # "1.8.0_392"
            return int(re.sub(r"\D.*", "", parts[1]) or "x")
        return first
    except ValueError:
        return None


def java_major(java: Path) -> int | None:
    """The feature release of the JDK/JRE `java` belongs to (reads its `release` file)."""
    release = java.resolve().parent.parent / "release"
    with contextlib.suppress(OSError):
        for line in release.read_text().splitlines():
            if line.startswith("JAVA_VERSION="):
                return _major(line.partition("=")[2].strip().strip('"'))
    try:
        proc = subprocess.run(
            [str(java), "-version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = _VERSION_RE.search(proc.stderr + proc.stdout)
    return _major(match.group("v")) if match else None


def _java_candidates(settings: Settings) -> Iterator[Path]:
    java_home = os.environ.get("JAVA_HOME")
    if java_home:
        yield Path(java_home) / "bin" / "java"
    on_path = shutil.which("java")
    if on_path:
        yield Path(on_path)
    jvm_root = Path("/usr/lib/jvm")
    if jvm_root.is_dir():
        yield from sorted(jvm_root.glob("*/bin/java"))


def find_java(settings: Settings, min_major: int) -> Path:
    """A `java` of release `min_major` or newer: `registry_java_home` if set, else the first
    suitable one of JAVA_HOME, PATH and /usr/lib/jvm/*."""
    if settings.registry_java_home is not None:
        java = settings.registry_java_home / "bin" / "java"
        found = java_major(java) if java.is_file() else None
        if found is None or found < min_major:
            raise RegistryError(
                f"registry_java_home={settings.registry_java_home} has no Java {min_major}+ "
                f"(found {found}); Apicurio Registry {settings.registry_version} needs it"
            )
        return java
    seen: list[str] = []
    for java in _java_candidates(settings):
        if not java.is_file():
            continue
        found = java_major(java)
        seen.append(f"{java} ({found})")
        if found is not None and found >= min_major:
            return java
    raise RegistryError(
        f"Apicurio Registry {settings.registry_version} needs Java {min_major}+, found only: "
        f"{', '.join(seen) or 'none'}; install one (e.g. openjdk-{min_major}-jre-headless) or set "
        "OCTO_REGISTRY_JAVA_HOME"
    )


# --- process ---------------------------------------------------------------------------------


def _marker(settings: Settings) -> str:
    """A command-line argument unique to this data dir: how we recognise our own registry."""
    return f"-Doctollm.registry.instance={registry_dir(settings).resolve()}"


def _process(settings: Settings, argv: list[str] | None = None) -> ManagedProcess:
    marker = _marker(settings)
    return ManagedProcess(
        PROCESS_NAME,
        run_dir(settings),
        argv if argv is not None else ["java", marker],
        log_file=log_file(settings),
        cwd=registry_dir(settings),
        marker=marker,
    )


def _java_argv(settings: Settings, java: Path, install: RegistryInstall, port: int) -> list[str]:
    tmp = registry_dir(settings) / "tmp"
    return [
        str(java),
        f"-Xmx{settings.registry_heap_mb}m",
        f"-Xms{min(64, settings.registry_heap_mb)}m",
        # A test registry on 2 cores: one GC thread, C1 only (starts ~35% faster).
        "-XX:+UseSerialGC",
        "-XX:TieredStopAtLevel=1",
        "-XX:+ExitOnOutOfMemoryError",
        f"-Djava.io.tmpdir={tmp}",
        f"-Dquarkus.http.host={HOST}",
        f"-Dquarkus.http.port={port}",
        # 3.1+ also opens a management interface (default *:9000): keep it local, on any free
        # port (0: the OS picks one, so no race with other registries or services).
        f"-Dquarkus.management.host={HOST}",
        "-Dquarkus.management.port=0",
        # H2 in memory (the default storage); a small connection pool instead of 20.
        "-Dapicurio.storage.kind=sql",
        "-Dapicurio.storage.sql.kind=h2",
        "-Dapicurio.datasource.url=jdbc:h2:mem:registry",
        "-Dapicurio.datasource.jdbc.initial-size=2",
        "-Dapicurio.datasource.jdbc.min-size=2",
        "-Dapicurio.datasource.jdbc.max-size=20",
        _marker(settings),
        "-jar",
        str(install.launcher),
    ]


def _subjects_ok(url: str, timeout: float = 2.0) -> bool:
    """GET <url>/subjects answers 200 (no proxy: the registry is on loopback)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"{url}/subjects", timeout=timeout) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _put_global_compatibility(url: str, level: str) -> None:
    """PUT <url>/config: a stored global rule, which (unlike Apicurio's configured default,
    `apicurio.rules.global.compatibility`) `GET /config` reports and `PUT /config` can relax."""
    request = urllib.request.Request(
        f"{url}/config",
        data=json.dumps({"compatibility": level}).encode(),
        headers={"Content-Type": "application/vnd.schemaregistry.v1+json"},
        method="PUT",
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=10.0) as response:
            body = json.loads(response.read() or b"{}")
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise RegistryError(
            f"could not set the registry's compatibility to {level}: {exc}"
        ) from exc
    if level not in json.dumps(body):
        raise RegistryError(f"setting compatibility {level} answered {body}")


def _log_tail(settings: Settings, lines: int = 25) -> str:
    try:
        text = log_file(settings).read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def _read_state(settings: Settings) -> dict[str, Any]:
    try:
        data = json.loads(state_file(settings).read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def start_registry(
    settings: Settings,
    port: int | None = None,
    *,
    timeout: float = START_TIMEOUT_S,
    compatibility: str | None = DEFAULT_COMPATIBILITY,
) -> str:
    """Start the registry on 127.0.0.1:`port` (default `registry_port`) and wait until its
    Confluent API answers; return that API's base URL.

    `compatibility` becomes the global compatibility level (Confluent's default, BACKWARD,
    unless told otherwise; None keeps Apicurio's, which checks nothing). A subject-level level
    overrides it in 3.3.x as in Confluent; in 3.0.x it only adds a check (a subject set to NONE
    is still held to the global level).

    Provisions the distribution first if it is not cached. If this data dir's registry already
    runs on the same port and answers, its URL is returned; on another port it is an error.
    """
    port = settings.registry_port if port is None else port
    url = registry_url(port)
    install = install_info(settings)
    existing = _process(settings)
    pid = existing.running_pid()
    if pid is not None:
        running_port = _read_state(settings).get("port")
        if running_port == port and _subjects_ok(url):
            return url
        raise RegistryError(
            f"a schema registry for {settings.data_dir} already runs (pid {pid}, port "
            f"{running_port}); stop it first"
        )
    if port_in_use(HOST, port):
        raise RegistryError(f"port {HOST}:{port} is taken: choose another OCTO_REGISTRY_PORT")
    java = find_java(settings, install.java_major)
    (registry_dir(settings) / "tmp").mkdir(parents=True, exist_ok=True)
    proc = _process(settings, _java_argv(settings, java, install, port))
    log_file(settings).parent.mkdir(parents=True, exist_ok=True)
    with log_file(settings).open("a") as handle:
        handle.write(
            f"\n=== octollm: starting Apicurio Registry {install.version} on {url} "
            f"with {java} (Java {java_major(java)}) at {time.strftime('%Y-%m-%d %H:%M:%S')} ===\n"
        )
    started = time.monotonic()
    pid = proc.start()
    state = {"pid": pid, "port": port, "url": url, "version": install.version}
    state_file(settings).write_text(json.dumps(state) + "\n")

    def healthy() -> bool:
        if not pid_alive(pid):
            raise RegistryError(
                f"the schema registry exited during start-up (code {proc.exit_code()}); "
                f"last lines of {log_file(settings)}:\n{_log_tail(settings)}"
            )
        return _subjects_ok(url)

    try:
        wait_until(healthy, timeout=timeout, interval=0.2, what=f"schema registry at {url}")
    except TimeoutError as exc:
        proc.stop(timeout=10.0)
        state_file(settings).unlink(missing_ok=True)
        raise RegistryError(
            f"{exc}; last lines of {log_file(settings)}:\n{_log_tail(settings)}"
        ) from exc
    except RegistryError:
        proc.stop(timeout=10.0)
        state_file(settings).unlink(missing_ok=True)
        raise
    if compatibility is not None:
        try:
            _put_global_compatibility(url, compatibility)
        except RegistryError:
            proc.stop(timeout=10.0)
            state_file(settings).unlink(missing_ok=True)
            raise
    log.info("schema registry up at %s (pid %d) in %.1fs", url, pid, time.monotonic() - started)
    return url


def stop_registry(settings: Settings, *, timeout: float = 30.0) -> bool:
    """Stop this data dir's registry by its PID (SIGTERM, SIGKILL after `timeout`).

    False if none was running. Storage is in memory, so everything registered is gone.
    """
    stopped = _process(settings).stop(timeout=timeout)
    state_file(settings).unlink(missing_ok=True)
    return stopped


@dataclass(frozen=True)
class RegistryStatus:
    running: bool
    pid: int | None
    port: int | None
    url: str | None
    healthy: bool
    version: str
    installed: bool
    log_file: Path
    rss_kb: int | None = None


def registry_status(settings: Settings, *, probe_timeout: float = 2.0) -> RegistryStatus:
    """Whether this data dir's registry runs, where, and whether its Confluent API answers."""
    pid = _process(settings).running_pid()
    state = _read_state(settings) if pid is not None else {}
    port = state.get("port") if isinstance(state.get("port"), int) else None
    url = registry_url(port) if port is not None else None
    return RegistryStatus(
        running=pid is not None,
        pid=pid,
        port=port,
        url=url,
        healthy=bool(url) and _subjects_ok(str(url), timeout=probe_timeout),
        version=str(state.get("version", settings.registry_version)),
        installed=_read_install(registry_home(settings)) is not None,
        log_file=log_file(settings),
        rss_kb=round(mb * 1024) if pid is not None and (mb := rss_mb(pid)) else None,
    )
