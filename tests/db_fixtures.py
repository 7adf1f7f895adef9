"""Database fixtures (SQLite file and a real PostgreSQL database per test run).

* ``sqlite_url``: a fresh SQLite file in the test's tmp directory.
* ``postgres_server_url``: the PostgreSQL server, ``PROXY_TEST_DATABASE_URL`` or a local
  default; tests needing it are skipped only when that variable is unset and nothing
  answers at the default address.
* ``postgres_url``: a fresh database on that server, dropped after the test.
* ``database_url``: each of the two in turn (tests that must pass on both).
* ``migrated_database_url``: ``database_url`` with the migrations applied.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.engine import URL, make_url

from proxy.db.migrate import upgrade
from proxy.db.session import async_url

DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def _asyncpg_dsn(url: URL) -> str:
    """asyncpg takes a libpq-style DSN: no ``+driver`` in the scheme."""
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path}/test.db"


@pytest.fixture(scope="session")
async def postgres_server_url() -> str:
    """The server's maintenance database URL (async driver), checked once per session."""
    explicit = os.environ.get("PROXY_TEST_DATABASE_URL")
    url = make_url(async_url(explicit or DEFAULT_POSTGRES_URL))
    try:
        connection = await asyncpg.connect(_asyncpg_dsn(url), timeout=5)
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        if explicit:
            raise
        pytest.skip(f"no PostgreSQL at {DEFAULT_POSTGRES_URL} ({exc}); set PROXY_TEST_DATABASE_URL")
    await connection.close()
    return url.render_as_string(hide_password=False)


@pytest.fixture
async def postgres_url(postgres_server_url: str) -> AsyncIterator[str]:
    """A new, empty database for one test: ``postgresql+asyncpg://.../proxytest_<hex>``."""
    server = make_url(postgres_server_url)
    name = f"proxytest_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(_asyncpg_dsn(server), timeout=5)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        admin = await asyncpg.connect(_asyncpg_dsn(server), timeout=5)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest) -> str:
    """An empty database of each kind in turn."""
    url: str = request.getfixturevalue(f"{request.param}_url")
    return url


@pytest.fixture
async def migrated_database_url(database_url: str) -> str:
    """``database_url`` at the head revision (env.py runs its own loop: use a thread)."""
    await asyncio.to_thread(upgrade, database_url)
    return database_url
