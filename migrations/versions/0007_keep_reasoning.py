"""a profile may keep the model's reasoning in the history (keep_reasoning)

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06 18:40:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A plain ADD COLUMN (SQLite takes it with a constant default): no table copy, and
    # ``alembic upgrade --sql`` can render it without a database to reflect.
    op.add_column(
        "profiles",
        sa.Column("keep_reasoning", sa.Boolean(), nullable=False, server_default=sa.false()),
    )


def downgrade() -> None:
    with op.batch_alter_table("profiles", schema=None) as batch_op:
        batch_op.drop_column("keep_reasoning")
