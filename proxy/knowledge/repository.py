"""Data access for knowledge bases, documents and chunks (callers own the transaction).

SQLite does not enforce the foreign keys' ``ON DELETE CASCADE``, so deletions remove
chunks and documents explicitly.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from proxy.db.models import Chunk, Document, KnowledgeBase
from proxy.knowledge.index import ChunkRecord, DocumentInfo

INSERT_BATCH = 1000
LOAD_BATCH = 2000


def as_utc(value: datetime) -> datetime:
    """SQLite hands timestamps back naive (they were stored as UTC)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


@dataclass(slots=True)
class BaseSummary:
    name: str
    description: str | None
    chunk_tokens: int
    chunk_overlap_tokens: int
    documents: int
    chunks: int
    created_at: datetime
    updated_at: datetime


class KnowledgeRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    # Bases.

    async def get_base(self, name: str) -> KnowledgeBase | None:
        return await self.session.get(KnowledgeBase, name)

    async def create_base(self, name: str, **fields: Any) -> KnowledgeBase:
        base = KnowledgeBase(name=name, **fields)
        self.session.add(base)
        await self.session.flush()
        return base

    async def summaries(self, name: str | None = None) -> list[BaseSummary]:
        query = (
            select(
                KnowledgeBase,
                func.count(Document.id),
                func.coalesce(func.sum(Document.chunk_count), 0),
            )
            .outerjoin(Document, Document.knowledge_base == KnowledgeBase.name)
            .group_by(KnowledgeBase.name)
            .order_by(KnowledgeBase.name)
        )
        if name is not None:
            query = query.where(KnowledgeBase.name == name)
        return [
            BaseSummary(
                name=base.name,
                description=base.description,
                chunk_tokens=base.chunk_tokens,
                chunk_overlap_tokens=base.chunk_overlap_tokens,
                documents=int(documents),
                chunks=int(chunks),
                created_at=as_utc(base.created_at),
                updated_at=as_utc(base.updated_at),
            )
            for base, documents, chunks in (await self.session.execute(query)).all()
        ]

    async def versions(self) -> dict[str, datetime]:
        """Every base's last change (``updated_at``): what replicas poll."""
        rows = await self.session.execute(select(KnowledgeBase.name, KnowledgeBase.updated_at))
        return {name: as_utc(updated_at) for name, updated_at in rows.all()}

    async def touch_base(self, name: str, when: datetime) -> None:
        base = await self.get_base(name)
        if base is not None:
            base.updated_at = when

    async def delete_base(self, name: str) -> bool:
        await self.session.execute(delete(Chunk).where(Chunk.knowledge_base == name))
        await self.session.execute(delete(Document).where(Document.knowledge_base == name))
        result = await self.session.execute(delete(KnowledgeBase).where(KnowledgeBase.name == name))
        return bool(result.rowcount)  # type: ignore[attr-defined]

    # Documents.

    async def document_by_source(self, base: str, source_id: str) -> Document | None:
        query = select(Document).where(
            Document.knowledge_base == base, Document.source_id == source_id
        )
        return (await self.session.scalars(query)).one_or_none()

    async def get_document(self, base: str, document_id: str) -> Document | None:
        document = await self.session.get(Document, document_id)
        return document if document is not None and document.knowledge_base == base else None

    async def list_documents(
        self, base: str, *, offset: int = 0, limit: int = 100
    ) -> tuple[Sequence[Document], int]:
        where = Document.knowledge_base == base
        total = await self.session.scalar(select(func.count()).where(where))
        query = select(Document).where(where).order_by(Document.source_id)
        rows = await self.session.scalars(query.offset(offset).limit(limit))
        return rows.all(), int(total or 0)

    async def has_embeddings(self, document_id: str) -> bool:
        query = select(Chunk.embedding).where(Chunk.document_id == document_id).limit(1)
        return bool(await self.session.scalar(query))

    async def delete_document(self, base: str, document_id: str) -> bool:
        await self.session.execute(delete(Chunk).where(Chunk.document_id == document_id))
        result = await self.session.execute(
            delete(Document).where(Document.id == document_id, Document.knowledge_base == base)
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    # Chunks.

    async def replace_chunks(self, base: str, document_id: str, chunks: list[ChunkRecord]) -> None:
        """The document's chunks become ``chunks`` (one executemany per batch)."""
        await self.session.execute(delete(Chunk).where(Chunk.document_id == document_id))
        rows: list[dict[str, Any]] = []
        for chunk in chunks:
            row = {
                "id": chunk.id,
                "document_id": document_id,
                "knowledge_base": base,
                "position": chunk.position,
                "text": chunk.text,
                "tokens": chunk.tokens,
            }
            if chunk.embedding is not None:  # absent, not JSON null: the column stays NULL
                row["embedding"] = chunk.embedding
            rows.append(row)
        for start in range(0, len(rows), INSERT_BATCH):
            await self.session.execute(insert(Chunk), rows[start : start + INSERT_BATCH])

    async def documents_of(self, base: str) -> list[DocumentInfo]:
        query = select(Document.id, Document.source_id, Document.title, Document.url).where(
            Document.knowledge_base == base
        )
        return [DocumentInfo(*row) for row in (await self.session.execute(query)).all()]

    async def chunks_of(self, base: str) -> AsyncIterator[ChunkRecord]:
        query = (
            select(
                Chunk.id,
                Chunk.document_id,
                Chunk.position,
                Chunk.text,
                Chunk.tokens,
                Chunk.embedding,
            )
            .where(Chunk.knowledge_base == base)
            .order_by(Chunk.document_id, Chunk.position)
            .execution_options(yield_per=LOAD_BATCH)
        )
        result = await self.session.stream(query)
        async for row in result:
            yield ChunkRecord(*row)
