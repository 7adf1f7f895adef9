"""A server-side tool's settings as the admin API, the CLI and the console take and show
them. A tool's secret is never stored: only the name of the environment variable that
holds it on every replica (``secret_env``) and the header it goes in."""

from __future__ import annotations

import socket
from datetime import datetime
from ipaddress import IPv4Address
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from proxy.api.schemas import StoredIn, as_utc
from proxy.db.models import Tool
from proxy.net.guard import BlockedURL, is_public, precheck_url

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


class ToolOut(BaseModel):
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
        return cls(
            name=tool.name,
            description=tool.description,
            parameters=tool.parameters,
            url=tool.url,
            timeout_seconds=tool.timeout_seconds,
            secret_header=tool.secret_header,
            secret_env=tool.secret_env,
            filler=tool.filler,
            show_result=tool.show_result,
            allow_private_network=tool.allow_private_network,
            created_at=as_utc(tool.created_at),
            updated_at=as_utc(tool.updated_at),
        )
