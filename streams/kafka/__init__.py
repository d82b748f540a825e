"""Thin typed layer over confluent-kafka: everything else talks to Kafka through it."""
