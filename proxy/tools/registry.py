"""Server-side tools as the hot path sees them: in memory, refreshed from SQL.

Tools are loaded at start and every ``refresh_seconds`` (and at once after an admin
change on this replica), like the catalog's keys and profiles: a chat turn never
waits on the database, and with the database down the last loaded tools keep working.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from proxy.db.models import Tool
from proxy.tools.repository import ToolRepository

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """A tool the model may call: the proxy POSTs the call's arguments to ``url``."""

    name: str
    description: str
    parameters: dict[str, Any] = field(hash=False)  # a JSON schema of "type": "object"
    url: str
    timeout_seconds: float = 5.0
    secret_header: str | None = None  # header name
    secret_env: str | None = None  # environment variable holding the header's value
    filler: str | None = None  # spoken while the tool runs
    show_result: bool = False  # pass the result to the client app (meta.info)
    allow_private_network: bool = False

    @classmethod
    def from_row(cls, tool: Tool) -> ToolSpec:
        return cls(
            name=tool.name,
            description=tool.description,
            parameters=dict(tool.parameters or {}),
            url=tool.url,
            timeout_seconds=tool.timeout_seconds,
            secret_header=tool.secret_header,
            secret_env=tool.secret_env,
            filler=tool.filler,
            show_result=tool.show_result,
            allow_private_network=tool.allow_private_network,
        )

    def openai_schema(self) -> dict[str, Any]:
        """The entry for the request's ``tools`` list."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.parameters,
            },
        }


class ToolRegistry:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        refresh_seconds: float | None = None,
    ) -> None:
        self._sessions = sessions
        self._refresh_seconds = refresh_seconds
        self._tools: dict[str, ToolSpec] = {}
        self._warned: set[str] = set()
        self._refresher: asyncio.Task[None] | None = None
        self.refresh_errors = 0

    async def refresh(self) -> None:
        """Reload every tool from the database; keeps the old ones on failure."""
        try:
            async with self._sessions() as session:
                rows = await ToolRepository(session).list_all()
                tools = {row.name: ToolSpec.from_row(row) for row in rows}
        except Exception as exc:
            self.refresh_errors += 1
            log.error("could not load tools from the database: %r", exc)
            return
        self._tools = tools

    async def start(self) -> None:
        """Load now, then every ``refresh_seconds`` (if set) so other replicas' edits arrive."""
        await self.refresh()
        if self._refresh_seconds:
            self._refresher = asyncio.create_task(self._refresh_forever(self._refresh_seconds))

    async def _refresh_forever(self, seconds: float) -> None:
        while True:
            await asyncio.sleep(seconds)
            await self.refresh()

    async def close(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            self._refresher = None

    # Lookups (hot path: memory only).

    def get(self, name: str) -> ToolSpec | None:
        return self._tools.get(name)

    def all(self) -> list[ToolSpec]:
        return list(self._tools.values())

    def for_profile(self, names: list[str]) -> list[ToolSpec]:
        """The profile's tools in its order; unknown names are skipped (warned once each)."""
        specs: list[ToolSpec] = []
        for name in names:
            spec = self._tools.get(name)
            if spec is not None:
                specs.append(spec)
            elif name not in self._warned:
                self._warned.add(name)
                log.warning("a profile names tool %r, which is not defined: skipped", name)
        return specs
