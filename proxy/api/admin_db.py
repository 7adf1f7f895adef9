"""A transaction per admin call with clear failures (the tasks endpoints; the other
admin endpoints go through ``proxy.admin``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Request
from sqlalchemy.ext.asyncio import AsyncSession

from proxy.admin.store import database_errors
from proxy.services import services


@asynccontextmanager
async def transaction(request: Request) -> AsyncIterator[AsyncSession]:
    """One session and transaction; database failures leave as 409 / 422 / 503, not 500."""
    with database_errors():
        async with services(request).sessions() as session, session.begin():
            yield session
