"""Helpers for the admin API tests: an admin client and direct database access."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from proxy.db.migrate import upgrade
from proxy.db.session import make_engine, make_sessionmaker

ADMIN_TOKEN = "admin-token-for-tests-0123456789"

T = TypeVar("T")


def admin_client(proxy: Any, token: str | None = ADMIN_TOKEN) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=proxy.url, headers=headers, timeout=10)


def in_database(url: str, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
    """Run ``work`` in one committed transaction on ``url`` (from a sync test)."""

    async def run() -> T:
        engine = make_engine(url)
        try:
            async with make_sessionmaker(engine)() as session, session.begin():
                return await work(session)
        finally:
            await engine.dispose()

    return asyncio.run(run())


@pytest.fixture
async def migrated_sqlite_url(sqlite_url: str) -> str:
    """A migrated SQLite database only (for tests where the database kind is irrelevant)."""
    await asyncio.to_thread(upgrade, sqlite_url)
    return sqlite_url
