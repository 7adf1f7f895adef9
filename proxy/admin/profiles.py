"""Agent profiles: how a caller's conversations are shaped."""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy.ext.asyncio import AsyncSession

from proxy.admin.models import ProfileCreate, ProfileIn, ProfileOut
from proxy.admin.named import NamedAdmin
from proxy.db.models import Profile
from proxy.db.repositories import ProfileRepository
from proxy.errors import Conflict, NotFound
from proxy.settings import ProfileSpec


class ProfileAdmin(NamedAdmin[Profile, ProfileSpec, ProfileOut]):
    kind = "profile"

    def _repository(self, session: AsyncSession) -> ProfileRepository:
        return ProfileRepository(session)

    def _declared(self) -> Mapping[str, ProfileSpec]:
        return self._store.settings.profiles

    def _name_of(self, row: Profile) -> str:
        return row.name

    def _from_row(self, row: Profile) -> ProfileOut:
        return ProfileOut.from_row(row)

    def _from_spec(self, name: str, spec: ProfileSpec) -> ProfileOut:
        return ProfileOut.from_spec(name, spec)

    async def create(self, body: ProfileCreate) -> ProfileOut:
        self._refuse_declared(body.name)
        async with self._store.transaction() as session:
            profiles = ProfileRepository(session)
            if await profiles.get(body.name) is not None:
                raise Conflict(f"profile {body.name!r} exists: replace it instead")
            created = ProfileOut.from_row(await profiles.create(**body.model_dump()))
        await self._changed()
        return created

    async def replace(self, name: str, body: ProfileIn) -> ProfileOut:
        self._refuse_declared(name)
        async with self._store.transaction() as session:
            profile = await ProfileRepository(session).update(name, **body.model_dump())
            if profile is None:
                raise NotFound(f"no profile {name!r}: create it first")
            replaced = ProfileOut.from_row(profile)
        await self._changed()
        return replaced
