"""Whether the database holds a caller key, asked before serving starts (the ``--host``
check): once a key exists, a caller needs one, so listening beyond loopback is safe."""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from proxy.db.migrate import migrate_embedded
from proxy.db.repositories import KeyRepository
from proxy.db.session import make_engine, make_sessionmaker
from proxy.settings import Settings

log = logging.getLogger(__name__)


async def _any_active_key(settings: Settings) -> bool:
    engine = make_engine(settings.database_url)
    try:
        async with make_sessionmaker(engine)() as session:
            return bool(await KeyRepository(session).active())
    finally:
        await engine.dispose()


def database_has_keys(settings: Settings) -> bool:
    """False when the database is unreachable or not migrated (then no key can be used)."""
    try:
        migrate_embedded(settings.database_url)
        return asyncio.run(_any_active_key(settings))
    except (DBAPIError, PoolTimeout, OSError) as exc:
        log.warning("could not read caller keys from the database: %r", exc)
        return False
