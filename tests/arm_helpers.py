"""What the arm tests share: a recorded LLM answer, a context object, an unreachable LLM.

A "recorded response" is an OpenAI chat completion exactly as the local llama.cpp server
returned it, replayed through httpx.MockTransport: unit tests only. Integration tests use the
real server (the `llm_settings` fixture).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import httpx

from octollm.llm import LLMClient
from octollm.settings import Settings


def chat_completion(content: str, prompt_tokens: int = 60, completion_tokens: int = 12) -> Any:
    """The body of a recorded chat completion answering `content`."""
    return {
        "id": "chatcmpl-recorded",
        "object": "chat.completion",
        "model": "SmolLM2-135M-Instruct",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens},
    }


def recorded(
    content: str, prompt_tokens: int = 60, completion_tokens: int = 12
) -> httpx.MockTransport:
    """A transport that answers every request with one recorded completion."""

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=chat_completion(content, prompt_tokens, completion_tokens))

    return httpx.MockTransport(handler)


def down_settings() -> Settings:
    """Settings whose LLM refuses connections for real: nothing listens on 127.0.0.1:9."""
    return Settings(llm_base_url="http://127.0.0.1:9/v1", llm_max_retries=0, llm_timeout_s=2)


@dataclass
class Ctx:
    """The part of the runtime's ArmContext an arm uses."""

    settings: Settings
    llm: LLMClient
    worker_id: str = "arm@test"
    log: logging.LoggerAdapter = field(  # type: ignore[type-arg]
        default_factory=lambda: logging.LoggerAdapter(logging.getLogger("test.arm"), {})
    )
