"""Routes: a model alias served by ordered upstream targets."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from proxy.admin.models import RouteIn, RouteOut
from proxy.admin.named import NamedAdmin
from proxy.db.models import Route
from proxy.db.repositories import RouteRepository
from proxy.errors import InvalidRequest
from proxy.settings import ModelRoute


@dataclass(frozen=True, slots=True)
class PutRoute:
    route: RouteOut
    created: bool  # there was no route of that alias before


class RouteAdmin(NamedAdmin[Route, ModelRoute, RouteOut]):
    kind = "route"

    def _repository(self, session: AsyncSession) -> RouteRepository:
        return RouteRepository(session)

    def _declared(self) -> Mapping[str, ModelRoute]:
        return self._store.settings.routes

    def _name_of(self, row: Route) -> str:
        return row.alias

    def _from_row(self, row: Route) -> RouteOut:
        return RouteOut.from_row(row)

    def _from_spec(self, name: str, spec: ModelRoute) -> RouteOut:
        return RouteOut.from_spec(name, spec)

    async def put(self, alias: str, body: RouteIn) -> PutRoute:
        """Create or replace the route of ``alias``."""
        self._refuse_declared(alias)
        if not alias.strip() or alias != alias.strip():
            raise InvalidRequest(
                "a route alias must not be blank or padded", param="alias", status=422
            )
        targets = [target.model_dump() for target in body.targets]
        async with self._store.transaction() as session:
            routes = RouteRepository(session)
            created = await routes.get(alias) is None
            stored = RouteOut.from_row(await routes.put(alias, targets))
        await self._changed()
        return PutRoute(stored, created)
