"""The LLM client's typed errors: what a caller (an arm) can tell apart and act on.

`LLMUnavailable`: no usable answer from the server within the retries and the time budget
(connection refused, timeouts, 5xx); the orchestrator retries the step or fails the task with the
reason. `LLMResponseError`: the server answered, but refused the request (4xx) or sent something
that is not an OpenAI chat completion; retrying the same request will not help.
`LLMOutputError`: a well-formed completion whose text is not the JSON that was asked for; the
planner falls back to its rule-based plan.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from octollm.llm.client import Completion

__all__ = ["LLMError", "LLMOutputError", "LLMResponseError", "LLMUnavailable"]


class LLMError(Exception):
    """Base of every error the LLM client raises."""


class LLMUnavailable(LLMError):
    """The server could not be reached or kept failing; `reason` says why, `attempts` how often."""

    def __init__(self, reason: str, *, base_url: str, attempts: int) -> None:
        super().__init__(f"LLM server {base_url} unavailable after {attempts} attempt(s): {reason}")
        self.reason = reason
        self.base_url = base_url
        self.attempts = attempts


class LLMResponseError(LLMError):
    """The server rejected the request (4xx) or its answer is not a chat completion."""

    def __init__(self, message: str, *, status_code: int | None = None, body: str = "") -> None:
        super().__init__(message)
        self.status_code = status_code
        self.body = body


class LLMOutputError(LLMError):
    """The model's text could not be used (not JSON, or not matching the schema).

    Carries the `completion`, so the caller can still account its tokens and log what came back.
    """

    def __init__(self, message: str, *, completion: Completion) -> None:
        super().__init__(message)
        self.completion = completion
        self.text = completion.text
