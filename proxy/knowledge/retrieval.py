"""Retrieval for a turn: the best chunks of an agent's knowledge bases, within a budget.

Lexical (BM25) always; when embeddings are configured and the bases hold vectors, the
query is embedded too (with a deadline: a slow embeddings endpoint degrades retrieval
to lexical, it never holds up the turn) and the two rankings are fused by reciprocal
rank fusion (``1 / (60 + rank)``, Cormack et al. 2009), which needs no score
calibration between BM25 and cosine. Results of several bases are merged by score.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from proxy.knowledge.context import build_query, format_context, select_within_budget
from proxy.knowledge.index import ChunkRecord, DocumentInfo, KnowledgeIndex, RetrievedChunk
from proxy.knowledge.repository import KnowledgeRepository
from proxy.knowledge.tokenize import tokenize

if TYPE_CHECKING:
    from proxy.knowledge.dense import Embedder

__all__ = [
    "RetrievedChunk",
    "Retriever",
    "build_query",
    "format_context",
    "reciprocal_rank_fusion",
    "select_within_budget",
]

log = logging.getLogger(__name__)
Sessions = async_sessionmaker[AsyncSession]

RRF_K = 60
CANDIDATES_PER_RESULT = 4  # each ranking contributes this many candidates per result wanted
MIN_CANDIDATES = 20
QUERY_EMBEDDING_TIMEOUT_SECONDS = 0.8


def reciprocal_rank_fusion(
    rankings: Sequence[Sequence[tuple[str, float]]], k: int = RRF_K
) -> list[tuple[str, float]]:
    """Fuse rankings (best first) by ``sum(1 / (k + rank))``; rank counts from 1."""
    fused: dict[str, float] = {}
    for ranking in rankings:
        for rank, (chunk_id, _) in enumerate(ranking, start=1):
            fused[chunk_id] = fused.get(chunk_id, 0.0) + 1.0 / (k + rank)
    return sorted(fused.items(), key=lambda item: -item[1])


class Retriever:
    """Per-knowledge-base indexes in memory; ``retrieve`` never touches the database."""

    def __init__(
        self,
        embedder: Embedder | None = None,
        *,
        query_timeout: float = QUERY_EMBEDDING_TIMEOUT_SECONDS,
        min_similarity: float | None = None,
    ) -> None:
        self.embedder = embedder
        self.query_timeout = query_timeout
        self.min_similarity = min_similarity  # cosine floor for dense candidates
        self.embedding_failures = 0
        self.load_errors = 0
        self._bases: dict[str, KnowledgeIndex] = {}
        self._versions: dict[str, datetime] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._poller: asyncio.Task[None] | None = None

    # What is loaded.

    def base(self, name: str) -> KnowledgeIndex | None:
        return self._bases.get(name)

    @property
    def bases(self) -> list[str]:
        return sorted(self._bases)

    def lock(self, name: str) -> asyncio.Lock:
        """Held while a base changes, so a reload never overwrites a newer ingestion."""
        return self._locks.setdefault(name, asyncio.Lock())

    # Changes: ingestion calls these after committing, holding ``lock(name)``. A change
    # moves the base from version ``previous`` to ``version`` (its ``updated_at``). If
    # this replica had not seen ``previous`` (another replica changed the base since),
    # the change is applied but the version is left behind: the next refresh reloads.

    def _changing(self, name: str, previous: datetime | None, version: datetime) -> KnowledgeIndex:
        index = self._bases.get(name)
        if index is None:
            index = self._bases[name] = KnowledgeIndex(name)
            if previous is not None:  # a base this replica never loaded: reload it all
                return index
        elif self._versions.get(name) != previous:
            return index
        self._versions[name] = version
        return index

    def put_base(self, name: str, version: datetime) -> None:
        """A new, empty base."""
        self._changing(name, None, version)

    def drop_base(self, name: str) -> None:
        self._bases.pop(name, None)
        self._versions.pop(name, None)

    def put_document(
        self,
        base: str,
        document: DocumentInfo,
        chunks: Sequence[ChunkRecord],
        *,
        previous: datetime | None,
        version: datetime,
    ) -> None:
        self._changing(base, previous, version).put_document(document, chunks)

    def update_document(
        self, base: str, document: DocumentInfo, *, previous: datetime | None, version: datetime
    ) -> None:
        self._changing(base, previous, version).update_document(document)

    def remove_document(
        self, base: str, document_id: str, *, previous: datetime | None, version: datetime
    ) -> None:
        self._changing(base, previous, version).remove_document(document_id)

    # Loading from the database.

    async def load(self, sessions: Sessions) -> bool:
        """Load every base (at start); False, logged, when the database failed."""
        try:
            await self.refresh(sessions)
        except (SQLAlchemyError, OSError) as exc:
            self.load_errors += 1
            log.error("could not load the knowledge bases: %r", exc)
            return False
        return True

    async def refresh(self, sessions: Sessions) -> list[str]:
        """Reload bases changed by others (``updated_at`` differs); the names reloaded."""
        async with sessions() as session:
            versions = await KnowledgeRepository(session).versions()
        for name in set(self._bases) - set(versions):
            async with self.lock(name):
                self.drop_base(name)
        changed = [name for name, when in versions.items() if self._versions.get(name) != when]
        for name in changed:
            await self.reload(sessions, name)
        return changed

    async def reload(self, sessions: Sessions, name: str) -> None:
        """Rebuild one base from the database (CPU work in a thread)."""
        async with self.lock(name), sessions() as session:
            repository = KnowledgeRepository(session)
            version = (await repository.versions()).get(name)
            if version is None:
                self.drop_base(name)
                return
            documents = await repository.documents_of(name)
            chunks = [chunk async for chunk in repository.chunks_of(name)]
            # Building is CPU-bound (seconds for 100k chunks): keep the event loop free.
            index = await asyncio.to_thread(KnowledgeIndex.build, name, documents, chunks)
            self._bases[name], self._versions[name] = index, version
        log.info("knowledge base %r loaded: %d chunks", name, len(index))

    def start_polling(self, sessions: Sessions, interval_seconds: float) -> None:
        """Pick up other replicas' changes every ``interval_seconds``."""

        async def poll() -> None:
            while True:
                await asyncio.sleep(interval_seconds)
                try:
                    await self.refresh(sessions)
                except (SQLAlchemyError, OSError) as exc:
                    self.load_errors += 1
                    log.warning("knowledge refresh failed: %r", exc)

        if self._poller is None:
            self._poller = asyncio.create_task(poll(), name="knowledge-refresh")

    async def close(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
            self._poller = None

    # Retrieval.

    async def retrieve(
        self, knowledge_bases: list[str], query: str, *, top_k: int
    ) -> list[RetrievedChunk]:
        """The ``top_k`` best chunks of the named bases (unknown names are ignored)."""
        bases = [self._bases[n] for n in dict.fromkeys(knowledge_bases) if n in self._bases]
        if top_k <= 0 or not query.strip() or not any(len(base) for base in bases):
            return []
        depth = max(top_k * CANDIDATES_PER_RESULT, MIN_CANDIDATES)
        terms = tokenize(query)
        lexical = {base.name: base.lexical.search_terms(terms, depth) for base in bases}
        vector = None
        if self.embedder is not None and any(base.dense for base in bases):
            vector = await self._embed_query(query)
        results: list[RetrievedChunk] = []
        for base in bases:
            ranking = lexical[base.name]
            if vector is not None:  # fused scores everywhere, so bases stay comparable
                rankings = [ranking]
                if base.dense is not None and base.dense.dimensions == len(vector):
                    rankings.append(self._dense(base, vector, depth))
                ranking = reciprocal_rank_fusion(rankings)
            for chunk_id, score in ranking:
                result = base.result(chunk_id, score)
                if result is not None:
                    results.append(result)
        results.sort(key=lambda chunk: -chunk.score)
        return results[:top_k]

    def _dense(self, base: KnowledgeIndex, vector: list[float], k: int) -> list[tuple[str, float]]:
        assert base.dense is not None
        hits = base.dense.search(vector, k)
        if self.min_similarity is not None:
            hits = [(chunk_id, score) for chunk_id, score in hits if score >= self.min_similarity]
        return hits

    async def _embed_query(self, query: str) -> list[float] | None:
        assert self.embedder is not None
        try:
            return await asyncio.wait_for(self.embedder.embed_query(query), self.query_timeout)
        except Exception as exc:  # any failure: lexical results are still good
            self.embedding_failures += 1
            log.warning("query embedding failed, retrieval is lexical only: %r", exc)
            return None
