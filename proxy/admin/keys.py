"""Caller keys: created in the database (the key is shown once), or declared in config."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from proxy.admin.models import CONFIG_KEY_PREFIX, KeyCreate, KeyCreated, KeyOut, KeyUpdate
from proxy.admin.store import AdminStore, read_only
from proxy.db.repositories import KeyRepository, ProfileRepository
from proxy.errors import Conflict, InvalidRequest, NotFound


@dataclass(frozen=True, slots=True)
class Revoked:
    key: KeyOut
    already: bool  # it was revoked before this call (revoking again changes nothing)


class KeyAdmin:
    def __init__(self, store: AdminStore) -> None:
        self._store = store

    def _refuse_config_key(self, key_id: str) -> None:
        if key_id.startswith(CONFIG_KEY_PREFIX):
            name = key_id.removeprefix(CONFIG_KEY_PREFIX)
            if self._store.declared_in_config("key", name):
                raise read_only("key", name)
            raise NotFound(f"no key {key_id!r}")

    async def create(self, body: KeyCreate) -> KeyCreated:
        store = self._store
        if store.declared_in_config("key", body.name):
            raise Conflict(f"a config-declared key is named {body.name!r}: choose another name")
        async with store.transaction() as session:
            await self._check_profile(session, body.profile)
            key, plain = await KeyRepository(session).create(
                body.name,
                profile_name=body.profile,
                allow_profile_override=body.allow_profile_override,
                app_id=body.app_id,
                rate_limit_per_minute=body.rate_limit_per_minute,
                max_tokens_per_day=body.max_tokens_per_day,
                max_cost_per_day=body.max_cost_per_day,
                meta_info_events=body.meta_info_events,
                expires_at=body.expires_at,
            )
            created = KeyCreated(**KeyOut.from_row(key).model_dump(), key=plain)
        await store.refresh_catalog()
        return created

    async def _check_profile(self, session: AsyncSession, profile: str | None) -> None:
        if profile is not None and not (
            self._store.declared_in_config("profile", profile)
            or await ProfileRepository(session).get(profile) is not None
        ):
            raise InvalidRequest(f"no profile {profile!r}", param="profile", status=422)

    async def update(self, key_id: str, body: KeyUpdate) -> KeyOut:
        """Change a database key's name, profile, rate limit or budgets (only those sent)."""
        self._refuse_config_key(key_id)
        store = self._store
        if body.name and store.declared_in_config("key", body.name):
            raise Conflict(f"a config-declared key is named {body.name!r}: choose another name")
        async with store.transaction() as session:
            key = await KeyRepository(session).get(key_id)
            if key is None:
                raise NotFound(f"no key {key_id!r}")
            changes = body.changes()
            if "profile_name" in changes:
                await self._check_profile(session, body.profile)
            for column, value in changes.items():
                setattr(key, column, value)
            await session.flush()
            updated = KeyOut.from_row(key)
        await store.refresh_catalog()
        return updated

    async def list(self) -> list[KeyOut]:
        """Config-declared keys first, then the database's (oldest first)."""
        async with self._store.transaction() as session:
            stored = await KeyRepository(session).list_all()
        config = [KeyOut.from_spec(spec) for spec in self._store.settings.keys]
        return config + [KeyOut.from_row(key) for key in stored]

    async def get(self, key_id: str) -> KeyOut:
        if key_id.startswith(CONFIG_KEY_PREFIX):
            name = key_id.removeprefix(CONFIG_KEY_PREFIX)
            for spec in self._store.settings.keys:
                if spec.name == name:
                    return KeyOut.from_spec(spec)
            raise NotFound(f"no key {key_id!r}")
        async with self._store.transaction() as session:
            key = await KeyRepository(session).get(key_id)
            if key is None:
                raise NotFound(f"no key {key_id!r}")
            return KeyOut.from_row(key)

    async def revoke(self, key_id: str) -> Revoked:
        """The key stops working at once on this replica, within the cache time elsewhere."""
        self._refuse_config_key(key_id)
        async with self._store.transaction() as session:
            keys = KeyRepository(session)
            key = await keys.get(key_id)
            if key is None:
                raise NotFound(f"no key {key_id!r}")
            already = key.revoked_at is not None
            await keys.revoke(key_id)
            revoked = Revoked(KeyOut.from_row(key), already)
        await self._store.refresh_catalog()
        return revoked

    async def delete(self, key_id: str) -> None:
        self._refuse_config_key(key_id)
        async with self._store.transaction() as session:
            if not await KeyRepository(session).delete(key_id):
                raise NotFound(f"no key {key_id!r}")
        await self._store.refresh_catalog()

    async def database_keys_exist(self) -> bool:
        """Whether any key that may authenticate now is stored (then auth is required)."""
        async with self._store.transaction() as session:
            return bool(await KeyRepository(session).active())
