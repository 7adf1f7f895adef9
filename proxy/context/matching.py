"""Comparing texts the way a listener would: ignoring spacing and punctuation."""

from __future__ import annotations

import unicodedata
from functools import lru_cache
from typing import Any


@lru_cache(maxsize=4096)
def normalise(text: str) -> str:
    """Lower-case, without whitespace, punctuation or symbols (works for CJK too)."""
    kept = "".join(
        ch
        for ch in unicodedata.normalize("NFKC", text).casefold()
        if unicodedata.category(ch)[0] not in ("P", "Z", "S", "C")
    )
    # Dropping a symbol can bring a letter and a combining mark together: compose again,
    # so that normalising twice changes nothing.
    return unicodedata.normalize("NFKC", kept)


def content_text(content: Any) -> str:
    """The text of an OpenAI message content: a string or a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return ""


def same_utterance(a: str, b: str) -> bool:
    """True when one text is the other, or a cut-off start of it (an interrupted reply)."""
    na, nb = normalise(a), normalise(b)
    if not na or not nb:
        return na == nb
    return na.startswith(nb) or nb.startswith(na)
