"""Points in, ranked passages out: one interface over Qdrant's embedded engine and a server.

Each chunk is one point with two named vectors, `dense` (the embedder's) and `bm25` (a sparse
term-frequency vector; the collection applies IDF, so the sparse score is BM25). Search runs
both as prefetches and fuses their rankings with reciprocal rank fusion (RRF), under the same
payload filter.

- `EdgeStore`: `qdrant-edge-py`, Qdrant's engine in-process under a data dir. The dir is owned
  by one process at a time (its write-ahead log is locked); a second opener gets `StoreBusy`.
- `ClientStore`: `qdrant-client` against a server (`QDRANT_URL`), or the client's local mode
  (`path=`/":memory:"), which we keep only as the benchmark baseline.
"""

from __future__ import annotations

import abc
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

# Prefetch depth per branch before fusion: deep enough that a passage ranked well by only one
# branch still reaches the fused top-k.
PREFETCH_MIN = 50
RRF_K = 60  # the constant of the original RRF paper; damps the head of each ranking
DENSE = "dense"
SPARSE = "bm25"

Filters = Mapping[str, str | int | Sequence[str]]
# hybrid: dense + BM25 fused by RRF; dense / keyword: one branch alone (for evaluation and
# for users who want exact-term or purely semantic matching).
Mode = Literal["hybrid", "dense", "keyword"]


class StoreError(RuntimeError):
    """The vector store failed (engine error, server unreachable, bad data dir)."""


class StoreBusy(StoreError):
    """The embedded engine's data dir is held by another process (e.g. a retriever worker)."""


@dataclass(frozen=True)
class SparseVec:
    indices: list[int]
    values: list[float]


@dataclass(frozen=True)
class ChunkPoint:
    id: str
    dense: list[float]
    sparse: SparseVec
    payload: dict[str, Any]


@dataclass(frozen=True)
class Passage:
    text: str
    source: str
    score: float
    position: int = 0
    payload: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {"text": self.text, "source": self.source, "score": round(self.score, 6),
                "position": self.position}  # fmt: skip


def point_id(source: str, position: int) -> str:
    """Deterministic id: re-ingesting a source writes the same ids (idempotent upserts)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"octollm:{source}#{position}"))


def _to_passage(payload: Mapping[str, Any] | None, score: float) -> Passage:
    p = dict(payload or {})
    return Passage(
        text=str(p.get("text", "")),
        source=str(p.get("source", "")),
        score=float(score),
        position=int(p.get("position", 0)),
        payload=p,
    )


class VectorStore(abc.ABC):
    kind: str

    @abc.abstractmethod
    def upsert(self, points: Sequence[ChunkPoint]) -> None: ...

    @abc.abstractmethod
    def delete_source(self, source: str) -> None: ...

    @abc.abstractmethod
    def source_digest(self, source: str) -> str | None:
        """The `digest` payload of a source's chunks, None when it has none."""

    @abc.abstractmethod
    def search(
        self,
        dense: list[float],
        sparse: SparseVec,
        k: int,
        filters: Filters | None = None,
        mode: Mode = "hybrid",
    ) -> list[Passage]: ...

    @abc.abstractmethod
    def count(self, filters: Filters | None = None) -> int: ...

    def flush(self) -> None:  # noqa: B027 (only the embedded engine buffers)
        """Make what was written durable."""

    @abc.abstractmethod
    def close(self) -> None: ...


# --- the embedded engine ------------------------------------------------------------------------


class EdgeStore(VectorStore):
    kind = "edge"

    def __init__(self, path: Path, dims: int) -> None:
        import qdrant_edge as q

        self._q = q
        path.mkdir(parents=True, exist_ok=True)
        config = q.EdgeConfig(
            vectors={DENSE: q.EdgeVectorParams(size=dims, distance=q.Distance.Cosine)},
            sparse_vectors={SPARSE: q.EdgeSparseVectorParams(modifier=q.Modifier.Idf)},
        )
        try:
            if (path / "edge_config.json").exists():
                self._shard = q.EdgeShard.load(str(path), config)
            else:
                self._shard = q.EdgeShard.create(str(path), config)
                for key in ("source", "kind"):
                    self._shard.update(
                        q.UpdateOperation.create_field_index(key, q.PayloadSchemaType.Keyword)
                    )
        except Exception as exc:  # the binding raises bare Exception with the engine's message
            if "WouldBlock" in str(exc):
                raise StoreBusy(
                    f"the embedded Qdrant dir {path} is held by another process (a running"
                    " `octollm worker arm retriever`?); stop it, or point both at a Qdrant"
                    " server with QDRANT_URL"
                ) from exc
            raise StoreError(f"cannot open the embedded Qdrant dir {path}: {exc}") from exc
        self.path = path
        self._closed = False

    def _filter(self, filters: Filters | None) -> Any:
        if not filters:
            return None
        q = self._q
        must = []
        for key, value in filters.items():
            if isinstance(value, str | int):
                must.append(q.FieldCondition(key=key, match=q.MatchValue(value)))
            else:
                must.append(q.FieldCondition(key=key, match=q.MatchAny(list(value))))
        return q.Filter(must=must)

    def _run(self, what: str, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except Exception as exc:  # the binding raises bare Exception
            raise StoreError(f"embedded Qdrant {what}: {exc}") from exc

    def upsert(self, points: Sequence[ChunkPoint]) -> None:
        q = self._q
        pts = [
            q.Point(
                p.id,
                {DENSE: p.dense, SPARSE: q.SparseVector(p.sparse.indices, p.sparse.values)},
                p.payload,
            )
            for p in points
        ]
        if pts:
            self._run("upsert", self._shard.update, q.UpdateOperation.upsert_points(pts))

    def delete_source(self, source: str) -> None:
        op = self._q.UpdateOperation.delete_points_by_filter(self._filter({"source": source}))
        self._run("delete", self._shard.update, op)

    def source_digest(self, source: str) -> str | None:
        req = self._q.ScrollRequest(
            limit=1, filter=self._filter({"source": source}), with_payload=["digest"]
        )
        records, _ = self._run("scroll", self._shard.scroll, req)
        if not records:
            return None
        return str((records[0].payload or {}).get("digest")) or None

    def search(
        self,
        dense: list[float],
        sparse: SparseVec,
        k: int,
        filters: Filters | None = None,
        mode: Mode = "hybrid",
    ) -> list[Passage]:
        q = self._q
        flt = self._filter(filters)
        dense_q = q.Query.Nearest(dense, using=DENSE)
        sparse_q = q.Query.Nearest(q.SparseVector(sparse.indices, sparse.values), using=SPARSE)
        if mode == "hybrid":
            depth = max(PREFETCH_MIN, k * 4)
            req = q.QueryRequest(
                limit=k,
                prefetches=[
                    q.Prefetch(limit=depth, query=dense_q, filter=flt),
                    q.Prefetch(limit=depth, query=sparse_q, filter=flt),
                ],
                query=q.Fusion.Rrf(k=RRF_K),
                filter=flt,
                with_payload=True,
            )
        else:
            one = dense_q if mode == "dense" else sparse_q
            req = q.QueryRequest(limit=k, query=one, filter=flt, with_payload=True)
        hits = self._run("query", self._shard.query, req)
        return [_to_passage(h.payload, h.score) for h in hits]

    def count(self, filters: Filters | None = None) -> int:
        req = self._q.CountRequest(filter=self._filter(filters), exact=True)
        return int(self._run("count", self._shard.count, req))

    def flush(self) -> None:
        self._run("flush", self._shard.flush)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._shard.flush()
            self._shard.close()


# --- qdrant-client: a server, or the client's local mode ---------------------------------------


class ClientStore(VectorStore):
    def __init__(
        self,
        collection: str,
        dims: int,
        *,
        url: str | None = None,
        api_key: str | None = None,
        path: Path | None = None,
        memory: bool = False,
    ) -> None:
        from qdrant_client import QdrantClient, models

        self._m = models
        self.collection = collection
        try:
            if url:
                self._client = QdrantClient(url=url, api_key=api_key, timeout=30)
                self.kind = "server"
            elif memory:
                self._client = QdrantClient(location=":memory:")
                self.kind = "client-local"
            else:
                self._client = QdrantClient(path=str(path))
                self.kind = "client-local"
            if not self._client.collection_exists(collection):
                self._client.create_collection(
                    collection,
                    vectors_config={
                        DENSE: models.VectorParams(size=dims, distance=models.Distance.COSINE)
                    },
                    sparse_vectors_config={
                        SPARSE: models.SparseVectorParams(modifier=models.Modifier.IDF)
                    },
                )
                if self.kind == "server":  # local mode has no payload indexes
                    for key in ("source", "kind"):
                        self._client.create_payload_index(
                            collection, key, models.PayloadSchemaType.KEYWORD
                        )
        except Exception as exc:  # httpx/grpc/portalocker errors, whichever transport
            where = url or ("memory" if memory else path)
            raise StoreError(
                f"cannot open Qdrant collection {collection!r} at {where}: {exc}"
            ) from exc

    def _filter(self, filters: Filters | None) -> Any:
        if not filters:
            return None
        m = self._m
        must: list[Any] = []
        for key, value in filters.items():
            match = (
                m.MatchValue(value=value)
                if isinstance(value, str | int)
                else m.MatchAny(any=list(value))
            )
            must.append(m.FieldCondition(key=key, match=match))
        return m.Filter(must=must)

    def _run(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # transport errors differ by mode; all become StoreError
            raise StoreError(f"Qdrant ({self.kind}) {what}: {exc}") from exc

    def upsert(self, points: Sequence[ChunkPoint]) -> None:
        m = self._m
        pts = [
            m.PointStruct(
                id=p.id,
                vector={
                    DENSE: p.dense,
                    SPARSE: m.SparseVector(indices=p.sparse.indices, values=p.sparse.values),
                },
                payload=p.payload,
            )
            for p in points
        ]
        if pts:
            self._run("upsert", self._client.upsert, self.collection, pts, wait=True)

    def delete_source(self, source: str) -> None:
        selector = self._m.FilterSelector(filter=self._filter({"source": source}))
        self._run("delete", self._client.delete, self.collection, selector, wait=True)

    def source_digest(self, source: str) -> str | None:
        records, _ = self._run(
            "scroll",
            self._client.scroll,
            self.collection,
            scroll_filter=self._filter({"source": source}),
            limit=1,
            with_payload=["digest"],
        )
        if not records:
            return None
        return str((records[0].payload or {}).get("digest")) or None

    def search(
        self,
        dense: list[float],
        sparse: SparseVec,
        k: int,
        filters: Filters | None = None,
        mode: Mode = "hybrid",
    ) -> list[Passage]:
        m = self._m
        flt = self._filter(filters)
        sparse_q = m.SparseVector(indices=sparse.indices, values=sparse.values)
        kwargs: dict[str, Any]
        if mode == "hybrid":
            depth = max(PREFETCH_MIN, k * 4)
            kwargs = {
                "prefetch": [
                    m.Prefetch(query=dense, using=DENSE, limit=depth, filter=flt),
                    m.Prefetch(query=sparse_q, using=SPARSE, limit=depth, filter=flt),
                ],
                "query": m.RrfQuery(rrf=m.Rrf(k=RRF_K)),
            }
        elif mode == "dense":
            kwargs = {"query": dense, "using": DENSE}
        else:
            kwargs = {"query": sparse_q, "using": SPARSE}
        res = self._run(
            "query",
            self._client.query_points,
            self.collection,
            query_filter=flt,
            limit=k,
            with_payload=True,
            **kwargs,
        )
        return [_to_passage(p.payload, p.score) for p in res.points]

    def count(self, filters: Filters | None = None) -> int:
        res = self._run(
            "count",
            self._client.count,
            self.collection,
            count_filter=self._filter(filters),
            exact=True,
        )
        return int(res.count)

    def close(self) -> None:
        self._client.close()
