"""Comparing texts the way a listener would: ignoring spacing and punctuation."""

from __future__ import annotations

import sys
import unicodedata
from collections import OrderedDict
from typing import Any

# The memo of ``normalise`` holds bounded bytes, not a bounded number of entries: texts
# come from clients (905 callbacks, engine history), and NFKC can expand a text 18-fold.
CACHE_MAX_BYTES = 4 * 1024 * 1024
CACHE_MAX_ENTRY_BYTES = 16 * 1024  # larger texts are normalised every time


class _ByteBoundedMemo:
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes, self.bytes = max_bytes, 0
        self._entries: OrderedDict[str, tuple[str, int]] = OrderedDict()

    def get(self, key: str) -> str | None:
        found = self._entries.get(key)
        if found is None:
            return None
        self._entries.move_to_end(key)
        return found[0]

    def put(self, key: str, value: str) -> None:
        size = sys.getsizeof(key) + sys.getsizeof(value)
        if size > CACHE_MAX_ENTRY_BYTES or key in self._entries:
            return
        self._entries[key] = (value, size)
        self.bytes += size
        while self.bytes > self.max_bytes:
            _, (_, dropped) = self._entries.popitem(last=False)
            self.bytes -= dropped


_memo = _ByteBoundedMemo(CACHE_MAX_BYTES)


def normalise(text: str) -> str:
    """Lower-case, without whitespace, punctuation or symbols (works for CJK too)."""
    cached = _memo.get(text)
    if cached is None:
        cached = _normalise(text)
        _memo.put(text, cached)
    return cached


def _normalise(text: str) -> str:
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
