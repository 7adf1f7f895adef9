"""Segments joined as sentences: the stream, the subtitles and the history read right."""

from __future__ import annotations

import pytest

from proxy.chat.joins import separator, speakable


@pytest.mark.parametrize(
    ("before", "after", "expected"),
    [
        ("Let me check the weather.", "Reply to you", " "),
        ("One moment!", "It is sunny", " "),
        ("Let me check", "It is sunny", ". "),  # words cut off before a tool call
        ("Let me check. ", "It is sunny", ""),  # already spaced
        ("Let me check.", " It is sunny", ""),
        ("我查一下。", "今天是晴天", ""),  # Chinese: no space between sentences
        ("ちょっと待ってね。", "晴れです", ""),
        ("Hmm,", "well", " "),
        ("Let me check", ", and then", ""),  # continues the sentence
        ("", "Hello", ""),
        ("Hello.", "", ""),
    ],
)
def test_separator(before: str, after: str, expected: str) -> None:
    assert separator(before, after) == expected


@pytest.mark.parametrize(
    ("filler", "expected"),
    [
        ("One moment, let me check.", "One moment, let me check."),
        ("Hmm, let me think. ", "Hmm, let me think."),
        ("One moment", "One moment."),
        ("稍等一下", "稍等一下。"),
        ("Wait…", "Wait…"),
        ("", ""),
    ],
)
def test_speakable_filler(filler: str, expected: str) -> None:
    assert speakable(filler) == expected
