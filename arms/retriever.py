"""The retriever arm: a step's instruction is the query; the answer is ranked passages.

Output: JSON `{"passages": [{"text", "source", "score", "position"}...], "query", "store"}`;
artifact `passages_md` is a readable rendering (numbered, with sources) the orchestrator can
hand to the LLM to answer with citations. Optional inputs: `k` (default 5) and `filters`, a JSON
object of payload fields to match (`{"source": "examples/corpus/kafka-topics.md"}`, `{"kind":
["md", "py"]}`).

The worker opens the store once in `setup` and keeps it until `close`: with the embedded engine
it owns the data dir for its lifetime (see docs/retrieval.md on sharing it with the CLI).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, ClassVar

from octollm.contracts.models import ArmRequest, ArmStatus
from octollm.retrieval import Passage, RetrievalSettings, Retriever, StoreError, make_embedder
from octollm.retrieval.embedder import EmbedderError
from octollm.retrieval.service import open_store
from octollm.runtime.arm import Arm, ArmContext, ArmOutput

DEFAULT_K = 5
MAX_K = 50


class BadInput(ValueError):
    """An input of the request is not what the retriever accepts."""


def parse_inputs(inputs: dict[str, str]) -> tuple[int, dict[str, Any] | None]:
    try:
        k = int(inputs.get("k", DEFAULT_K))
    except ValueError as exc:
        raise BadInput(f"input 'k' must be an integer, got {inputs.get('k')!r}") from exc
    if not 1 <= k <= MAX_K:
        raise BadInput(f"input 'k' must be in 1..{MAX_K}, got {k}")
    raw = inputs.get("filters")
    if not raw:
        return k, None
    try:
        filters = json.loads(raw)
    except ValueError as exc:
        raise BadInput(f"input 'filters' is not JSON: {exc}") from exc
    ok_value = (str, int)
    if not isinstance(filters, dict) or not all(
        isinstance(v, ok_value) or (isinstance(v, list) and all(isinstance(x, str) for x in v))
        for v in filters.values()
    ):
        raise BadInput("input 'filters' must map field names to a string, int or list of strings")
    return k, filters


def render(passages: list[Passage]) -> str:
    """Numbered passages with their sources, for a prompt that asks for citations like [1]."""
    return "\n\n".join(
        f"[{i}] {p.source} (score {p.score:.3f})\n{p.text}" for i, p in enumerate(passages, 1)
    )


class RetrieverArm(Arm):
    name: ClassVar[str] = "retriever"
    capabilities: ClassVar[frozenset[str]] = frozenset({"retrieve"})
    timeout_s: ClassVar[float] = 30.0

    def __init__(self, retriever: Retriever | None = None) -> None:
        self.retriever = retriever

    async def setup(self, ctx: ArmContext) -> None:
        if self.retriever is None:
            cfg = RetrievalSettings()

            def _open() -> Retriever:
                embedder = make_embedder(cfg)
                return Retriever(cfg, open_store(cfg, ctx.settings, embedder.dims), embedder)

            # Loading the model and the shard takes a moment: not on the event loop.
            self.retriever = await asyncio.to_thread(_open)
        ctx.log.info(
            "retriever ready store=%s points=%d",
            self.retriever.store.kind,
            await asyncio.to_thread(self.retriever.store.count),
        )

    async def handle(self, request: ArmRequest, ctx: ArmContext) -> ArmOutput:
        task_id = str(request.task_id)
        query = request.instruction.strip()
        if not query:
            return ArmOutput(status=ArmStatus.REJECTED, reason="empty query")
        try:
            k, filters = parse_inputs(dict(request.inputs))
        except BadInput as exc:
            return ArmOutput(status=ArmStatus.REJECTED, reason=str(exc))
        if self.retriever is None:
            await self.setup(ctx)
        assert self.retriever is not None
        try:
            passages = await asyncio.to_thread(self.retriever.search, query, k, filters)
        except (StoreError, EmbedderError) as exc:
            ctx.log.error("search failed task_id=%s: %s", task_id, exc, extra={"task_id": task_id})
            return ArmOutput(status=ArmStatus.FAILED, reason=f"search failed: {exc}")
        ctx.log.info(
            "retrieved task_id=%s k=%d hits=%d top=%s",
            task_id,
            k,
            len(passages),
            passages[0].source if passages else "-",
            extra={"task_id": task_id, "tenant_id": request.tenant_id},
        )
        body = {
            "query": query,
            "store": self.retriever.store.kind,
            "passages": [p.as_json() for p in passages],
        }
        return ArmOutput(
            output=json.dumps(body),
            artifacts={
                "passages_md": render(passages),
                "sources": json.dumps(sorted({p.source for p in passages})),
            },
        )

    async def close(self) -> None:
        if self.retriever is not None:
            await asyncio.to_thread(self.retriever.close)
            self.retriever = None
