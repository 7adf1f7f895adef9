"""initial schema: profiles, api keys, routes, tasks, transcripts, callback events, metrics

Revision ID: 0001
Revises: (none)
Create Date: 2026-11-22 11:13:13.042787
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Spelled out rather than imported from proxy.db, so this revision never changes.
# JSONB on PostgreSQL, JSON (text) elsewhere; the same as proxy.db.base.JsonType.
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
# A 64-bit autoincrementing key; SQLite only autoincrements "INTEGER PRIMARY KEY".
BIGID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TIMESTAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "profiles",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("system_prompt", sa.Text(), nullable=True),
        sa.Column("system_prompt_mode", sa.String(16), nullable=False),
        sa.Column("model", sa.String(128), nullable=True),
        sa.Column("history", JSON, nullable=False),
        sa.Column("knowledge_bases", JSON, nullable=False),
        sa.Column("tools", JSON, nullable=False),
        sa.Column("filler_phrases", JSON, nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_profiles")),
    )

    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("key_prefix", sa.String(16), nullable=False),
        sa.Column("profile_name", sa.String(64), nullable=True),
        sa.Column("allow_profile_override", sa.Boolean(), nullable=False),
        sa.Column("app_id", sa.String(64), nullable=True),
        sa.Column("rate_limit_per_minute", sa.Integer(), nullable=True),
        sa.Column("expires_at", TIMESTAMP, nullable=True),
        sa.Column("revoked_at", TIMESTAMP, nullable=True),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("key_hash", name=op.f("uq_api_keys_key_hash")),
    )

    op.create_table(
        "routes",
        sa.Column("alias", sa.String(128), nullable=False),
        sa.Column("targets", JSON, nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("alias", name=op.f("pk_routes")),
    )

    op.create_table(
        "tasks",
        sa.Column("task_id", sa.String(128), nullable=False),
        sa.Column("app_id", sa.String(64), nullable=True),
        sa.Column("room_id", sa.String(128), nullable=True),
        sa.Column("user_id", sa.String(128), nullable=True),
        sa.Column("profile_name", sa.String(64), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("started_at", TIMESTAMP, nullable=False),
        sa.Column("last_activity_at", TIMESTAMP, nullable=False),
        sa.Column("ended_at", TIMESTAMP, nullable=True),
        sa.Column("end_reason", sa.String(64), nullable=True),
        sa.PrimaryKeyConstraint("task_id", name=op.f("pk_tasks")),
    )
    op.create_index(op.f("ix_tasks_app_id"), "tasks", ["app_id"])
    op.create_index(op.f("ix_tasks_room_id"), "tasks", ["room_id"])
    op.create_index(op.f("ix_tasks_user_id"), "tasks", ["user_id"])
    op.create_index(op.f("ix_tasks_started_at"), "tasks", ["started_at"])

    op.create_table(
        "messages",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("task_id", sa.String(128), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("content", JSON, nullable=True),
        sa.Column("name", sa.String(128), nullable=True),
        sa.Column("tool_calls", JSON, nullable=True),
        sa.Column("tool_call_id", sa.String(128), nullable=True),
        sa.Column("request_id", sa.String(128), nullable=True),
        sa.Column("round_id", sa.String(128), nullable=True),
        sa.Column("interrupted", sa.Boolean(), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_messages")),
        sa.ForeignKeyConstraint(
            ["task_id"],
            ["tasks.task_id"],
            name=op.f("fk_messages_task_id_tasks"),
            ondelete="CASCADE",
        ),
    )
    op.create_index(op.f("ix_messages_task_id"), "messages", ["task_id"])
    op.create_index(op.f("ix_messages_created_at"), "messages", ["created_at"])

    op.create_table(
        "callback_events",
        sa.Column("id", BIGID, nullable=False),
        sa.Column("task_id", sa.String(128), nullable=False),
        sa.Column("event_type", sa.Integer(), nullable=False),
        sa.Column("event_ms_ts", sa.BigInteger(), nullable=False),
        sa.Column("round_id", sa.String(128), nullable=True),
        sa.Column("payload", JSON, nullable=False),
        sa.Column("received_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_callback_events")),
        # Named by the convention's first column; it covers all three.
        sa.UniqueConstraint(
            "task_id", "event_type", "event_ms_ts", name=op.f("uq_callback_events_task_id")
        ),
    )
    op.create_index(op.f("ix_callback_events_task_id"), "callback_events", ["task_id"])

    op.create_table(
        "round_metrics",
        sa.Column("id", BIGID, nullable=False),
        sa.Column("task_id", sa.String(128), nullable=False),
        sa.Column("round_id", sa.String(128), nullable=True),
        sa.Column("metric", sa.String(64), nullable=False),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("tags", JSON, nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_round_metrics")),
    )
    op.create_index(op.f("ix_round_metrics_task_id"), "round_metrics", ["task_id"])


def downgrade() -> None:
    # Dropping a table drops its indexes; children before parents.
    for table in (
        "round_metrics",
        "callback_events",
        "messages",
        "tasks",
        "routes",
        "api_keys",
        "profiles",
    ):
        op.drop_table(table)
