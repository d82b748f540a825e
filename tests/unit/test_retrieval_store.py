"""Store and service behaviour on both stores (embedded engine, client local mode), with a tiny
hashing embedder so these run in well under a second; the real model is tested in
tests/integration/test_retriever_quality.py."""

from __future__ import annotations

import hashlib
import json
import math
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from octollm.arms.retriever import BadInput, RetrieverArm, parse_inputs
from octollm.contracts.models import ArmRequest, ArmStatus
from octollm.retrieval import RetrievalSettings, Retriever, StoreBusy
from octollm.retrieval.store import ClientStore, EdgeStore, VectorStore, point_id
from octollm.runtime.arm import ArmContext
from octollm.settings import Settings

pytestmark = pytest.mark.unit

DIMS = 64


class HashingEmbedder:
    """Bag of hashed words, normalised: enough signal to rank word overlap."""

    name = "test/hashing"
    dims = DIMS

    def _vec(self, text: str) -> list[float]:
        v = [0.0] * DIMS
        for word in text.lower().split():
            v[int(hashlib.md5(word.encode()).hexdigest(), 16) % DIMS] += 1.0
        norm = math.sqrt(sum(x * x for x in v)) or 1.0
        return [x / norm for x in v]

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [self._vec(t) for t in texts]

    def embed_query(self, text: str) -> list[float]:
        return self._vec(text)


def _store(kind: str, path: Path) -> VectorStore:
    if kind == "edge":
        return EdgeStore(path / "edge", DIMS)
    return ClientStore("t", DIMS, memory=True)


@pytest.fixture(params=["edge", "client-local"])
def retriever(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Retriever]:
    cfg = RetrievalSettings(chunk_chars=120, overlap_chars=30)
    r = Retriever(cfg, _store(request.param, tmp_path), HashingEmbedder())
    yield r
    r.close()


LONG = " ".join(f"kafka partition number {i}." for i in range(40))
DOCS = [
    ("docs/kafka.md", "# Kafka\n\n" + LONG),
    ("docs/rust.md", "# Rust\n\nThe reflex layer is written in Rust and scans prompts."),
    ("src/app.py", "def add(a, b):\n    return a + b  # python arithmetic helper"),
]


def test_reingest_is_idempotent_and_replaces_changed_sources(retriever: Retriever) -> None:
    first = retriever.ingest(DOCS)
    total = retriever.store.count()
    assert first.files == 3 and first.chunks == total > 3
    again = retriever.ingest(DOCS)
    assert again.files == 0 and again.skipped == 3 and retriever.store.count() == total
    forced = retriever.ingest(DOCS, force=True)
    assert forced.chunks == total and retriever.store.count() == total  # same ids, no duplicates
    # A shorter version must not leave the old tail chunks behind.
    retriever.ingest([("docs/kafka.md", "# Kafka\n\nnow one short chunk about kafka")])
    assert retriever.store.count({"source": "docs/kafka.md"}) == 1
    assert retriever.store.count() == 3


def test_hybrid_search_filters_and_modes(retriever: Retriever) -> None:
    retriever.ingest(DOCS)
    hits = retriever.search("reflex layer rust", k=3)
    assert hits[0].source == "docs/rust.md"
    assert hits[0].score > 0 and all(h.text for h in hits)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    only_py = retriever.search("reflex layer rust", k=5, filters={"kind": "py"})
    assert {h.source for h in only_py} == {"src/app.py"}
    some = retriever.search("kafka", k=10, filters={"source": ["docs/kafka.md", "src/app.py"]})
    assert some and {h.source for h in some} <= {"docs/kafka.md", "src/app.py"}
    kw = retriever.search("arithmetic", k=2, mode="keyword")
    assert [h.source for h in kw] == ["src/app.py"]
    dense = retriever.search("python arithmetic helper", k=1, mode="dense")
    assert dense[0].source == "src/app.py"
    with pytest.raises(ValueError):
        retriever.search("x", k=0)


def test_point_ids_are_deterministic() -> None:
    assert point_id("a.md", 0) == point_id("a.md", 0) != point_id("a.md", 1)
    uuid.UUID(point_id("a.md", 3))


def test_embedded_dir_has_one_owner(tmp_path: Path) -> None:
    owner = EdgeStore(tmp_path / "e", DIMS)
    try:
        with pytest.raises(StoreBusy, match="held by another process"):
            EdgeStore(tmp_path / "e", DIMS)
    finally:
        owner.close()
    EdgeStore(tmp_path / "e", DIMS).close()  # free again once the owner closed it


def test_arm_inputs() -> None:
    assert parse_inputs({}) == (5, None)
    assert parse_inputs({"k": "3", "filters": '{"kind": ["md"]}'}) == (3, {"kind": ["md"]})
    for bad in ({"k": "x"}, {"k": "0"}, {"filters": "{"}, {"filters": '{"a": {"b": 1}}'}):
        with pytest.raises(BadInput):
            parse_inputs(bad)


async def test_arm_answers_passages_with_sources(tmp_path: Path) -> None:
    r = Retriever(RetrievalSettings(), EdgeStore(tmp_path / "e", DIMS), HashingEmbedder())
    r.ingest(DOCS)
    arm = RetrieverArm(r)
    ctx = ArmContext(Settings(data_dir=tmp_path), "w1", "retriever")

    def req(instruction: str, **inputs: str) -> ArmRequest:
        return ArmRequest(
            request_id=uuid.uuid4(), task_id=uuid.uuid4(), tenant_id="t", step_id="s",
            arm="retriever", instruction=instruction, created_at=datetime.now(UTC), inputs=inputs,
        )  # fmt: skip

    out = await arm.handle(req("rust reflex layer", k="2"), ctx)
    body = json.loads(out.output)
    assert out.status is ArmStatus.OK and len(body["passages"]) == 2
    assert body["passages"][0]["source"] == "docs/rust.md"
    assert set(body["passages"][0]) >= {"text", "source", "score"}
    assert out.artifacts["passages_md"].startswith("[1] docs/rust.md")
    assert (await arm.handle(req("  "), ctx)).status is ArmStatus.REJECTED
    assert (await arm.handle(req("q", k="nope"), ctx)).status is ArmStatus.REJECTED
    await arm.close()
