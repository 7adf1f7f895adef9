"""Replaying a finished answer to a retried request id, without calling the upstream."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

from proxy.chat.sse import DONE_FRAME, chunk_event, json_frame
from proxy.context.history import StoredAnswer


def _completion_id(answer: StoredAnswer) -> str:
    return answer.completion_id or "chatcmpl-replay"


async def replay_frames(answer: StoredAnswer) -> AsyncIterator[bytes]:
    completion_id = _completion_id(answer)
    delta = {"role": "assistant", "content": answer.content}
    yield (
        json_frame(chunk_event(completion_id, answer.model, delta, None))
        + json_frame(chunk_event(completion_id, answer.model, {}, answer.finish_reason))
        + DONE_FRAME
    )


def replay_completion(answer: StoredAnswer) -> dict[str, Any]:
    return {
        "id": _completion_id(answer),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": answer.model or "",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": answer.content},
                "finish_reason": answer.finish_reason,
            }
        ],
    }
