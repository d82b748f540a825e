"""The throttle on Kafka clients' connection errors, on records shaped as aiokafka and
confluent-kafka emit them (the real outage is in tests/integration/test_kafka_logs.py)."""

from __future__ import annotations

import logging

import pytest

from octollm.kafka.logs import CONNECTION_ERRORS, ConnectionErrorThrottle, broker_of

pytestmark = pytest.mark.unit


def aiokafka_record(node: int) -> logging.LogRecord:
    return logging.LogRecord(
        "aiokafka",
        logging.ERROR,
        "client.py",
        435,
        "Unable connect to node with id %s: %s",
        (node, OSError("Connect call failed")),
        None,
    )


def rdkafka_record(text: str) -> logging.LogRecord:
    return logging.LogRecord(
        "octollm.librdkafka",
        logging.ERROR,
        "",
        0,
        "%s [%s] %s",
        ("FAIL", "rdkafka#consumer-1", text),
        None,
    )


def test_brokers_are_read_from_both_clients_records() -> None:
    assert broker_of(aiokafka_record(2)) == "2"
    failed = (
        "[thrd:127.0.0.1:9092/0]: 127.0.0.1:9092/0: Connect to ipv4#127.0.0.1:9092 failed: "
        "Connection refused (after 0ms in state CONNECT)"
    )
    assert broker_of(rdkafka_record(failed)) == "127.0.0.1:9092/0"
    expired = logging.LogRecord(
        "aiokafka.consumer.group_coordinator",
        logging.ERROR,
        "",
        0,
        "Heartbeat session expired - marking coordinator dead",
        (),
        None,
    )
    assert broker_of(expired) == "coordinator"
    other = logging.LogRecord("aiokafka", logging.ERROR, "", 0, "Topic %s not found", ("t",), None)
    assert broker_of(other) is None
    assert broker_of(rdkafka_record("[thrd:main]: Group coordinator changed")) is None


def test_one_line_per_interval_per_broker_with_the_count_held_back() -> None:
    throttle = ConnectionErrorThrottle(interval_s=3600)
    counted = CONNECTION_ERRORS.labels("0")._value.get()
    passed = [throttle.filter(aiokafka_record(0)) for _ in range(50)]
    assert passed == [True] + [False] * 49
    assert throttle.filter(aiokafka_record(1))  # another broker has its own line
    assert CONNECTION_ERRORS.labels("0")._value.get() == counted + 50

    throttle.interval_s = 0.0  # the interval is over: the next line says what was held back
    record = aiokafka_record(0)
    assert throttle.filter(record)
    assert record.getMessage().startswith("Unable connect to node with id 0: Connect call failed")
    assert "(49 more like it in the last" in record.getMessage()


def test_other_records_pass_untouched() -> None:
    throttle = ConnectionErrorThrottle(interval_s=3600)
    record = logging.LogRecord("aiokafka", logging.ERROR, "", 0, "Topic %s gone", ("t",), None)
    assert all(throttle.filter(record) for _ in range(5))
    assert record.getMessage() == "Topic t gone"
