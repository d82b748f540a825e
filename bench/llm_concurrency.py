"""The local LLM under concurrent load: aggregate tokens/s at concurrency 1, 4 and 8.

Ours: llama.cpp's `llama-server` with `llm_parallel` slots and continuous batching (what
`octollm infra up` runs). Baseline, measured in the same run, same model, threads and context
per request: llama-cpp-python's server, which answers one request at a time. Each server is
started on a free port in a temporary data dir and stopped by PID before the other starts, so
they never share the cores. `c` clients each send requests back to back; aggregate tokens/s is
all completion tokens over the wall clock of the whole level. Every request starts with its own
first token, so no request reuses another's KV cache. Figures only: nothing is asserted.
"""

from __future__ import annotations

import asyncio
import os
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.report import Row, print_table
from octollm.llm import LLMClient
from octollm.settings import LLMServerKind, Settings, get_settings
from octollm.supervisor import llm

LEVELS = (1, 4, 8)
#: Requests per client at each level (at least 4 requests per level in all).
PER_CLIENT = int(os.environ.get("OCTO_BENCH_LLM_PER_CLIENT", "2"))
MAX_TOKENS = int(os.environ.get("OCTO_BENCH_LLM_MAX_TOKENS", "96"))
PROMPTS = (
    "Write a Python function add(a, b) that returns the sum of a and b.",
    "Write a Python function is_even(n) that returns True if n is even.",
    "Explain in two sentences what a Kafka consumer group is.",
    "Write a Python function reverse_string(s) that returns s reversed.",
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def messages(n: int) -> list[dict[str, str]]:
    # The request number leads the system prompt: no request shares a KV-cache prefix.
    return [
        {"role": "system", "content": f"Request {n}. You are a concise assistant."},
        {"role": "user", "content": PROMPTS[n % len(PROMPTS)]},
    ]


async def level(client: LLMClient, clients: int, first: int) -> tuple[float, int, float]:
    """(aggregate completion tokens/s, completion tokens, wall seconds) of `clients`
    concurrent clients sending PER_CLIENT requests each (at least 4 requests in all)."""
    per_client = max(PER_CLIENT, -(-4 // clients))
    tokens = 0

    async def one(c: int) -> None:
        nonlocal tokens
        for r in range(per_client):
            done = await client.complete(
                messages(first + c * per_client + r),
                max_tokens=MAX_TOKENS,
                temperature=0.0,
                timeout_s=600,
            )
            tokens += done.completion_tokens

    began = time.perf_counter()
    await asyncio.gather(*(one(c) for c in range(clients)))
    wall = time.perf_counter() - began
    return tokens / wall, tokens, wall


async def measure(settings: Settings) -> dict[int, tuple[float, int, float]]:
    async with LLMClient(settings) as client:
        await client.complete(messages(0), max_tokens=4)  # load and warm the model up
        out: dict[int, tuple[float, int, float]] = {}
        for i, c in enumerate(LEVELS):
            out[c] = await level(client, c, 1000 * (i + 1))
        return out


def server_settings(base: Settings, data_dir: Path, kind: LLMServerKind, **extra: Any) -> Settings:
    """Settings for a local LLM server of `kind` of the benchmark's own (its data dir, a free
    port), serving the model `base` names with `base`'s slots, threads and context."""
    return Settings(
        data_dir=data_dir,
        llm_port=free_port(),
        llm_server=kind,
        llm_parallel=base.llm_parallel,
        llm_threads=base.llm_threads,
        llm_ctx=base.llm_ctx,
        llm_model=base.llm_model,
        llm_model_path=base.llm_model_path,
        llm_server_bin=base.llm_server_bin,
        **extra,
    )


def run_server(
    base: Settings, kind: LLMServerKind, tmp: Path
) -> dict[int, tuple[float, int, float]]:
    settings = server_settings(base, tmp / kind.value, kind, llm_timeout_s=600)
    llm.start_llm(settings)
    try:
        return asyncio.run(measure(settings))
    finally:
        llm.stop_llm(settings)


def main() -> None:
    base = get_settings()
    with tempfile.TemporaryDirectory(prefix="octollm-bench-llmc-") as tmp:
        ours = run_server(base, LLMServerKind.LLAMA_SERVER, Path(tmp))
        old = run_server(base, LLMServerKind.LLAMA_CPP_PYTHON, Path(tmp))
    rows = [
        Row(
            f"aggregate tokens/s, concurrency {c}",
            ours[c][0],
            old[c][0],
            "/s",
            ">= 3x" if c == 8 else "",
        )
        for c in LEVELS
    ]
    notes = [
        f"ours: llama-server, {base.llm_parallel} slots (OCTO_LLM_PARALLEL), continuous "
        f"batching; baseline: llama-cpp-python's server (one request at a time); both "
        f"{base.llm_threads} thread(s), {base.llm_ctx} tokens of context per request",
        f"{MAX_TOKENS} max tokens per request, temperature 0; completion tokens / wall s per "
        "level: "
        + "; ".join(
            f"c={c}: {ours[c][1]} / {ours[c][2]:.1f} s vs {old[c][1]} / {old[c][2]:.1f} s"
            for c in LEVELS
        ),
        f"load average (1 min) at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores",
    ]
    print_table("local LLM under concurrency: llama-server vs llama-cpp-python", rows, notes)


if __name__ == "__main__":
    main()
