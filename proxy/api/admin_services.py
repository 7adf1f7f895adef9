"""The admin services a request works with (``proxy.admin``), as a FastAPI dependency."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from proxy.admin import Admin, AdminStore
from proxy.services import services


def admin_services(request: Request) -> Admin:
    """Admin services over this replica's database; a change refreshes this replica's
    catalog and tool registry at once (other replicas poll)."""
    running = services(request)
    return Admin(
        AdminStore(
            running.settings,
            running.sessions,
            refresh_catalog=running.catalog.refresh,
            refresh_tools=running.tools.refresh,
        )
    )


AdminServices = Annotated[Admin, Depends(admin_services)]
