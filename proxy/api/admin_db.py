"""A transaction per admin call with clear failures (the tasks endpoints; the other
admin endpoints go through ``proxy.admin``)."""

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
