"""LLMClient against recorded responses served by httpx.MockTransport (no server, no model).

Every 200 body below is a recorded response: the JSON that the real local server
(llama-cpp-python 0.3.36 serving SmolLM2-135M-Instruct Q4_1) answered to the request named
beside it. The failures (503, 400, refused connections, a server that hangs) are injected by
the transport. The real server is exercised in tests/integration/test_llm_server.py.
"""

from __future__ import annotations

import asyncio
import copy
import email.utils
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from octollm.llm import (
    Completion,
    LLMClient,
    LLMError,
    LLMOutputError,
    LLMResponseError,
    LLMUnavailable,
    UsageMeter,
    parse_json_text,
)
from octollm.llm import client as client_module
from octollm.settings import LLMSchemaFormat, Settings

pytestmark = pytest.mark.unit

#: Recorded response: POST /v1/chat/completions, "Write a Python function add(a, b) that returns
#: the sum." (max_tokens 64, temperature 0), from the local llama.cpp server.
RECORDED_CHAT: dict[str, Any] = {
    "id": "chatcmpl-9ec2f1d8-0ce2-4274-8132-602297f39ed0",
    "object": "chat.completion",
    "created": 1795629675,
    "model": "SmolLM2-135M-Instruct",
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": "```python\ndef add(a, b):\n    return a + b",
            },
            "logprobs": None,
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 45, "completion_tokens": 15, "total_tokens": 60},
}

#: Recorded response: the same request with max_tokens 128 and response_format
#: {"type": "json_object", "schema": PLAN_SCHEMA}. The grammar holds SmolLM2-135M to the schema;
#: what it fills in is weak (the planner's deterministic fallback exists for that).
RECORDED_PLAN: dict[str, Any] = {
    "id": "chatcmpl-577503e6-bae2-4da0-88e7-cecdc17e8571",
    "object": "chat.completion",
    "created": 1795629683,
    "model": "SmolLM2-135M-Instruct",
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": '{ "steps": [{"arm":"10.5", "instruction":"2"}, '
                '{"arm":"3.78", "instruction":"4"}]}',
            },
            "logprobs": None,
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 45, "completion_tokens": 50, "total_tokens": 95},
}

PLAN_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "steps": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"arm": {"type": "string"}, "instruction": {"type": "string"}},
                "required": ["arm", "instruction"],
            },
            "minItems": 1,
        }
    },
    "required": ["steps"],
}

MESSAGES = [{"role": "user", "content": "Write a Python function add(a, b) that returns the sum."}]


def with_content(recorded: dict[str, Any], content: str, finish: str = "stop") -> dict[str, Any]:
    body = copy.deepcopy(recorded)
    body["choices"][0]["message"]["content"] = content
    body["choices"][0]["finish_reason"] = finish
    return body


def settings(**overrides: Any) -> Settings:
    base: dict[str, Any] = {
        "llm_base_url": "http://127.0.0.1:9/v1",
        "llm_max_retries": 3,
        "llm_retry_backoff_s": 0.25,
        "llm_timeout_s": 10.0,
    }
    base.update(overrides)
    return Settings(**base)


Handler = Callable[[httpx.Request], httpx.Response]


class Recorder:
    """Serves a scripted list of outcomes (a response body, a status, or an exception)."""

    def __init__(self, outcomes: list[Any]) -> None:
        self.outcomes = outcomes
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        outcome = self.outcomes[min(len(self.requests), len(self.outcomes)) - 1]
        if isinstance(outcome, Exception):
            raise outcome
        if isinstance(outcome, int):
            return httpx.Response(outcome, text=f"server error {outcome}")
        if isinstance(outcome, str):
            return httpx.Response(200, text=outcome)
        return httpx.Response(200, json=outcome)

    def body(self, i: int = 0) -> dict[str, Any]:
        return dict(json.loads(self.requests[i].content))


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The back-off sleeps, recorded instead of waited."""
    recorded: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        recorded.append(seconds)

    monkeypatch.setattr(client_module, "_sleep", fake_sleep)
    monkeypatch.setattr(client_module, "_jitter", lambda: 1.0)  # the top of each jitter range
    monkeypatch.setattr(client_module, "_not_before", {})
    return recorded


def client_for(recorder: Recorder, **overrides: Any) -> LLMClient:
    return LLMClient(settings(**overrides), transport=httpx.MockTransport(recorder))


async def test_complete_parses_a_recorded_chat_completion() -> None:
    """Recorded response: a plain completion becomes a Completion with its token counts."""
    rec = Recorder([RECORDED_CHAT])
    async with client_for(rec, llm_api_key=SecretStr("sk-test")) as llm:
        done = await llm.complete(MESSAGES, max_tokens=64, temperature=0.0)
    assert isinstance(done, Completion)
    assert "def add(a, b)" in done.text
    assert (done.prompt_tokens, done.completion_tokens, done.total_tokens) == (45, 15, 60)
    assert done.model == "SmolLM2-135M-Instruct"
    assert done.finish_reason == "stop" and not done.truncated
    assert done.latency_ms >= 0 and done.attempts == 1
    assert done.cost_usd == 0.0  # the local model is free by default
    request = rec.requests[0]
    assert request.url == "http://127.0.0.1:9/v1/chat/completions"
    assert request.headers["authorization"] == "Bearer sk-test"
    body = rec.body()
    assert body["model"] == "SmolLM2-135M-Instruct"
    assert body["messages"] == MESSAGES
    assert (body["max_tokens"], body["temperature"], body["stream"]) == (64, 0.0, False)
    assert "response_format" not in body


async def test_no_authorization_header_without_a_key() -> None:
    """Recorded response; the local server needs no key, so none is sent."""
    rec = Recorder([RECORDED_CHAT])
    async with client_for(rec) as llm:
        await llm.complete(MESSAGES)
    assert "authorization" not in rec.requests[0].headers


async def test_json_schema_is_sent_in_llama_cpp_form_by_default() -> None:
    """Recorded response; llama.cpp takes the schema inside a json_object response_format."""
    rec = Recorder([RECORDED_PLAN])
    async with client_for(rec) as llm:
        await llm.complete(MESSAGES, json_schema=PLAN_SCHEMA)
    assert rec.body()["response_format"] == {"type": "json_object", "schema": PLAN_SCHEMA}


async def test_json_schema_in_openai_form_when_configured() -> None:
    """Recorded response; other servers (OpenAI, Ollama, vLLM) take the json_schema form."""
    rec = Recorder([RECORDED_PLAN])
    schema = {**PLAN_SCHEMA, "title": "Task plan"}
    async with client_for(rec, llm_schema_format=LLMSchemaFormat.JSON_SCHEMA) as llm:
        await llm.complete(MESSAGES, json_schema=schema)
    assert rec.body()["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "Task_plan", "schema": schema, "strict": True},
    }


async def test_5xx_is_retried_with_exponential_backoff(sleeps: list[float]) -> None:
    """Recorded response after two injected 503s: the third attempt succeeds."""
    rec = Recorder([503, 503, RECORDED_CHAT])
    async with client_for(rec) as llm:
        done = await llm.complete(MESSAGES)
    assert done.attempts == 3 and len(rec.requests) == 3
    assert sleeps == [0.25, 0.5]


async def test_connection_errors_end_in_llm_unavailable(sleeps: list[float]) -> None:
    """No recorded response: every attempt is refused; after the retries, LLMUnavailable."""
    rec = Recorder([httpx.ConnectError("[Errno 111] Connection refused")])
    async with client_for(rec, llm_max_retries=3) as llm:
        with pytest.raises(LLMUnavailable) as err:
            await llm.complete(MESSAGES, task_id="t-1")
    assert len(rec.requests) == 4
    assert err.value.attempts == 4
    assert "ConnectError" in err.value.reason and "Connection refused" in err.value.reason
    assert "http://127.0.0.1:9/v1 unavailable after 4 attempt(s)" in str(err.value)
    assert sleeps == [0.25, 0.5, 1.0]
    assert isinstance(err.value, LLMError)


async def test_backoff_is_capped(sleeps: list[float]) -> None:
    """No recorded response: a long run of 502s never sleeps more than MAX_BACKOFF_S."""
    rec = Recorder([502])
    async with client_for(rec, llm_max_retries=8, llm_retry_backoff_s=1.0) as llm:
        with pytest.raises(LLMUnavailable, match="HTTP 502"):
            await llm.complete(MESSAGES)
    assert max(sleeps) == client_module.MAX_BACKOFF_S
    assert sleeps[:4] == [1.0, 2.0, 4.0, 8.0]


async def test_4xx_is_not_retried() -> None:
    """No recorded response: a 400 is the request's fault, so it fails at once."""
    rec = Recorder([400])
    async with client_for(rec) as llm:
        with pytest.raises(LLMResponseError) as err:
            await llm.complete(MESSAGES)
    assert len(rec.requests) == 1
    assert err.value.status_code == 400
    assert "rejected the request: HTTP 400" in str(err.value)


async def test_a_500_validation_error_is_not_retried() -> None:
    """Recorded response: llama-cpp-python's answer to the OpenAI json_schema response_format."""
    body = {
        "error": {
            "message": "1 validation error:\n  {'type': 'literal_error', 'loc': ('body', "
            "'response_format', 'type'), 'msg': \"Input should be 'text' or 'json_object'\", "
            "'input': 'json_schema'}",
            "type": "internal_server_error",
            "param": None,
            "code": None,
        }
    }

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(500, json=body)

    calls: list[httpx.Request] = []
    llm = LLMClient(
        settings(llm_schema_format=LLMSchemaFormat.JSON_SCHEMA),
        transport=httpx.MockTransport(handler),
    )
    with pytest.raises(LLMResponseError, match="HTTP 500") as err:
        await llm.complete(MESSAGES, json_schema=PLAN_SCHEMA)
    await llm.aclose()
    assert len(calls) == 1 and err.value.status_code == 500
    assert "json_object" in err.value.body


async def test_a_body_that_is_not_a_chat_completion_is_a_response_error() -> None:
    """No recorded response: a 200 whose body is HTML, then one without choices."""
    for body in ("<html>proxy login</html>", {"object": "list", "data": []}):
        async with client_for(Recorder([body])) as llm:
            with pytest.raises(LLMResponseError, match="not a chat completion"):
                await llm.complete(MESSAGES)


async def test_a_hanging_server_ends_within_the_time_budget() -> None:
    """No recorded response: a server that never answers; the call's budget bounds all tries."""

    async def hang(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(30)
        return httpx.Response(200, json=RECORDED_CHAT)

    llm = LLMClient(settings(llm_retry_backoff_s=0.05), transport=httpx.MockTransport(hang))
    began = time.monotonic()
    with pytest.raises(LLMUnavailable) as err:
        await llm.complete(MESSAGES, timeout_s=0.5)
    elapsed = time.monotonic() - began
    await llm.aclose()
    assert elapsed < 5  # a guard against hanging, not a performance figure
    assert "timed out" in err.value.reason or "time budget" in err.value.reason


async def test_complete_json_parses_and_validates() -> None:
    """Recorded response: a schema-constrained plan parses and matches the schema."""
    rec = Recorder([RECORDED_PLAN])
    async with client_for(rec) as llm:
        value, done = await llm.complete_json(MESSAGES, PLAN_SCHEMA, max_tokens=128)
    assert value == {
        "steps": [{"arm": "10.5", "instruction": "2"}, {"arm": "3.78", "instruction": "4"}]
    }
    assert done.completion_tokens == 50
    assert rec.body()["response_format"]["schema"] == PLAN_SCHEMA
    assert rec.body()["max_tokens"] == 128


async def test_complete_json_rejects_text_that_is_not_json() -> None:
    """Recorded response with its text replaced by prose: LLMOutputError keeps the completion."""
    rec = Recorder([with_content(RECORDED_PLAN, "Sure! Here is a plan: step 1, write code.")])
    async with client_for(rec) as llm:
        with pytest.raises(LLMOutputError, match="not JSON") as err:
            await llm.complete_json(MESSAGES, PLAN_SCHEMA)
    assert err.value.completion.prompt_tokens == 45  # still accountable
    assert err.value.text.startswith("Sure!")


async def test_complete_json_names_a_cut_off_answer() -> None:
    """Recorded response cut at max_tokens (finish_reason "length")."""
    rec = Recorder([with_content(RECORDED_PLAN, '{"steps": [{"arm": "co', finish="length")])
    async with client_for(rec) as llm:
        with pytest.raises(LLMOutputError, match="cut off at max_tokens"):
            await llm.complete_json(MESSAGES, PLAN_SCHEMA)


async def test_complete_json_rejects_json_off_the_schema() -> None:
    """Recorded response whose JSON misses a required field."""
    rec = Recorder([with_content(RECORDED_PLAN, '{"steps": [{"arm": "coder"}]}')])
    async with client_for(rec) as llm:
        with pytest.raises(LLMOutputError, match=r"at steps/0: 'instruction' is a required"):
            await llm.complete_json(MESSAGES, PLAN_SCHEMA)


async def test_complete_json_checks_the_schema_itself_first() -> None:
    """No request is sent for a schema that is not a valid JSON schema."""
    rec = Recorder([RECORDED_PLAN])
    async with client_for(rec) as llm:
        with pytest.raises(Exception, match="is not valid under any of the given schemas"):
            await llm.complete_json(MESSAGES, {"type": "no-such-type"})
    assert rec.requests == []


def test_parse_json_text_tolerates_a_code_fence() -> None:
    assert parse_json_text('```json\n{"a": 1}\n```') == {"a": 1}
    assert parse_json_text('  {"a": [1, 2]}  ') == {"a": [1, 2]}
    with pytest.raises(ValueError):
        parse_json_text("not json")


async def test_usage_meter_and_cost_from_prices() -> None:
    """Recorded responses, priced like a hosted API: cost per 1k tokens adds up in the meter."""
    rec = Recorder([RECORDED_CHAT, RECORDED_PLAN])
    meter = UsageMeter()
    prices = {"llm_prompt_usd_per_1k": 0.5, "llm_completion_usd_per_1k": 1.5}
    async with client_for(rec, **prices) as llm:
        first = meter.add(await llm.complete(MESSAGES))
        _, second = await llm.complete_json(MESSAGES, PLAN_SCHEMA)
        meter.add(second)
    assert first.cost_usd == pytest.approx((45 * 0.5 + 15 * 1.5) / 1000)
    assert (meter.calls, meter.prompt_tokens, meter.completion_tokens) == (2, 90, 65)
    assert meter.total_tokens == 155
    assert meter.cost_usd == pytest.approx((90 * 0.5 + 65 * 1.5) / 1000)
    assert meter.as_usage() == {
        "prompt_tokens": 90,
        "completion_tokens": 65,
        "cost_usd": pytest.approx((90 * 0.5 + 65 * 1.5) / 1000),
    }


async def test_empty_messages_are_refused() -> None:
    async with client_for(Recorder([RECORDED_CHAT])) as llm:
        with pytest.raises(ValueError, match="messages"):
            await llm.complete([])


async def test_backoff_is_jittered_between_half_and_the_whole_step(
    sleeps: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Arms that one outage failed together must not retry in lockstep."""
    monkeypatch.setattr(client_module, "_jitter", lambda: 0.0)
    rec = Recorder([503, 503, RECORDED_CHAT])
    async with client_for(rec) as llm:
        await llm.complete(MESSAGES)
    assert sleeps == [0.125, 0.25]


async def test_retry_after_holds_every_client_of_that_server(sleeps: list[float]) -> None:
    """A 429 with Retry-After: 3 makes this client and another one of the same server wait."""

    def busy_then_ok(outcomes: list[Any]) -> Handler:
        rec = Recorder(outcomes)

        def handler(request: httpx.Request) -> httpx.Response:
            response = rec(request)
            if response.status_code == 429:
                return httpx.Response(429, text="busy", headers={"Retry-After": "3"})
            return response

        return handler

    first = LLMClient(settings(), transport=httpx.MockTransport(busy_then_ok([429, RECORDED_CHAT])))
    async with first:
        done = await first.complete(MESSAGES)
    assert done.attempts == 2
    assert len(sleeps) == 1 and 2.5 < sleeps[0] <= 3.0  # the server's wait, not the back-off
    other = LLMClient(settings(), transport=httpx.MockTransport(busy_then_ok([RECORDED_CHAT])))
    async with other:
        await other.complete(MESSAGES)
    assert len(sleeps) == 2 and sleeps[1] > 2.0  # same server: it waits before its first try
    elsewhere = LLMClient(
        settings(llm_base_url="http://127.0.0.1:10/v1"),
        transport=httpx.MockTransport(busy_then_ok([RECORDED_CHAT])),
    )
    async with elsewhere:
        await elsewhere.complete(MESSAGES)
    assert len(sleeps) == 2  # another server is not held


async def test_a_retry_after_past_the_budget_gives_up_at_once(sleeps: list[float]) -> None:
    rec = Recorder([429])

    def handler(request: httpx.Request) -> httpx.Response:
        rec(request)
        return httpx.Response(429, text="busy", headers={"Retry-After": "3600"})

    async with LLMClient(settings(), transport=httpx.MockTransport(handler)) as llm:
        with pytest.raises(LLMUnavailable, match="asked to wait"):
            await llm.complete(MESSAGES)
    assert len(rec.requests) == 1 and sleeps == []


def test_retry_after_reads_seconds_and_http_dates() -> None:
    assert client_module._retry_after_s("7") == 7.0
    assert client_module._retry_after_s(None) is None
    assert client_module._retry_after_s("soon") is None
    later = email.utils.format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    assert 25 < (client_module._retry_after_s(later) or 0) <= 30
