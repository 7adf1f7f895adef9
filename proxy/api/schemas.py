"""Request and response models of the admin API (what ``/docs`` shows).

Entities come from two places: the database (managed here) and the configuration
(YAML / environment, read-only here). Every entity says which in ``origin``.
Timestamps leave as timezone-aware UTC: SQLite hands them back naive.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Generic, Literal, TypeVar

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from proxy.call import APP_ID_PATTERN
from proxy.db.models import ApiKey, Profile, Route
from proxy.settings import HistoryPolicy, KeySpec, MetaInfoEvents, ModelRoute, ProfileSpec

Origin = Literal["database", "config"]
CONFIG_KEY_PREFIX = "config:"  # config-declared keys have no database id
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]*$"

T = TypeVar("T")


def as_utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


class _Out(BaseModel):
    """Response models read ORM rows directly and normalise every timestamp to UTC."""

    model_config = ConfigDict(from_attributes=True)

    @field_validator("*", mode="after")
    @classmethod
    def _utc(cls, value: Any) -> Any:
        return as_utc(value) if isinstance(value, datetime) else value


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(key) or _has_nul(item) for key, item in value.items())
    if isinstance(value, list):
        return any(_has_nul(item) for item in value)
    return False


def refuse_nul(data: Any) -> Any:
    """PostgreSQL text and JSONB hold no NUL: refuse it as invalid input (422) here rather
    than fail the write as "database unavailable" (503) there."""
    if _has_nul(data):
        raise ValueError("text must not contain NUL (\\u0000) characters")
    return data


class StoredIn(BaseModel):
    """A request body the admin API writes to the database."""

    @model_validator(mode="before")
    @classmethod
    def _no_nul(cls, data: Any) -> Any:
        return refuse_nul(data)


class Page(BaseModel, Generic[T]):
    items: list[T]
    total: int = Field(description="Matching items in all pages.")
    offset: int
    limit: int


# Keys.


class KeyCreate(StoredIn):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=128, description="A label for people.")
    profile: str | None = Field(
        default=None, max_length=64, description="The profile this key's calls use."
    )
    allow_profile_override: bool = Field(
        default=False, description="May the caller pick another profile per request."
    )
    app_id: str | None = Field(
        default=None,
        pattern=APP_ID_PATTERN,  # no ":" (it separates the app from the task in a task key)
        description="The TRTC SdkAppId (tenant) it may act for.",
    )
    # Bounded by the columns that hold them (PostgreSQL INTEGER / BIGINT / DOUBLE).
    rate_limit_per_minute: int | None = Field(default=None, ge=1, le=2**31 - 1)
    max_tokens_per_day: int | None = Field(
        default=None, ge=1, le=2**63 - 1, description="Daily token budget."
    )
    max_cost_per_day: float | None = Field(
        default=None,
        gt=0,
        le=1e15,
        allow_inf_nan=False,
        description="Daily cost budget, in the price table's currency.",
    )
    meta_info_events: MetaInfoEvents | None = Field(
        default=None, description="Overrides PROXY_META_INFO_EVENTS for this key's calls."
    )
    expires_at: datetime | None = Field(default=None, description="ISO 8601; naive means UTC.")

    @field_validator("expires_at")
    @classmethod
    def _in_the_future(cls, value: datetime | None) -> datetime | None:
        value = as_utc(value)
        if value is not None and value <= datetime.now(UTC):
            raise ValueError("expires_at must be in the future")
        return value


class KeyOut(_Out):
    """A caller key. The key itself is never shown again after creation."""

    id: str = Field(description='Database id, or "config:<name>" for config-declared keys.')
    name: str
    prefix: str | None = Field(default=None, description="First characters of the key.")
    profile: str | None = None
    allow_profile_override: bool = False
    app_id: str | None = None
    rate_limit_per_minute: int | None = None
    max_tokens_per_day: int | None = None
    max_cost_per_day: float | None = None
    meta_info_events: str | None = None
    expires_at: datetime | None = None
    revoked_at: datetime | None = None
    created_at: datetime | None = None
    active: bool = Field(description="Not revoked and not expired.")
    origin: Origin

    @classmethod
    def from_row(cls, key: ApiKey) -> KeyOut:
        expires_at = as_utc(key.expires_at)
        return cls(
            id=key.id,
            name=key.name,
            prefix=key.key_prefix,
            profile=key.profile_name,
            allow_profile_override=key.allow_profile_override,
            app_id=key.app_id,
            rate_limit_per_minute=key.rate_limit_per_minute,
            max_tokens_per_day=key.max_tokens_per_day,
            max_cost_per_day=key.max_cost_per_day,
            meta_info_events=key.meta_info_events,
            expires_at=expires_at,
            revoked_at=key.revoked_at,
            created_at=key.created_at,
            active=key.revoked_at is None
            and (expires_at is None or expires_at > datetime.now(UTC)),
            origin="database",
        )

    @classmethod
    def from_spec(cls, spec: KeySpec) -> KeyOut:
        return cls(
            id=CONFIG_KEY_PREFIX + spec.name,
            name=spec.name,
            profile=spec.profile,
            allow_profile_override=spec.allow_profile_override,
            app_id=spec.app_id,
            rate_limit_per_minute=spec.rate_limit_per_minute,
            max_tokens_per_day=spec.max_tokens_per_day,
            max_cost_per_day=spec.max_cost_per_day,
            meta_info_events=spec.meta_info_events,
            active=True,
            origin="config",
        )


class KeyCreated(KeyOut):
    key: str = Field(description="The key. Shown this once: store it now.")


# Profiles.


class ProfileIn(ProfileSpec, StoredIn):
    """A profile's settings (PUT replaces them all)."""

    model_config = ConfigDict(extra="forbid")

    @field_validator("history")
    @classmethod
    def _valid_policy(cls, value: dict[str, Any]) -> dict[str, Any]:
        unknown = set(value) - set(HistoryPolicy.model_fields)
        if unknown:
            raise ValueError(f"unknown history settings: {', '.join(sorted(unknown))}")
        HistoryPolicy.model_validate(value)
        return value


class ProfileCreate(ProfileIn):
    name: str = Field(min_length=1, max_length=64, pattern=NAME_PATTERN)


class ProfileOut(ProfileSpec, _Out):
    name: str
    origin: Origin
    created_at: datetime | None = None
    updated_at: datetime | None = None

    @classmethod
    def from_row(cls, profile: Profile) -> ProfileOut:
        spec = ProfileSpec.model_validate(profile, from_attributes=True)
        return cls(
            **spec.model_dump(),
            name=profile.name,
            origin="database",
            created_at=profile.created_at,
            updated_at=profile.updated_at,
        )

    @classmethod
    def from_spec(cls, name: str, spec: ProfileSpec) -> ProfileOut:
        return cls(**spec.model_dump(), name=name, origin="config")


# Routes.


class RouteTargetOut(BaseModel):
    base_url: str
    api_key_env: str | None = Field(
        default=None, description="Name of the environment variable holding the API key."
    )
    model: str | None = Field(
        default=None, description="Upstream model name; the requested name when unset."
    )
    connect_timeout: float = Field(default=2.0, gt=0)
    first_token_timeout: float = Field(default=10.0, gt=0)
    total_timeout: float = Field(default=300.0, gt=0)
    path: str = Field(default="/chat/completions", description="Appended to base_url.")
    auth_header: str = Field(
        default="Authorization", description="'Authorization' (Bearer) or a bare-key header."
    )
    query: dict[str, str] = Field(default_factory=dict, description="Added to the URL.")
    headers: dict[str, str] = Field(
        default_factory=dict, description="Extra headers; '${VAR}' comes from the environment."
    )
    drop_params: list[str] = Field(default_factory=list, description="Never sent upstream.")
    forward_metainfo: bool = Field(default=False, description="Send the engine's MetaInfo.")


class RouteTargetIn(RouteTargetOut):
    """A target of a database route: keys are named by environment variable, never inline."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _no_inline_key(cls, data: Any) -> Any:
        if isinstance(data, dict) and "api_key" in data:
            raise ValueError(
                "inline api_key is not accepted: put the key in an environment variable "
                "of every replica and name it in api_key_env"
            )
        return data

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("base_url must start with http:// or https://")
        return value.rstrip("/")


class RouteIn(StoredIn):
    model_config = ConfigDict(extra="forbid")

    targets: list[RouteTargetIn] = Field(min_length=1, description="Tried in order.")


class RouteOut(_Out):
    alias: str
    targets: list[RouteTargetOut]
    origin: Origin
    created_at: datetime | None = None
    updated_at: datetime | None = None

    @classmethod
    def from_row(cls, route: Route) -> RouteOut:
        return cls(
            alias=route.alias,
            targets=[RouteTargetOut.model_validate(t) for t in route.targets],
            origin="database",
            created_at=route.created_at,
            updated_at=route.updated_at,
        )

    @classmethod
    def from_spec(cls, alias: str, route: ModelRoute) -> RouteOut:
        # Inline keys of config routes never leave: RouteTargetOut has no api_key.
        targets = [RouteTargetOut.model_validate(t.model_dump()) for t in route.targets]
        return cls(alias=alias, targets=targets, origin="config")


# Tasks.


class TaskOut(_Out):
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


class TranscriptMessageOut(_Out):
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


class EventOut(_Out):
    id: int
    task_id: str
    event_type: int
    event_ms_ts: int
    round_id: str | None = None
    payload: dict[str, Any]
    received_at: datetime


class MetricOut(_Out):
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
