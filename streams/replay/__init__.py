"""Replay and reprocessing: copy stretches of a topic back in, or rewind a consumer group."""
