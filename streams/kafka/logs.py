"""Connection errors to a broker that is down: one line per interval, not one per retry.

aiokafka logs `Unable connect to node with id 0` on every reconnect attempt, and librdkafka its
`Connect to … failed`: a chaos run saw each Python worker log 97 to 111 of them over 8 minutes
while one broker of three was dead. `throttle_connection_errors()` lets the first such line
for a (logger, message, broker) through, then at most one per interval, carrying the count it
held back. Every occurrence still counts in `octollm_kafka_connection_errors_total{broker}`, so
a dashboard sees the outage at full resolution.
"""

from __future__ import annotations

import logging
import re
import threading
import time

from prometheus_client import Counter

#: The loggers that report a broker they cannot reach: aiokafka's (Faust's workers) and
#: librdkafka's through confluent-kafka (Settings.kafka_client_config names it).
CONNECTION_LOGGERS = (
    "aiokafka",  # aiokafka.client logs under the package name
    "aiokafka.conn",
    "aiokafka.consumer.fetcher",
    "aiokafka.consumer.group_coordinator",
    "aiokafka.producer.sender",
    "octollm.librdkafka",
)

#: One line per (logger, message, broker) at most this often.
DEFAULT_INTERVAL_S = 60.0

CONNECTION_ERRORS = Counter(
    "octollm_kafka_connection_errors_total",
    "Connection errors to a Kafka broker reported by this process's clients, logged or not",
    ["broker"],
)

# aiokafka's messages (their templates, so every retry maps to one key) → which args name the
# broker (none: the group coordinator, wherever it is); librdkafka's carry the broker in the
# text: "127.0.0.1:9092/0: Connect to … failed".
_AIOKAFKA: dict[str, tuple[int, ...]] = {
    "Unable connect to node with id %s: %s": (0,),
    'Unable connect to "%s:%s": %s': (0, 1),
    "Unable to update metadata from %s": (0,),
    "Failed fetch messages from %s: %s": (0,),
    "Failed fetch offsets from %s: %s": (0,),
    "Heartbeat session expired - marking coordinator dead": (),
    "Heartbeat send request failed: %s. Will retry.": (),
    "Group Coordinator Request failed: %s": (),
}
_RDKAFKA_FAILURE = re.compile(r"(\S+:\d+/\w+): (?:Connect to .* failed|Disconnected|.*refused)")


def broker_of(record: logging.LogRecord) -> str | None:
    """The broker a connection-error record is about, or None for any other record."""
    args = record.args if isinstance(record.args, tuple) else ()
    which = _AIOKAFKA.get(str(record.msg))
    if which is not None and len(args) > max(which, default=-1):
        return ":".join(str(args[i]) for i in which) or "coordinator"
    if record.msg == "%s [%s] %s" and len(args) == 3:  # confluent-kafka's log callback
        found = _RDKAFKA_FAILURE.search(str(args[2]))
        return found.group(1) if found else None
    return None


class ConnectionErrorThrottle(logging.Filter):
    """Passes the first connection error per (logger, message, broker), then one an interval."""

    def __init__(self, interval_s: float = DEFAULT_INTERVAL_S) -> None:
        super().__init__()
        self.interval_s = interval_s
        self._lock = threading.Lock()  # librdkafka logs from its own threads
        self._last: dict[tuple[str, str, str], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        broker = broker_of(record)
        if broker is None:
            return True
        CONNECTION_ERRORS.labels(broker).inc()
        key = (record.name, str(record.msg), broker)
        now = time.monotonic()
        with self._lock:
            last, held = self._last.get(key, (float("-inf"), 0))
            if now - last < self.interval_s:
                self._last[key] = (last, held + 1)
                return False
            self._last[key] = (now, 0)
        if held:
            record.msg = (
                f"{record.getMessage()} ({held} more like it in the last "
                f"{now - last:.0f}s, not logged)"
            )
            record.args = ()
        return True


_installed: ConnectionErrorThrottle | None = None


def throttle_connection_errors(interval_s: float = DEFAULT_INTERVAL_S) -> ConnectionErrorThrottle:
    """Install the throttle on the Kafka clients' loggers (once per process; idempotent)."""
    global _installed
    if _installed is None:
        _installed = ConnectionErrorThrottle(interval_s)
        for name in CONNECTION_LOGGERS:
            logging.getLogger(name).addFilter(_installed)
    _installed.interval_s = interval_s
    return _installed
