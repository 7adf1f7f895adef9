"""All configuration: one pydantic-settings class, env prefix ``PROXY_``, optional YAML.

Precedence (highest first): constructor arguments, environment variables, the YAML
file named by ``PROXY_CONFIG``, defaults. Nothing else in the code reads the
environment, except an upstream target's ``api_key_env``, which names the variable
that holds that target's key so that keys never sit in the YAML file.
"""

from __future__ import annotations

import os
from typing import Annotated, Any, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from proxy.call import APP_ID_PATTERN
from proxy.config_file import read_config_file
from proxy.usage.specs import Budget, ModelPrice

ECHO_MODEL = "echo"
# The voice budget (README "Time budget"): the engine's Timeout defaults to 3 s.
DEFAULT_CONNECT_TIMEOUT = 1.0
DEFAULT_FIRST_TOKEN_TIMEOUT = 1.5
DEFAULT_FIRST_TOKEN_BUDGET_MS = 2500
DEFAULT_COOLDOWN_SECONDS = 10.0
# Who gets meta.info events: TRTC engine calls (X-Sdk-App-Id / X-Room-Id), every task, none.
MetaInfoEvents = Literal["engine", "always", "never"]


class UpstreamTarget(BaseModel):
    """One OpenAI-compatible endpoint a model alias can be served by."""

    base_url: str
    api_key: SecretStr | None = None
    api_key_env: str | None = Field(
        default=None, description="Name of the environment variable holding the API key."
    )
    model: str | None = Field(
        default=None, description="Upstream model name; the requested name when unset."
    )
    # Voice defaults (README "Time budget"): a dead target is left well inside the
    # engine's default 3 s Timeout. The first token is the first *speakable* one.
    connect_timeout: float = Field(default=DEFAULT_CONNECT_TIMEOUT, gt=0)
    first_token_timeout: float = Field(default=DEFAULT_FIRST_TOKEN_TIMEOUT, gt=0)
    total_timeout: float = Field(default=300.0, gt=0)
    completion_timeout: float | None = Field(
        default=None,
        gt=0,
        description="Non-streaming: the whole answer within this; unset: first_token_timeout.",
    )
    # The request's shape for this upstream (proxy.upstream.shape).
    path: str = Field(default="/chat/completions", description="Appended to base_url.")
    auth_header: str = Field(
        default="Authorization",
        description="Header carrying the key: 'Authorization' sends 'Bearer <key>', any "
        "other name (Azure's 'api-key') the bare key.",
    )
    query: dict[str, str] = Field(default_factory=dict, description="Added to the URL.")
    headers: dict[str, str] = Field(
        default_factory=dict,
        description="Extra headers; '${VAR}' in a value is read from the environment.",
    )
    drop_params: list[str] = Field(
        default_factory=list, description="Body fields never sent to this upstream."
    )
    forward_metainfo: bool = Field(
        default=False, description="Send the engine's MetaInfo object on to this upstream."
    )

    @field_validator("path")
    @classmethod
    def _leading_slash(cls, value: str) -> str:
        return value if value.startswith("/") else "/" + value

    @field_validator("base_url")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        return value.rstrip("/")

    def resolved_api_key(self) -> str | None:
        if self.api_key is not None:
            return self.api_key.get_secret_value()
        if self.api_key_env:
            return os.environ.get(self.api_key_env)
        return None


class ModelRoute(BaseModel):
    """A model alias served by an ordered list of targets (tried in order)."""

    targets: list[UpstreamTarget] = Field(min_length=1)
    hedge_after_ms: int | None = Field(
        default=None,
        ge=1,
        description="No speakable token from a target by then: start the next one alongside.",
    )
    cooldown_seconds: float = Field(
        default=DEFAULT_COOLDOWN_SECONDS,
        ge=0,
        description="A failed target is skipped this long, then one probe request retries "
        "it; 0 = no cooldown.",
    )
    first_token_budget_ms: int = Field(
        default=DEFAULT_FIRST_TOKEN_BUDGET_MS,
        ge=100,
        description="All targets together must produce a speakable token within this.",
    )


class HistoryPolicy(BaseModel):
    max_turns: int = Field(default=30, ge=0, description="Turns kept in the window; 0 = no limit.")
    token_budget: int = Field(default=6000, ge=256, description="Tokens for the whole prompt.")
    load_limit: int = Field(
        default=80,
        ge=1,
        description="Newest stored messages loaded per request (keeps the cost flat for "
        "long tasks; enough for max_turns of ordinary turns).",
    )
    low_water: float = Field(
        default=0.6,
        gt=0,
        le=1,
        description="A window limit (token_budget, max_turns, load_limit) that is exceeded "
        "trims to this fraction of it in one block, so later turns extend an unchanged "
        "prompt prefix (upstream prompt caches). 1 = slide one turn at a time.",
    )
    summarise: bool = False
    summary_threshold_turns: int = Field(default=40, ge=4)
    summary_keep_turns: int = Field(default=10, ge=1)
    summary_model: str | None = None


class ProfileSpec(BaseModel):
    """An agent profile (also stored in the database; see ``proxy.db.models.Profile``)."""

    description: str | None = None
    system_prompt: str | None = None
    system_prompt_mode: Literal["prefix", "override"] = "prefix"
    model: str | None = Field(
        default=None, description="Route alias or model; replaces the request's."
    )
    history: dict[str, Any] = Field(default_factory=dict, description="HistoryPolicy overrides.")
    knowledge_bases: list[str] = Field(default_factory=list)
    tools: list[str] = Field(default_factory=list)
    filler_phrases: list[str] = Field(default_factory=list)
    fast_first_words_ms: int | None = Field(
        default=None, ge=50, description="Speak a filler phrase if the first token is this late."
    )
    meta_info_events: MetaInfoEvents | None = Field(
        default=None, description="Overrides PROXY_META_INFO_EVENTS for this profile."
    )
    keep_reasoning: bool = Field(
        default=False,
        description="Store the model's reasoning with its reply in the history "
        "(reasoning_content: never spoken, never sent upstream again).",
    )


class KeySpec(BaseModel):
    """A caller key declared in YAML: the key itself stays in the environment or as a hash."""

    name: str
    key_env: str | None = None
    key_sha256: str | None = None
    profile: str | None = None
    allow_profile_override: bool = False
    app_id: str | None = Field(default=None, pattern=APP_ID_PATTERN)  # no ":" (task keys)
    rate_limit_per_minute: int | None = Field(default=None, ge=1)
    max_tokens_per_day: int | None = Field(default=None, ge=1)
    max_cost_per_day: float | None = Field(default=None, gt=0)
    meta_info_events: MetaInfoEvents | None = None  # overrides PROXY_META_INFO_EVENTS

    @model_validator(mode="after")
    def _one_source(self) -> KeySpec:
        if bool(self.key_env) == bool(self.key_sha256):
            raise ValueError(f"key {self.name!r}: set exactly one of key_env or key_sha256")
        return self


def _split_csv(value: Any) -> Any:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PROXY_", extra="ignore")

    env: Literal["development", "production"] = "development"
    config: str | None = Field(default=None, description="Path of an optional YAML config file.")
    host: str = "127.0.0.1"
    port: int = 8000
    log_level: str = "info"

    # Callers.
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    allow_unauthenticated_public: bool = Field(
        default=False,
        description="Allow listening beyond loopback with no API keys configured.",
    )
    admin_token: SecretStr | None = None
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    max_concurrent_requests: int = Field(
        default=2000, ge=1, description="Chat requests in flight per process; more get 503."
    )
    header_timeout_seconds: float = Field(
        default=10.0,
        ge=0,
        description="Seconds a connection has to send complete request headers (from "
        "opening, and from the first byte of each request); then it is closed. 0 = no limit.",
    )
    keep_alive_seconds: int = Field(
        default=75,
        ge=1,
        description="How long an idle client connection stays open. Longer than the "
        "engine's (and any load balancer's) idle timeout, so that the proxy never closes a "
        "connection just as the engine reuses it (a reset request).",
    )

    # Upstreams.
    upstream_base_url: str | None = None
    upstream_api_key: SecretStr | None = None
    upstream_connect_timeout: float = Field(default=DEFAULT_CONNECT_TIMEOUT, gt=0)
    upstream_first_token_timeout: float = Field(default=DEFAULT_FIRST_TOKEN_TIMEOUT, gt=0)
    upstream_total_timeout: float = Field(default=300.0, gt=0)
    upstream_max_connections: int = Field(default=1000, ge=1)
    routes: dict[str, ModelRoute] = Field(default_factory=dict)

    # Durable store and config-declared entities (GitOps / Helm).
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; unset = SQLite file ./proxy.db"
    )
    keys: list[KeySpec] = Field(default_factory=list)
    profiles: dict[str, ProfileSpec] = Field(default_factory=dict)
    transcript_queue_size: int = Field(default=10_000, ge=10)
    transcript_batch_size: int = Field(default=200, ge=1)
    transcript_flush_seconds: float = Field(default=0.5, gt=0)
    spool_dir: str | None = Field(
        default=None,
        description="Directory of the durable write-behind spool (transcripts and callback "
        "events the database has not taken yet); 'off' keeps them in memory only. Unset: "
        "next to the SQLite file, or ./proxy-spool.",
    )
    metrics_models: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Model names (besides routes and their targets) that get their own "
        "metric label; every other requested name is counted as 'other'.",
    )
    spool_fsync: bool = Field(
        default=False, description="fsync the spool on every submission (survives power loss)."
    )
    key_cache_seconds: float = Field(default=10.0, gt=0)

    # Knowledge (retrieval) and tools.
    embeddings_base_url: str | None = Field(
        default=None, description="OpenAI-compatible embeddings endpoint; unset = lexical only."
    )
    embeddings_api_key: SecretStr | None = None
    embeddings_model: str = "text-embedding-3-small"
    retrieval_top_k: int = Field(default=3, ge=1, le=20)
    retrieval_token_budget: int = Field(
        default=800, ge=50, description="Tokens of injected chunks."
    )
    retrieval_context_turns: int = Field(
        default=1, ge=0, description="Earlier user turns added to the retrieval query."
    )
    meta_info_events: MetaInfoEvents = Field(
        default="engine",
        description="Who gets meta.info events: 'engine' = TRTC engine calls (X-Sdk-App-Id "
        "or X-Room-Id), 'always' = every call with a task, 'never'.",
    )
    tool_max_steps: int = Field(default=4, ge=1, le=16, description="Model calls per turn.")

    # Engine callbacks.
    callback_sign_key: SecretStr | None = Field(
        default=None, description="The key the engine signs callbacks with (console setting)."
    )
    callback_sign_keys: dict[str, SecretStr] = Field(
        default_factory=dict,
        description="Per-SdkAppId callback keys (JSON object); these apps' callbacks must use "
        "their own key, which also authenticates the SdkAppId header.",
    )
    spoken_grace_seconds: float = Field(
        default=2.0, gt=0, description="How long a 905 waits for its turn before it is added."
    )

    # Usage, budgets and cost (proxy.usage).
    prices: dict[str, ModelPrice] = Field(
        default_factory=dict, description="Per-model prices (the model the upstream reports)."
    )
    app_budgets: dict[str, Budget] = Field(
        default_factory=dict, description="Daily token and cost caps per app id."
    )

    # Observability (proxy.observability): the standard OpenTelemetry variables.
    access_log: bool = Field(default=True, description="One JSON line per request.")
    otel_exporter_otlp_endpoint: str | None = Field(
        default=None,
        validation_alias=AliasChoices("otel_exporter_otlp_endpoint", "OTEL_EXPORTER_OTLP_ENDPOINT"),
        description="OTLP/HTTP collector base URL; set = export traces.",
    )
    otel_exporter_otlp_traces_endpoint: str | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "otel_exporter_otlp_traces_endpoint", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
        ),
        description="Full OTLP/HTTP traces URL (wins over the base URL).",
    )

    # Retell's LLM WebSocket (/retell/llm-websocket/{call_id}).
    retell_model: str = Field(
        default="gpt-4o-mini", description="Model for Retell calls (a profile's model wins)."
    )
    retell_profile: str | None = Field(default=None, description="Profile for Retell calls.")
    retell_begin_message: str = Field(
        default="", description="What the agent says first; empty: it waits for the caller."
    )

    # Per-task context.
    redis_url: str | None = None
    redis_password: SecretStr | None = None
    redis_sentinels: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="host:port list; use Redis Sentinel instead of a URL."
    )
    redis_sentinel_master: str = "mymaster"
    redis_sentinel_password: SecretStr | None = None
    redis_db: int = Field(default=0, ge=0)
    redis_cluster: bool | None = Field(
        default=None,
        description="Redis Cluster: true uses the cluster client (PROXY_REDIS_URL names any "
        "node), false a standalone client; unset asks the server on start (INFO cluster).",
    )
    ready_requires_history: bool = Field(
        default=False,
        description="Fail /readyz while Redis is down (off: answer statelessly, report degraded).",
    )
    redis_prefix: str = Field(
        default="proxy:",
        pattern=r"^[^{}\s]*$",
        description="Key prefix; no braces: each task's keys share one cluster hash slot.",
    )
    redis_timeout_ms: int = Field(default=250, ge=10)
    redis_max_connections: int = Field(
        default=1000,
        ge=10,
        description="Connections to Redis per process, at most. The client refuses a call "
        "beyond them at once (it does not wait): size it for the calls in flight at peak "
        "(a turn starts with one script, then writes its commit and lease refreshes).",
    )
    lease_seconds: float = Field(
        default=4.0,
        ge=1.0,
        le=60.0,
        description="In-flight lease of a reply, refreshed while it streams: a killed "
        "replica's replies count as in flight (905s wait, retries on another replica wait "
        "to adopt) for at most this long.",
    )
    history_ttl_seconds: int = Field(default=86_400, ge=60)
    history_closed_ttl_seconds: int = Field(default=600, ge=1)
    history: HistoryPolicy = Field(default_factory=HistoryPolicy)

    @field_validator("api_keys", "redis_sentinels", "metrics_models", mode="before")
    @classmethod
    def _parse_lists(cls, value: Any) -> Any:
        return _split_csv(value)

    @field_validator(
        "admin_token",
        "upstream_api_key",
        "callback_sign_key",
        "embeddings_api_key",
        "redis_password",
        "redis_sentinel_password",
        mode="before",
    )
    @classmethod
    def _empty_secret_is_unset(cls, value: Any) -> Any:
        # An empty callback key would let anyone sign callbacks: "" means "not set".
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @model_validator(mode="after")
    def _refuse_unsafe_production(self) -> Settings:
        if self.env == "production":
            unsafe = production_refusals(self)
            if unsafe:
                raise ValueError("; ".join(unsafe))
        if self.admin_token is not None and len(self.admin_token.get_secret_value()) < 16:
            raise ValueError("PROXY_ADMIN_TOKEN must be at least 16 characters")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_path = os.environ.get("PROXY_CONFIG")
        if config_path:
            data = read_config_file(config_path, settings_cls)  # unknown keys refused
            sources.append(InitSettingsSource(settings_cls, init_kwargs=data))
        return tuple(sources)

    # Derived views.

    @property
    def auth_required(self) -> bool:
        return bool(self.api_keys)

    def default_target(self) -> UpstreamTarget | None:
        if not self.upstream_base_url:
            return None
        return UpstreamTarget(
            base_url=self.upstream_base_url,
            api_key=self.upstream_api_key,
            connect_timeout=self.upstream_connect_timeout,
            first_token_timeout=self.upstream_first_token_timeout,
            total_timeout=self.upstream_total_timeout,
        )


def production_refusals(settings: Settings) -> list[str]:
    """The defaults that are fine on a laptop and wrong in production, each naming its
    setting. ``PROXY_ENV=production`` refuses to start with any of them."""
    refusals = []
    if not settings.upstream_base_url and not settings.routes:
        refusals.append(
            "PROXY_UPSTREAM_BASE_URL (or routes in PROXY_CONFIG) is required when "
            "PROXY_ENV=production: without it the built-in echo model answers every request"
        )
    if settings.admin_token is None:
        refusals.append("PROXY_ADMIN_TOKEN is required when PROXY_ENV=production")
    if not settings.database_url:
        refusals.append(
            "PROXY_DATABASE_URL is required when PROXY_ENV=production (unset = a SQLite "
            "file in the working directory)"
        )
    if not settings.redis_url and not settings.redis_sentinels:
        refusals.append(
            "PROXY_REDIS_URL (or PROXY_REDIS_SENTINELS) is required when PROXY_ENV=production "
            "(unset = history in this process only, lost on restart)"
        )
    return refusals
