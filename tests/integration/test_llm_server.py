"""The LLM client against the REAL local server (llama.cpp serving SmolLM2-135M-Instruct).

The module's server is started by the supervisor on a free port with its data in a temporary
directory, and stopped by PID at the end; a server that cannot start fails the tests.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import jsonschema
import pytest

from octollm.llm import LLMClient, LLMUnavailable, UsageMeter
from octollm.settings import Settings
from octollm.supervisor import llm
from octollm.supervisor.process import pid_alive
from tests.conftest import free_port

pytestmark = pytest.mark.integration

PLAN_SCHEMA = {
    "type": "object",
    "properties": {
        "steps": {
            "type": "array",
            "minItems": 1,
            "maxItems": 4,
            "items": {
                "type": "object",
                "properties": {
                    "arm": {"type": "string", "enum": ["coder", "retriever", "executor"]},
                    "instruction": {"type": "string", "maxLength": 200},
                },
                "required": ["arm", "instruction"],
            },
        }
    },
    "required": ["steps"],
}


def test_server_runs_from_our_pid_file_and_start_is_idempotent(llm_settings: Settings) -> None:
    st = llm.llm_status(llm_settings)
    assert st.running and st.answering and st.pid is not None
    assert st.url == llm_settings.llm_base_url
    assert st.model_path is not None and st.model_path.endswith(".gguf")
    assert st.rss_mb is not None and st.rss_mb > 50
    assert llm.start_llm(llm_settings) == llm_settings.llm_base_url  # reused, not restarted
    assert llm.llm_status(llm_settings).pid == st.pid
    assert Path(st.log_file).is_file()


async def test_chat_completion(llm_settings: Settings) -> None:
    async with LLMClient(llm_settings) as client:
        done = await client.complete(
            [
                {
                    "role": "user",
                    "content": "Write a Python function add(a, b) that returns the sum.",
                }
            ],
            max_tokens=96,
            temperature=0.0,
            task_id="it-chat",
        )
    assert "def add" in done.text
    assert done.prompt_tokens > 0 and done.completion_tokens > 0
    assert done.finish_reason in ("stop", "length")
    assert done.model == client.settings.llm_model
    assert done.latency_ms > 0 and done.cost_usd == 0.0


async def test_json_schema_constrained_answer(llm_settings: Settings) -> None:
    meter = UsageMeter()
    async with LLMClient(llm_settings) as client:
        value, done = await client.complete_json(
            [
                {
                    "role": "system",
                    "content": "You plan work for software agents. Answer with JSON only.",
                },
                {
                    "role": "user",
                    "content": "Goal: write a Python function add(a, b) and test it. "
                    'Give a plan as {"steps": [{"arm": ..., "instruction": ...}]}.',
                },
            ],
            PLAN_SCHEMA,
            max_tokens=256,
            temperature=0.0,
            task_id="it-json",
        )
    meter.add(done)
    jsonschema.validate(value, PLAN_SCHEMA)  # complete_json checked it; check it here too
    assert 1 <= len(value["steps"]) <= 4
    assert done.prompt_tokens > 0 and done.completion_tokens > 0
    assert meter.as_usage()["prompt_tokens"] == done.prompt_tokens


async def test_concurrent_requests_are_all_answered(llm_settings: Settings) -> None:
    """Several arms share one server: it queues their requests, none is dropped or cut off."""
    prompts = [f"Say the number {n}." for n in range(3)]
    async with LLMClient(llm_settings) as client:
        results = await asyncio.gather(
            *(
                client.complete([{"role": "user", "content": p}], max_tokens=16, temperature=0.0)
                for p in prompts
            )
        )
    assert all(r.completion_tokens > 0 for r in results)


async def test_parallel_slots_decode_concurrent_requests_together(llm_settings: Settings) -> None:
    """llama-server's slots: four concurrent requests are each answered correctly, and while
    they run /slots shows more than one slot processing at once (continuous batching). How
    much faster that is is `python -m bench llm`'s to say, not a test's."""
    status = llm.llm_status(llm_settings)
    assert status.server == "llama-server" and status.parallel == llm_settings.llm_parallel
    root = llm_settings.llm_base_url.removesuffix("/v1")
    busiest = 0
    running = True

    async def watch(http: httpx.AsyncClient) -> None:
        nonlocal busiest
        while running:
            slots = (await http.get(f"{root}/slots")).json()
            busiest = max(busiest, sum(1 for s in slots if s.get("is_processing")))
            await asyncio.sleep(0.02)

    words = ["apple", "river", "stone", "cloud"]
    async with LLMClient(llm_settings) as client, httpx.AsyncClient(trust_env=False) as http:
        slots = (await http.get(f"{root}/slots")).json()
        assert len(slots) == llm_settings.llm_parallel >= 4
        watcher = asyncio.create_task(watch(http))
        try:
            results = await asyncio.gather(
                *(
                    client.complete(
                        [
                            {"role": "system", "content": f"Request {n}."},
                            {
                                "role": "user",
                                "content": f"Repeat the word {w} ten times, then explain it.",
                            },
                        ],
                        max_tokens=64,
                        temperature=0.0,
                    )
                    for n, w in enumerate(words)
                )
            )
        finally:
            running = False
            await watcher
    for word, done in zip(words, results, strict=True):
        assert word in done.text.lower(), done.text
        assert done.completion_tokens > 0 and done.prompt_tokens > 0
    assert busiest >= 2


async def test_server_down_is_llm_unavailable_within_the_timeout(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    settings = Settings(
        data_dir=tmp_path, llm_port=port, llm_max_retries=2, llm_retry_backoff_s=0.1
    )
    async with LLMClient(settings) as dead:
        began = time.monotonic()
        with pytest.raises(LLMUnavailable) as err:
            await dead.complete([{"role": "user", "content": "hi"}], timeout_s=5.0)
        elapsed = time.monotonic() - began
    assert err.value.attempts == 3
    assert "ConnectError" in err.value.reason
    assert f"127.0.0.1:{port}" in str(err.value)
    assert elapsed < 5.0  # bounded by the call's budget (not a performance figure)


def test_stop_by_pid(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, llm_port=free_port())
    url = llm.start_llm(settings)
    pid = llm.llm_status(settings).pid
    assert pid is not None and pid_alive(pid)
    assert url == f"http://127.0.0.1:{settings.llm_port}/v1"
    assert llm.stop_llm(settings) == pid
    assert not pid_alive(pid)
    assert llm.stop_llm(settings) is None
    assert not llm.llm_status(settings).running
