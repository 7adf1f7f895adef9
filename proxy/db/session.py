"""Database URL handling and the async engine."""

from __future__ import annotations

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
        return create_async_engine(resolved, connect_args={"timeout": pool_timeout})
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
