"""Declarative base with a naming convention, so Alembic migrations are deterministic."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar, cast

from sqlalchemy import JSON, MetaData, Table
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# A multi-row statement is cut into chunks of these sizes (a batch of n < 512 rows takes
# at most one of each): few distinct statement shapes, so the drivers' caches of
# prepared statements (one entry per shape; hundreds of KB for the larger ones in
# SQLite) stay small, and every chunk is far below the bind-parameter limits (32,767).
ROW_CHUNKS = (256, 128, 64, 32, 16, 8, 4, 2, 1)

Row = TypeVar("Row")


def table_of(model: type[DeclarativeBase]) -> Table:
    """A model's table, for Core inserts of plain rows: an ORM bulk insert of the same
    rows costs about 15 µs more per row (measured on SQLite, 33-row batches)."""
    return cast(Table, model.__table__)


def row_chunks(rows: Sequence[Row]) -> Iterator[Sequence[Row]]:
    start = 0
    for size in ROW_CHUNKS:
        while len(rows) - start >= size:
            yield rows[start : start + size]
            start += size


# JSONB on PostgreSQL (indexable, compact), plain JSON elsewhere.
JsonType = JSON().with_variant(JSONB(), "postgresql")


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def without_nul(value: Any) -> Any:
    """PostgreSQL text and JSON cannot hold U+0000: drop it, everywhere in a JSON value."""
    if isinstance(value, str):
        return value.replace("\x00", "") if "\x00" in value else value
    if isinstance(value, list):
        return [without_nul(item) for item in value]
    if isinstance(value, dict):
        return {without_nul(k): without_nul(v) for k, v in value.items()}
    return value
