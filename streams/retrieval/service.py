"""Ingest and search: the one surface the CLI, the retriever arm and `octollm run` share."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from octollm.retrieval.chunker import chunk_text, iter_files, title_of
from octollm.retrieval.config import RetrievalSettings
from octollm.retrieval.embedder import Embedder, make_embedder
from octollm.retrieval.store import (
    ChunkPoint,
    ClientStore,
    EdgeStore,
    Filters,
    Mode,
    Passage,
    SparseVec,
    StoreBusy,
    VectorStore,
    point_id,
)
from octollm.settings import PROJECT_ROOT, Settings

log = logging.getLogger("octollm.retrieval")

SAMPLE_CORPUS = PROJECT_ROOT / "examples" / "corpus"
Progress = Callable[[int], None]  # called with the number of chunks just stored


@dataclass
class IngestReport:
    files: int = 0
    skipped: int = 0  # unchanged since the last ingest
    chunks: int = 0
    seconds: float = 0.0
    sources: list[str] = field(default_factory=list)


class Bm25Encoder:
    """Text to sparse term-frequency vectors, with the same tokenizer and stemmer as Qdrant's
    server-side BM25; the collection's IDF modifier completes the BM25 score."""

    def __init__(self) -> None:
        import qdrant_edge

        self._bm25 = qdrant_edge.Bm25()

    def document(self, text: str) -> SparseVec:
        v = self._bm25.embed_document(text)
        return SparseVec(list(v.indices), list(v.values))

    def query(self, text: str) -> SparseVec:
        v = self._bm25.embed_query(text)
        return SparseVec(list(v.indices), list(v.values))


def source_name(path: Path, root: Path | None = None) -> str:
    """Stable name of a file: relative to `root` (default: the working dir) when under it."""
    resolved = path.resolve()
    with contextlib.suppress(ValueError):
        return resolved.relative_to((root or Path.cwd()).resolve()).as_posix()
    return resolved.as_posix()


class Retriever:
    def __init__(self, cfg: RetrievalSettings, store: VectorStore, embedder: Embedder) -> None:
        self.cfg = cfg
        self.store = store
        self.embedder = embedder
        self.bm25 = Bm25Encoder()
        # The embedded shard and the embedding engine are used from worker threads: one at a time.
        self._lock = threading.Lock()

    def _digest(self, text: str) -> str:
        # Chunking and the model are part of what was stored: changing either re-ingests.
        salt = f"{self.cfg.chunk_chars}/{self.cfg.overlap_chars}/{self.embedder.name}\n"
        return hashlib.sha256((salt + text).encode()).hexdigest()[:32]

    def ingest_text(
        self, source: str, text: str, *, force: bool = False, progress: Progress | None = None
    ) -> int | None:
        """Replace `source`'s chunks with those of `text`; None when it was unchanged."""
        digest = self._digest(text)
        with self._lock:
            if not force and self.store.source_digest(source) == digest:
                return None
            # Old chunks go first: a shorter new version must not leave stale tail chunks.
            self.store.delete_source(source)
        title = title_of(text, source)
        kind = Path(source).suffix.lstrip(".").lower() or "text"
        chunks = chunk_text(text, self.cfg.chunk_chars, self.cfg.overlap_chars)
        for i in range(0, len(chunks), self.cfg.batch_size):
            batch = chunks[i : i + self.cfg.batch_size]
            # The title gives a chunk from the middle of a document its subject.
            texts = [f"{title}\n\n{c.text}" for c in batch]
            with self._lock:
                dense = self.embedder.embed_documents(texts)
                points = [
                    ChunkPoint(
                        id=point_id(source, c.position),
                        dense=d,
                        sparse=self.bm25.document(t),
                        payload={
                            "source": source,
                            "position": c.position,
                            "start": c.start,
                            "end": c.end,
                            "title": title,
                            "kind": kind,
                            "digest": digest,
                            "text": c.text,
                        },
                    )
                    for c, d, t in zip(batch, dense, texts, strict=True)
                ]
                self.store.upsert(points)
            if progress:
                progress(len(batch))
        return len(chunks)

    def plan(self, paths: Iterable[str | Path], root: Path | None = None) -> list[tuple[str, str]]:
        """(source, text) of every file the paths name, read now (undecodable files skipped)."""
        out = []
        for path in iter_files(paths):
            try:
                text = path.read_text(encoding="utf-8")
            except UnicodeDecodeError:
                log.warning("skipping %s: not UTF-8 text", path)
                continue
            out.append((source_name(path, root), text))
        return out

    def ingest(
        self,
        docs: list[tuple[str, str]],
        *,
        force: bool = False,
        progress: Progress | None = None,
    ) -> IngestReport:
        report = IngestReport()
        started = time.perf_counter()
        for source, text in docs:
            n = self.ingest_text(source, text, force=force, progress=progress)
            if n is None:
                report.skipped += 1
            else:
                report.files += 1
                report.chunks += n
                report.sources.append(source)
        with self._lock:
            self.store.flush()
        report.seconds = time.perf_counter() - started
        log.info(
            "ingested files=%d chunks=%d skipped=%d seconds=%.2f store=%s",
            report.files, report.chunks, report.skipped, report.seconds, self.store.kind,
        )  # fmt: skip
        return report

    def search(
        self, query: str, k: int = 5, filters: Filters | None = None, mode: Mode = "hybrid"
    ) -> list[Passage]:
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        with self._lock:
            dense = self.embedder.embed_query(query)
            return self.store.search(dense, self.bm25.query(query), k, filters, mode)

    def close(self) -> None:
        with self._lock:
            self.store.close()


def open_store(cfg: RetrievalSettings, settings: Settings, dims: int) -> VectorStore:
    """A Qdrant server when QDRANT_URL is set, else the embedded engine under the data dir."""
    if cfg.qdrant_url:
        return ClientStore(cfg.collection, dims, url=cfg.qdrant_url, api_key=cfg.qdrant_api_key)
    return EdgeStore(cfg.engine_dir(settings), dims)


@contextlib.contextmanager
def open_retriever(
    settings: Settings,
    cfg: RetrievalSettings | None = None,
    embedder: Embedder | None = None,
) -> Iterator[Retriever]:
    """A retriever over the configured store; the embedded engine's dir is released on exit.

    Raises `StoreBusy` when another process holds the embedded engine's dir.
    """
    cfg = cfg or RetrievalSettings()
    embedder = embedder or make_embedder(cfg)
    retriever = Retriever(cfg, open_store(cfg, settings, embedder.dims), embedder)
    try:
        yield retriever
    finally:
        retriever.close()


def ensure_sample_corpus(
    settings: Settings, cfg: RetrievalSettings | None = None
) -> IngestReport | None:
    """Ingest examples/corpus (unchanged files are skipped, so it is cheap to call on every start).

    `octollm run` calls this before it starts the retriever worker: the embedded engine's dir
    has one owner at a time. None when another process holds the dir (already running).
    """
    try:
        with open_retriever(settings, cfg) as retriever:
            return retriever.ingest(retriever.plan([SAMPLE_CORPUS], root=PROJECT_ROOT))
    except StoreBusy as exc:
        log.warning("sample corpus not ingested: %s", exc)
        return None
