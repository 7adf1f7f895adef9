"""meta.info: what the client app should see but the voice should not say (CONTRACT §3).

In a stream it is an extra SSE event the engine pushes to the room as a type-10002
message; a non-streaming reply carries the same object as a top-level ``metainfo``.
The event is chunk-shaped, so that strict OpenAI clients (which skip a chunk with no
choices) survive it:

    data: {"id": "chatcmpl-123", "object": "chat.completion.chunk", "created": 1694268190,
           "model": "...", "choices": [], "type": "meta.info", "metainfo": {...}}

Who gets the events is ``PROXY_META_INFO_EVENTS`` (a profile or a caller key may
override it): ``engine`` = calls identified as the TRTC engine (``X-Sdk-App-Id`` or
``X-Room-Id``), ``always`` = every call with a task, ``never``. meta.info from the
upstream follows the same rule.

Operators queue values for a task through the admin API; they go out with the
task's next reply that can carry them (a Responses API reply cannot: they stay
queued). The queue lives in the history store under its own key.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson

from proxy.call import CallContext
from proxy.chat.sse import json_frame
from proxy.context.history import TaskQueues, TurnStart
from proxy.observability import turnlog

MARKER = b'"meta.info"'  # a cheap test before decoding an upstream event


def wants_meta_info(default_mode: str, call: CallContext, profile_mode: str | None) -> bool:
    """Whether this call gets meta.info events (the profile's setting wins, then the key's)."""
    mode = profile_mode or call.meta_info_events or default_mode
    if mode == "never" or call.task_id is None or not call.meta_info_capable:
        return False
    return mode == "always" or call.engine == "trtc"


def meta_info_event(
    completion_id: str, metainfo: dict[str, Any], model: str | None = None
) -> dict[str, Any]:
    return {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model or "",
        "choices": [],
        "type": "meta.info",
        "metainfo": metainfo,
    }


def meta_info_frame(
    completion_id: str, metainfo: dict[str, Any], model: str | None = None
) -> bytes:
    turnlog.meta_sent(metainfo)  # the console's timeline shows what the client app got
    return json_frame(meta_info_event(completion_id, metainfo, model))


def upstream_meta_info(payload: bytes) -> dict[str, Any] | None:
    """The ``metainfo`` of an upstream meta.info event; None for any other event."""
    if payload.find(MARKER) < 0:  # find, not ``in``: ``proxy.upstream.sse.CR``
        return None
    try:
        event = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(event, dict) or event.get("type") != "meta.info":
        return None
    metainfo = event.get("metainfo")
    return metainfo if isinstance(metainfo, dict) else {}


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


async def queue_for_task(store: TaskQueues, task_id: str, metainfo: dict[str, Any]) -> None:
    await store.push_meta(task_id, metainfo)


async def take_queued(store: TaskQueues, task_id: str) -> list[dict[str, Any]]:
    return await store.take_meta(task_id)


def requeue_late_meta(store: TaskQueues, task_id: str, starting: asyncio.Future[TurnStart]) -> None:
    """A turn gave up waiting for its start (``begin_turn``), which still runs: the
    meta.info it takes goes back to the queue, for the next reply."""

    def done(finished: asyncio.Future[TurnStart]) -> None:
        if finished.cancelled() or finished.exception() is not None:
            return
        items = finished.result().meta
        if items:
            task = asyncio.ensure_future(_queue_all(store, task_id, items))
            task.add_done_callback(lambda t: t.cancelled() or t.exception())

    starting.add_done_callback(done)


async def _queue_all(store: TaskQueues, task_id: str, items: list[dict[str, Any]]) -> None:
    for item in items:
        await store.push_meta(task_id, item)
