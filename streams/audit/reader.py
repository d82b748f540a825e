"""How the CLI reads the audit log: the store itself, or the endpoint of the process owning it.

`open_reader(settings)` picks, in order:
1. `CLICKHOUSE_URL` set: the server, directly (a server has many clients);
2. the audit endpoint on 127.0.0.1:`audit_port` answers `/healthz` for this same store: ask it
   (the sink owns chDB and is running);
3. open chDB directly (nobody owns it); if another process does, one clear error.
Both readers give the same JSON-ready rows (`queries.py`).
"""

from __future__ import annotations

import logging
import os
import re
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote

import httpx

from octollm.audit import queries
from octollm.audit.endpoint import stats_document, store_identity
from octollm.audit.store import AuditStore, AuditStoreError, describe
from octollm.runtime.pids import pid_alive
from octollm.settings import Settings

log = logging.getLogger("octollm.audit.reader")

#: The endpoint is on this machine: if it has not answered by then, it is not there.
PROBE_TIMEOUT_S = 1.0
QUERY_TIMEOUT_S = 60.0


class AuditReadError(RuntimeError):
    """The audit log cannot be read; the message says why in one line."""


class AuditReader(Protocol):
    where: str

    def trace(self, task_id: str) -> list[dict[str, Any]]: ...

    def stats(self, since: datetime, until: datetime, by: str) -> dict[str, Any]: ...

    def search(
        self,
        *,
        tenant: str | None,
        status: str | None,
        since: datetime | None,
        until: datetime | None,
        contains: str | None,
        limit: int,
    ) -> list[dict[str, Any]]: ...

    def close(self) -> None: ...


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


class LocalReader:
    """Queries run in this process, on a store it opened (and closes)."""

    def __init__(self, store: AuditStore) -> None:
        self.store = store
        self.where = store.where

    def _run(self, query: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return query(self.store, *args, **kwargs)
        except queries.QueryInputError:
            raise
        except Exception as exc:
            text = _first_line(exc)
            if "UNKNOWN_TABLE" in text or "Unknown table" in text:
                raise AuditReadError(
                    f"the audit tables do not exist yet in {self.where}: "
                    "run `octollm audit migrate`"
                ) from exc
            raise AuditReadError(f"audit query on {self.where} failed: {text}") from exc

    def trace(self, task_id: str) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = self._run(queries.trace, task_id)
        return rows

    def stats(self, since: datetime, until: datetime, by: str) -> dict[str, Any]:
        return stats_document(self._run(queries.stats, since, until, by), since, until, by)

    def search(
        self,
        *,
        tenant: str | None,
        status: str | None,
        since: datetime | None,
        until: datetime | None,
        contains: str | None,
        limit: int,
    ) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = self._run(
            queries.search,
            tenant=tenant,
            status=status,
            since=since,
            until=until,
            contains=contains,
            limit=limit,
        )
        return rows

    def close(self) -> None:
        self.store.close()


class RemoteReader:
    """Queries answered by the endpoint of the process that owns the store."""

    def __init__(self, url: str, store: str) -> None:
        self.url = url
        self.where = f"{store} via {url}"
        # trust_env=False: a proxy from the environment must never see a local call.
        self._http = httpx.Client(base_url=url, timeout=QUERY_TIMEOUT_S, trust_env=False)

    def _get(self, path: str, params: dict[str, str] | None = None) -> Any:
        try:
            response = self._http.get(path, params=params)
        except httpx.HTTPError as exc:
            raise AuditReadError(f"the audit endpoint {self.url} failed: {exc}") from exc
        try:
            body = response.json()
        except ValueError:
            body = {"error": response.text.strip()[:200]}
        if response.status_code == 400:
            raise queries.QueryInputError(body.get("error", "bad request"))
        if response.status_code == 404 and "rows" in body:
            return body
        if response.status_code != 200:
            raise AuditReadError(
                f"the audit endpoint {self.url} answered {response.status_code}: "
                f"{body.get('error', '')}"
            )
        return body

    def trace(self, task_id: str) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = self._get(f"/v1/trace/{quote(task_id, safe='')}")["rows"]
        return rows

    def stats(self, since: datetime, until: datetime, by: str) -> dict[str, Any]:
        params = {"since": queries.iso(since), "until": queries.iso(until), "by": by}
        document: dict[str, Any] = self._get("/v1/stats", params)
        return document

    def search(
        self,
        *,
        tenant: str | None,
        status: str | None,
        since: datetime | None,
        until: datetime | None,
        contains: str | None,
        limit: int,
    ) -> list[dict[str, Any]]:
        params = {
            "tenant": tenant or "",
            "status": status or "",
            "since": queries.iso(since) if since else "",
            "until": queries.iso(until) if until else "",
            "contains": contains or "",
            "limit": str(limit),
        }
        rows: list[dict[str, Any]] = self._get("/v1/search", params)
        return rows

    def close(self) -> None:
        self._http.close()


def endpoint_url(settings: Settings) -> str:
    return f"http://127.0.0.1:{settings.audit_port}"


def probe_endpoint(settings: Settings) -> dict[str, Any] | None:
    """The endpoint's `/healthz` document if it answers for this store, else None."""
    url = endpoint_url(settings)
    try:
        with httpx.Client(timeout=PROBE_TIMEOUT_S, trust_env=False) as http:
            response = http.get(f"{url}/healthz")
            body = response.json()
    except (httpx.HTTPError, ValueError):
        return None
    if not isinstance(body, dict) or response.status_code != 200:
        return None
    if body.get("store") != store_identity(settings):
        log.info("%s serves %s, not %s: not using it", url, body.get("store"), describe(settings))
        return None
    return body


def chdb_owner(directory: Path) -> int | None:
    """The pid of another live process that has this chDB directory open, if any.

    An owner writes `PID: n` to `<dir>/status` (and locks it); the file is removed on a clean
    close and left behind, naming a dead pid, by a crash. Asking before opening spares the user
    chDB's own multi-line complaint on stderr.
    """
    try:
        text = (directory / "status").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    match = re.search(r"^PID:\s*(\d+)", text, re.MULTILINE)
    if not match or int(match.group(1)) == os.getpid():
        return None
    pid = int(match.group(1))
    return pid if pid_alive(pid) else None


def owned_message(settings: Settings, pid: int) -> str:
    return (
        f"the audit store {describe(settings)} is owned by process {pid} (chDB allows one) and "
        f"no audit endpoint answers on {endpoint_url(settings)}: is OCTO_AUDIT_PORT the sink's?"
    )


def open_reader(settings: Settings) -> AuditReader:
    if settings.clickhouse_url:
        try:
            return LocalReader(AuditStore(settings))
        except AuditStoreError as exc:
            raise AuditReadError(str(exc)) from exc
    if probe_endpoint(settings) is not None:
        return RemoteReader(endpoint_url(settings), store_identity(settings))
    if not settings.audit_store_dir.is_dir():
        raise AuditReadError(
            f"no audit store at {settings.audit_store_dir} yet: the audit sink creates it "
            "(`octollm run`, or `octollm worker audit`)"
        )
    owner = chdb_owner(settings.audit_store_dir)
    if owner is not None:
        raise AuditReadError(owned_message(settings, owner))
    try:
        return LocalReader(AuditStore(settings))
    except AuditStoreError as exc:
        raise AuditReadError(str(exc)) from exc
