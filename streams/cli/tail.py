"""`octollm tail`: read any of our topics back as JSON, like kcat with Avro decoding."""

from __future__ import annotations

import base64
import signal
import sys
from types import FrameType
from typing import Annotated, Any

import typer
from confluent_kafka import Message

from octollm import jsonable
from octollm.cli.errors import CliError
from octollm.codec import Codec
from octollm.codec.errors import CodecError
from octollm.kafka.consumer import StartPosition, read_range
from octollm.settings import get_settings
from octollm.topics import full_name


def _record(msg: Message, codec: Codec) -> dict[str, Any]:
    key = msg.key()
    out: dict[str, Any] = {
        "topic": msg.topic(),
        "partition": msg.partition(),
        "offset": msg.offset(),
        "timestamp": msg.timestamp()[1],
        "key": key.decode("utf-8", "replace") if isinstance(key, bytes) else key,
    }
    headers = msg.headers()
    if headers:
        pairs = headers.items() if isinstance(headers, dict) else headers
        out["headers"] = {k: _text(v) for k, v in pairs}
    value = msg.value() or b""
    try:
        decoded = codec.decode(value, topic=msg.topic())
    except CodecError as exc:
        # Show what cannot be decoded instead of stopping: tail is a debugging tool.
        out["error"] = {"class": exc.error_class, "reason": str(exc)}
        out["raw_base64"] = base64.b64encode(value).decode("ascii")
        return out
    out["schema"] = decoded.schema.name
    out["value"] = decoded.record
    return out


def _text(value: str | bytes | None) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else (value or "")


def _human(rec: dict[str, Any]) -> str:
    where = f"{rec['partition']}@{rec['offset']}"
    if "error" in rec:
        error = rec["error"]
        return f"{where} key={rec['key']} UNDECODABLE {error['class']}: {error['reason']}"
    return f"{where} key={rec['key']} {rec['schema']} {jsonable.dumps(rec['value'])}"


def tail(
    topic: Annotated[str, typer.Argument(help="Topic name (the environment prefix is added).")],
    start: Annotated[
        str,
        typer.Option(
            "--from",
            help="beginning, end, an offset (negative: that many back from the end) "
            "or an ISO-8601 time such as 2026-11-25T10:00:00Z.",
        ),
    ] = "beginning",
    limit: Annotated[
        int | None, typer.Option("--limit", "-n", min=1, help="Stop after this many records.")
    ] = None,
    follow: Annotated[
        bool, typer.Option("--follow", "-F", help="Keep reading new records until Ctrl-C.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """Decode a topic's records; without --follow, stop at the end of the topic."""
    try:
        position = StartPosition.parse(start)
    except ValueError as exc:
        raise CliError(f"--from: {exc}", exit_code=2) from None
    settings = get_settings()
    name = full_name(settings, topic)
    codec = Codec(registry_url=settings.schema_registry_url)
    stop = False

    def _stop(_sig: int, _frame: FrameType | None) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    records = read_range(
        settings, name, position, follow=follow, client_id="octollm-tail", stopped=lambda: stop
    )
    try:
        for shown, msg in enumerate(records, start=1):
            rec = _record(msg, codec)
            sys.stdout.write((jsonable.dumps(rec) if as_json else _human(rec)) + "\n")
            if limit is not None and shown >= limit:
                return
    finally:
        records.close()  # the reader's consumer leaves now, not when collected
        sys.stdout.flush()
