"""Chunk sizes hold on the joined text, not on the sum of the sentences' counts."""

from __future__ import annotations

from proxy.context.budget import TokenCounter
from proxy.knowledge.chunking import chunk_spans


def test_a_chunk_is_counted_as_joined_text() -> None:
    # 'a. 本Dr. ' is 7 tokens and '货' 1, but together they are 9: two chunks, not one.
    counter = TokenCounter()
    text = "a. 本Dr. 货"
    spans = chunk_spans(text, max_tokens=8, overlap_tokens=0, counter=counter)
    assert spans == [(0, 8), (8, 9)]
    assert [counter.count_text(text[start:end]) for start, end in spans] == [7, 1]
