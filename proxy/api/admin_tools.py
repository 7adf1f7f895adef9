"""Admin API: server-side tools (the logic is in ``proxy.admin.tools``).

A tool's secret is never stored: only the name of the environment variable that
holds it on every replica (``secret_env``) and the header it goes in. Every change
refreshes this replica's tool registry at once; other replicas poll.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response, status

from proxy.admin.models import TOOL_NAME_PATTERN, ToolCreate, ToolIn, ToolOut
from proxy.api.admin_services import AdminServices

router = APIRouter()

ToolName = Annotated[str, Path(pattern=TOOL_NAME_PATTERN, description="The function name.")]


@router.post(
    "/tools",
    summary="Create a tool",
    response_model=ToolOut,
    status_code=status.HTTP_201_CREATED,
)
async def create_tool(body: ToolCreate, admin: AdminServices) -> ToolOut:
    return await admin.tools.create(body)


@router.get("/tools", summary="List tools", response_model=list[ToolOut])
async def list_tools(admin: AdminServices) -> list[ToolOut]:
    return await admin.tools.list()


@router.get("/tools/{name}", summary="One tool", response_model=ToolOut)
async def get_tool(name: ToolName, admin: AdminServices) -> ToolOut:
    return await admin.tools.get(name)


@router.put("/tools/{name}", summary="Replace a tool's settings", response_model=ToolOut)
async def replace_tool(name: ToolName, body: ToolIn, admin: AdminServices) -> ToolOut:
    return await admin.tools.replace(name, body)


@router.delete(
    "/tools/{name}",
    summary="Delete a tool (profiles naming it skip it)",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
)
async def delete_tool(name: ToolName, admin: AdminServices) -> None:
    await admin.tools.delete(name)
