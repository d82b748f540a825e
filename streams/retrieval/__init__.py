"""Retrieval: chunk files, embed them, keep them in Qdrant, search them hybrid (dense + BM25).

One module per job: `chunker` (text to overlapping chunks), `embedder` (texts to vectors),
`store` (points in and ranked passages out, over the embedded engine or a Qdrant server) and
`service` (ingest and search, the one surface the CLI, the retriever arm and `octollm run` use).
"""

from octollm.retrieval.chunker import Chunk, chunk_text
from octollm.retrieval.config import RetrievalSettings
from octollm.retrieval.embedder import Embedder, EmbedderError, make_embedder
from octollm.retrieval.service import (
    IngestReport,
    Retriever,
    ensure_sample_corpus,
    open_retriever,
)
from octollm.retrieval.store import Passage, StoreBusy, StoreError, VectorStore

__all__ = [
    "Chunk",
    "Embedder",
    "EmbedderError",
    "IngestReport",
    "Passage",
    "RetrievalSettings",
    "Retriever",
    "StoreBusy",
    "StoreError",
    "VectorStore",
    "chunk_text",
    "ensure_sample_corpus",
    "make_embedder",
    "open_retriever",
]
