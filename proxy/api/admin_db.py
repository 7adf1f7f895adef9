"""What the admin endpoints share: a transaction per call, the catalog, clear failures."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Request
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncSession

from proxy.errors import Conflict, ServiceUnavailable

log = logging.getLogger(__name__)


@asynccontextmanager
async def transaction(request: Request) -> AsyncIterator[AsyncSession]:
    """One session and transaction; database failures leave as 409 / 503, not 500."""
    try:
        async with request.app.state.sessions() as session, session.begin():
            yield session
    except IntegrityError as exc:
        raise Conflict(f"the change conflicts with stored data: {exc.orig}") from exc
    except (DBAPIError, PoolTimeout, OSError) as exc:
        log.error("admin API: database error: %r", exc)
        raise ServiceUnavailable(
            "the database is unavailable or not migrated (run `proxy migrate`)"
        ) from exc


def declared_in_config(request: Request, kind: str, name: str) -> bool:
    """Whether a key / profile / route comes from the configuration (read-only here)."""
    catalog = getattr(request.app.state, "catalog", None)
    if catalog is not None:
        return bool(catalog.source_of(kind, name) == "config")
    settings = request.app.state.settings
    if kind == "key":
        return any(spec.name == name for spec in settings.keys)
    return name in (settings.profiles if kind == "profile" else settings.routes)


async def refresh_catalog(request: Request) -> None:
    """Make an admin change take effect at once on this replica (others poll)."""
    catalog = getattr(request.app.state, "catalog", None)
    if catalog is not None:
        await catalog.refresh()
