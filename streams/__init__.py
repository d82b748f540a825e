"""OctoLLM: event-driven LLM task orchestration on Kafka."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("octollm")
except PackageNotFoundError:  # running from a checkout that was never installed
    __version__ = "0.0.0+unknown"
