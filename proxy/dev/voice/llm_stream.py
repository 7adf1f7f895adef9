"""One streamed LLM request as the engine makes it: events on a queue, read against deadlines.

The reader task turns the HTTP response into timed events (headers, content, meta.info,
end, errors) so the engine can apply its first-token timeout and barge-in timing to
them without touching the network code.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson


@dataclass(slots=True)
class StreamEvent:
    at: float  # time.monotonic() on arrival
    kind: str  # headers | content | meta | done | eof | http_error | stream_error | error
    data: Any = None


def error_text(raw: bytes, status: int | None = None) -> str:
    try:
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError:
        payload = None
    error = payload.get("error") if isinstance(payload, dict) else None
    if isinstance(error, dict) and error.get("message"):
        return str(error["message"])
    if isinstance(error, str):
        return error
    text = raw[:300].decode("utf-8", "replace").strip()
    return text or (f"HTTP {status}" if status else "no details")


class LLMStream:
    """One request attempt, read in the background into a queue of timestamped events."""

    def __init__(
        self, http: aiohttp.ClientSession, url: str, headers: dict[str, str], body: dict[str, Any]
    ) -> None:
        self.started = time.monotonic()
        self.queue: asyncio.Queue[StreamEvent] = asyncio.Queue()
        self._streaming = bool(body.get("stream"))
        self._task = asyncio.create_task(self._read(http, url, headers, orjson.dumps(body)))

    async def next(self, deadline: float) -> StreamEvent | None:
        """The next event if it arrived by ``deadline`` (monotonic), else None."""
        try:
            event = self.queue.get_nowait()
        except asyncio.QueueEmpty:
            wait = deadline - time.monotonic()
            if wait <= 0:
                return None
            try:
                event = await asyncio.wait_for(self.queue.get(), wait)
            except TimeoutError:
                return None
        return event if event.at <= deadline else None

    async def close(self) -> None:
        """Abandon the request: the server sees the connection close."""
        if not self._task.done():
            self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    def _put(self, kind: str, data: Any = None) -> None:
        self.queue.put_nowait(StreamEvent(time.monotonic(), kind, data))

    async def _read(
        self, http: aiohttp.ClientSession, url: str, headers: dict[str, str], body: bytes
    ) -> None:
        response: aiohttp.ClientResponse | None = None
        finished = False
        try:
            response = await http.post(url, data=body, headers=headers)
            self._put("headers", response.status)
            if response.status >= 400:
                raw = await response.read()
                self._put("http_error", (response.status, error_text(raw, response.status)))
            elif self._streaming and response.content_type != "application/json":
                await self._read_sse(response)
            else:
                self._read_completion(await response.read())
            finished = True
        except Exception as exc:  # any failure ends this attempt; the consumer reports it
            self._put("error", f"{type(exc).__name__}: {exc}")
        finally:
            if response is not None and finished:
                response.release()
            elif response is not None:  # abandoned mid-body: close, never reuse, the connection
                response.close()

    async def _read_sse(self, response: aiohttp.ClientResponse) -> None:
        data: list[str] = []
        async for raw in response.content:
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            if line.startswith("data:"):
                data.append(line[5:].removeprefix(" "))
            elif not line and data:
                if self._dispatch("\n".join(data)):
                    return
                data = []
        if data and self._dispatch("\n".join(data)):
            return
        self._put("eof")

    def _dispatch(self, data: str) -> bool:
        """Queue one SSE event; True at ``[DONE]``."""
        if data.strip() == "[DONE]":
            self._put("done")
            return True
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            return False  # a malformed event is skipped, as a tolerant client would
        if not isinstance(chunk, dict):
            return False
        if chunk.get("type") == "meta.info":  # never spoken: pushed to the room as 10002
            self._put("meta", chunk.get("metainfo"))
        elif chunk.get("error") and not chunk.get("choices"):
            self._put("stream_error", error_text(data.encode()))
        for choice in chunk.get("choices") or []:
            content = ((choice or {}).get("delta") or {}).get("content")
            if isinstance(content, str) and content:
                self._put("content", content)
        return False

    def _read_completion(self, raw: bytes) -> None:
        try:
            completion = orjson.loads(raw)
            message = completion["choices"][0]["message"]
        except (orjson.JSONDecodeError, KeyError, IndexError, TypeError):
            self._put("error", "the LLM answered with an unreadable completion")
            return
        if isinstance(completion.get("metainfo"), dict):
            self._put("meta", completion["metainfo"])
        if isinstance(message, dict) and isinstance(message.get("content"), str):
            self._put("content", message["content"])
        self._put("done")
