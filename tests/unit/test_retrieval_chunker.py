"""Chunking: bounded size, real overlap, offsets that point back into the source."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from octollm.retrieval.chunker import chunk_text, iter_files, title_of

pytestmark = pytest.mark.unit

TEXT = " ".join(f"word{i}." if i % 9 == 8 else f"word{i}" for i in range(600))


def test_chunks_are_bounded_overlapping_and_cover_the_text() -> None:
    chunks = chunk_text(TEXT, size=200, overlap=50)
    assert len(chunks) > 5
    for c in chunks:
        assert len(c.text) <= 200
        assert TEXT[c.start : c.end] == c.text
    assert [c.position for c in chunks] == list(range(len(chunks)))
    for a, b in itertools.pairwise(chunks):
        assert b.start < a.end, "consecutive chunks must overlap"
        assert b.start > a.start, "chunking must move forward"
    words = set(TEXT.split())
    assert set().union(*(c.text.split() for c in chunks)) == words


def test_chunks_prefer_to_end_at_a_paragraph() -> None:
    para = "alpha beta gamma delta. " * 5
    text = para + "\n\n" + para + "\n\n" + para
    chunks = chunk_text(text, size=300, overlap=40)
    assert chunks[0].text.endswith("delta.")
    assert text[chunks[0].end :].lstrip(" ").startswith("\n\n")


def test_short_and_empty_texts() -> None:
    assert chunk_text("", 100, 10) == []
    [only] = chunk_text("one small text", 100, 10)
    assert only.text == "one small text" and only.start == 0


def test_a_word_longer_than_the_window_still_progresses() -> None:
    chunks = chunk_text("x" * 500 + " tail", size=100, overlap=20)
    assert [c.text for c in chunks] == ["x" * 500, "tail"]


@pytest.mark.parametrize(("size", "overlap"), [(0, 0), (100, 100), (100, -1)])
def test_bad_parameters_are_refused(size: int, overlap: int) -> None:
    with pytest.raises(ValueError):
        chunk_text("text", size, overlap)


def test_title_and_files(tmp_path: Path) -> None:
    assert title_of("intro\n# The Title\nbody", "a/b.md") == "The Title"
    assert title_of("no heading", "a/b.py") == "b.py"
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("a")
    (tmp_path / "docs" / "b.bin").write_bytes(b"\0")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "c.md").write_text("c")
    assert [p.name for p in iter_files([tmp_path])] == ["a.md"]
    with pytest.raises(FileNotFoundError):
        list(iter_files([tmp_path / "missing"]))
