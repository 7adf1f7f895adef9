"""A stream cancelled before its first byte still answers its caller (never a bare 500).

Seen under load: the turn's task was cancelled while it prepared the reply, the relay
returned without sending anything and uvicorn answered "500 Internal Server Error"
("ASGI callable returned without starting response"). Driven here through
``RelayResponse`` with a fake ASGI receive/send, no server.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from proxy.api.relay import RelayResponse

SCOPE: dict[str, Any] = {"type": "http", "method": "POST", "path": "/v1/chat/completions"}


class FakeClient:
    """ASGI receive/send of a caller that stays (or leaves when told)."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.leave = asyncio.Event()

    async def receive(self) -> dict[str, Any]:
        await self.leave.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)

    @property
    def status(self) -> int | None:
        starts = [m for m in self.sent if m["type"] == "http.response.start"]
        assert len(starts) <= 1, self.sent
        return starts[0]["status"] if starts else None

    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.sent if m["type"] == "http.response.body")

    @property
    def complete(self) -> bool:
        bodies = [m for m in self.sent if m["type"] == "http.response.body"]
        return bool(bodies) and not bodies[-1].get("more_body", False)


async def _frames() -> AsyncIterator[bytes]:
    yield b"data: [DONE]\n\n"


async def cancelled_opener() -> AsyncIterator[bytes]:
    """Prepares the turn, and its task is cancelled there (not by the caller)."""
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().call_soon(task.cancel)
    await asyncio.sleep(1)
    return _frames()


async def child_cancelled_opener() -> AsyncIterator[bytes]:
    """A gathered store read is cancelled: ``gather`` raises CancelledError in the task."""

    async def read() -> None:
        me = asyncio.current_task()
        assert me is not None
        me.cancel()
        await asyncio.sleep(0)

    await asyncio.gather(read())
    return _frames()


async def test_a_stream_cancelled_before_its_first_byte_answers_503() -> None:
    for opener in (cancelled_opener, child_cancelled_opener):
        client = FakeClient()
        counted: list[int] = []
        before = RelayResponse.unanswered
        response = RelayResponse(opener(), on_unstarted=counted.append)
        await asyncio.wait_for(response(SCOPE, client.receive, client.send), 5)
        assert client.status == 503, (opener.__name__, client.sent)
        assert client.complete
        error = json.loads(client.body())["error"]
        assert error["code"] == "service_unavailable"
        assert error["type"] == "server_error"
        assert counted == [503]
        assert RelayResponse.unanswered == before + 1


async def test_a_caller_that_left_before_the_first_byte_gets_nothing_more() -> None:
    client = FakeClient()
    opened = asyncio.Event()

    async def slow_opener() -> AsyncIterator[bytes]:
        opened.set()
        await asyncio.sleep(30)
        return _frames()

    counted: list[int] = []
    response = RelayResponse(slow_opener(), on_unstarted=counted.append)
    serving = asyncio.ensure_future(response(SCOPE, client.receive, client.send))
    await opened.wait()
    client.leave.set()
    await asyncio.wait_for(serving, 5)
    assert client.sent == [] and counted == []


async def test_a_stream_that_opens_is_relayed_whole() -> None:
    async def opener() -> AsyncIterator[bytes]:
        return _frames()

    client = FakeClient()
    await asyncio.wait_for(RelayResponse(opener())(SCOPE, client.receive, client.send), 5)
    assert client.status == 200 and client.complete
    assert client.body() == b"data: [DONE]\n\n"
