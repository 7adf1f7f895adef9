"""task keys scoped by tenant: task id columns hold "<app id>:<task id>" (up to 200)

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22 14:10:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import context, op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The referencing column (messages) is widened before the one it references.
TABLES = ("messages", "callback_events", "round_metrics", "tasks")


def _resize(length_from: int, length_to: int) -> None:
    if context.is_offline_mode() and op.get_context().dialect.name == "sqlite":
        # SQLite enforces no VARCHAR length, and a batch table copy needs a live
        # database to reflect: the offline script has nothing to do.
        return
    for table in TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.alter_column(
                "task_id",
                existing_type=sa.String(length=length_from),
                type_=sa.String(length=length_to),
                existing_nullable=False,
            )


def upgrade() -> None:
    _resize(128, 200)


def downgrade() -> None:
    # Fails on PostgreSQL if a task key longer than 128 characters is stored: by design,
    # a downgrade must not silently cut keys.
    _resize(200, 128)
