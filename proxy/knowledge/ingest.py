"""Ingestion: documents in, chunks (and embeddings) stored, in-memory indexes updated.

``add_document``: extract -> chunk -> embed (when configured) -> one transaction that
replaces the document's chunks (re-ingesting a source id replaces it) -> the
retriever's index. Content that has not changed (same SHA-256) is not processed again.
Changes to one base are serialised on this replica; extraction and chunking run in a
worker thread, so a large upload does not stall the event loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from proxy.context.budget import TokenCounter
from proxy.db.base import utcnow
from proxy.db.models import Document
from proxy.knowledge.chunking import chunk_text
from proxy.knowledge.dense import Embedder
from proxy.knowledge.errors import (
    DocumentNotFound,
    EmbeddingFailed,
    InvalidDocument,
    KnowledgeBaseExists,
    KnowledgeBaseNotFound,
)
from proxy.knowledge.extract import extract_text, media_type
from proxy.knowledge.index import ChunkRecord, DocumentInfo
from proxy.knowledge.repository import BaseSummary, KnowledgeRepository, as_utc
from proxy.knowledge.retrieval import Retriever

Sessions = async_sessionmaker[AsyncSession]


def content_hash(content: bytes | str, content_type: str) -> str:
    data = content.encode() if isinstance(content, str) else content
    return hashlib.sha256(media_type(content_type).encode() + b"\0" + data).hexdigest()


def _info(document: Document) -> DocumentInfo:
    return DocumentInfo(document.id, document.source_id, document.title, document.url)


class IngestService:
    def __init__(
        self,
        sessions: Sessions,
        retriever: Retriever,
        counter: TokenCounter,
        embedder: Embedder | None = None,
    ) -> None:
        self.sessions = sessions
        self.retriever = retriever
        self.counter = counter
        self.embedder = embedder

    # Bases.

    async def create_base(
        self,
        name: str,
        description: str | None = None,
        chunk_tokens: int = 200,
        chunk_overlap_tokens: int = 40,
    ) -> BaseSummary:
        if not 0 <= chunk_overlap_tokens < chunk_tokens:
            raise InvalidDocument("chunk_overlap_tokens must be below chunk_tokens")
        async with self.retriever.lock(name):
            async with self.sessions() as session, session.begin():
                repository = KnowledgeRepository(session)
                if await repository.get_base(name) is not None:
                    raise KnowledgeBaseExists(f"knowledge base {name!r} exists")
                now = utcnow()
                await repository.create_base(
                    name,
                    description=description,
                    chunk_tokens=chunk_tokens,
                    chunk_overlap_tokens=chunk_overlap_tokens,
                    created_at=now,
                    updated_at=now,
                )
            self.retriever.put_base(name, now)
        return await self.get_base(name)

    async def get_base(self, name: str) -> BaseSummary:
        async with self.sessions() as session:
            found = await KnowledgeRepository(session).summaries(name)
        if not found:
            raise KnowledgeBaseNotFound(f"no knowledge base {name!r}")
        return found[0]

    async def list_bases(self) -> list[BaseSummary]:
        async with self.sessions() as session:
            return await KnowledgeRepository(session).summaries()

    async def describe_base(self, name: str, description: str | None) -> BaseSummary:
        """Only the description changes: the index and its version are untouched."""
        async with self.sessions() as session, session.begin():
            base = await KnowledgeRepository(session).get_base(name)
            if base is None:
                raise KnowledgeBaseNotFound(f"no knowledge base {name!r}")
            base.description = description
        return await self.get_base(name)

    async def delete_base(self, name: str) -> bool:
        async with self.retriever.lock(name):
            async with self.sessions() as session, session.begin():
                deleted = await KnowledgeRepository(session).delete_base(name)
            self.retriever.drop_base(name)
        return deleted

    # Documents.

    async def add_document(
        self,
        base: str,
        *,
        source_id: str,
        content: bytes | str,
        content_type: str = "text/plain",
        title: str | None = None,
        url: str | None = None,
    ) -> Document:
        """Store (or replace) a document and its chunks; ``InvalidDocument`` when there
        is nothing usable in it, ``EmbeddingFailed`` when the embeddings endpoint fails."""
        digest = content_hash(content, content_type)
        async with self.retriever.lock(base):
            async with self.sessions() as session:
                repository = KnowledgeRepository(session)
                knowledge_base = await repository.get_base(base)
                if knowledge_base is None:
                    raise KnowledgeBaseNotFound(f"no knowledge base {base!r}")
                existing = await repository.document_by_source(base, source_id)
                if (
                    existing is not None
                    and existing.content_hash == digest
                    and (self.embedder is None or await repository.has_embeddings(existing.id))
                ):
                    return await self._update_metadata(existing, title, url)
                max_tokens = knowledge_base.chunk_tokens
                overlap = knowledge_base.chunk_overlap_tokens
            extracted_title, records = await asyncio.to_thread(
                self._chunks, content, content_type, max_tokens, overlap
            )
            embeddings = await self._embed([record.text for record in records])
            for record, embedding in zip(records, embeddings or (), strict=False):
                record.embedding = embedding
            async with self.sessions() as session, session.begin():
                repository = KnowledgeRepository(session)
                knowledge_base = await repository.get_base(base)
                if knowledge_base is None:
                    raise KnowledgeBaseNotFound(f"no knowledge base {base!r} (deleted meanwhile)")
                previous = as_utc(knowledge_base.updated_at)
                document = await repository.document_by_source(base, source_id)
                if document is None:
                    document = Document(id=uuid.uuid4().hex, knowledge_base=base)
                    session.add(document)
                now = utcnow()
                document.source_id = source_id
                document.title = title or extracted_title
                document.url = url
                document.content_type = media_type(content_type)
                document.content_hash = digest
                document.chunk_count = len(records)
                document.updated_at = knowledge_base.updated_at = now
                await session.flush()
                for record in records:
                    record.document_id = document.id
                await repository.replace_chunks(base, document.id, records)
            self.retriever.put_document(
                base, _info(document), records, previous=previous, version=now
            )
        return document

    def _chunks(
        self, content: bytes | str, content_type: str, max_tokens: int, overlap: int
    ) -> tuple[str | None, list[ChunkRecord]]:
        """Extracted title and chunks (document id still unset): CPU work, for a thread."""
        try:
            text, title = extract_text(content, content_type)
        except ValueError as exc:
            raise InvalidDocument(str(exc), param="content_type") from exc
        counter = self.counter
        chunks = chunk_text(text, max_tokens=max_tokens, overlap_tokens=overlap, counter=counter)
        if not chunks:
            raise InvalidDocument("the document has no text", param="content")
        records = [
            ChunkRecord(uuid.uuid4().hex, "", position, chunk, counter.count_text(chunk))
            for position, chunk in enumerate(chunks)
        ]
        return title, records

    async def _embed(self, texts: list[str]) -> list[list[float]] | None:
        if self.embedder is None:
            return None
        try:
            vectors = await self.embedder.embed_documents(texts)
        except Exception as exc:  # the provider's errors vary: report them all the same way
            raise EmbeddingFailed(f"the embeddings endpoint failed: {exc}") from exc
        if len(vectors) != len(texts):
            raise EmbeddingFailed(f"asked for {len(texts)} embeddings, got {len(vectors)}")
        return vectors

    async def _update_metadata(
        self, document: Document, title: str | None, url: str | None
    ) -> Document:
        """Same content: only a new title or url is stored (the caller holds the lock)."""
        if (title is None or title == document.title) and url == document.url:
            return document
        async with self.sessions() as session, session.begin():
            repository = KnowledgeRepository(session)
            stored = await repository.get_document(document.knowledge_base, document.id)
            knowledge_base = await repository.get_base(document.knowledge_base)
            if stored is None or knowledge_base is None:
                raise DocumentNotFound(f"no document {document.id!r} (deleted meanwhile)")
            previous: datetime = as_utc(knowledge_base.updated_at)
            now = utcnow()
            stored.title = title or stored.title
            stored.url = url
            stored.updated_at = knowledge_base.updated_at = now
        self.retriever.update_document(
            stored.knowledge_base, _info(stored), previous=previous, version=now
        )
        return stored

    async def get_document(self, base: str, document_id: str) -> Document:
        async with self.sessions() as session:
            document = await KnowledgeRepository(session).get_document(base, document_id)
        if document is None:
            raise DocumentNotFound(f"no document {document_id!r} in {base!r}")
        return document

    async def list_documents(
        self, base: str, *, offset: int = 0, limit: int = 100
    ) -> tuple[Sequence[Document], int]:
        async with self.sessions() as session:
            repository = KnowledgeRepository(session)
            if await repository.get_base(base) is None:
                raise KnowledgeBaseNotFound(f"no knowledge base {base!r}")
            return await repository.list_documents(base, offset=offset, limit=limit)

    async def delete_document(self, base: str, document_id: str) -> bool:
        async with self.retriever.lock(base):
            async with self.sessions() as session, session.begin():
                repository = KnowledgeRepository(session)
                knowledge_base = await repository.get_base(base)
                if knowledge_base is None or not await repository.delete_document(
                    base, document_id
                ):
                    return False
                previous = as_utc(knowledge_base.updated_at)
                knowledge_base.updated_at = now = utcnow()
            self.retriever.remove_document(base, document_id, previous=previous, version=now)
        return True
