"""One knowledge base in memory: its chunks' text and sources, BM25 and (maybe) vectors.

Retrieval reads only this, never the database: a turn cannot wait on a query. The
database stays the source of truth; an index is rebuilt from it at start and kept
current by ingestion (and by polling, for changes made by other replicas).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from proxy.knowledge.dense import DenseIndex
from proxy.knowledge.lexical import BM25Index

log = logging.getLogger(__name__)


@dataclass(slots=True, frozen=True)
class DocumentInfo:
    id: str
    source_id: str
    title: str | None = None
    url: str | None = None


@dataclass(slots=True)
class ChunkRecord:
    """A chunk as stored (and as ingestion hands it over)."""

    id: str
    document_id: str
    position: int
    text: str
    tokens: int
    embedding: list[float] | None = None


@dataclass(slots=True)
class RetrievedChunk:
    chunk_id: str
    knowledge_base: str
    document_id: str
    source_id: str
    title: str | None
    url: str | None
    text: str
    score: float
    tokens: int


@dataclass(slots=True)
class KnowledgeIndex:
    name: str
    lexical: BM25Index = field(default_factory=BM25Index)
    dense: DenseIndex | None = None
    documents: dict[str, DocumentInfo] = field(default_factory=dict)
    chunks: dict[str, ChunkRecord] = field(default_factory=dict)
    chunks_of: dict[str, list[str]] = field(default_factory=dict)  # document id -> chunk ids
    skipped_vectors: int = 0  # vectors of another dimension (the model changed)

    @classmethod
    def build(
        cls, name: str, documents: Iterable[DocumentInfo], chunks: Iterable[ChunkRecord]
    ) -> KnowledgeIndex:
        """A whole base at once (one BM25 segment); CPU-bound: run it off the event loop."""
        index = cls(name)
        index.documents = {document.id: document for document in documents}
        records = [chunk for chunk in chunks if chunk.document_id in index.documents]
        index._add_chunks(records)
        return index

    def __len__(self) -> int:
        return len(self.chunks)

    def nbytes(self) -> int:
        return self.lexical.nbytes() + (self.dense.nbytes() if self.dense else 0)

    def put_document(self, document: DocumentInfo, chunks: Sequence[ChunkRecord]) -> None:
        """Add a document, or replace all of a re-ingested document's chunks."""
        self.remove_document(document.id)
        self.documents[document.id] = document
        self._add_chunks(chunks)

    def update_document(self, document: DocumentInfo) -> None:
        """New title / url, same chunks."""
        if document.id in self.documents:
            self.documents[document.id] = document

    def remove_document(self, document_id: str) -> None:
        self.documents.pop(document_id, None)
        chunk_ids = self.chunks_of.pop(document_id, [])
        for chunk_id in chunk_ids:
            self.chunks.pop(chunk_id, None)
        self.lexical.remove(chunk_ids)
        if self.dense is not None:
            self.dense.remove(chunk_ids)

    def _add_chunks(self, chunks: Sequence[ChunkRecord]) -> None:
        for chunk in chunks:
            self.chunks[chunk.id] = chunk
            self.chunks_of.setdefault(chunk.document_id, []).append(chunk.id)
        self.lexical.add((chunk.id, chunk.text) for chunk in chunks)
        embedded = [chunk for chunk in chunks if chunk.embedding]
        if not embedded:
            return
        if self.dense is None:
            self.dense = DenseIndex(len(embedded[0].embedding or ()))
        fitting = [c for c in embedded if len(c.embedding or ()) == self.dense.dimensions]
        if len(fitting) < len(embedded):
            self.skipped_vectors += len(embedded) - len(fitting)
            log.warning(
                "knowledge base %r: %d chunk vectors have another dimension than %d "
                "(was the embeddings model changed? re-ingest the documents)",
                self.name,
                len(embedded) - len(fitting),
                self.dense.dimensions,
            )
        self.dense.add([c.id for c in fitting], [c.embedding or () for c in fitting])

    def result(self, chunk_id: str, score: float) -> RetrievedChunk | None:
        chunk = self.chunks.get(chunk_id)
        document = self.documents.get(chunk.document_id) if chunk else None
        if chunk is None or document is None:
            return None
        return RetrievedChunk(
            chunk_id=chunk.id,
            knowledge_base=self.name,
            document_id=document.id,
            source_id=document.source_id,
            title=document.title,
            url=document.url,
            text=chunk.text,
            score=score,
            tokens=chunk.tokens,
        )
