"""`octollm tail`: read any of our topics back as JSON, like kcat with Avro decoding."""

from __future__ import annotations

import base64
import signal
import sys
from types import FrameType
from typing import Annotated, Any

import typer
from confluent_kafka import Consumer, KafkaError, Message, TopicPartition

from octollm import jsonable
from octollm.cli.errors import CliError
from octollm.codec import Codec
from octollm.codec.errors import CodecError
from octollm.kafka.admin import partitions_of
from octollm.kafka.consumer import (
    EndTracker,
    StartPosition,
    consumer_config,
    end_offsets,
    start_offsets,
)
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
    partitions = partitions_of(settings, name)
    codec = Codec(registry_url=settings.schema_registry_url)
    consumer = Consumer(consumer_config(settings, client_id="octollm-tail"))
    stop = False

    def _stop(_sig: int, _frame: FrameType | None) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    try:
        assignment = start_offsets(consumer, name, partitions, position, settings.connect_timeout_s)
        ends = end_offsets(consumer, name, partitions, settings.connect_timeout_s)
        consumer.assign(assignment)
        tracker = EndTracker(assignment, ends)
        shown = 0
        while not stop:
            batch = consumer.consume(num_messages=500, timeout=0.2)
            for msg in batch:
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        continue
                    raise CliError(f"reading {name}: {err.str()}")
                tracker.seen(msg.partition() or 0, msg.offset() or 0)
                rec = _record(msg, codec)
                sys.stdout.write((jsonable.dumps(rec) if as_json else _human(rec)) + "\n")
                shown += 1
                if limit is not None and shown >= limit:
                    return
            if not follow:
                tracker.update(
                    consumer.position([TopicPartition(name, p) for p in tracker.pending])
                )
                if tracker.done:
                    return
    finally:
        sys.stdout.flush()
        consumer.close()
