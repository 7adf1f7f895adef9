"""Reading the chat pipeline's own SSE output back as events.

Protocols other than chat completions (the Responses API, Retell's WebSocket) drive the
same pipeline (``ChatService.stream``) and translate what it sends: chunk events,
meta.info events and a mid-stream error. Decoding here keeps every translator on one
reading of those frames.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from proxy.errors import UpstreamError
from proxy.upstream.sse import DONE, SSEDecoder


@dataclass(slots=True)
class ToolCallDelta:
    index: int
    call_id: str | None
    name: str
    arguments: str


@dataclass(slots=True)
class ChunkEvent:
    """What one pipeline event adds: text, tool-call pieces, a finish, meta.info."""

    text: str = ""
    tool_calls: list[ToolCallDelta] = field(default_factory=list)
    finish_reason: str | None = None
    metainfo: dict[str, Any] | None = None
    usage: dict[str, Any] | None = None


def parse_event(payload: bytes) -> ChunkEvent | None:
    """One SSE data payload; None for ``[DONE]``. A stream error raises ``UpstreamError``."""
    if payload == DONE:
        return None
    try:
        event = orjson.loads(payload)
    except orjson.JSONDecodeError:
        raise UpstreamError("the reply stream carried an event that is not JSON") from None
    if not isinstance(event, dict):
        return ChunkEvent()
    if "error" in event:
        error = event.get("error") or {}
        message = error.get("message") if isinstance(error, dict) else None
        raise UpstreamError(str(message or "the upstream failed mid-stream"))
    out = ChunkEvent(usage=event.get("usage") if isinstance(event.get("usage"), dict) else None)
    if event.get("type") == "meta.info" and isinstance(event.get("metainfo"), dict):
        out.metainfo = event["metainfo"]
    for choice in event.get("choices") or ():
        if not isinstance(choice, dict) or choice.get("index", 0) != 0:
            continue
        out.finish_reason = choice.get("finish_reason") or None
        delta = choice.get("delta") or {}
        if isinstance(delta.get("content"), str):
            out.text = delta["content"]
        for call in delta.get("tool_calls") or ():
            if not isinstance(call, dict):
                continue
            function = call.get("function") or {}
            out.tool_calls.append(
                ToolCallDelta(
                    index=int(call.get("index", 0)),
                    call_id=call.get("id") or None,
                    name=str(function.get("name") or ""),
                    arguments=str(function.get("arguments") or ""),
                )
            )
    return out


async def chunk_events(frames: AsyncIterator[bytes]) -> AsyncIterator[ChunkEvent]:
    """The events of a pipeline stream, up to ``[DONE]``; the stream is closed after."""
    decoder = SSEDecoder()
    try:
        async for data in frames:
            for payload in decoder.feed(data):
                event = parse_event(payload)
                if event is None:
                    return
                yield event
        for payload in decoder.flush():
            event = parse_event(payload)
            if event is None:
                return
            yield event
        raise UpstreamError("the reply stream ended before [DONE]")
    finally:
        await frames.aclose()  # type: ignore[attr-defined]
