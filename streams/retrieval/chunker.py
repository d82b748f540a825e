"""Text to overlapping chunks, and the files a path names.

Chunks are windows of whole words of at most `size` characters; each next window starts
`overlap` characters (rounded to whole words) before the previous one ended, so a sentence cut
at a boundary is whole in one of the two. Windows prefer to end at a blank line or a sentence end
in their last third, so a chunk reads like a passage, not a cut.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

# What `octollm ingest DIR` picks up: prose, docs and code. Anything else is named on the CLI.
TEXT_SUFFIXES = frozenset(
    {".md", ".markdown", ".txt", ".rst", ".py", ".rs", ".go", ".js", ".ts", ".java", ".c", ".h",
     ".cpp", ".toml", ".yaml", ".yml", ".json", ".sql", ".sh", ".avsc"}
)  # fmt: skip
SKIP_DIRS = frozenset({".git", ".venv", "node_modules", "target", "__pycache__", ".data"})

_WORD = re.compile(r"\S+")
_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)


@dataclass(frozen=True)
class Chunk:
    text: str
    position: int  # index of the chunk in its source
    start: int  # character offsets in the source text
    end: int


def chunk_text(text: str, size: int = 900, overlap: int = 150) -> list[Chunk]:
    if size <= 0 or not 0 <= overlap < size:
        raise ValueError(f"need size > 0 and 0 <= overlap < size, got {size=} {overlap=}")
    words = [(m.start(), m.end()) for m in _WORD.finditer(text)]
    chunks: list[Chunk] = []
    i = 0
    while i < len(words):
        start = words[i][0]
        j = i
        while j + 1 < len(words) and words[j + 1][1] - start <= size:
            j += 1
        if j + 1 < len(words):
            j = _nicer_end(text, words, i, j, start + size * 2 // 3)
        end = words[j][1]
        chunks.append(Chunk(text[start:end], len(chunks), start, end))
        if j + 1 >= len(words):
            break
        # Step back `overlap` characters of whole words, but always move forward.
        k = j + 1
        while k - 1 > i and end - words[k - 1][0] <= overlap:
            k -= 1
        i = max(k, i + 1)
    return chunks


def _nicer_end(text: str, words: list[tuple[int, int]], i: int, j: int, floor: int) -> int:
    """The last word in (floor, j] that ends a paragraph or a sentence, else j."""
    best_sentence = None
    for w in range(j, i, -1):
        if words[w][1] < floor:
            break
        if text[words[w][1] : words[w + 1][0]].count("\n") >= 2:
            return w
        if best_sentence is None and text[words[w][1] - 1] in ".!?":
            best_sentence = w
    return best_sentence if best_sentence is not None else j


def title_of(text: str, path: str) -> str:
    """The first Markdown heading, else the file name: embedded with each chunk as context."""
    m = _HEADING.search(text)
    return m.group(1) if m else Path(path).name


def iter_files(paths: Iterable[str | Path]) -> Iterator[Path]:
    """Files named, and text files under folders named (sorted, hidden and build dirs skipped)."""
    for raw in paths:
        path = Path(raw)
        if path.is_file():
            yield path
        elif path.is_dir():
            for child in sorted(path.rglob("*")):
                parts = child.relative_to(path).parts
                if any(p in SKIP_DIRS or p.startswith(".") for p in parts):
                    continue
                if child.is_file() and child.suffix.lower() in TEXT_SUFFIXES:
                    yield child
        else:
            raise FileNotFoundError(f"no such file or folder: {path}")
