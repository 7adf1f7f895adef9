"""Knowledge-layer fixtures: a token counter, a local embeddings server, a database."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from proxy.context.budget import TokenCounter
from proxy.db.migrate import upgrade
from tests.knowledge.embeddings_server import EmbeddingsServer


@pytest.fixture(scope="session")
def counter() -> TokenCounter:
    return TokenCounter()


@pytest.fixture
def embeddings() -> Iterator[EmbeddingsServer]:
    server = EmbeddingsServer().start()
    yield server
    server.stop()


@pytest.fixture
async def migrated_sqlite(sqlite_url: str) -> str:
    await asyncio.to_thread(upgrade, sqlite_url)
    return sqlite_url
