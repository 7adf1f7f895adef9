"""The admin API (bearer ``PROXY_ADMIN_TOKEN``): read a task's live history."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from proxy.api.deps import AdminDep
from proxy.errors import NotFound

router = APIRouter(prefix="/admin", dependencies=[AdminDep], tags=["admin"])

MAX_MESSAGES_SHOWN = 1000


@router.get("/tasks/{task_id}", summary="A task's live history")
async def get_task(task_id: str, request: Request) -> dict[str, Any]:
    history = await request.app.state.history.load(task_id, MAX_MESSAGES_SHOWN)
    if history.total_messages == 0 and not history.summary:
        raise NotFound(f"task {task_id!r} has no history")
    return {
        "task_id": task_id,
        "summary": history.summary,
        "total_messages": history.total_messages,
        "messages": [
            {
                "id": m.id,
                "role": m.role,
                "content": m.content,
                "name": m.name,
                "tool_calls": m.tool_calls,
                "tool_call_id": m.tool_call_id,
                "interrupted": m.interrupted,
                "request_id": m.request_id,
                "created_at": m.created_at,
                "source": m.source,
            }
            for m in history.messages
        ],
    }
