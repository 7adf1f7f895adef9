"""A lexical tokenizer for BM25 that works for English, European languages, Chinese
and Japanese without a word segmenter.

Text is NFKC-normalised (full-width letters and digits become ASCII) and lowercased.
Runs of letters and digits are words (a plural ``s`` is stripped); runs of Han or kana
become character unigrams *and* bigrams, the usual segmenter-free approach: bigrams
carry most of the meaning of Chinese / Japanese words, unigrams keep recall for
single-character words and for queries that split a word differently.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache
from operator import add

# Han (with extension A and compatibility ideographs), hiragana, katakana, and the
# prolonged sound mark; Hangul is spaced into words, so it counts as letters.
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_TOKEN = re.compile(rf"([{_CJK}]+)|([^\W_{_CJK}]+)")

ENGLISH_STOPWORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "been",
        "but",
        "by",
        "can",
        "could",
        "did",
        "do",
        "does",
        "for",
        "from",
        "had",
        "has",
        "have",
        "how",
        "i",
        "if",
        "in",
        "into",
        "is",
        "it",
        "its",
        "me",
        "my",
        "of",
        "on",
        "or",
        "our",
        "so",
        "than",
        "that",
        "the",
        "their",
        "them",
        "then",
        "there",
        "these",
        "they",
        "this",
        "to",
        "was",
        "we",
        "were",
        "what",
        "when",
        "where",
        "which",
        "who",
        "will",
        "with",
        "would",
        "you",
        "your",
    ]
)
# Particles so common that their unigrams only add work (their bigrams are kept).
CJK_STOP_CHARACTERS = frozenset("的了吗呢吧啊呀么之の")


@lru_cache(maxsize=65_536)
def stem(word: str) -> str:
    """Strip an English plural ending; numbers and short words stay as they are."""
    if len(word) <= 3 or word[-1] != "s" or word.endswith(("ss", "us", "is")) or word.isdigit():
        return word
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith(("sses", "shes", "ches", "xes", "zes")):
        return word[:-2]
    return word[:-1]


def normalise(text: str) -> str:
    # Apostrophes go, so "store's" and "don't" stay one word each.
    return unicodedata.normalize("NFKC", text).lower().replace("'", "").replace("’", "")


def tokenize(text: str) -> list[str]:
    """Index terms of ``text`` with repeats (BM25 needs term frequencies), in no
    particular order: CJK unigrams and bigrams are grouped per run."""
    terms: list[str] = []
    append, extend = terms.append, terms.extend
    for cjk, word in _TOKEN.findall(normalise(text)):
        if word:
            if word not in ENGLISH_STOPWORDS:
                append(stem(word))
        else:
            extend([char for char in cjk if char not in CJK_STOP_CHARACTERS])
            extend(map(add, cjk, cjk[1:]))  # bigrams
    return terms
