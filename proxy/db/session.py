"""Database URL handling and the async engine."""

from __future__ import annotations

from sqlalchemy import event
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./proxy.db"

_ASYNC_DRIVERS = {
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
    "postgresql+psycopg2": "postgresql+asyncpg",
    "sqlite": "sqlite+aiosqlite",
}


def async_url(url: str | None) -> str:
    """A SQLAlchemy URL with an async driver; plain ``postgresql://`` is accepted too."""
    url = url or DEFAULT_DATABASE_URL
    scheme, sep, rest = url.partition("://")
    return f"{_ASYNC_DRIVERS.get(scheme, scheme)}{sep}{rest}"


def make_engine(url: str | None, *, pool_timeout: float = 5.0) -> AsyncEngine:
    resolved = async_url(url)
    if resolved.startswith("sqlite"):
        engine = create_async_engine(resolved, connect_args={"timeout": pool_timeout})
        event.listen(engine.sync_engine, "connect", _write_ahead_log)
        return engine
    return create_async_engine(
        resolved,
        pool_pre_ping=True,
        pool_size=5,
        max_overflow=10,
        pool_timeout=pool_timeout,
        connect_args={"timeout": pool_timeout, "command_timeout": 10},
    )


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


def _write_ahead_log(connection: DBAPIConnection, _record: object) -> None:
    """SQLite in WAL mode: readers never block a writer.

    In the default rollback journal a reader holds a shared lock that a commit must wait
    for. A read cut off by cancellation (a console page left mid-query) leaves its closed
    connection holding that lock until the garbage collector frees its cursor, and every
    write meanwhile failed with "database is locked" after the busy timeout. The mode is
    stored in the file; setting it again is a no-op (``:memory:`` stays ``memory``).
    """
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.close()
