"""BM25 against a brute-force reference, and incremental changes against a rebuild."""

from __future__ import annotations

import math
import random
from collections import Counter

import pytest

from proxy.knowledge import lexical
from proxy.knowledge.lexical import BM25Index
from proxy.knowledge.tokenize import tokenize

K1, B = 1.2, 0.75


def reference_bm25(docs: dict[str, str], query: str, k: int) -> list[tuple[str, float]]:
    """Textbook BM25 (Lucene idf), one document at a time."""
    tokens = {doc_id: tokenize(text) for doc_id, text in docs.items()}
    average = sum(map(len, tokens.values())) / len(tokens)
    df = Counter(term for terms in tokens.values() for term in set(terms))
    scores = []
    for doc_id, terms in tokens.items():
        tf = Counter(terms)
        score = 0.0
        for term, repeats in Counter(tokenize(query)).items():
            if term in tf:
                idf = math.log(1 + (len(docs) - df[term] + 0.5) / (df[term] + 0.5))
                norm = K1 * (1 - B + B * len(terms) / average)
                score += repeats * idf * tf[term] * (K1 + 1) / (tf[term] + norm)
        if score > 0:
            scores.append((doc_id, score))
    scores.sort(key=lambda item: -item[1])
    return scores[:k]


def random_corpus(size: int, seed: int) -> dict[str, str]:
    rng = random.Random(seed)
    english = [f"word{i}" for i in range(60)] + ["refund", "shipping", "receipt"]
    chinese = list("退货政策会员积分门店营业时间发票")
    docs = {}
    for i in range(size):
        words = [rng.choice(english) for _ in range(rng.randint(3, 30))]
        words += [
            "".join(rng.choices(chinese, k=rng.randint(1, 5))) for _ in range(rng.randint(0, 6))
        ]
        rng.shuffle(words)
        docs[f"doc{i}"] = " ".join(words)
    return docs


def assert_same(got: list[tuple[str, float]], reference: list[tuple[str, float]], k: int) -> None:
    """Same scores in the same order; ids may differ only among tied scores."""
    assert [score for _, score in got] == pytest.approx([s for _, s in reference[:k]], rel=1e-4)
    everything = dict(reference)
    for doc_id, score in got:
        assert everything.get(doc_id) == pytest.approx(score, rel=1e-4)


QUERIES = [
    "refund receipt",
    "word3 word7 word7",
    "退货政策",
    "会员 积分 word1",
    "nothing-here",
    "发票 shipping",
]


def test_scores_match_the_reference():
    docs = random_corpus(300, seed=1)
    index = BM25Index.build(docs.items())
    for query in QUERIES:
        assert_same(index.search(query, 10), reference_bm25(docs, query, 10**6), 10)


def test_unknown_terms_and_empty_queries_find_nothing():
    index = BM25Index.build([("a", "hello world")])
    assert index.search("goodbye", 5) == []
    assert index.search("", 5) == []
    assert index.search("hello", 0) == []
    assert BM25Index().search("hello", 3) == []


def test_incremental_changes_match_a_rebuild(monkeypatch):
    # Force the segment path (no merge into one segment after each change).
    monkeypatch.setattr(lexical, "SMALL_INDEX_POSTINGS", 0)
    docs = random_corpus(400, seed=2)
    items = list(docs.items())
    index = BM25Index()
    for start in range(0, 400, 40):
        index.add(items[start : start + 40])
    assert 1 < index.segments <= lexical.MAX_SEGMENTS
    removed = [doc_id for doc_id, _ in items[::7]]
    index.remove(removed)
    replaced = {doc_id: "refund refund receipt 退货" for doc_id, _ in items[1:30:3]}
    index.add(replaced.items())
    current = {d: t for d, t in docs.items() if d not in removed or d in replaced} | replaced
    assert len(index) == len(current)
    # Between merges statistics are approximate: the same documents, nearly the same order.
    gone = set(removed) - set(replaced)
    for query in QUERIES:
        found = {doc_id for doc_id, _ in index.search(query, 10)}
        assert not found & gone
    index.compact()
    assert index.segments == 1
    for query in QUERIES:
        assert_same(index.search(query, 10), reference_bm25(current, query, 10**6), 10)


def test_replacing_a_chunk_id_replaces_its_text():
    index = BM25Index.build([("a", "old text about shoes"), ("b", "boots")])
    index.add([("a", "new text about hats")])
    assert len(index) == 2
    assert index.search("shoes", 5) == []
    assert [doc for doc, _ in index.search("hats", 5)] == ["a"]


def test_common_terms_read_only_their_highest_impact_postings():
    docs = {f"d{i}": "common " * (1 + i % 3) + ("rare" if i == 500 else "") for i in range(2000)}
    index = BM25Index.build(docs.items(), max_postings_per_term=100)
    hits = index.search("common rare", 3)
    assert hits[0][0] == "d500"
    assert len(index.search("common", 5000)) == 100  # capped
    assert BM25Index.build(docs.items()).search("common", 5000)[0][1] == pytest.approx(
        hits[1][1], rel=1e-6
    )
