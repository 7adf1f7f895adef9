"""Retrieval quality on a fixed multilingual FAQ, the dense path, and fusion."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from proxy.db.base import utcnow
from proxy.knowledge.chunking import chunk_text
from proxy.knowledge.dense import OpenAIEmbedder
from proxy.knowledge.index import ChunkRecord, DocumentInfo
from proxy.knowledge.retrieval import Retriever, reciprocal_rank_fusion
from proxy.settings import Settings
from tests.knowledge.corpus import DOCUMENTS, QUESTIONS

MIN_RECALL_AT_3 = 0.8


async def build(
    retriever: Retriever, counter, documents: dict[str, tuple[str, str]], base: str = "faq"
) -> None:
    now = utcnow()
    retriever.put_base(base, now)
    for source_id, (title, text) in documents.items():
        document = DocumentInfo(uuid.uuid4().hex, source_id, title, None)
        chunks = chunk_text(text, max_tokens=200, overlap_tokens=40, counter=counter)
        vectors = await retriever.embedder.embed_documents(chunks) if retriever.embedder else None
        records = [
            ChunkRecord(uuid.uuid4().hex, document.id, i, chunk, counter.count_text(chunk))
            for i, chunk in enumerate(chunks)
        ]
        for record, vector in zip(records, vectors or (), strict=False):
            record.embedding = vector
        retriever.put_document(base, document, records, previous=now, version=now)


async def recall_at_3(retriever: Retriever) -> float:
    found = 0
    for question, source_id in QUESTIONS:
        results = await retriever.retrieve(["faq"], question, top_k=3)
        found += source_id in [result.source_id for result in results]
    return found / len(QUESTIONS)


def embedder_for(server, **settings) -> OpenAIEmbedder:
    return OpenAIEmbedder(Settings(embeddings_base_url=server.base_url, **settings))


async def test_lexical_recall_at_3_on_the_multilingual_faq(counter):
    retriever = Retriever()
    await build(retriever, counter, DOCUMENTS)
    recall = await recall_at_3(retriever)
    print(f"\nlexical recall@3 = {recall:.2f} ({len(QUESTIONS)} questions)")
    assert recall >= MIN_RECALL_AT_3


async def test_hybrid_recall_at_3_with_a_local_embeddings_server(counter, embeddings):
    retriever = Retriever(embedder_for(embeddings))
    await build(retriever, counter, DOCUMENTS)
    assert embeddings.requests and embeddings.requests[0]["model"] == "text-embedding-3-small"
    recall = await recall_at_3(retriever)
    print(f"\nhybrid recall@3 = {recall:.2f} ({len(QUESTIONS)} questions)")
    assert recall >= MIN_RECALL_AT_3
    assert retriever.embedding_failures == 0


async def test_dense_finds_what_words_miss_and_fusion_keeps_both(counter, embeddings):
    docs = {
        "a": ("A", "Shipments leave daily."),  # no word in common with the query
        "b": ("B", "Shipping questions: ask at the desk."),
        "c": ("C", "Unrelated text about roses."),
    }
    lexical = Retriever()
    await build(lexical, counter, docs)
    hybrid = Retriever(embedder_for(embeddings))
    await build(hybrid, counter, docs)
    assert [r.source_id for r in await lexical.retrieve(["faq"], "shipping", top_k=3)] == ["b"]
    fused = await hybrid.retrieve(["faq"], "shipping", top_k=3)
    assert [r.source_id for r in fused][:2] == ["b", "a"]
    assert fused[0].score == pytest.approx(2 / 61)  # first in both rankings


def test_reciprocal_rank_fusion():
    fused = reciprocal_rank_fusion([[("x", 9.0), ("y", 5.0)], [("y", 0.9), ("z", 0.8)]])
    assert [chunk_id for chunk_id, _ in fused] == ["y", "x", "z"]
    assert dict(fused)["y"] == pytest.approx(1 / 62 + 1 / 61)


async def test_a_failing_or_slow_embeddings_endpoint_degrades_to_lexical(counter, embeddings):
    retriever = Retriever(embedder_for(embeddings), query_timeout=0.2)
    await build(retriever, counter, DOCUMENTS)
    embeddings.fail = True
    results = await retriever.retrieve(["faq"], "Do gift cards expire?", top_k=3)
    assert results[0].source_id == "gift-cards" and retriever.embedding_failures == 1
    embeddings.fail, embeddings.delay_seconds = False, 2.0
    started = asyncio.get_running_loop().time()
    results = await retriever.retrieve(["faq"], "Do gift cards expire?", top_k=3)
    assert asyncio.get_running_loop().time() - started < 1.0
    assert results[0].source_id == "gift-cards" and retriever.embedding_failures == 2


async def test_lexical_retrieval_needs_no_embeddings_and_bases_merge(counter):
    retriever = Retriever()
    await build(retriever, counter, {k: v for k, v in DOCUMENTS.items() if k[:3] != "zh-"})
    await build(retriever, counter, {k: v for k, v in DOCUMENTS.items() if k[:3] == "zh-"}, "zh")
    merged = await retriever.retrieve(
        ["faq", "zh", "missing"], "退货要带小票吗 gift cards", top_k=4
    )
    assert {r.knowledge_base for r in merged} == {"faq", "zh"}
    assert [r.score for r in merged] == sorted((r.score for r in merged), reverse=True)
    assert await retriever.retrieve(["missing"], "gift cards", top_k=3) == []
    assert await retriever.retrieve(["faq"], "   ", top_k=3) == []
    first = merged[0]
    assert first.title and first.text and first.tokens > 0 and first.document_id
