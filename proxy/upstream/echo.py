"""The built-in ``echo`` model: answers with no upstream configured, so a newcomer sees a stream.

It repeats the last user message, clearly labelled, word by word.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import AsyncGenerator
from typing import Any

import orjson

from proxy.settings import ECHO_MODEL

WORD_GAP_SECONDS = 0.015


def echo_reply(messages: list[Any]) -> str:
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):  # content parts: keep the text ones
                content = " ".join(
                    str(part.get("text", "")) for part in content if isinstance(part, dict)
                )
            if isinstance(content, str) and content.strip():
                return f"(echo model) You said: {content.strip()}"
    return "(echo model) Say something and I will repeat it."


def _chunk(completion_id: str, created: int, delta: dict[str, Any], finish: str | None) -> bytes:
    return orjson.dumps(
        {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": ECHO_MODEL,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
    )


class EchoStream:
    """Same shape as ``UpstreamStream``: ``first_events``, ``batches()``, ``close()``."""

    def __init__(self, body: dict[str, Any]) -> None:
        self._text = echo_reply(body.get("messages") or [])
        self._id = f"chatcmpl-echo-{uuid.uuid4().hex[:12]}"
        self._created = int(time.time())
        self._include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        self.waited = 0.0
        self.first_events = [
            _chunk(self._id, self._created, {"role": "assistant", "content": ""}, None)
        ]

    @property
    def reasoning_text(self) -> str:
        return ""  # the echo model does not reason

    async def batches(self) -> AsyncGenerator[list[bytes], None]:
        pieces = re.findall(r"\S+\s*", self._text)
        for piece in pieces:
            await asyncio.sleep(WORD_GAP_SECONDS)
            yield [_chunk(self._id, self._created, {"content": piece}, None)]
        final = [_chunk(self._id, self._created, {}, "stop")]
        if self._include_usage:
            usage = {
                "prompt_tokens": 0,
                "completion_tokens": len(pieces),
                "total_tokens": len(pieces),
            }
            final.append(
                orjson.dumps(
                    {
                        "id": self._id,
                        "object": "chat.completion.chunk",
                        "created": self._created,
                        "model": ECHO_MODEL,
                        "choices": [],
                        "usage": usage,
                    }
                )
            )
        final.append(b"[DONE]")
        yield final

    def close(self) -> None:
        return None


def echo_completion(body: dict[str, Any]) -> dict[str, Any]:
    text = echo_reply(body.get("messages") or [])
    return {
        "id": f"chatcmpl-echo-{uuid.uuid4().hex[:12]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": ECHO_MODEL,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 0, "completion_tokens": len(text.split()), "total_tokens": 0},
    }
