"""The shape profiles, routes and tools share: named entities in the database, some
also declared in the configuration (listed, shown, never changed here)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Generic, Protocol, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from proxy.admin.store import AdminStore, ConfigKind, read_only
from proxy.errors import NotFound

Row = TypeVar("Row")
Out = TypeVar("Out")
Spec = TypeVar("Spec")
Row_co = TypeVar("Row_co", covariant=True)


class NamedRepository(Protocol[Row_co]):
    async def get(self, name: str, /) -> Row_co | None: ...
    async def list_all(self) -> Sequence[Row_co]: ...
    async def delete(self, name: str, /) -> bool: ...


class NamedAdmin(Generic[Row, Spec, Out]):
    """List, get and delete by name; a config declaration shadows a database entity of
    the same name (as on the hot path) and is read-only."""

    kind: ConfigKind | str  # "profile", "route", "tool": used in messages

    def __init__(self, store: AdminStore) -> None:
        self._store = store

    # What each entity says about itself.

    def _repository(self, session: AsyncSession) -> NamedRepository[Row]:
        raise NotImplementedError

    def _declared(self) -> Mapping[str, Spec]:
        """Config-declared entities by name (none by default)."""
        return {}

    def _name_of(self, row: Row) -> str:
        raise NotImplementedError

    def _from_row(self, row: Row) -> Out:
        raise NotImplementedError

    def _from_spec(self, name: str, spec: Spec) -> Out:
        raise NotImplementedError

    async def _changed(self) -> None:
        await self._store.refresh_catalog()

    # The shared operations.

    def _refuse_declared(self, name: str) -> None:
        if name in self._declared():
            raise read_only(self.kind, name)

    async def list(self) -> list[Out]:
        """Config-declared first (by name), then the database's not shadowed by them."""
        declared = self._declared()
        async with self._store.transaction() as session:
            stored = await self._repository(session).list_all()
        return [self._from_spec(name, spec) for name, spec in sorted(declared.items())] + [
            self._from_row(row) for row in stored if self._name_of(row) not in declared
        ]

    async def get(self, name: str) -> Out:
        spec = self._declared().get(name)
        if spec is not None:
            return self._from_spec(name, spec)
        async with self._store.transaction() as session:
            row = await self._repository(session).get(name)
            if row is None:
                raise NotFound(f"no {self.kind} {name!r}")
            return self._from_row(row)

    async def delete(self, name: str) -> None:
        self._refuse_declared(name)
        async with self._store.transaction() as session:
            if not await self._repository(session).delete(name):
                raise NotFound(f"no {self.kind} {name!r}")
        await self._changed()
