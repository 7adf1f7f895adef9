"""Joining spoken segments the way a sentence would be: "Let me check. It is sunny."

A reply can be several segments: a filler the proxy says while the model thinks or a
tool runs, then the model's answer; or the model's words before a tool call and after
it. Glued together they read "Let me check.It is sunny" in the stream, the subtitles and
the history. Latin text gets a space between sentences; Chinese and Japanese none.
"""

from __future__ import annotations

SENTENCE_END = frozenset(".!?。！？…")
CJK_SENTENCE_END = "。"


def _is_cjk(char: str) -> bool:
    code = ord(char)
    return (
        0x3000 <= code <= 0x30FF  # CJK punctuation, kana
        or 0x3400 <= code <= 0x9FFF  # ideographs
        or 0xF900 <= code <= 0xFAFF
        or 0xFF00 <= code <= 0xFFEF  # full-width forms
        or 0xAC00 <= code <= 0xD7AF  # hangul
    )


def speakable(filler: str) -> str:
    """A filler as a whole sentence: it ends with sentence punctuation."""
    text = filler.strip()
    if not text or text[-1] in SENTENCE_END or not text[-1].isalnum():
        return text
    return text + (CJK_SENTENCE_END if _is_cjk(text[-1]) else ".")


def separator(before: str, after: str) -> str:
    """What goes between a segment ending in ``before`` and one starting with ``after``."""
    if not before or not after:
        return ""
    last, first = before[-1], after[0]
    if last.isspace() or first.isspace() or _is_cjk(last) or _is_cjk(first):
        return ""
    if first in ".,;:!?)]}":  # the next segment continues the sentence
        return ""
    if last.isalnum():  # words cut off before a tool call: end that sentence
        return ". "
    return " "
