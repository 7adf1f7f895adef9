"""Split text into retrievable chunks of whole sentences, with a little overlap.

Sentences end at ``. ! ?`` followed by a space (European text; a few abbreviations,
initials and list numbers do not end one), at Chinese / Japanese enders
(``。！？；…`` and their full-width and half-width forms, closing quotes such as ``」``
included) and at line breaks, so Markdown headings and paragraphs are their own
units. Whole sentences are packed up to ``max_tokens``; the next chunk repeats the
trailing sentences of the previous one up to ``overlap_tokens``. A sentence longer
than ``max_tokens`` is split at clause punctuation (``，、,;；:：``), then by tokens.

The chunks are spans of the original text: together they cover all of it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from proxy.context.budget import TokenCounter

_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_CLOSERS = "」』〉》】）)\\]”’\"'"
_SENTENCE_END = re.compile(
    r"\n+"
    rf"|[。！？；…｡．‼⁇⁈⁉]+[{_CLOSERS}]*"
    rf"|[.!?]+[{_CLOSERS}]*(?=\s|$|[{_CJK}])"
)
_CLAUSE_END = re.compile(r"[，、,;；:：]+\s*")
_HEADING = re.compile(r"\s*#{1,6}\s")
_LIST_NUMBER = re.compile(r"\s*(?:#{1,6}\s*)?[\d.]+")
_LAST_WORD = re.compile(r"(\w+)$")
ABBREVIATIONS = frozenset(
    [
        "mr",
        "mrs",
        "ms",
        "dr",
        "prof",
        "sr",
        "jr",
        "st",
        "vs",
        "etc",
        "eg",
        "ie",
        "approx",
        "dept",
        "inc",
        "ltd",
        "co",
        "no",
        "fig",
        "nr",
        "bzw",
        "usw",
        "ca",
    ]
)
HARD_SPLIT_CHARS_PER_TOKEN = 10  # an upper bound: tokens are rarely longer than this


@dataclass(slots=True)
class _Segment:
    start: int
    end: int
    tokens: int
    heading: bool


def _is_abbreviation(text: str, match: re.Match[str]) -> bool:
    """``Dr. Li``, ``J. Smith``, ``e.g. this`` and ``1. First`` do not end a sentence."""
    if match.group() != ".":
        return False
    line_start = text.rfind("\n", 0, match.start()) + 1
    if _LIST_NUMBER.fullmatch(text, line_start, match.start()):
        return True
    word = _LAST_WORD.search(text, line_start, match.start())
    if word is None:
        return False
    token = word.group(1)
    return (len(token) == 1 and token.isalpha()) or token.lower() in ABBREVIATIONS


def split_sentences(text: str) -> list[tuple[int, int]]:
    """Sentence spans, each with its trailing whitespace; they tile ``text`` exactly."""
    spans: list[tuple[int, int]] = []
    start = 0
    for match in _SENTENCE_END.finditer(text):
        if match.end() <= start or _is_abbreviation(text, match):
            continue
        end = match.end()
        while end < len(text) and text[end].isspace():
            end += 1
        spans.append((start, end))
        start = end
    if start < len(text):
        spans.append((start, len(text)))
    return spans


def _hard_split(
    text: str, start: int, end: int, max_tokens: int, counter: TokenCounter
) -> list[tuple[int, int]]:
    """Longest prefixes within ``max_tokens`` (found by bisection on characters)."""
    spans: list[tuple[int, int]] = []
    while start < end:
        if counter.count_text(text[start:end]) <= max_tokens:
            spans.append((start, end))
            break
        low, high = start + 1, min(end, start + max_tokens * HARD_SPLIT_CHARS_PER_TOKEN)
        while low < high:
            middle = (low + high + 1) // 2
            if counter.count_text(text[start:middle]) <= max_tokens:
                low = middle
            else:
                high = middle - 1
        cut = low
        space = text.rfind(" ", start + (cut - start) // 2, cut)  # prefer a word boundary
        if space > start and cut < end:
            cut = space + 1
        spans.append((start, cut))
        start = cut
    return spans


def _segments(text: str, max_tokens: int, counter: TokenCounter) -> list[_Segment]:
    segments: list[_Segment] = []
    for start, end in split_sentences(text):
        piece = text[start:end]
        tokens = counter.count_text(piece)
        if tokens <= max_tokens:
            segments.append(_Segment(start, end, tokens, bool(_HEADING.match(piece))))
            continue
        clause_start = start
        bounds = [start + m.end() for m in _CLAUSE_END.finditer(piece)]
        for clause_end in [*bounds, end]:
            if clause_end <= clause_start:
                continue
            for s, e in _hard_split(text, clause_start, clause_end, max_tokens, counter):
                segments.append(_Segment(s, e, counter.count_text(text[s:e]), False))
            clause_start = clause_end
    return segments


def chunk_spans(
    text: str, *, max_tokens: int = 200, overlap_tokens: int = 40, counter: TokenCounter
) -> list[tuple[int, int]]:
    """``(start, end)`` of each chunk; consecutive chunks overlap or touch."""
    if max_tokens < 1 or not 0 <= overlap_tokens < max_tokens:
        raise ValueError("need max_tokens >= 1 and 0 <= overlap_tokens < max_tokens")
    segments = _segments(text, max_tokens, counter)

    def fits(first: int, last: int, total: int) -> bool:
        """Segments ``first`` to ``last`` (inclusive) fit in one chunk. Token counts do
        not add up across a boundary (``'a. 本Dr. '`` is 7 tokens and ``'货'`` 1, together
        9), so a sum within the limit is checked on the joined text."""
        if total + segments[last].tokens > max_tokens:
            return False
        joined = text[segments[first].start : segments[last].end]
        return counter.count_text(joined) <= max_tokens

    spans: list[tuple[int, int]] = []
    first, count = 0, len(segments)
    while first < count:
        last, total = first, 0  # ``last`` is exclusive
        while last < count and (last == first or fits(first, last, total)):
            total += segments[last].tokens
            last += 1
        while last < count and last - 1 > first and segments[last - 1].heading:
            last -= 1  # a heading never ends a chunk: it goes with what follows it
        spans.append((segments[first].start, segments[last - 1].end))
        if last >= count:
            break
        # Repeat trailing sentences, as many as fit the overlap and leave room for more.
        following = segments[last].tokens
        start, overlap = last, 0
        while start - 1 > first:
            tokens = segments[start - 1].tokens
            if overlap + tokens > overlap_tokens or overlap + tokens + following > max_tokens:
                break
            start -= 1
            overlap += tokens
        first = start
    return spans


def chunk_text(
    text: str, *, max_tokens: int = 200, overlap_tokens: int = 40, counter: TokenCounter
) -> list[str]:
    """Chunks of whole sentences within ``max_tokens`` (whitespace-only ones dropped)."""
    spans = chunk_spans(text, max_tokens=max_tokens, overlap_tokens=overlap_tokens, counter=counter)
    return [chunk for start, end in spans if (chunk := text[start:end].strip())]
