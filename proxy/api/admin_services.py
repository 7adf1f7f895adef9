"""The admin services a request works with (``proxy.admin``), as a FastAPI dependency."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from proxy.admin import Admin, AdminStore


async def _nothing_to_refresh() -> None:
    return None


def admin_services(request: Request) -> Admin:
    """Admin services over this replica's database; a change refreshes this replica's
    catalog and tool registry at once (other replicas poll)."""
    state = request.app.state
    catalog = getattr(state, "catalog", None)
    tools = getattr(state, "tools", None)
    return Admin(
        AdminStore(
            state.settings,
            state.sessions,
            refresh_catalog=catalog.refresh if catalog is not None else _nothing_to_refresh,
            refresh_tools=tools.refresh if tools is not None else _nothing_to_refresh,
        )
    )


AdminServices = Annotated[Admin, Depends(admin_services)]
