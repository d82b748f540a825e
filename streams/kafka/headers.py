"""Record headers the pipeline reads and writes, named once (Rust: reflex-layer/src/pipeline.rs).

A replay copies records with `octo-replay-of` (origin `topic/partition/offset`) and
`octo-replay-generation` (the origin's generation plus one). Every component passes the
generation on to what it emits about the record, so the audit holds each (task, generation) once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

REPLAY_OF = "octo-replay-of"
REPLAY_GENERATION = "octo-replay-generation"

HeaderValue = bytes | str | None
HeadersLike = Mapping[str, HeaderValue] | Iterable[tuple[str, HeaderValue]] | None


def header(headers: HeadersLike, name: str) -> str | None:
    """The last value of header `name` as text (None when absent); takes a Kafka client's list
    of pairs or a mapping."""
    if not headers:
        return None
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    found: str | None = None
    for key, value in pairs:
        if key == name and value is not None:
            found = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    return found


def generation_of(headers: HeadersLike) -> int:
    """The record's replay generation: 0 when the header is absent or not a whole number ≥ 0."""
    raw = header(headers, REPLAY_GENERATION)
    if raw is None or not raw.strip().isdigit():
        return 0
    return int(raw.strip())
