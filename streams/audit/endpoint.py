"""The audit store's query endpoint: the process that owns chDB answers everyone else.

chDB lets one process own a data directory (a second one gets "Unable to open the chdb
engine"), and in a running stack that process is the audit sink. So the sink serves, on
127.0.0.1:`audit_port`, from a thread of its own:

- `GET /healthz`: `{"status": "ok", "store": …, "migrations": […]}` (503 if the store fails);
- `GET /metrics`: Prometheus text of the default registry (the sink's counters and lag);
- `GET /v1/trace/{task_id}`, `GET /v1/stats?since&until&by`,
  `GET /v1/search?tenant&status&since&until&contains&limit`: the JSON of `queries.py`.

A bad argument is 400 `{"error": …}`, an unknown task 404, a store failure 500; the client side
is `reader.py`.
"""

from __future__ import annotations

import logging
import os
import threading
from datetime import UTC, datetime
from http.server import ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from octollm import jsonable
from octollm.audit import queries
from octollm.audit.store import AuditStore
from octollm.ops.endpoint import QuietHandler
from octollm.settings import Settings

log = logging.getLogger("octollm.audit.endpoint")

#: Defaults when a query leaves the window out (the CLI always sends both ends).
STATS_SINCE = "1h"
JSON_TYPE = "application/json; charset=utf-8"


def store_identity(settings: Settings) -> str:
    """What a reader compares to be sure an endpoint serves the store it would open itself."""
    if settings.clickhouse_url:
        return settings.clickhouse_url.split("@")[-1]
    return f"chdb:{settings.audit_store_dir.resolve()}"


class _HttpError(Exception):
    def __init__(self, code: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.code = code
        self.body = {"error": message, **extra}


class _Handler(QuietHandler):
    server: _Server

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        params = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        try:
            if url.path == "/metrics":
                self._send(200, generate_latest(REGISTRY), CONTENT_TYPE_LATEST)
            elif url.path == "/healthz":
                self._health()
            elif url.path.startswith("/v1/trace/"):
                self._json(200, self._trace(unquote(url.path.removeprefix("/v1/trace/"))))
            elif url.path == "/v1/stats":
                self._json(200, self._stats(params))
            elif url.path == "/v1/search":
                self._json(200, self._search(params))
            else:
                raise _HttpError(404, f"no route {url.path}")
        except _HttpError as exc:
            self._json(exc.code, exc.body)
        except queries.QueryInputError as exc:
            self._json(400, {"error": str(exc)})
        except Exception as exc:  # the store failed: say so to the caller, keep serving
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            log.warning("audit endpoint: %s failed: %s", url.path, first)
            self._json(500, {"error": f"the audit store failed: {first}"})

    def _health(self) -> None:
        store = self.server.store
        try:
            applied = store.applied()
        except Exception as exc:
            self._json(503, {"status": "failing", "store": self.server.identity, "error": str(exc)})
            return
        body = {
            "status": "ok",
            "store": self.server.identity,
            "pid": os.getpid(),
            "migrations": applied,
        }
        self._json(200, body)

    def _trace(self, task_id: str) -> dict[str, Any]:
        if not task_id:
            raise queries.QueryInputError("trace: no task id given")
        rows = queries.trace(self.server.store, task_id)
        if not rows:
            raise _HttpError(404, f"no audit record of task {task_id}", task_id=task_id, rows=[])
        return {"task_id": task_id, "rows": rows}

    def _stats(self, params: dict[str, str]) -> dict[str, Any]:
        now = datetime.now(UTC)
        since = queries.parse_when(params.get("since") or STATS_SINCE, option="since", now=now)
        until = queries.parse_when(params.get("until") or "now", option="until", now=now)
        by = params.get("by") or "tenant"
        return stats_document(queries.stats(self.server.store, since, until, by), since, until, by)

    def _search(self, params: dict[str, str]) -> list[dict[str, Any]]:
        now = datetime.now(UTC)

        def when(name: str) -> datetime | None:
            text = params.get(name)
            return queries.parse_when(text, option=name, now=now) if text else None

        limit_text = params.get("limit") or "50"
        if not limit_text.isdigit():
            raise queries.QueryInputError(f"limit: {limit_text!r} is not a whole number")
        return queries.search(
            self.server.store,
            tenant=params.get("tenant") or None,
            status=params.get("status") or None,
            since=when("since"),
            until=when("until"),
            contains=params.get("contains") or None,
            limit=int(limit_text),
        )

    def _json(self, code: int, body: object) -> None:
        self._send(code, (jsonable.dumps(body) + "\n").encode(), JSON_TYPE)


def stats_document(
    rows: list[dict[str, Any]], since: datetime, until: datetime, by: str
) -> dict[str, Any]:
    """`stats` with its window, as the endpoint and `audit stats --json` both give it."""
    return {"by": by, "since": queries.iso(since), "until": queries.iso(until), "groups": rows}


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int, store: AuditStore, identity: str) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.store = store
        self.identity = identity


class EndpointError(RuntimeError):
    """The endpoint cannot listen (its port is taken)."""


class Endpoint:
    """A running endpoint: its base URL, and `stop()`."""

    def __init__(self, server: _Server) -> None:
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, name="octollm-audit-endpoint", daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def stop(self) -> None:
        """Stop serving and free the port (again: nothing)."""
        if not self._thread.is_alive():
            return
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def serve_in_thread(store: AuditStore, settings: Settings, port: int | None = None) -> Endpoint:
    """Serve `store` on 127.0.0.1:`port` (default `audit_port`; 0: any free port)."""
    port = settings.audit_port if port is None else port
    try:
        server = _Server(port, store, store_identity(settings))
    except OSError as exc:
        raise EndpointError(f"cannot serve the audit endpoint on 127.0.0.1:{port}: {exc}") from exc
    endpoint = Endpoint(server)
    log.info("audit endpoint on %s (store %s)", endpoint.url, store.where)
    return endpoint
