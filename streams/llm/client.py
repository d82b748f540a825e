"""The one OpenAI-compatible chat-completion client every arm uses.

It speaks plain HTTP (httpx) to `POST {llm_base_url}/chat/completions`, so any server with the
OpenAI chat API works: the local llama.cpp server, vLLM, Ollama, a hosted API. One call is
bounded by a time budget (`timeout_s`, default `llm_timeout_s`) that covers every attempt and the
back-off between them; connection errors, timeouts, 429 and 5xx are retried up to
`llm_max_retries` times with jittered exponential back-off, a server's Retry-After is honoured
by every client of that server in the process, then `LLMUnavailable` says why. Each arm may
use a server of its own (`Settings.for_arm`, `OCTO_LLM__ARMS__<ARM>__URL`).
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import random
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx
import jsonschema

from octollm.llm.errors import LLMOutputError, LLMResponseError, LLMUnavailable
from octollm.settings import LLMSchemaFormat, Settings, get_settings

__all__ = ["Completion", "LLMClient", "UsageMeter", "parse_json_text"]

log = logging.getLogger("octollm.llm")

Messages = list[dict[str, str]]

#: Longest single back-off sleep, however many retries came before.
MAX_BACKOFF_S = 8.0
#: Status codes worth another attempt: overload, rate limit, server faults.
RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
#: The back-off's sleep (a module attribute, so unit tests can record it instead of waiting).
_sleep = asyncio.sleep
#: The back-off's random share, in [0, 1): a sleep is half the exponential step plus up to the
#: other half, so the arms that one outage failed together do not come back in lockstep.
_jitter = random.random
#: When each server (base URL) may be asked again, from its Retry-After: every client of that
#: server in this process waits it out, so arms sharing one server back off together.
_not_before: dict[str, float] = {}
_FENCE = re.compile(r"^\s*```(?:json)?\s*\n(?P<body>.*?)\n?\s*```\s*$", re.DOTALL)


@dataclass(frozen=True)
class Completion:
    """One chat completion: the text and what it cost."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    model: str
    latency_ms: float
    finish_reason: str
    cost_usd: float = 0.0
    attempts: int = 1

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @property
    def truncated(self) -> bool:
        """The model stopped at max_tokens, so the text (and any JSON in it) may be cut off."""
        return self.finish_reason == "length"


@dataclass
class UsageMeter:
    """Cumulative tokens and cost over many completions (one arm request, one task).

    `as_usage()` has the fields of the Avro `Usage` record, ready for `ArmResult.usage`.
    """

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    calls: int = 0

    def add(self, completion: Completion) -> Completion:
        """Count `completion` in; returns it, so `meter.add(await llm.complete(...))` reads well."""
        self.prompt_tokens += completion.prompt_tokens
        self.completion_tokens += completion.completion_tokens
        self.cost_usd += completion.cost_usd
        self.calls += 1
        return completion

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def as_usage(self) -> dict[str, Any]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cost_usd": round(self.cost_usd, 8),
        }


def _retry_after_s(value: str | None) -> float | None:
    """A Retry-After header in seconds from now (delay-seconds or an HTTP date), None if
    absent or unreadable."""
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - datetime.now(UTC)).total_seconds(), 0.0)


def _is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    return host in ("localhost", "::1") or host.startswith("127.")


def parse_json_text(text: str) -> Any:
    """The JSON value in a model's answer; a ```json fence around it is tolerated, because
    servers without constrained decoding often add one. Raises ValueError when it is not JSON."""
    stripped = text.strip()
    fenced = _FENCE.match(stripped)
    if fenced:
        stripped = fenced.group("body").strip()
    return json.loads(stripped)


def _schema_name(schema: dict[str, Any]) -> str:
    # OpenAI wants ^[a-zA-Z0-9_-]{1,64}$; a schema's title is the natural name when it has one.
    title = str(schema.get("title") or "response")
    return re.sub(r"[^a-zA-Z0-9_-]", "_", title)[:64] or "response"


class LLMClient:
    """Async client for one OpenAI-compatible server (from `Settings`). Reuse one per process;
    `aclose()` (or `async with`) releases its connections."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.settings = settings if settings is not None else get_settings()
        headers = {"Content-Type": "application/json"}
        if self.settings.llm_api_key is not None:
            headers["Authorization"] = f"Bearer {self.settings.llm_api_key.get_secret_value()}"
        self.base_url = self.settings.llm_base_url.rstrip("/")
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            headers=headers,
            transport=transport,
            # A proxy from the environment must never sit between us and a loopback server.
            trust_env=not _is_loopback(self.base_url),
            timeout=self.settings.llm_timeout_s,
        )

    async def __aenter__(self) -> LLMClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # --- requests --------------------------------------------------------------------------

    def _response_format(self, schema: dict[str, Any]) -> dict[str, Any]:
        if self.settings.llm_schema_format is LLMSchemaFormat.JSON_SCHEMA:
            return {
                "type": "json_schema",
                "json_schema": {"name": _schema_name(schema), "schema": schema, "strict": True},
            }
        return {"type": "json_object", "schema": schema}

    def _cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        s = self.settings
        return (
            prompt_tokens * s.llm_prompt_usd_per_1k
            + completion_tokens * s.llm_completion_usd_per_1k
        ) / 1000.0

    async def complete(
        self,
        messages: Messages,
        *,
        max_tokens: int = 512,
        temperature: float = 0.2,
        json_schema: dict[str, Any] | None = None,
        timeout_s: float | None = None,
        task_id: str | None = None,
    ) -> Completion:
        """One chat completion. `json_schema` constrains the answer to that schema where the
        server supports it (see `llm_schema_format`). `timeout_s` bounds the whole call, retries
        included. Raises `LLMUnavailable` or `LLMResponseError`; `task_id` only labels log lines.
        """
        if not messages:
            raise ValueError("messages must not be empty")
        body: dict[str, Any] = {
            "model": self.settings.llm_model,
            "messages": messages,
            "max_tokens": max_tokens,
            "temperature": temperature,
            "stream": False,
        }
        if json_schema is not None:
            body["response_format"] = self._response_format(json_schema)
        budget = self.settings.llm_timeout_s if timeout_s is None else timeout_s
        if budget <= 0:
            raise ValueError("timeout_s must be positive")
        began = time.monotonic()
        deadline = began + budget
        max_attempts = self.settings.llm_max_retries + 1
        backoff = self.settings.llm_retry_backoff_s
        attempt = 0
        reason = "no attempt made"
        while attempt < max_attempts:
            held = _not_before.get(self.base_url, 0.0) - time.monotonic()
            if held > 0:  # the server asked every client to wait (Retry-After)
                if held >= deadline - time.monotonic():
                    reason = f"the server asked to wait {held:.1f}s, past the budget; {reason}"
                    break
                await _sleep(held)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                reason = f"time budget of {budget:g}s spent; last error: {reason}"
                break
            attempt += 1
            retry_after: float | None = None
            try:
                # httpx's timeout bounds each read, not the whole answer; asyncio's bounds both.
                async with asyncio.timeout(remaining):
                    response = await self._http.post(
                        "/chat/completions", json=body, timeout=httpx.Timeout(remaining)
                    )
            except (httpx.TimeoutException, TimeoutError) as exc:
                reason = f"timed out after {remaining:.1f}s ({type(exc).__name__})"
            except httpx.TransportError as exc:
                reason = f"{type(exc).__name__}: {exc or 'connection failed'}"
            else:
                if response.status_code < 400:
                    completion = self._completion(response, began, attempt)
                    log.info(
                        "llm completion task_id=%s model=%s prompt_tokens=%d "
                        "completion_tokens=%d latency_ms=%.0f finish=%s attempts=%d",
                        task_id,
                        completion.model,
                        completion.prompt_tokens,
                        completion.completion_tokens,
                        completion.latency_ms,
                        completion.finish_reason,
                        attempt,
                        extra={"task_id": task_id, "component": "llm"},
                    )
                    return completion
                text = response.text[:500]
                # llama-cpp-python answers a request it cannot parse (e.g. the OpenAI
                # json_schema response_format) with a 500 "validation error": the request's
                # fault, so retrying it only burns the budget.
                invalid = response.status_code == 500 and "validation error" in text
                if response.status_code not in RETRY_STATUS or invalid:
                    raise LLMResponseError(
                        f"LLM server {self.base_url} rejected the request: HTTP "
                        f"{response.status_code}: {text}",
                        status_code=response.status_code,
                        body=text,
                    )
                reason = f"HTTP {response.status_code}: {text}"
                retry_after = _retry_after_s(response.headers.get("Retry-After"))
                if retry_after is not None:
                    until = time.monotonic() + retry_after
                    _not_before[self.base_url] = max(_not_before.get(self.base_url, 0.0), until)
            if attempt >= max_attempts:
                break
            step = min(backoff * 2 ** (attempt - 1), MAX_BACKOFF_S)
            sleep = min(step * (0.5 + 0.5 * _jitter()), deadline - time.monotonic())
            if retry_after is not None:
                sleep = 0.0  # the wait for the server's Retry-After comes first in the loop
            log.warning(
                "llm attempt failed task_id=%s attempt=%d/%d reason=%s retry_in_s=%.2f",
                task_id,
                attempt,
                max_attempts,
                reason,
                max(sleep, retry_after or 0.0, 0.0),
                extra={"task_id": task_id, "component": "llm"},
            )
            if sleep > 0:
                await _sleep(sleep)
        log.error(
            "llm unavailable task_id=%s base_url=%s attempts=%d reason=%s",
            task_id,
            self.base_url,
            attempt,
            reason,
            extra={"task_id": task_id, "component": "llm"},
        )
        raise LLMUnavailable(reason, base_url=self.base_url, attempts=attempt)

    def _completion(self, response: httpx.Response, began: float, attempts: int) -> Completion:
        try:
            data = response.json()
            choice = data["choices"][0]
            text = choice["message"].get("content") or ""
            usage = data.get("usage") or {}
            prompt_tokens = int(usage.get("prompt_tokens") or 0)
            completion_tokens = int(usage.get("completion_tokens") or 0)
        except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
            raise LLMResponseError(
                f"LLM server {self.base_url} sent something that is not a chat completion "
                f"({type(exc).__name__}: {exc}): {response.text[:300]}",
                status_code=response.status_code,
                body=response.text[:500],
            ) from exc
        return Completion(
            text=str(text),
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            model=str(data.get("model") or self.settings.llm_model),
            latency_ms=(time.monotonic() - began) * 1000.0,
            finish_reason=str(choice.get("finish_reason") or "unknown"),
            cost_usd=self._cost(prompt_tokens, completion_tokens),
            attempts=attempts,
        )

    async def complete_json(
        self,
        messages: Messages,
        schema: dict[str, Any],
        *,
        max_tokens: int = 512,
        temperature: float = 0.2,
        timeout_s: float | None = None,
        task_id: str | None = None,
    ) -> tuple[Any, Completion]:
        """A completion constrained to `schema`, parsed and validated against it.

        Raises `LLMOutputError` (carrying the completion) when the text is not JSON, was cut off
        at `max_tokens`, or does not match the schema; the server-side constraint is best
        effort on some servers, so the answer is always checked here too.
        """
        jsonschema.validators.validator_for(schema).check_schema(schema)
        completion = await self.complete(
            messages,
            max_tokens=max_tokens,
            temperature=temperature,
            json_schema=schema,
            timeout_s=timeout_s,
            task_id=task_id,
        )
        try:
            value = parse_json_text(completion.text)
        except ValueError as exc:
            cut = " (cut off at max_tokens)" if completion.truncated else ""
            raise LLMOutputError(
                f"the model's answer is not JSON{cut}: {exc}", completion=completion
            ) from exc
        errors = sorted(
            jsonschema.validators.validator_for(schema)(schema).iter_errors(value),
            key=lambda e: list(e.path),
        )
        if errors:
            first = errors[0]
            where = "/".join(str(p) for p in first.path) or "(root)"
            raise LLMOutputError(
                f"the model's JSON does not match the schema at {where}: {first.message}",
                completion=completion,
            )
        return value, completion
