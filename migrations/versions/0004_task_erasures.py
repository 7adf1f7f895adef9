"""task erasure tombstones; task keys up to 321 characters (task ids up to 256)

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06 15:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import context, op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The referencing column (messages) is widened before the one it references.
TABLES = ("messages", "callback_events", "round_metrics", "tasks")


def _resize(length_from: int, length_to: int) -> None:
    if context.is_offline_mode() and op.get_context().dialect.name == "sqlite":
        return  # SQLite enforces no VARCHAR length; an offline batch copy cannot reflect
    for table in TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.alter_column(
                "task_id",
                existing_type=sa.String(length=length_from),
                type_=sa.String(length=length_to),
                existing_nullable=False,
            )


def upgrade() -> None:
    op.create_table(
        "task_erasures",
        sa.Column("task_id", sa.String(length=330), nullable=False),
        sa.Column("erased_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("task_id", name=op.f("pk_task_erasures")),
    )
    _resize(200, 330)


def downgrade() -> None:
    _resize(330, 200)
    op.drop_table("task_erasures")
