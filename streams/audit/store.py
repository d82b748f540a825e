"""The audit store: one ClickHouse client (a server, or chDB embedded) and its migrations.

`CLICKHOUSE_URL` names a server; without it the store is chDB in `audit_store_dir`, the same
engine inside this process. chDB allows one owning process per data directory, so in a running
stack the audit sink owns it and answers everyone else's queries (docs/audit.md).

Migrations are the numbered `.sql` files in `infra/clickhouse/migrations/`, applied in order and
recorded in `schema_migrations`, so `migrate` is idempotent. `{ttl_days}` in a file is filled
from `audit_ttl_days`; a changed setting is applied to existing tables with MODIFY TTL.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import clickhouse_connect
from clickhouse_connect.driver.client import Client

from octollm.settings import PROJECT_ROOT, Settings

MIGRATIONS_DIR = PROJECT_ROOT / "infra" / "clickhouse" / "migrations"
_MIGRATION_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
#: Tables with a TTL, and the column it counts from.
TTL_COLUMNS = {"audit_events": "ts", "task_results": "completed_at", "dead_letters": "ts"}


class AuditStoreError(RuntimeError):
    """The store cannot be opened or used; the message says why in one line."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Path

    def statements(self, ttl_days: int) -> list[str]:
        sql = self.path.read_text(encoding="utf-8").replace("{ttl_days}", str(ttl_days))
        # Whole-line comments go; the files hold no ';' inside strings, so a split is enough.
        body = "\n".join(ln for ln in sql.splitlines() if not ln.lstrip().startswith("--"))
        return [s.strip() for s in body.split(";") if s.strip()]


def migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    found = []
    for path in sorted(directory.glob("*.sql")):
        match = _MIGRATION_NAME.match(path.name)
        if not match:
            raise AuditStoreError(f"migration file {path.name} is not named NNNN_name.sql")
        found.append(Migration(int(match.group(1)), path.stem, path))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise AuditStoreError(f"two migrations share a version number in {directory}")
    return found


def describe(settings: Settings) -> str:
    """Where the store is, for messages (a server URL without its password, or the chDB dir)."""
    if settings.clickhouse_url:
        return re.sub(r"//([^:/@]+):[^@]*@", r"//\1:***@", settings.clickhouse_url)
    return f"chdb:{settings.audit_store_dir}"


def _client(settings: Settings) -> Client:
    try:
        if settings.clickhouse_url:
            return clickhouse_connect.get_client(
                dsn=settings.clickhouse_url, connect_timeout=settings.connect_timeout_s
            )
        settings.audit_store_dir.mkdir(parents=True, exist_ok=True)
        return clickhouse_connect.get_client(dsn=f"chdb://{settings.audit_store_dir}")
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise AuditStoreError(f"cannot open the audit store {describe(settings)}: {first}") from exc


class AuditStore:
    """A ClickHouse client that threads may share (the sink inserts while its endpoint reads)."""

    def __init__(self, settings: Settings, client: Client | None = None) -> None:
        self.settings = settings
        self.where = describe(settings)
        self.client = client or _client(settings)
        self._lock = threading.Lock()

    @property
    def embedded(self) -> bool:
        return not self.settings.clickhouse_url

    def command(self, sql: str, parameters: dict[str, Any] | None = None) -> Any:
        with self._lock:
            return self.client.command(sql, parameters=parameters)

    def rows(self, sql: str, parameters: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Run a query; each row as a dict keyed by column name."""
        with self._lock:
            result = self.client.query(sql, parameters=parameters)
        names = result.column_names
        return [dict(zip(names, row, strict=True)) for row in result.result_rows]

    def insert(self, table: str, rows: Sequence[Sequence[Any]], columns: Sequence[str]) -> None:
        if not rows:
            return
        with self._lock:
            self.client.insert(table, list(rows), column_names=list(columns))

    def close(self) -> None:
        with self._lock:
            self.client.close()

    # --- migrations ------------------------------------------------------------------------

    def applied(self) -> list[int]:
        self._ensure_migrations_table()
        return sorted(int(r["version"]) for r in self.rows("SELECT version FROM schema_migrations"))

    def migrate(self, directory: Path = MIGRATIONS_DIR) -> list[str]:
        """Apply every migration not yet recorded, in order; returns the names applied."""
        done = set(self.applied())
        applied = []
        for migration in migrations(directory):
            if migration.version in done:
                continue
            for statement in migration.statements(self.settings.audit_ttl_days):
                self.command(statement)
            self.insert(
                "schema_migrations",
                [(migration.version, migration.name)],
                ["version", "name"],
            )
            applied.append(migration.name)
        self._apply_ttl()
        return applied

    def _ensure_migrations_table(self) -> None:
        self.command(
            "CREATE TABLE IF NOT EXISTS schema_migrations "
            "(version UInt32, name String, applied_at DateTime64(3, 'UTC') DEFAULT now64(3)) "
            "ENGINE = ReplacingMergeTree ORDER BY version"
        )

    def _apply_ttl(self) -> None:
        days = self.settings.audit_ttl_days
        tables = {r["name"] for r in self.rows("SHOW TABLES")}
        for table, column in TTL_COLUMNS.items():
            if table not in tables:
                continue
            ddl = str(self.command(f"SHOW CREATE TABLE {table}"))
            if f"INTERVAL {days} DAY" not in ddl and f"toIntervalDay({days})" not in ddl:
                self.command(
                    f"ALTER TABLE {table} MODIFY TTL toDateTime({column}) + INTERVAL {days} DAY"
                )


def open_store(settings: Settings, *, migrate: bool = True) -> AuditStore:
    """Open the store and bring its schema up to date (the sink and tests call this)."""
    store = AuditStore(settings)
    if migrate:
        store.migrate()
    return store
