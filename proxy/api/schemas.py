"""Request and response models of the admin API that only HTTP uses (tasks, events,
metrics, pages); the admin entities (keys, profiles, routes, tools) are in
``proxy.admin.models``, shared with the CLI and the console.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Generic, Literal, TypeVar

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator

from proxy.admin.models import RowOut, StoredIn

T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    items: list[T]
    total: int = Field(description="Matching items in all pages.")
    offset: int
    limit: int


# Tasks.


class TaskOut(RowOut):
    task_id: str
    app_id: str | None = None
    room_id: str | None = None
    user_id: str | None = None
    profile_name: str | None = None
    status: str
    started_at: datetime
    last_activity_at: datetime
    ended_at: datetime | None = None
    end_reason: str | None = None


class HistoryMessageOut(BaseModel):
    """A message of the live history (what the next request will build on)."""

    id: str
    role: str
    content: Any = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None
    interrupted: bool = False
    request_id: str | None = None
    created_at: float = Field(description="Unix time, seconds.")
    source: str = Field(description="turn | seed | context | spoken")
    reasoning_content: str | None = Field(
        default=None, description="The model's reasoning, kept if the profile asks."
    )


class TranscriptMessageOut(RowOut):
    """A message of the durable transcript."""

    id: str
    role: str
    content: Any = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None
    request_id: str | None = None
    round_id: str | None = None
    interrupted: bool = False
    source: str
    created_at: datetime


class TaskDetail(BaseModel):
    task_id: str
    task: TaskOut | None = Field(description="The durable task record, if written yet.")
    summary: str | None = Field(description="Pinned summary of older live turns.")
    total_messages: int = Field(description="Messages in the live history.")
    messages: list[HistoryMessageOut] = Field(description="The live history, oldest first.")
    transcript: list[TranscriptMessageOut] | None = Field(
        description="The durable transcript; null when the database could not be read."
    )


class ContextMessageIn(StoredIn):
    model_config = ConfigDict(extra="forbid")

    content: str = Field(min_length=1, max_length=32_000, examples=["The caller is a VIP."])
    role: Literal["system", "user", "assistant"] = "system"


class MetaInfoIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    metainfo: dict[str, Any] = Field(
        examples=[{"card": "vip", "discount": "10%"}],
        description="Delivered to the client app with the task's next reply (meta.info).",
    )

    @field_validator("metainfo")
    @classmethod
    def _encodable(cls, value: dict[str, Any]) -> dict[str, Any]:
        # It travels as JSON to the engine: integers beyond 64 bits and lone surrogates
        # would fail only later, at the queue.
        try:
            orjson.dumps(value)
        except orjson.JSONEncodeError as exc:
            raise ValueError(f"metainfo cannot be sent as JSON: {exc}") from None
        return value


class EventOut(RowOut):
    id: int
    task_id: str
    event_type: int
    event_ms_ts: int
    round_id: str | None = None
    payload: dict[str, Any]
    received_at: datetime


class MetricOut(RowOut):
    id: int
    task_id: str
    round_id: str | None = None
    metric: str
    value: float | None = None
    tags: dict[str, Any]
    created_at: datetime

    @field_validator("tags", mode="before")
    @classmethod
    def _tags_object(cls, value: Any) -> Any:
        """The engine's ``Tag`` is an object; anything else it sends stays readable here."""
        if value is None:
            return {}
        return value if isinstance(value, dict) else {"Tag": value}
