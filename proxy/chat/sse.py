"""SSE frames the proxy sends to its caller."""

from __future__ import annotations

import time
from typing import Any

import orjson

from proxy.errors import ProxyError

DONE_FRAME = b"data: [DONE]\n\n"


def frame(payload: bytes) -> bytes:
    return b"data: " + payload + b"\n\n"


def json_frame(obj: dict[str, Any]) -> bytes:
    return frame(orjson.dumps(obj))


def error_frame(error: ProxyError) -> bytes:
    """After the first byte the status is already sent: errors travel in the stream."""
    return json_frame(error.envelope())


def chunk_event(
    completion_id: str, model: str | None, delta: dict[str, Any], finish_reason: str | None
) -> dict[str, Any]:
    return {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model or "",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
    }
