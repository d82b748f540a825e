"""Every Python worker's `/metrics` and `/healthz`, and the files `octollm status` finds them by.

A worker serves both on 127.0.0.1:`metrics_port` (0: any free port, so the dozen workers of one
`octollm run` never fight over a port) from a thread of its own, and records
`{component, pid, url}` in `<data_dir>/run/endpoints/<component>-<pid>.json`, plus the same
target in Prometheus' file_sd format under `<data_dir>/run/prometheus/` (docs/operations.md).
Both files go on a clean exit; readers ignore and remove files whose pid is dead.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest

from octollm.runtime.pids import pid_alive
from octollm.settings import Settings

if TYPE_CHECKING:
    import faust

log = logging.getLogger("octollm.ops.endpoint")

#: (healthy, one-line detail) — what `/healthz` answers with 200 or 503.
HealthCheck = Callable[[], tuple[bool, str]]

#: A worker whose event loop has not beaten for this long is reported unhealthy.
HEARTBEAT_STALE_S = 30.0


@dataclass(frozen=True)
class Endpoint:
    component: str
    pid: int | None  # None for endpoints known from settings (reflex, audit sink)
    url: str  # base URL: <url>/metrics, <url>/healthz


class Heartbeat:
    """Healthy while something (a Faust timer on the worker's event loop) keeps beating.

    The HTTP server runs on its own thread, so answering at all proves little; a stuck event
    loop stops the beats and turns `/healthz` into 503.
    """

    def __init__(self, stale_after_s: float = HEARTBEAT_STALE_S) -> None:
        self.stale_after_s = stale_after_s
        self._last: float | None = None

    def beat(self) -> None:
        self._last = time.monotonic()

    def check(self) -> tuple[bool, str]:
        if self._last is None:
            return False, "starting: the event loop has not beaten yet"
        age = time.monotonic() - self._last
        if age > self.stale_after_s:
            return False, f"event loop silent for {age:.0f}s"
        return True, "ok"


def _always_ok() -> tuple[bool, str]:
    return True, "ok"


class QuietHandler(BaseHTTPRequestHandler):
    """A loopback HTTP handler that answers in one call and does not log each request (one
    line per scrape or query would drown a worker's log). Shared with the audit endpoint."""

    def _send(self, code: int, body: bytes, content_type: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


class _Handler(QuietHandler):
    server: _Server

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._send(200, generate_latest(self.server.registry), CONTENT_TYPE_LATEST)
        elif path == "/healthz":
            try:
                healthy, detail = self.server.health()
            except Exception as exc:  # a broken check is itself a health problem, not a crash
                healthy, detail = False, f"health check failed: {exc!r}"
            body = f"{detail}\n".encode()
            self._send(200 if healthy else 503, body, "text/plain; charset=utf-8")
        elif path == "/":
            self._send(200, b"/metrics /healthz\n", "text/plain; charset=utf-8")
        else:
            self._send(404, b"not found\n", "text/plain; charset=utf-8")


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int, health: HealthCheck, registry: CollectorRegistry) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.health = health
        self.registry = registry


class MetricsEndpoint:
    """`/metrics` and `/healthz` on 127.0.0.1 from a daemon thread."""

    def __init__(
        self, health: HealthCheck = _always_ok, registry: CollectorRegistry = REGISTRY
    ) -> None:
        self._health = health
        self._registry = registry
        self._server: _Server | None = None

    def start(self, port: int = 0) -> str:
        """Bind (port 0: any free one) and serve; returns the base URL."""
        self._server = _Server(port, self._health, self._registry)
        threading.Thread(
            target=self._server.serve_forever, name="octollm-metrics", daemon=True
        ).start()
        return self.url

    @property
    def url(self) -> str:
        assert self._server is not None, "not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


# --- the files `status` reads -------------------------------------------------------------------


def endpoints_dir(settings: Settings) -> Path:
    return Path(settings.data_dir).resolve() / "run" / "endpoints"


def prometheus_targets_dir(settings: Settings) -> Path:
    """Prometheus `file_sd_configs` files, one per worker (infra/prometheus/prometheus.yml)."""
    return Path(settings.data_dir).resolve() / "run" / "prometheus"


def _file_name(component: str, pid: int) -> str:
    return f"{component}-{pid}.json"


def _write_atomically(path: Path, data: object) -> None:
    # Prometheus and `status` may read at any moment: never let them see half a file.
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    tmp.replace(path)


def record_endpoint(settings: Settings, endpoint: Endpoint) -> list[Path]:
    """Write the endpoint's two files; returns them (for `forget_endpoint`)."""
    assert endpoint.pid is not None
    name = _file_name(endpoint.component, endpoint.pid)
    ours = endpoints_dir(settings) / name
    _write_atomically(ours, asdict(endpoint))
    target = prometheus_targets_dir(settings) / name
    _write_atomically(
        target,
        [
            {
                "targets": [endpoint.url.removeprefix("http://")],
                "labels": {"component": endpoint.component, "pid": str(endpoint.pid)},
            }
        ],
    )
    return [ours, target]


def forget_endpoint(paths: list[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)


def recorded_endpoints(settings: Settings) -> list[Endpoint]:
    """The endpoints of live workers; files of dead ones (SIGKILL leaves them) are removed."""
    found = []
    directory = endpoints_dir(settings)
    for path in sorted(directory.glob("*.json")) if directory.is_dir() else []:
        try:
            data = json.loads(path.read_text())
            endpoint = Endpoint(str(data["component"]), int(data["pid"]), str(data["url"]))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring unreadable endpoint file %s: %s", path, exc)
            continue
        assert endpoint.pid is not None
        if not pid_alive(endpoint.pid):
            forget_endpoint([path, prometheus_targets_dir(settings) / path.name])
            continue
        found.append(endpoint)
    return found


def known_endpoints(settings: Settings) -> list[Endpoint]:
    """The reflex layer and the audit sink (fixed addresses from settings), then every recorded
    worker; one entry per URL."""
    fixed = []
    addr = settings.reflex_metrics_addr.strip()
    if addr and addr != "0":
        fixed.append(Endpoint("reflex", None, f"http://{addr}"))
    fixed.append(Endpoint("audit", None, f"http://127.0.0.1:{settings.audit_port}"))
    seen: set[str] = set()
    result = []
    for endpoint in [*fixed, *recorded_endpoints(settings)]:
        if endpoint.url not in seen:
            seen.add(endpoint.url)
            result.append(endpoint)
    return result


# --- wiring into a worker -----------------------------------------------------------------------


def serve_worker(
    settings: Settings, component: str, health: HealthCheck = _always_ok
) -> MetricsEndpoint | None:
    """Start this process's endpoint and record it until the process exits.

    A port that cannot be bound is logged and the worker runs on without it: observability never
    stops the data path (the reflex layer does the same).
    """
    endpoint = MetricsEndpoint(health)
    try:
        url = endpoint.start(settings.metrics_port)
    except OSError as exc:
        log.warning(
            "%s: cannot serve /metrics on 127.0.0.1:%s (%s); running without it",
            component,
            settings.metrics_port,
            exc,
        )
        return None
    paths = record_endpoint(settings, Endpoint(component, os.getpid(), url))
    atexit.register(forget_endpoint, paths)
    log.info("%s: /metrics and /healthz on %s", component, url)
    return endpoint


_lag_groups: set[str] = set()


def serve_faust_worker(
    app: faust.App, settings: Settings, component: str
) -> MetricsEndpoint | None:
    """`serve_worker` for a Faust app, healthy while the app's event loop keeps beating, with
    its consumer group's lag among the metrics.

    Call before the worker starts (the timer is registered on the app).
    """
    heartbeat = Heartbeat()

    async def _beat() -> None:
        heartbeat.beat()

    app.timer(interval=1.0)(_beat)
    from octollm.ops.lag import GroupLagCollector

    group = str(app.conf.id)
    if not _lag_groups:  # one worker per process; the registry refuses a second collector
        _lag_groups.add(group)
        REGISTRY.register(GroupLagCollector(settings, group))
    return serve_worker(settings, component, heartbeat.check)
