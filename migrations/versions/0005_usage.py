"""usage records, turn records (the console timeline) and per-key daily budgets

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06 15:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON_TYPE = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "usage_records",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("day", sa.String(length=10), nullable=False),
        sa.Column("app_id", sa.String(length=64), nullable=True),
        sa.Column("key_id", sa.String(length=160), nullable=True),
        sa.Column("key_name", sa.String(length=128), nullable=True),
        sa.Column("task_id", sa.String(length=330), nullable=True),
        sa.Column("request_id", sa.String(length=128), nullable=True),
        sa.Column("route", sa.String(length=128), nullable=False),
        sa.Column("model", sa.String(length=128), nullable=False),
        sa.Column("prompt_tokens", sa.BigInteger(), nullable=False),
        sa.Column("cached_tokens", sa.BigInteger(), nullable=False),
        sa.Column("completion_tokens", sa.BigInteger(), nullable=False),
        sa.Column("cost", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_usage_records")),
    )
    for column in ("created_at", "day", "app_id", "key_id", "task_id"):
        op.create_index(op.f(f"ix_usage_records_{column}"), "usage_records", [column])
    op.create_table(
        "turn_records",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("task_id", sa.String(length=330), nullable=False),
        sa.Column("request_id", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("model", sa.String(length=128), nullable=True),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("sent_text", sa.Text(), nullable=True),
        sa.Column("proxy_ms", sa.Float(), nullable=True),
        sa.Column("upstream_ms", sa.Float(), nullable=True),
        sa.Column("total_ms", sa.Float(), nullable=True),
        sa.Column("tools", JSON_TYPE, nullable=False),
        sa.Column("meta", JSON_TYPE, nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_turn_records")),
    )
    for column in ("task_id", "created_at"):
        op.create_index(op.f(f"ix_turn_records_{column}"), "turn_records", [column])
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.add_column(sa.Column("max_tokens_per_day", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("max_cost_per_day", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.drop_column("max_cost_per_day")
        batch_op.drop_column("max_tokens_per_day")
    for column in ("task_id", "created_at"):
        op.drop_index(op.f(f"ix_turn_records_{column}"), table_name="turn_records")
    op.drop_table("turn_records")
    for column in ("created_at", "day", "app_id", "key_id", "task_id"):
        op.drop_index(op.f(f"ix_usage_records_{column}"), table_name="usage_records")
    op.drop_table("usage_records")
