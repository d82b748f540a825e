"""The local LLM: generation speed, time to first token and end-to-end latency, server RSS.

Starts its own llama.cpp server (SmolLM2-135M-Instruct unless OCTO_LLM_MODEL_PATH says
otherwise) on a free port, with the same threads and context as `octollm infra up`, and stops
it by PID. Two prompts: a code task ("write a Python function add(a, b)") and a plan-like JSON
answer constrained by a schema. Baselines, measured in the same run:
- the same model and prompt in-process through llama_cpp (no HTTP, no server): what the server
  and the client add;
- for the JSON prompt, the same prompt without the schema: what constrained decoding costs;
- for time to first token, a max_tokens=1 request: prompt processing alone.
Every run starts with a different first token so llama.cpp cannot reuse the previous run's KV
cache. Figures only: nothing here is asserted.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.report import Row, print_table
from octollm.llm import LLMClient
from octollm.settings import Settings, get_settings
from octollm.supervisor import llm

RUNS = int(os.environ.get("OCTO_BENCH_LLM_RUNS", "3"))

CODE_PROMPT = "Write a Python function add(a, b) that returns the sum of a and b."
PLAN_PROMPT = (
    "Goal: write a Python function add(a, b) and a unit test for it. Plan the work for the "
    'arms coder, executor and judge. Answer as {"steps": [{"id": ..., "arm": ..., '
    '"instruction": ..., "depends_on": [...]}]}.'
)
PLAN_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "steps": {
            "type": "array",
            "minItems": 1,
            "maxItems": 5,
            "items": {
                "type": "object",
                "properties": {
                    "id": {"type": "string"},
                    "arm": {"type": "string", "enum": ["coder", "executor", "judge"]},
                    "instruction": {"type": "string"},
                    "depends_on": {"type": "array", "items": {"type": "string"}},
                },
                "required": ["id", "arm", "instruction", "depends_on"],
            },
        }
    },
    "required": ["steps"],
}


def messages(prompt: str, run: int) -> list[dict[str, str]]:
    # The run number leads the system prompt, so no run shares a KV-cache prefix with the last.
    return [
        {"role": "system", "content": f"Run {run}. You are a concise coding assistant."},
        {"role": "user", "content": prompt},
    ]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


async def server_runs(
    client: LLMClient, prompt: str, schema: dict[str, Any] | None, max_tokens: int, base: int
) -> tuple[list[float], list[float], list[int], list[str]]:
    """End-to-end latency (ms), generation tokens/s, completion tokens and texts per run."""
    latencies: list[float] = []
    speeds: list[float] = []
    tokens: list[int] = []
    texts: list[str] = []
    for i in range(RUNS):
        done = await client.complete(
            messages(prompt, base + i), max_tokens=max_tokens, temperature=0.0, json_schema=schema
        )
        latencies.append(done.latency_ms)
        tokens.append(done.completion_tokens)
        texts.append(done.text)
        speeds.append(done.completion_tokens / (done.latency_ms / 1000.0))
    return latencies, speeds, tokens, texts


async def prompt_only_ms(client: LLMClient, prompt: str, base: int) -> list[float]:
    out = []
    for i in range(RUNS):
        done = await client.complete(messages(prompt, base + i), max_tokens=1, temperature=0.0)
        out.append(done.latency_ms)
    return out


async def ttft_ms(settings: Settings, prompt: str, base: int) -> list[float]:
    """Time to the first streamed content token (the client does not stream; arms need not)."""
    out = []
    async with httpx.AsyncClient(base_url=settings.llm_base_url, trust_env=False) as http:
        for i in range(RUNS):
            body = {
                "model": settings.llm_model,
                "messages": messages(prompt, base + i),
                "max_tokens": 64,
                "temperature": 0.0,
                "stream": True,
            }
            began = time.perf_counter()
            first = float("nan")
            async with http.stream("POST", "/chat/completions", json=body, timeout=120) as resp:
                async for line in resp.aiter_lines():
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    delta = json.loads(line[6:])["choices"][0].get("delta", {})
                    if delta.get("content") and first != first:  # first is NaN until set
                        first = (time.perf_counter() - began) * 1000.0
            out.append(first)
    return out


def in_process_runs(
    model: Path, settings: Settings, prompt: str, max_tokens: int, base: int, threads: int
) -> tuple[list[float], list[float]]:
    """The baseline: llama_cpp in this process, same model and context, no HTTP."""
    from llama_cpp import Llama

    engine = Llama(
        model_path=str(model),
        n_threads=threads,
        n_threads_batch=threads,
        n_ctx=settings.llm_ctx,
        verbose=False,
    )
    latencies: list[float] = []
    speeds: list[float] = []
    for i in range(RUNS):
        began = time.perf_counter()
        out: Any = engine.create_chat_completion(
            messages=messages(prompt, base + i),  # type: ignore[arg-type]
            max_tokens=max_tokens,
            temperature=0.0,
        )
        elapsed = time.perf_counter() - began
        latencies.append(elapsed * 1000.0)
        speeds.append(out["usage"]["completion_tokens"] / elapsed)
    engine.close()
    return latencies, speeds


def schema_adherence(texts: list[str]) -> float:
    import jsonschema

    ok = 0
    for text in texts:
        try:
            jsonschema.validate(json.loads(text), PLAN_SCHEMA)
            ok += 1
        except (ValueError, jsonschema.ValidationError):
            pass
    return 100.0 * ok / len(texts) if texts else float("nan")


async def measure_server(settings: Settings) -> dict[str, list[Any]]:
    async with LLMClient(settings) as client:
        await client.complete(messages("Hello", 0), max_tokens=4)  # warm the model up
        code_ms, code_tps, code_tokens, _ = await server_runs(client, CODE_PROMPT, None, 128, 100)
        plan_ms, plan_tps, plan_tokens, plan_texts = await server_runs(
            client, PLAN_PROMPT, PLAN_SCHEMA, 256, 200
        )
        free_ms, free_tps, _, free_texts = await server_runs(client, PLAN_PROMPT, None, 256, 300)
        pp_ms = await prompt_only_ms(client, CODE_PROMPT, 400)
    ttft = await ttft_ms(settings, CODE_PROMPT, 500)
    return {
        "code_ms": code_ms,
        "code_tps": code_tps,
        "code_tokens": code_tokens,
        "plan_ms": plan_ms,
        "plan_tps": plan_tps,
        "plan_tokens": plan_tokens,
        "plan_texts": plan_texts,
        "free_ms": free_ms,
        "free_tps": free_tps,
        "free_texts": free_texts,
        "pp_ms": pp_ms,
        "ttft": ttft,
    }


def rows_and_notes(
    settings: Settings,
    model: Path,
    m: dict[str, list[Any]],
    rss: float,
    ip: tuple[Any, Any],
    other: tuple[int, list[float]],
) -> tuple[list[Row], list[str]]:
    ip_ms, ip_tps = ip
    other_threads, other_tps = other
    model_mb = model.stat().st_size / 1e6
    rows = [
        Row("code: generation tokens/s", median(m["code_tps"]), median(ip_tps), "/s", ">= 50/s"),
        Row("code: end-to-end latency", median(m["code_ms"]), median(ip_ms), "ms", "<= 1.2x"),
        Row("code: time to first token", median(m["ttft"]), median(m["pp_ms"]), "ms", "~1x"),
        Row(
            "plan JSON: tokens/s (schema)",
            median(m["plan_tps"]),
            median(m["free_tps"]),
            "/s",
            ">= 0.5x",
        ),
        Row("plan JSON: end-to-end latency", median(m["plan_ms"]), median(m["free_ms"]), "ms"),
        Row(
            "plan JSON: schema-valid %",
            schema_adherence(m["plan_texts"]),
            schema_adherence(m["free_texts"]),
            "%",
            "100%",
        ),
        Row("server RSS", rss, model_mb, "MB", "<= 1024 MB"),
        Row(
            f"in-proc tokens/s, {settings.llm_threads} vs {other_threads} thr",
            median(ip_tps),
            median(other_tps),
            "/s",
            ">= 1x (thread default)",
        ),
    ]
    notes = [
        f"model {model.name} ({model_mb:.0f} MB), {settings.llm_threads} threads, "
        f"n_ctx {settings.llm_ctx}, {RUNS} runs per figure (median), temperature 0",
        f"completion tokens per run: code {median([float(t) for t in m['code_tokens']]):.0f}, "
        f"plan {median([float(t) for t in m['plan_tokens']]):.0f}",
        "baselines: code rows = llama_cpp in-process (tokens/s, latency) or max_tokens=1 "
        "(TTFT); plan rows = same prompt without the schema; RSS = GGUF file size",
    ]
    return rows, notes


def main() -> None:
    base = get_settings()
    with tempfile.TemporaryDirectory(prefix="octollm-bench-llm-") as tmp:
        settings = Settings(
            data_dir=Path(tmp),
            llm_port=free_port(),
            llm_threads=base.llm_threads,
            llm_ctx=base.llm_ctx,
            llm_model=base.llm_model,
            llm_model_path=base.llm_model_path,
        )
        began = time.monotonic()
        llm.start_llm(settings)
        started_s = time.monotonic() - began
        model = llm.model_path(settings)
        try:
            measured = asyncio.run(measure_server(settings))
            rss = llm.llm_status(settings).rss_mb or float("nan")
        finally:
            llm.stop_llm(settings)
        # The in-process baseline runs after the server is gone, so they never share the cores.
        ip = in_process_runs(model, settings, CODE_PROMPT, 128, 100, settings.llm_threads)
        other_threads = 2 if settings.llm_threads == 1 else 1
        _, other_tps = in_process_runs(model, settings, CODE_PROMPT, 128, 600, other_threads)
        rows, notes = rows_and_notes(settings, model, measured, rss, ip, (other_threads, other_tps))
    notes.append(f"server start (spawn to /v1/models answering): {started_s:.1f} s")
    # Other processes on a shared 2-core machine move every figure here; say how busy it was.
    notes.append(
        f"load average (1 min) at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    )
    print_table("local LLM (llama.cpp server) vs in-process / unconstrained", rows, notes)


if __name__ == "__main__":
    main()
