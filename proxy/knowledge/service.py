"""``build_knowledge``: the retriever and the ingestion service the app holds.

In the app's lifespan::

    state.retriever, state.knowledge = build_knowledge(settings, state.sessions, counter)
    await state.retriever.load(state.sessions)      # logs and carries on if it fails
    state.retriever.start_polling(state.sessions, settings.key_cache_seconds)  # replicas
    ...
    await state.retriever.close()                   # at shutdown
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from proxy.context.budget import TokenCounter
from proxy.knowledge.dense import Embedder, OpenAIEmbedder
from proxy.knowledge.ingest import IngestService
from proxy.knowledge.retrieval import Retriever
from proxy.settings import Settings


def build_embedder(settings: Settings) -> Embedder | None:
    """An embeddings client when ``embeddings_base_url`` is set; lexical only otherwise."""
    return OpenAIEmbedder(settings) if settings.embeddings_base_url else None


def build_knowledge(
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    counter: TokenCounter,
) -> tuple[Retriever, IngestService]:
    embedder = build_embedder(settings)
    retriever = Retriever(embedder)
    return retriever, IngestService(sessions, retriever, counter, embedder)
