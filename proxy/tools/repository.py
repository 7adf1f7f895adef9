"""Data access for server-side tools (the caller owns the transaction)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from proxy.db.models import Tool


class ToolRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, name: str) -> Tool | None:
        return await self.session.get(Tool, name)

    async def list_all(self) -> Sequence[Tool]:
        return (await self.session.scalars(select(Tool).order_by(Tool.name))).all()

    async def create(self, name: str, **fields: Any) -> Tool:
        tool = Tool(name=name, **fields)
        self.session.add(tool)
        await self.session.flush()
        return tool

    async def update(self, name: str, **fields: Any) -> Tool | None:
        tool = await self.get(name)
        if tool is not None:
            for field, value in fields.items():
                setattr(tool, field, value)
            await self.session.flush()
        return tool

    async def delete(self, name: str) -> bool:
        result = await self.session.execute(delete(Tool).where(Tool.name == name))
        return bool(result.rowcount)  # type: ignore[attr-defined]
