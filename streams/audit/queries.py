"""The audit log's questions for people: one task's trace, stats over a window, and search.

Pure functions over anything with `rows(sql, parameters) -> list[dict]` (an `AuditStore`), so
the CLI (store opened directly) and the sink's endpoint (store it owns) answer the same way.
Every value from a caller is bound as a ClickHouse `{name:Type}` parameter, never formatted
into the SQL. Tables are read with FINAL: a redelivered or replayed row not yet merged away
must never show twice. Results are JSON-ready (ISO-8601 times, no NaN), so a reply through
the endpoint is byte-for-byte what a direct query gives.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any, Protocol

from octollm.moments import parse_moment

#: Stages in pipeline order: ties on `ts` (same millisecond) are broken by this order.
STAGES = (
    "routed",
    "quarantined",
    "rate_limited",
    "rejected",
    "deduplicated",
    "dead_lettered",
    "received",
    "planned",
    "dispatched",
    "arm_result",
    "judged",
    "safety_checked",
    "completed",
    "dlq_retried",
)
#: `stats --by` → the SQL expression of an event's group key.
BY = {
    "tenant": "e.tenant_id",
    "status": "e.status",
    "route": "r.route",
    "arm": "e.details['arm']",
    "stage": "e.stage",
}
MAX_LIMIT = 10_000
#: The ends of DateTime64(3)'s range: "no bound" for search.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(2299, 12, 31, tzinfo=UTC)
#: Output shown per row by `search` (the full output is in `trace`).
SEARCH_OUTPUT_CHARS = 200


class Reader(Protocol):
    def rows(self, sql: str, parameters: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Run a query; each row a dict keyed by column name."""
        ...


class QueryInputError(ValueError):
    """A bad argument (time, group, limit): the CLI exits 2, the endpoint answers 400."""


# --- arguments ---------------------------------------------------------------------------------


def parse_when(text: str, *, option: str, now: datetime | None = None) -> datetime:
    """An ISO-8601 time (no offset: UTC), `now`, or a duration back: 90s, 15m, 2h, 7d, 1w."""
    try:
        return parse_moment(text, now=now)
    except ValueError as exc:
        raise QueryInputError(f"{option}: {exc}") from None


def check_window(since: datetime, until: datetime) -> None:
    if until <= since:
        raise QueryInputError(f"--until ({iso(until)}) must be later than --since ({iso(since)})")


def check_by(by: str) -> str:
    if by not in BY:
        raise QueryInputError(f"--by: {by!r} is not one of {', '.join(BY)}")
    return by


def check_limit(limit: int) -> int:
    if not 1 <= limit <= MAX_LIMIT:
        raise QueryInputError(f"--limit: {limit} is not between 1 and {MAX_LIMIT}")
    return limit


# --- values ------------------------------------------------------------------------------------


def iso(moment: datetime) -> str:
    """Milliseconds and `Z`; chDB returns naive datetimes, which are UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _ms(value: float | None) -> float | None:
    """A latency for JSON: None where ClickHouse had no samples (it says NaN)."""
    if value is None or math.isnan(value):
        return None
    return round(float(value), 3)


def _utc(moment: datetime) -> datetime:
    # DateTime64(3, 'UTC') parameters are sent without a zone: send UTC wall time.
    return moment.astimezone(UTC).replace(tzinfo=None)


# --- trace -------------------------------------------------------------------------------------

# Two point lookups on the sorting key's first column. PREWHERE, because with FINAL ClickHouse
# does not move the filter there itself and would read every column of each whole granule; it
# is safe with FINAL as task_id is in the key (all copies of a row share it). Two queries beat
# one UNION ALL of both (measured: bench/audit_trace.py).
_TRACE_EVENTS = """
SELECT stage, component, status, duration_ms, generation, ts, tenant_id, details
FROM audit_events FINAL
PREWHERE task_id = {task_id:String}
ORDER BY ts, indexOf({stages:Array(String)}, stage), event_id
"""
_TRACE_RESULTS = """
SELECT generation, tenant_id, status, reason, output, prompt_tokens, completion_tokens,
       cost_usd, created_at, completed_at, component
FROM task_results FINAL
PREWHERE task_id = {task_id:String}
ORDER BY generation
"""


def trace(reader: Reader, task_id: str) -> list[dict[str, Any]]:
    """Every stage of one task in time order, each generation's result after its last stage.

    Rows: kind (`stage` or `result`), stage, component, status, duration_ms, generation, ts,
    tenant_id, details (a failure's reason is `details.reason`; a result's details hold its
    reason, output, tokens and cost). Empty: the task is unknown.
    """
    events = reader.rows(_TRACE_EVENTS, {"task_id": task_id, "stages": list(STAGES)})
    results = reader.rows(_TRACE_RESULTS, {"task_id": task_id})
    rows = [
        {
            "kind": "stage",
            "stage": e["stage"],
            "component": e["component"],
            "status": e["status"],
            "duration_ms": e["duration_ms"],
            "generation": e["generation"],
            "ts": iso(e["ts"]),
            "tenant_id": e["tenant_id"],
            "details": dict(sorted(e["details"].items())),
        }
        for e in events
    ]
    for r in results:
        details = {
            "cost_usd": f"{r['cost_usd']:.6f}",
            "tokens": f"{r['prompt_tokens']}+{r['completion_tokens']}",
        }
        if r["reason"]:
            details["reason"] = r["reason"]
        if r["output"] is not None:
            details["output"] = r["output"]
        row = {
            "kind": "result",
            "stage": "result",
            "component": r["component"],
            "status": r["status"],
            "duration_ms": _elapsed_ms(r["created_at"], r["completed_at"]),
            "generation": r["generation"],
            "ts": iso(r["completed_at"]),
            "tenant_id": r["tenant_id"],
            "details": dict(sorted(details.items())),
        }
        # After every stage stamped up to its completion (`completed` has the same ts);
        # iso() strings of one format sort as the times do.
        at = next((i for i, x in enumerate(rows) if x["ts"] > row["ts"]), len(rows))
        rows.insert(at, row)
    return rows


def _naive(moment: datetime) -> datetime:
    return _utc(moment) if moment.tzinfo is not None else moment


def _elapsed_ms(start: datetime, end: datetime) -> int:
    return int((_naive(end) - _naive(start)).total_seconds() * 1000)


# --- stats -------------------------------------------------------------------------------------

# A task's route is on its `routed` (reflex) and `received` (orchestrator) events; every other
# event of the task is grouped under it. Quantiles are exact and interpolated (R-7, as numpy's
# default), skipping events without a duration.
_STATS = """
WITH routes AS (
    SELECT task_id, any(details['route']) AS route
    FROM audit_events FINAL
    WHERE stage IN ('routed', 'received', 'quarantined') AND details['route'] != ''
    GROUP BY task_id
)
SELECT __KEY__ AS key,
       count() AS events,
       uniqExact(e.task_id) AS tasks,
       countIf(e.duration_ms IS NOT NULL) AS timed,
       quantilesExactInclusive(0.5, 0.95, 0.99)(e.duration_ms) AS q
FROM (
    SELECT * FROM audit_events FINAL
    WHERE ts >= {since:DateTime64(3)} AND ts < {until:DateTime64(3)}
) AS e
LEFT JOIN routes AS r ON r.task_id = e.task_id
__WHERE__
GROUP BY key
ORDER BY events DESC, key
"""


def stats(reader: Reader, since: datetime, until: datetime, by: str) -> list[dict[str, Any]]:
    """Per group: events, distinct tasks, events/s over [since, until), p50/p95/p99 duration_ms."""
    check_by(by)
    check_window(since, until)
    # Events about no arm have no arm group (rather than one big '' group).
    where = "WHERE e.details['arm'] != ''" if by == "arm" else ""
    # Both come from the constants above, never from the caller.
    sql = _STATS.replace("__KEY__", BY[by]).replace("__WHERE__", where)
    rows = reader.rows(sql, {"since": _utc(since), "until": _utc(until)})
    seconds = (until - since).total_seconds()
    return [
        {
            "by": by,
            "key": r["key"],
            "events": r["events"],
            "tasks": r["tasks"],
            "rate_per_s": round(r["events"] / seconds, 6),
            "timed": r["timed"],
            "p50_ms": _ms(r["q"][0]),
            "p95_ms": _ms(r["q"][1]),
            "p99_ms": _ms(r["q"][2]),
        }
        for r in rows
    ]


# --- search ------------------------------------------------------------------------------------

_SEARCH = """
SELECT task_id, generation, tenant_id, status, reason, output, created_at, completed_at,
       multiIf(
           {contains:String} = '', '',
           positionCaseInsensitiveUTF8(ifNull(output, ''), {contains:String}) > 0, 'output',
           positionCaseInsensitiveUTF8(ifNull(reason, ''), {contains:String}) > 0, 'reason',
           'details') AS matched
FROM task_results FINAL
WHERE ({tenant:String} = '' OR tenant_id = {tenant:String})
  AND ({status:String} = '' OR status = {status:String})
  AND completed_at >= {since:DateTime64(3)} AND completed_at < {until:DateTime64(3)}
  AND ({contains:String} = ''
       OR positionCaseInsensitiveUTF8(ifNull(output, ''), {contains:String}) > 0
       OR positionCaseInsensitiveUTF8(ifNull(reason, ''), {contains:String}) > 0
       OR (task_id, generation) IN (
           SELECT task_id, generation FROM audit_events FINAL
           WHERE arrayExists(
               v -> positionCaseInsensitiveUTF8(v, {contains:String}) > 0, mapValues(details))))
ORDER BY completed_at DESC, task_id, generation
LIMIT {limit:UInt32}
"""


def search(
    reader: Reader,
    *,
    tenant: str | None = None,
    status: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    contains: str | None = None,
    limit: int = 50,
) -> list[dict[str, Any]]:
    """Finished tasks (one row per task and generation), newest first.

    `contains` matches, in any case, the output, the reason, or any detail value of any of the
    task's audit events (a reflex or judge reason, a route, an arm); `matched` says where.
    No `since` / `until`: no bound on that side.
    """
    since = since or EARLIEST
    until = until or LATEST
    check_window(since, until)
    check_limit(limit)
    rows = reader.rows(
        _SEARCH,
        {
            "tenant": tenant or "",
            "status": (status or "").upper(),
            "since": _utc(since),
            "until": _utc(until),
            "contains": contains or "",
            "limit": limit,
        },
    )
    return [
        {
            "task_id": r["task_id"],
            "generation": r["generation"],
            "tenant_id": r["tenant_id"],
            "status": r["status"],
            "completed_at": iso(r["completed_at"]),
            "duration_ms": _elapsed_ms(r["created_at"], r["completed_at"]),
            "reason": r["reason"],
            "output": _clip(r["output"]),
            "matched": r["matched"],
        }
        for r in rows
    ]


def _clip(text: str | None) -> str | None:
    if text is None or len(text) <= SEARCH_OUTPUT_CHARS:
        return text
    return text[: SEARCH_OUTPUT_CHARS - 1] + "…"
