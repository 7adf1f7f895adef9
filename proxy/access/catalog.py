"""Keys, profiles and routes as the hot path sees them: in memory, refreshed from SQL.

Config-declared entities (YAML / environment) are fixed for the process; database ones
are loaded at start and every ``key_cache_seconds`` (and at once after an admin change
on this replica). Authentication therefore never waits on the database: with the
database down, the last loaded keys keep working.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from proxy.db.repositories import KeyRepository, ProfileRepository, RouteRepository
from proxy.settings import HistoryPolicy, ProfileSpec, Settings, UpstreamTarget
from proxy.upstream.routes import RouteTable

log = logging.getLogger(__name__)


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Caller:
    """Who a request's bearer key says is calling."""

    name: str
    origin: str  # "env" | "config" | "database" | "anonymous"
    key_id: str | None = None
    profile: str | None = None
    allow_profile_override: bool = True
    app_id: str | None = None
    rate_limit_per_minute: int | None = None
    expires_at: datetime | None = None
    max_tokens_per_day: int | None = None  # daily budgets (proxy.usage.budgets)
    max_cost_per_day: float | None = None
    meta_info_events: str | None = None  # overrides PROXY_META_INFO_EVENTS


ANONYMOUS = Caller(name="anonymous", origin="anonymous")


@dataclass(frozen=True, slots=True)
class ResolvedProfile:
    name: str
    spec: ProfileSpec
    policy: HistoryPolicy
    origin: str


class Catalog:
    def __init__(
        self,
        settings: Settings,
        sessions: async_sessionmaker[AsyncSession],
        routes: RouteTable,
    ) -> None:
        self._settings = settings
        self._sessions = sessions
        self._routes = routes
        self._static_keys = self._config_keys(settings)
        self._db_keys: dict[str, Caller] = {}
        self._profiles: dict[str, ResolvedProfile] = {
            name: self._resolve(name, spec, "config") for name, spec in settings.profiles.items()
        }
        self._refresher: asyncio.Task[None] | None = None
        self.refresh_errors = 0

    # Loading.

    @staticmethod
    def _config_keys(settings: Settings) -> dict[str, Caller]:
        keys = {
            key_hash(secret.get_secret_value()): Caller(name="env key", origin="env")
            for secret in settings.api_keys
        }
        for spec in settings.keys:
            digest = spec.key_sha256
            if spec.key_env:
                value = os.environ.get(spec.key_env)
                if not value:
                    log.warning(
                        "config key %r: environment variable %s is unset", spec.name, spec.key_env
                    )
                    continue
                digest = key_hash(value)
            assert digest is not None
            keys[digest.lower()] = Caller(
                name=spec.name,
                origin="config",
                profile=spec.profile,
                allow_profile_override=spec.allow_profile_override,
                app_id=spec.app_id,
                rate_limit_per_minute=spec.rate_limit_per_minute,
                max_tokens_per_day=spec.max_tokens_per_day,
                max_cost_per_day=spec.max_cost_per_day,
                meta_info_events=spec.meta_info_events,
            )
        return keys

    def _resolve(self, name: str, spec: ProfileSpec, origin: str) -> ResolvedProfile:
        base = self._settings.history.model_dump()
        policy = HistoryPolicy.model_validate({**base, **spec.history})
        return ResolvedProfile(name, spec, policy, origin)

    async def refresh(self) -> None:
        """Reload database keys, profiles and routes; keeps the old ones on failure."""
        try:
            async with self._sessions() as session:
                keys = await KeyRepository(session).active()
                profiles = await ProfileRepository(session).list_all()
                routes = await RouteRepository(session).list_all()
        except Exception as exc:
            self.refresh_errors += 1
            log.error("could not load keys/profiles/routes from the database: %r", exc)
            return
        self._db_keys = {
            key.key_hash: Caller(
                name=key.name,
                origin="database",
                key_id=key.id,
                profile=key.profile_name,
                allow_profile_override=key.allow_profile_override,
                app_id=key.app_id,
                rate_limit_per_minute=key.rate_limit_per_minute,
                expires_at=key.expires_at,
                max_tokens_per_day=key.max_tokens_per_day,
                max_cost_per_day=key.max_cost_per_day,
                meta_info_events=key.meta_info_events,
            )
            for key in keys
        }
        resolved = {name: p for name, p in self._profiles.items() if p.origin == "config"}
        for profile in profiles:
            if profile.name not in resolved:
                spec = ProfileSpec.model_validate(profile, from_attributes=True)
                resolved[profile.name] = self._resolve(profile.name, spec, "database")
        self._profiles = resolved
        self._routes.set_database_routes(
            {r.alias: [UpstreamTarget.model_validate(t) for t in r.targets] for r in routes}
        )

    async def start(self) -> None:
        await self.refresh()
        self._refresher = asyncio.create_task(self._refresh_forever())

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(self._settings.key_cache_seconds)
            await self.refresh()

    async def close(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()

    # Lookups (hot path: memory only).

    @property
    def auth_required(self) -> bool:
        return bool(self._static_keys or self._db_keys)

    def authenticate(self, token: str | None) -> Caller | None:
        if not self.auth_required:
            return ANONYMOUS
        if not token:
            return None
        digest = key_hash(token)
        caller = self._static_keys.get(digest) or self._db_keys.get(digest)
        if caller is None:
            return None
        if caller.expires_at is not None and caller.expires_at <= datetime.now(UTC):
            return None
        return caller

    def profile(self, name: str) -> ResolvedProfile | None:
        return self._profiles.get(name)

    def source_of(self, kind: str, name: str) -> str | None:
        """ "config" for entities declared in YAML/env (read-only through the admin API)."""
        if kind == "profile":
            return "config" if name in self._settings.profiles else None
        if kind == "route":
            return "config" if name in self._settings.routes else None
        if kind == "key":
            return "config" if any(k.name == name for k in self._settings.keys) else None
        return None

    def config_keys(self) -> list[dict[str, Any]]:
        return [
            {"name": k.name, "profile": k.profile, "app_id": k.app_id, "origin": "config"}
            for k in self._settings.keys
        ]
