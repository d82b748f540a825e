"""`octollm ingest PATH…` and `octollm search QUERY`: the retrieval store, for people.

Heavy imports (the embedding model, Qdrant) happen inside the commands, so registering them
costs `octollm version` nothing. With the embedded engine, these commands open its data dir
only while they run and fail with a clear message while a retriever worker holds it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from octollm.cli.errors import CliError
from octollm.settings import get_settings


def _filters(source: list[str] | None, kind: list[str] | None) -> dict[str, list[str]] | None:
    out: dict[str, list[str]] = {}
    if source:
        out["source"] = source
    if kind:
        out["kind"] = [k.lstrip(".") for k in kind]
    return out or None


def ingest(
    paths: Annotated[
        list[Path], typer.Argument(help="Files or folders of text, Markdown or code.")
    ],
    force: Annotated[bool, typer.Option(help="Re-embed files even when unchanged.")] = False,
) -> None:
    """Chunk, embed and store files; re-ingesting a file replaces its chunks."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from octollm.retrieval import EmbedderError, StoreError, open_retriever
    from octollm.retrieval.chunker import chunk_text

    settings = get_settings()
    try:
        with open_retriever(settings) as retriever:
            try:
                docs = retriever.plan(paths)
            except FileNotFoundError as exc:
                raise CliError(str(exc), exit_code=2) from exc
            cfg = retriever.cfg
            total = sum(len(chunk_text(t, cfg.chunk_chars, cfg.overlap_chars)) for _, t in docs)
            with Progress(
                TextColumn("embedding"), BarColumn(), MofNCompleteColumn(), transient=True
            ) as bar:
                task = bar.add_task("chunks", total=total)
                report = retriever.ingest(
                    docs, force=force, progress=lambda n: bar.advance(task, n)
                )
            points = retriever.store.count()
            kind = retriever.store.kind
    except (StoreError, EmbedderError) as exc:
        raise CliError(str(exc)) from exc
    typer.echo(
        f"ingested {report.files} file(s), {report.chunks} chunk(s) in {report.seconds:.1f}s;"
        f" {report.skipped} unchanged; {points} chunk(s) in the {kind} store"
    )


def search(
    query: Annotated[str, typer.Argument(help="What to look for.")],
    k: Annotated[int, typer.Option("--k", "-k", min=1, max=100, help="How many passages.")] = 5,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object on stdout.")] = False,
    source: Annotated[
        list[str] | None, typer.Option(help="Only these sources (repeatable).")
    ] = None,
    kind: Annotated[
        list[str] | None, typer.Option(help="Only these file kinds, e.g. md, py (repeatable).")
    ] = None,
    mode: Annotated[str, typer.Option(help="hybrid | dense | keyword")] = "hybrid",
) -> None:
    """Ranked passages for QUERY, with score and source."""
    from octollm.retrieval import EmbedderError, StoreError, open_retriever

    if mode not in ("hybrid", "dense", "keyword"):
        raise CliError(f"--mode must be hybrid, dense or keyword, not {mode!r}", exit_code=2)
    try:
        with open_retriever(get_settings()) as retriever:
            passages = retriever.search(query, k, _filters(source, kind), mode)  # type: ignore[arg-type]
    except (StoreError, EmbedderError) as exc:
        raise CliError(str(exc)) from exc
    if as_json:
        typer.echo(json.dumps({"query": query, "passages": [p.as_json() for p in passages]}))
        return
    if not passages:
        typer.echo("no passages (is anything ingested? try `octollm ingest examples/corpus`)")
        return
    for i, p in enumerate(passages, 1):
        typer.echo(f"{i}. {p.source} #{p.position}  score {p.score:.4f}")
        snippet = " ".join(p.text.split())
        typer.echo(f"   {snippet[:300]}{'…' if len(snippet) > 300 else ''}")
