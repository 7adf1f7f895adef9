"""Ingestion on SQLite and PostgreSQL: stored chunks, re-ingestion, deletion, reloading."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import func, select

from proxy.db.models import Chunk, Document
from proxy.db.session import make_engine, make_sessionmaker
from proxy.knowledge.dense import OpenAIEmbedder
from proxy.knowledge.errors import (
    EmbeddingFailed,
    InvalidDocument,
    KnowledgeBaseExists,
    KnowledgeBaseNotFound,
)
from proxy.knowledge.ingest import IngestService
from proxy.knowledge.retrieval import Retriever
from proxy.settings import Settings

POLICY = (
    "# Returns\nItems can be returned within 30 days with a receipt. Refunds take a week.\n\n"
    "# Shipping\nShipping is free over $50. Express delivery costs $9 and takes one day."
)


@pytest.fixture
async def sessions(migrated_database_url):
    engine = make_engine(migrated_database_url)
    yield make_sessionmaker(engine)
    await engine.dispose()


def service(sessions, counter, embedder=None) -> IngestService:
    return IngestService(sessions, Retriever(embedder), counter, embedder)


async def stored_chunks(sessions, **where) -> list[Chunk]:
    async with sessions() as session:
        query = select(Chunk).filter_by(**where).order_by(Chunk.position)
        return list((await session.scalars(query)).all())


async def sources(retriever: Retriever, query: str, base: str = "store") -> list[str]:
    return [r.source_id for r in await retriever.retrieve([base], query, top_k=5)]


async def test_bases_are_created_listed_and_refused_twice(sessions, counter):
    knowledge = service(sessions, counter)
    created = await knowledge.create_base("store", "Store FAQ", chunk_tokens=100)
    assert (created.name, created.documents, created.chunk_tokens) == ("store", 0, 100)
    with pytest.raises(KnowledgeBaseExists):
        await knowledge.create_base("store")
    await knowledge.create_base("other")
    assert [b.name for b in await knowledge.list_bases()] == ["other", "store"]
    with pytest.raises(KnowledgeBaseNotFound):
        await knowledge.get_base("missing")
    with pytest.raises(KnowledgeBaseNotFound):
        await knowledge.add_document("missing", source_id="x", content="text")


async def test_a_document_is_chunked_stored_and_retrievable_at_once(sessions, counter):
    knowledge = service(sessions, counter)
    await knowledge.create_base("store", chunk_tokens=32, chunk_overlap_tokens=0)
    document = await knowledge.add_document(
        "store",
        source_id="policy.md",
        content=POLICY,
        content_type="text/markdown",
        url="https://x",
    )
    assert (document.title, document.url, document.chunk_count) == ("Returns", "https://x", 2)
    chunks = await stored_chunks(sessions, document_id=document.id)
    assert [c.text.split("\n")[0] for c in chunks] == ["# Returns", "# Shipping"]
    assert all(c.tokens > 0 and c.knowledge_base == "store" and c.embedding is None for c in chunks)
    assert await sources(knowledge.retriever, "can I return it") == ["policy.md"]
    summary = await knowledge.get_base("store")
    assert (summary.documents, summary.chunks) == (1, 2)


async def test_reingesting_a_source_replaces_its_chunks(sessions, counter):
    knowledge = service(sessions, counter)
    await knowledge.create_base("store")
    first = await knowledge.add_document("store", source_id="faq", content="Parking is free.")
    old_ids = {c.id for c in await stored_chunks(sessions, document_id=first.id)}
    again = await knowledge.add_document("store", source_id="faq", content="Parking is free.")
    assert {c.id for c in await stored_chunks(sessions, document_id=first.id)} == old_ids  # skipped
    renamed = await knowledge.add_document(
        "store", source_id="faq", content="Parking is free.", title="Parking"
    )
    assert again.id == renamed.id == first.id and renamed.title == "Parking"
    assert (await knowledge.retriever.retrieve(["store"], "parking", top_k=1))[0].title == "Parking"
    second = await knowledge.add_document("store", source_id="faq", content="Valet costs $5.")
    assert second.id == first.id
    chunks = await stored_chunks(sessions, document_id=first.id)
    assert [c.text for c in chunks] == ["Valet costs $5."] and not {c.id for c in chunks} & old_ids
    assert await sources(knowledge.retriever, "parking free") == []
    assert await sources(knowledge.retriever, "valet") == ["faq"]
    async with sessions() as session:
        assert await session.scalar(select(func.count()).select_from(Document)) == 1


async def test_deleting_documents_and_bases(sessions, counter):
    knowledge = service(sessions, counter)
    await knowledge.create_base("store")
    kept = await knowledge.add_document("store", source_id="a", content="Gift cards never expire.")
    gone = await knowledge.add_document("store", source_id="b", content="Gift wrapping is free.")
    assert await knowledge.delete_document("store", gone.id)
    assert not await knowledge.delete_document("store", gone.id)
    assert await sources(knowledge.retriever, "gift") == ["a"]
    assert await stored_chunks(sessions, document_id=gone.id) == []
    documents, total = await knowledge.list_documents("store")
    assert total == 1 and documents[0].id == kept.id
    assert await knowledge.delete_base("store")
    assert not await knowledge.delete_base("store")
    assert await stored_chunks(sessions) == []
    assert await sources(knowledge.retriever, "gift") == []


async def test_unusable_content_is_refused_and_nothing_is_stored(sessions, counter):
    knowledge = service(sessions, counter)
    await knowledge.create_base("store")
    with pytest.raises(InvalidDocument, match="unsupported content type"):
        await knowledge.add_document(
            "store", source_id="x", content=b"..", content_type="image/png"
        )
    with pytest.raises(InvalidDocument, match="no text"):
        await knowledge.add_document(
            "store", source_id="x", content="<script>x</script>", content_type="text/html"
        )
    assert await stored_chunks(sessions) == []


async def test_a_restarted_replica_loads_the_same_index_and_polling_sees_other_replicas(
    sessions, counter
):
    writer = service(sessions, counter)
    await writer.create_base("store")
    await writer.add_document("store", source_id="hours", content="We open at nine every day.")
    reader = Retriever()
    assert await reader.load(sessions)
    assert await sources(reader, "when do you open") == ["hours"]
    await writer.add_document(
        "store", source_id="parking", content="Parking is free for two hours."
    )
    await writer.create_base("new")
    assert sorted(await reader.refresh(sessions)) == ["new", "store"]
    assert sorted(await sources(reader, "parking or open")) == ["hours", "parking"]
    assert await reader.refresh(sessions) == []  # nothing changed
    await writer.delete_base("store")
    await reader.refresh(sessions)
    assert reader.bases == ["new"]


async def test_ten_thousand_chunks_ingest_in_one_batch(sessions, counter):
    knowledge = service(sessions, counter)
    await knowledge.create_base("big", chunk_tokens=20, chunk_overlap_tokens=0)
    lines = [
        f"Item {i} costs {i % 90 + 10} dollars and ships within {i % 7 + 1} days."
        for i in range(10_000)
    ]
    started = time.perf_counter()
    document = await knowledge.add_document("big", source_id="catalog", content="\n".join(lines))
    elapsed = time.perf_counter() - started
    print(f"\n{document.chunk_count} chunks ingested in {elapsed:.2f} s")
    assert document.chunk_count == 10_000
    async with sessions() as session:
        stored = await session.scalar(select(func.count()).select_from(Chunk))
    assert stored == document.chunk_count
    assert (await knowledge.retriever.retrieve(["big"], "Item 4242", top_k=1))[0].text.startswith(
        "Item 4242 "
    )


async def test_embeddings_are_stored_and_loaded(sessions, counter, embeddings):
    embedder = OpenAIEmbedder(Settings(embeddings_base_url=embeddings.base_url))
    knowledge = service(sessions, counter, embedder)
    await knowledge.create_base("store")
    document = await knowledge.add_document(
        "store", source_id="a", content="Shipments leave daily."
    )
    [chunk] = await stored_chunks(sessions, document_id=document.id)
    assert chunk.embedding is not None and len(chunk.embedding) == 256
    reloaded = Retriever(embedder)
    await reloaded.load(sessions)
    index = reloaded.base("store")
    assert index is not None and index.dense is not None and len(index.dense) == 1
    embeddings.fail = True
    with pytest.raises(EmbeddingFailed):
        await knowledge.add_document("store", source_id="b", content="Anything at all.")
    assert len(await stored_chunks(sessions)) == 1
