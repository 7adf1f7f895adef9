"""meta.info: what the client app should see but the voice should not say (CONTRACT §3).

In a stream it is an extra SSE event the engine pushes to the room as a type-10002
message; a non-streaming reply carries the same object as a top-level ``metainfo``.

    data: {"id": "chatcmpl-123", "type": "meta.info", "created": 1694268190, "metainfo": {...}}

Operators queue values for a task through the admin API; they go out with the
task's next reply. The queue lives in the history store under its own key.
"""

from __future__ import annotations

import time
from typing import Any

from proxy.chat.sse import json_frame
from proxy.context.history import HistoryStore
from proxy.observability import turnlog

QUEUE_SUFFIX = "#metainfo"


def meta_info_event(completion_id: str, metainfo: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": completion_id,
        "type": "meta.info",
        "created": int(time.time()),
        "metainfo": metainfo,
    }


def meta_info_frame(completion_id: str, metainfo: dict[str, Any]) -> bytes:
    turnlog.meta_sent(metainfo)  # the console's timeline shows what the client app got
    return json_frame(meta_info_event(completion_id, metainfo))


def merge(items: list[dict[str, Any]]) -> dict[str, Any]:
    """One object for a non-streaming reply: later values win, lists of sources add up."""
    merged: dict[str, Any] = {}
    for item in items:
        for key, value in item.items():
            if isinstance(value, list) and isinstance(merged.get(key), list):
                merged[key] = merged[key] + value
            else:
                merged[key] = value
    return merged


async def queue_for_task(store: HistoryStore, task_id: str, metainfo: dict[str, Any]) -> None:
    await store.push_pending(task_id + QUEUE_SUFFIX, metainfo)


async def take_queued(store: HistoryStore, task_id: str) -> list[dict[str, Any]]:
    return await store.take_pending(task_id + QUEUE_SUFFIX)
