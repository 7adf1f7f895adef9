"""What every admin service shares: the database, the configuration, and what to refresh.

The HTTP API, the CLI and the console all manage keys, profiles, routes and tools
through the services of this package; they differ only in how they show the result.
Failures are ``proxy.errors`` exceptions: the API answers them as OpenAI error
envelopes, the CLI prints their message on one line.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Literal

from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from proxy.errors import Conflict, InvalidRequest, ServiceUnavailable
from proxy.settings import Settings

log = logging.getLogger(__name__)

Sessions = async_sessionmaker[AsyncSession]
Refresh = Callable[[], Awaitable[None]]
ConfigKind = Literal["key", "profile", "route"]

DATABASE_UNAVAILABLE = "the database is unavailable or not migrated (run `proxy migrate`)"


async def _nothing_to_refresh() -> None:
    return None


@contextmanager
def database_errors() -> Iterator[None]:
    """Database failures as the error tree: a conflict with stored data is 409, data the
    database cannot store (SQLSTATE class 22, e.g. a NUL in PostgreSQL text) 422, and an
    unreachable or unmigrated database 503."""
    try:
        yield
    except IntegrityError as exc:
        raise Conflict(f"the change conflicts with stored data: {exc.orig}") from exc
    except (DBAPIError, PoolTimeout, OSError) as exc:
        if isinstance(exc, DBAPIError) and str(getattr(exc.orig, "sqlstate", ""))[:2] == "22":
            raise InvalidRequest("the database cannot store this text", status=422) from exc
        log.error("admin: database error: %r", exc)
        raise ServiceUnavailable(DATABASE_UNAVAILABLE) from exc


def read_only(kind: str, name: str) -> Conflict:
    return Conflict(f"{kind} {name!r} is declared in the configuration: change it there, not here")


@dataclass(frozen=True, slots=True)
class AdminStore:
    """The database and configuration the admin services work on.

    ``refresh_catalog`` / ``refresh_tools`` make a change take effect at once in this
    process (a serving replica); other replicas, and every replica after a CLI change,
    pick it up when they next poll.
    """

    settings: Settings
    sessions: Sessions
    refresh_catalog: Refresh = _nothing_to_refresh
    refresh_tools: Refresh = _nothing_to_refresh

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """One session and transaction; database failures leave as ``database_errors``
        says, never as internal errors."""
        with database_errors():
            async with self.sessions() as session, session.begin():
                yield session

    def declared_in_config(self, kind: ConfigKind, name: str) -> bool:
        """Whether a key / profile / route comes from the configuration (read-only here)."""
        if kind == "key":
            return any(spec.name == name for spec in self.settings.keys)
        if kind == "profile":
            return name in self.settings.profiles
        return name in self.settings.routes
