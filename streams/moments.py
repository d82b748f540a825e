"""Points in time as people type them on the command line: one parser for every command.

`2026-11-25T10:00:00Z` (ISO-8601; without an offset it is UTC), `now`, or a duration back from
now: `90s`, `15m`, `2h`, `1.5d`, `1w`. Used by `audit`, `dlq` and `replay`/`reprocess`.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|m|h|d|w)$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_moment(text: str, *, now: datetime | None = None, durations: bool = True) -> datetime:
    """The moment `text` names, timezone-aware. Raises ValueError with a message fit for the
    user; `durations=False` accepts absolute times only."""
    value = text.strip()
    now = now or datetime.now(UTC)
    if durations:
        if value.lower() == "now":
            return now
        match = _DURATION.match(value.lower())
        if match:
            return now - timedelta(**{_UNITS[match.group(2)]: float(match.group(1))})
    try:
        moment = datetime.fromisoformat(value.replace("z", "Z").replace("Z", "+00:00"))
    except ValueError:
        also = " or a duration back from now (15m, 2h, 7d)" if durations else ""
        raise ValueError(f"{text!r} is not an ISO-8601 time (2026-11-25T10:00:00Z){also}") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
