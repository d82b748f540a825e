"""Kafka failures as our own typed errors, each with a message a person can act on."""

from __future__ import annotations


class KafkaClientError(Exception):
    """Base class of every error raised by `octollm.kafka`."""


class KafkaUnavailable(KafkaClientError):
    """No broker answered within the connect timeout."""

    def __init__(self, bootstrap_servers: str, timeout_s: float, detail: str) -> None:
        super().__init__(
            f"cannot reach Kafka at {bootstrap_servers} within {timeout_s:g}s ({detail}); "
            "is it running? start the local one with `octollm infra up`"
        )
        self.bootstrap_servers = bootstrap_servers


class TopicNotFound(KafkaClientError):
    def __init__(self, topic: str) -> None:
        super().__init__(f"topic {topic!r} does not exist; create it with `octollm topics create`")
        self.topic = topic


class ProduceFailed(KafkaClientError):
    """A record was not acknowledged by the broker."""


class TopicCreationFailed(KafkaClientError):
    pass
