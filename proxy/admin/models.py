"""The admin service's models: what the admin API, the CLI and the console take and show.

Keys, profiles, routes and server-side tools come from two places: the database (managed
through ``proxy.admin``) and the configuration (YAML / environment, read-only). Every
entity says which in ``origin``. Timestamps leave as timezone-aware UTC: SQLite hands them
back naive. A tool's secret is never stored: only the name of the environment variable
that holds it on every replica (``secret_env``) and the header it goes in.

The service layer and the HTTP layer both read these; neither imports the other's models.
"""

from __future__ import annotations

import socket
from datetime import UTC, datetime
from ipaddress import IPv4Address
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from proxy.call import APP_ID_PATTERN
from proxy.db.models import ApiKey, Profile, Route, Tool
from proxy.net.guard import BlockedURL, is_public, precheck_url
from proxy.settings import HistoryPolicy, KeySpec, MetaInfoEvents, ModelRoute, ProfileSpec

Origin = Literal["database", "config"]
CONFIG_KEY_PREFIX = "config:"  # config-declared keys have no database id
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]*$"


def as_utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


class RowOut(BaseModel):
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


class KeyUpdate(StoredIn):
    """A partial change to a database key: only the fields sent change; ``null`` clears a
    limit or the profile. The app binding, the secret and the expiry are not editable."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(default="", min_length=1, max_length=128)
    profile: str | None = Field(default=None, max_length=64)
    rate_limit_per_minute: int | None = Field(default=None, ge=1, le=2**31 - 1)
    max_tokens_per_day: int | None = Field(default=None, ge=1, le=2**63 - 1)
    max_cost_per_day: float | None = Field(default=None, gt=0, le=1e15, allow_inf_nan=False)

    @field_validator("name", mode="before")
    @classmethod
    def _name_not_null(cls, value: object) -> object:
        if value is None:
            raise ValueError("name cannot be cleared")
        return value

    def changes(self) -> dict[str, str | int | float | None]:
        """The sent fields, by database column."""
        sent = self.model_dump(include=self.model_fields_set)
        if "profile" in sent:
            sent["profile_name"] = sent.pop("profile")
        return sent


class KeyOut(RowOut):
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


class ProfileOut(ProfileSpec, RowOut):
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


class RouteOut(RowOut):
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


# Tools.


TOOL_NAME_PATTERN = r"^[a-zA-Z0-9_-]{1,64}$"  # what OpenAI accepts as a function name
HEADER_PATTERN = r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$"  # an HTTP header name (RFC 9110 token)
ENV_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"


def _check_schema(schema: dict[str, Any]) -> None:
    """The shape OpenAI requires of ``parameters``: an object schema."""
    if schema.get("type") != "object":
        raise ValueError('parameters must be a JSON schema with "type": "object"')
    properties = schema.get("properties", {})
    if not isinstance(properties, dict) or not all(
        isinstance(value, dict) for value in properties.values()
    ):
        raise ValueError("parameters.properties must map each parameter name to a schema")
    required = schema.get("required", [])
    if not isinstance(required, list) or not all(isinstance(item, str) for item in required):
        raise ValueError("parameters.required must be a list of parameter names")


def _refuse_numeric_private(host: str) -> None:
    """Shorthand IPv4 hosts (2130706433, 0x7f.1, 0177.0.0.1, 127.1) are not names: the
    resolver reads them as addresses, so judge them now as the literal they stand for."""
    try:
        address = IPv4Address(socket.inet_aton(host))
    except (OSError, ValueError):
        return  # a name: judged when it is resolved, at call time
    if not is_public(address):
        raise BlockedURL(f"{host} is not a public address ({address})")


class ToolIn(StoredIn):
    """A tool's settings (PUT replaces them all)."""

    model_config = ConfigDict(extra="forbid")

    description: str = Field(
        min_length=1, max_length=8192, description="What it does: the model reads this."
    )
    parameters: dict[str, Any] = Field(
        default_factory=lambda: {"type": "object", "properties": {}},
        description='JSON schema of the arguments, "type": "object".',
        examples=[{"type": "object", "properties": {"city": {"type": "string"}}}],
    )
    url: str = Field(max_length=2048, description="Called with POST and the arguments as JSON.")
    timeout_seconds: float = Field(default=5.0, gt=0, le=30)
    secret_header: str | None = Field(
        default=None, max_length=128, pattern=HEADER_PATTERN, examples=["Authorization"]
    )
    secret_env: str | None = Field(
        default=None,
        max_length=128,
        pattern=ENV_PATTERN,
        description="Environment variable (on every replica) holding the header's value.",
    )
    filler: str | None = Field(
        default=None, max_length=500, description="Spoken while the tool runs."
    )
    show_result: bool = Field(default=False, description="Send the result to the client app.")
    allow_private_network: bool = Field(
        default=False, description="May the URL reach loopback / private addresses."
    )

    @model_validator(mode="before")
    @classmethod
    def _no_inline_secret(cls, data: Any) -> Any:
        if isinstance(data, dict) and {"secret", "secret_value"} & set(data):
            raise ValueError(
                "an inline secret is not accepted: put it in an environment variable "
                "of every replica and name it in secret_env"
            )
        return data

    @field_validator("parameters")
    @classmethod
    def _object_schema(cls, value: dict[str, Any]) -> dict[str, Any]:
        _check_schema(value)
        return value

    @model_validator(mode="after")
    def _callable(self) -> ToolIn:
        try:
            precheck_url(self.url, allow_private=True)
        except BlockedURL as exc:
            raise ValueError(f"url: {exc}") from None
        if not self.allow_private_network:
            try:
                checked = precheck_url(self.url, allow_private=False)
                _refuse_numeric_private(checked.host)
            except BlockedURL as exc:
                raise ValueError(f"url: {exc}; set allow_private_network to allow it") from None
        if (self.secret_header is None) != (self.secret_env is None):
            raise ValueError("secret_header and secret_env go together: set both or neither")
        return self


class ToolCreate(ToolIn):
    name: str = Field(pattern=TOOL_NAME_PATTERN, description="The function name the model sees.")


class ToolOut(RowOut):
    """A tool as stored (read from its row)."""

    name: str
    description: str
    parameters: dict[str, Any]
    url: str
    timeout_seconds: float
    secret_header: str | None = None
    secret_env: str | None = Field(
        default=None, description="The variable's name, never its value."
    )
    filler: str | None = None
    show_result: bool
    allow_private_network: bool
    created_at: datetime | None = None
    updated_at: datetime | None = None

    @classmethod
    def from_row(cls, tool: Tool) -> ToolOut:
        return cls.model_validate(tool)  # its attributes, the timestamps as UTC
