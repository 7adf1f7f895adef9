"""Calling the proxy the way the voice engine does: TRTC headers, one new turn per request."""

from __future__ import annotations

import uuid
from typing import Any

import openai

SYSTEM = {"role": "system", "content": "You are a helpful voice assistant."}
APP_ID = "1400000001"  # the engine's X-Sdk-App-Id (and callbacks' SdkAppId)


def task_key(task_id: str) -> str:
    """Where the proxy keeps an engine task: scoped by the engine's app id."""
    return f"{APP_ID}:{task_id}"


def engine_headers(task_id: str, request_id: str | None = None) -> dict[str, str]:
    return {
        "X-Task-Id": task_id,
        "X-Request-Id": request_id or uuid.uuid4().hex,
        "X-Sdk-App-Id": APP_ID,
        "X-User-Id": "user-1",
        "X-Room-Id": "room-1",
        "X-Room-Id-Type": "1",
    }


def say(
    proxy: Any,
    task_id: str,
    messages: list[dict[str, Any]],
    *,
    reply: str | None = None,
    request_id: str | None = None,
    stream: bool = True,
    **mock: Any,
) -> str:
    """One engine request; returns the text the caller received."""
    if reply is not None:
        mock["reply"] = reply
    client = openai.OpenAI(base_url=proxy.base_url, api_key="unused", max_retries=0)
    kwargs: dict[str, Any] = {
        "model": "voice-model",
        "messages": messages,
        "extra_headers": engine_headers(task_id, request_id),
        "extra_body": {"mock": mock} if mock else None,
    }
    if not stream:
        return client.chat.completions.create(**kwargs).choices[0].message.content or ""
    chunks = client.chat.completions.create(stream=True, **kwargs)
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


def assistant(text: str) -> dict[str, str]:
    return {"role": "assistant", "content": text}
