"""Server-side tools: functions the model may call (the proxy POSTs to them)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from proxy.admin.models import ToolCreate, ToolIn, ToolOut
from proxy.admin.named import NamedAdmin
from proxy.db.models import Tool
from proxy.errors import Conflict, NotFound
from proxy.tools.repository import ToolRepository


class ToolAdmin(NamedAdmin[Tool, ToolOut, ToolOut]):
    """Tools live in the database only (nothing declares them in the configuration)."""

    kind = "tool"

    def _repository(self, session: AsyncSession) -> ToolRepository:
        return ToolRepository(session)

    def _name_of(self, row: Tool) -> str:
        return row.name

    def _from_row(self, row: Tool) -> ToolOut:
        return ToolOut.from_row(row)

    async def _changed(self) -> None:
        await self._store.refresh_tools()

    async def create(self, body: ToolCreate) -> ToolOut:
        async with self._store.transaction() as session:
            tools = ToolRepository(session)
            if await tools.get(body.name) is not None:
                raise Conflict(f"tool {body.name!r} exists: replace it instead")
            created = ToolOut.from_row(await tools.create(**body.model_dump()))
        await self._changed()
        return created

    async def replace(self, name: str, body: ToolIn) -> ToolOut:
        async with self._store.transaction() as session:
            tool = await ToolRepository(session).update(name, **body.model_dump())
            if tool is None:
                raise NotFound(f"no tool {name!r}: create it first")
            replaced = ToolOut.from_row(tool)
        await self._changed()
        return replaced
