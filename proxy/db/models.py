"""The durable schema: what an operator manages, and what happened in each task."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import Mapped, mapped_column

from proxy.db.base import Base, JsonType, utcnow

TASK_KEY_LENGTH = 330  # proxy.call.MAX_TASK_KEY (321), rounded up

Timestamp = DateTime(timezone=True)


class Profile(Base):
    """An agent: how a caller's conversations are shaped."""

    __tablename__ = "profiles"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    description: Mapped[str | None] = mapped_column(Text)
    system_prompt: Mapped[str | None] = mapped_column(Text)
    system_prompt_mode: Mapped[str] = mapped_column(String(16), default="prefix")
    model: Mapped[str | None] = mapped_column(String(128))  # a route alias or upstream model
    history: Mapped[dict[str, Any]] = mapped_column(JsonType, default=dict)
    knowledge_bases: Mapped[list[str]] = mapped_column(JsonType, default=list)
    tools: Mapped[list[str]] = mapped_column(JsonType, default=list)
    filler_phrases: Mapped[list[str]] = mapped_column(JsonType, default=list)
    fast_first_words_ms: Mapped[int | None] = mapped_column(Integer)
    meta_info_events: Mapped[str | None] = mapped_column(String(16))  # engine|always|never
    keep_reasoning: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow, onupdate=utcnow)


class ApiKey(Base):
    """A caller key. Only its SHA-256 is stored; the key itself is shown once."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    key_prefix: Mapped[str] = mapped_column(String(16))  # shown in listings to tell keys apart
    # No foreign key: a key may name a profile declared in config rather than stored here.
    profile_name: Mapped[str | None] = mapped_column(String(64))
    allow_profile_override: Mapped[bool] = mapped_column(Boolean, default=False)
    app_id: Mapped[str | None] = mapped_column(String(64))  # the tenant it may act for
    rate_limit_per_minute: Mapped[int | None] = mapped_column(Integer)
    max_tokens_per_day: Mapped[int | None] = mapped_column(BigInteger)  # budget (UTC day)
    max_cost_per_day: Mapped[float | None] = mapped_column(Float)  # in the price table's unit
    meta_info_events: Mapped[str | None] = mapped_column(String(16))  # engine|always|never
    expires_at: Mapped[datetime | None] = mapped_column(Timestamp)
    revoked_at: Mapped[datetime | None] = mapped_column(Timestamp)
    created_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)


class Route(Base):
    """A model alias served by ordered upstream targets (keys by env var name only)."""

    __tablename__ = "routes"

    alias: Mapped[str] = mapped_column(String(128), primary_key=True)
    targets: Mapped[list[dict[str, Any]]] = mapped_column(JsonType)
    created_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow, onupdate=utcnow)


class Task(Base):
    """One conversation task (one bot in one room)."""

    __tablename__ = "tasks"

    # The task key: "<app id>:<task id>" (64 + 1 + 128) when the engine names an app.
    task_id: Mapped[str] = mapped_column(String(TASK_KEY_LENGTH), primary_key=True)
    app_id: Mapped[str | None] = mapped_column(String(64), index=True)
    room_id: Mapped[str | None] = mapped_column(String(128), index=True)
    user_id: Mapped[str | None] = mapped_column(String(128), index=True)
    profile_name: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default="active")  # active|ready|ended
    started_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow, index=True)
    last_activity_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)
    ended_at: Mapped[datetime | None] = mapped_column(Timestamp)
    end_reason: Mapped[str | None] = mapped_column(String(64))


class TranscriptMessage(Base):
    """The durable transcript: every message as committed, corrections included."""

    __tablename__ = "messages"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # the history message id
    task_id: Mapped[str] = mapped_column(
        ForeignKey("tasks.task_id", ondelete="CASCADE"), index=True
    )
    role: Mapped[str] = mapped_column(String(16))
    content: Mapped[Any] = mapped_column(JsonType, nullable=True)
    name: Mapped[str | None] = mapped_column(String(128))
    tool_calls: Mapped[list[dict[str, Any]] | None] = mapped_column(JsonType)
    tool_call_id: Mapped[str | None] = mapped_column(String(128))
    request_id: Mapped[str | None] = mapped_column(String(128))
    round_id: Mapped[str | None] = mapped_column(String(128))
    interrupted: Mapped[bool] = mapped_column(Boolean, default=False)
    source: Mapped[str] = mapped_column(String(16), default="turn")
    created_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow, index=True)


class CallbackEvent(Base):
    """An engine server callback (901-909), stored once per (task, type, event time)."""

    __tablename__ = "callback_events"
    __table_args__ = (UniqueConstraint("task_id", "event_type", "event_ms_ts"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    task_id: Mapped[str] = mapped_column(String(TASK_KEY_LENGTH), index=True)
    event_type: Mapped[int] = mapped_column(Integer)
    event_ms_ts: Mapped[int] = mapped_column(BigInteger)
    round_id: Mapped[str | None] = mapped_column(String(128))
    payload: Mapped[dict[str, Any]] = mapped_column(JsonType)
    received_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)


class RoundMetric(Base):
    """A per-round metric (906) or error (908) the engine reported."""

    __tablename__ = "round_metrics"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    task_id: Mapped[str] = mapped_column(String(TASK_KEY_LENGTH), index=True)
    round_id: Mapped[str | None] = mapped_column(String(128))
    metric: Mapped[str] = mapped_column(String(64))
    value: Mapped[float | None] = mapped_column(Float)
    tags: Mapped[dict[str, Any]] = mapped_column(JsonType, default=dict)
    created_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)


class KnowledgeBase(Base):
    """A named collection of documents an agent can retrieve from."""

    __tablename__ = "knowledge_bases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    description: Mapped[str | None] = mapped_column(Text)
    chunk_tokens: Mapped[int] = mapped_column(Integer, default=200)
    chunk_overlap_tokens: Mapped[int] = mapped_column(Integer, default=40)
    created_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow, onupdate=utcnow)


class Document(Base):
    """A source document; re-ingesting it (same base and source id) replaces its chunks."""

    __tablename__ = "documents"
    __table_args__ = (UniqueConstraint("knowledge_base", "source_id"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    knowledge_base: Mapped[str] = mapped_column(
        ForeignKey("knowledge_bases.name", ondelete="CASCADE"), index=True
    )
    source_id: Mapped[str] = mapped_column(String(256))  # caller's id, file name or URL
    title: Mapped[str | None] = mapped_column(String(512))
    url: Mapped[str | None] = mapped_column(String(2048))
    content_type: Mapped[str] = mapped_column(String(64), default="text/plain")
    content_hash: Mapped[str] = mapped_column(String(64))
    chunk_count: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow, onupdate=utcnow)


class Chunk(Base):
    """A retrievable piece of a document (with its embedding when one is configured)."""

    __tablename__ = "chunks"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    document_id: Mapped[str] = mapped_column(
        ForeignKey("documents.id", ondelete="CASCADE"), index=True
    )
    knowledge_base: Mapped[str] = mapped_column(String(64), index=True)
    position: Mapped[int] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(Text)
    tokens: Mapped[int] = mapped_column(Integer)
    embedding: Mapped[list[float] | None] = mapped_column(JsonType)


class Tool(Base):
    """A server-side function the model may call: the proxy POSTs the arguments to ``url``."""

    __tablename__ = "tools"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    description: Mapped[str] = mapped_column(Text)
    parameters: Mapped[dict[str, Any]] = mapped_column(JsonType)  # JSON schema
    url: Mapped[str] = mapped_column(String(2048))
    timeout_seconds: Mapped[float] = mapped_column(Float, default=5.0)
    secret_header: Mapped[str | None] = mapped_column(String(128))  # header name
    secret_env: Mapped[str | None] = mapped_column(String(128))  # env var holding its value
    filler: Mapped[str | None] = mapped_column(Text)  # spoken while it runs
    show_result: Mapped[bool] = mapped_column(Boolean, default=False)  # meta.info to the client
    allow_private_network: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow, onupdate=utcnow)


class TaskErasure(Base):
    """A tombstone: the task was erased at ``erased_at`` (epoch seconds). Every
    write-behind writer discards what it accepted for the task at or before then."""

    __tablename__ = "task_erasures"

    task_id: Mapped[str] = mapped_column(String(TASK_KEY_LENGTH), primary_key=True)
    erased_at: Mapped[float] = mapped_column(Float)


class UsageRecord(Base):
    """The tokens one upstream completion reported, and what they cost (``proxy.usage``)."""

    __tablename__ = "usage_records"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow, index=True)
    day: Mapped[str] = mapped_column(String(10), index=True)  # UTC "YYYY-MM-DD", for grouping
    app_id: Mapped[str | None] = mapped_column(String(64), index=True)
    key_id: Mapped[str | None] = mapped_column(String(160), index=True)
    key_name: Mapped[str | None] = mapped_column(String(128))
    task_id: Mapped[str | None] = mapped_column(String(TASK_KEY_LENGTH), index=True)
    request_id: Mapped[str | None] = mapped_column(String(128))
    route: Mapped[str] = mapped_column(String(128))  # the model name the caller sent
    model: Mapped[str] = mapped_column(String(128))  # the model the upstream reported
    prompt_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    cached_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    completion_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    cost: Mapped[float] = mapped_column(Float, default=0.0)


class TurnRecord(Base):
    """One chat request of a task as the proxy served it (``proxy.observability.turnlog``)."""

    __tablename__ = "turn_records"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    task_id: Mapped[str] = mapped_column(String(TASK_KEY_LENGTH), index=True)
    request_id: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow, index=True)
    model: Mapped[str | None] = mapped_column(String(128))
    status: Mapped[int] = mapped_column(Integer)
    outcome: Mapped[str] = mapped_column(String(16))  # answered|interrupted|replayed|failed
    sent_text: Mapped[str | None] = mapped_column(Text)  # what reached the caller
    proxy_ms: Mapped[float | None] = mapped_column(Float)
    upstream_ms: Mapped[float | None] = mapped_column(Float)  # to the upstream's first event
    total_ms: Mapped[float | None] = mapped_column(Float)
    tools: Mapped[list[dict[str, Any]]] = mapped_column(JsonType, default=list)
    meta: Mapped[list[dict[str, Any]]] = mapped_column(JsonType, default=list)
    error: Mapped[str | None] = mapped_column(Text)
