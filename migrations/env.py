"""Alembic environment: the schema of ``proxy.db.models``, on the proxy's own database.

The database URL comes from, in order:

1. ``config.attributes["url"]`` (programmatic use, e.g. ``proxy.db.migrate``);
2. ``alembic -x url=...`` on the command line;
3. ``proxy.settings.Settings().database_url``, exactly as the proxy reads it
   (``PROXY_DATABASE_URL``, or the YAML file named by ``PROXY_CONFIG``; unset means the
   SQLite file ``./proxy.db``).

Whichever it is goes through ``proxy.db.session.async_url``, so a plain ``postgresql://``
or ``sqlite://`` URL gets its async driver (asyncpg, aiosqlite). Online migrations run on
an async engine inside ``asyncio.run``: call this from synchronous code only (from async
code use ``asyncio.to_thread``; see ``proxy.db.migrate``).
"""

from __future__ import annotations

import asyncio
from logging.config import fileConfig
from typing import Any

from alembic import context
from alembic.autogenerate.api import AutogenContext
from sqlalchemy import JSON, pool
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

import proxy.db.models  # noqa: F401  (registers the tables on Base.metadata)
from proxy.db.base import Base
from proxy.db.session import async_url

config = context.config

# Programmatic callers set configure_logger=False so the application's logging stays as is.
if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = Base.metadata


def database_url() -> str:
    url = config.attributes.get("url") or context.get_x_argument(as_dictionary=True).get("url")
    if not url:
        from proxy.settings import Settings

        url = Settings().database_url
    return async_url(url)


def render_item(type_: str, obj: Any, autogen_context: AutogenContext) -> str | bool:
    """Render ``proxy.db.base.JsonType`` readably in generated revisions.

    Alembic's default rendering of it, ``postgresql.JSONB(astext_type=Text())``, names
    ``Text`` without importing it.
    """
    variants = getattr(obj, "_variant_mapping", {})
    if type_ == "type" and isinstance(obj, JSON) and isinstance(variants.get("postgresql"), JSONB):
        autogen_context.imports.add("from sqlalchemy.dialects import postgresql")
        return 'sa.JSON().with_variant(postgresql.JSONB(), "postgresql")'
    return False


def _options(dialect_name: str) -> dict[str, Any]:
    return {
        "target_metadata": target_metadata,
        "compare_type": True,
        "render_item": render_item,
        # SQLite cannot ALTER most things: alter tables by copy-and-move instead.
        "render_as_batch": dialect_name == "sqlite",
    }


def run_migrations_offline() -> None:
    """``alembic upgrade --sql``: print the SQL instead of running it."""
    url = database_url()
    context.configure(
        url=url,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        **_options(url.partition(":")[0].split("+")[0]),
    )
    with context.begin_transaction():
        context.run_migrations()


def do_run_migrations(connection: Connection) -> None:
    context.configure(connection=connection, **_options(connection.dialect.name))
    with context.begin_transaction():
        context.run_migrations()


async def run_async_migrations() -> None:
    engine = create_async_engine(database_url(), poolclass=pool.NullPool)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(do_run_migrations)
    finally:
        await engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    asyncio.run(run_async_migrations())
