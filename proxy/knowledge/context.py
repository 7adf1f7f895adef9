"""What retrieval adds to a prompt: the query for a turn, the chunks that fit the
budget, and the block of text that goes into the system message."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from proxy.knowledge.index import RetrievedChunk

if TYPE_CHECKING:
    from proxy.context.budget import TokenCounter

CONTEXT_HEADER = "Relevant knowledge:"
_HEADING = re.compile(r"\s*#{1,6}\s+(.*?)\s*$")
_SENTENCE_ENDS = frozenset(".:!?。：！？")


def build_query(new_user_text: str, recent_user_texts: list[str]) -> str:
    """The retrieval query for a turn: the new turn twice (BM25 counts repeats, so its
    words weigh double), then the recent turns, newest first, for what "it" refers to."""
    new = new_user_text.strip()
    recent = [text.strip() for text in reversed(recent_user_texts) if text and text.strip()]
    return "\n".join([new, new, *recent] if new else recent)


def _one_line(text: str) -> str:
    """The chunk on one line; ``# Heading`` lines read as ``Heading:``."""
    parts = []
    for line in text.split("\n"):
        heading = _HEADING.match(line)
        line = heading.group(1) if heading else line.strip()
        if heading and line and line[-1] not in _SENTENCE_ENDS:
            line += ":"
        if line:
            parts.append(" ".join(line.split()))
    return " ".join(parts)


def _line(number: int, chunk: RetrievedChunk) -> str:
    text = _one_line(chunk.text)
    return f"[{number}] {chunk.title}: {text}" if chunk.title else f"[{number}] {text}"


def _estimated_overhead(chunk: RetrievedChunk) -> int:
    # "[n] " + ": " + the newline, and the title at a generous 2 bytes per token.
    return 6 + (len(chunk.title.encode()) // 2 + 1 if chunk.title else 0)


def select_within_budget(
    chunks: Sequence[RetrievedChunk], token_budget: int, *, counter: TokenCounter | None = None
) -> list[RetrievedChunk]:
    """Chunks in rank order that fit ``token_budget`` together with ``format_context``'s
    header and labels; one that does not fit is skipped, a smaller later one may fit.
    With ``counter`` the lines are counted exactly, otherwise estimated generously."""
    used = counter.count_text(CONTEXT_HEADER + "\n") if counter else 6
    selected: list[RetrievedChunk] = []
    for chunk in chunks:
        if counter is not None:
            cost = counter.count_text(_line(len(selected) + 1, chunk) + "\n")
        else:
            cost = chunk.tokens + _estimated_overhead(chunk)
        if used + cost <= token_budget:
            selected.append(chunk)
            used += cost
    return selected


def format_context(chunks: Sequence[RetrievedChunk]) -> str:
    """A compact block for the system message; empty when there is nothing to add."""
    if not chunks:
        return ""
    lines = [_line(number, chunk) for number, chunk in enumerate(chunks, start=1)]
    return "\n".join([CONTEXT_HEADER, *lines])
