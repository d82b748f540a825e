"""The LLM: one OpenAI-compatible client (`LLMClient`) for every arm; docs/llm.md.

    from octollm.llm import LLMClient, Completion, LLMError, LLMUnavailable, LLMOutputError

The local server it talks to by default is started by `octollm.supervisor.llm`.
"""

from octollm.llm.client import Completion, LLMClient, UsageMeter, parse_json_text
from octollm.llm.errors import LLMError, LLMOutputError, LLMResponseError, LLMUnavailable

__all__ = [
    "Completion",
    "LLMClient",
    "LLMError",
    "LLMOutputError",
    "LLMResponseError",
    "LLMUnavailable",
    "UsageMeter",
    "parse_json_text",
]
