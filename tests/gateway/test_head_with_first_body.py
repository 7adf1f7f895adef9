"""The server protocol: the response head leaves in the same write as the first body
bytes, and a hang-up is known as soon as it is read."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import Any

import httpx
import uvicorn

from proxy import serving
from proxy.serving import HeadWithFirstBody
from tests.servers import free_port


class RecordingTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


async def test_the_head_and_the_first_body_bytes_are_one_write() -> None:
    inner = RecordingTransport()
    transport = HeadWithFirstBody(inner, asyncio.get_running_loop())
    transport.write(b"HTTP/1.1 200 OK\r\n\r\n")
    assert inner.writes == []
    transport.write(b"data: 1\n\n")
    transport.write(b"data: 2\n\n")
    assert inner.writes == [b"HTTP/1.1 200 OK\r\n\r\ndata: 1\n\n", b"data: 2\n\n"]
    await asyncio.sleep(0)
    assert len(inner.writes) == 2  # nothing held back, nothing sent twice


async def test_a_head_whose_body_does_not_follow_leaves_at_the_end_of_the_iteration() -> None:
    inner = RecordingTransport()
    transport = HeadWithFirstBody(inner, asyncio.get_running_loop())
    transport.write(b"HTTP/1.1 200 OK\r\n\r\n")
    await asyncio.sleep(0)
    assert inner.writes == [b"HTTP/1.1 200 OK\r\n\r\n"]
    transport.write(b"data: 1\n\n")
    assert inner.writes == [b"HTTP/1.1 200 OK\r\n\r\n", b"data: 1\n\n"]


async def test_closing_sends_a_held_head_first() -> None:
    inner = RecordingTransport()
    transport = HeadWithFirstBody(inner, asyncio.get_running_loop())
    transport.write(b"HTTP/1.1 500 Internal Server Error\r\n\r\n")
    transport.close()
    assert inner.writes == [b"HTTP/1.1 500 Internal Server Error\r\n\r\n"] and inner.closed
    await asyncio.sleep(0)
    assert len(inner.writes) == 1


class Tap(asyncio.Transport):
    """Records what reaches the socket, then passes it on."""

    def __init__(self, inner: asyncio.Transport, writes: list[bytes]) -> None:
        super().__init__()
        self.inner, self.writes = inner, writes

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes.append(bytes(data))
        self.inner.write(data)

    def close(self) -> None:
        self.inner.close()

    def is_closing(self) -> bool:
        return self.inner.is_closing()


def test_a_served_stream_sends_its_head_with_its_first_event(monkeypatch, make_proxy) -> None:
    writes: list[bytes] = []

    class Tapped(serving.HeadWithFirstBody):
        def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop):
            super().__init__(Tap(transport, writes), loop)

    monkeypatch.setattr(serving, "HeadWithFirstBody", Tapped)
    body = {"model": "gpt-4o", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    server = make_proxy()  # the mock upstream streams its words
    response = httpx.post(f"{server.url}/v1/chat/completions", json=body, timeout=10)
    assert response.status_code == 200 and response.text.endswith("data: [DONE]\n\n")
    head, _, rest = writes[0].partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    size, _, chunk = rest.partition(b"\r\n")  # chunked transfer: the size line first
    assert int(size, 16) > 0 and chunk.startswith(b"data: {")  # in the same write


def test_a_hang_up_read_with_its_request_is_known_after_one_loop_trip() -> None:
    """A stalled server reads a request and its caller's hang-up together: one trip
    round the loop later the request knows it (``RequestConnection``), as ``caller_left``
    relies on; uvicorn alone would know only once the transport has closed."""
    seen: list[bool] = []

    async def app(scope: dict, receive: object, send: Callable[[dict], Awaitable[None]]) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] == "/stall":
            time.sleep(0.5)  # noqa: ASYNC251 - the loop stops, as on a replica without CPU
        else:
            await asyncio.sleep(0)
            seen.append(scope["extensions"][serving.CONNECTION_EXTENSION].gone)
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    port = free_port()
    config = uvicorn.Config(
        app, port=port, loop="uvloop", http=serving.HeaderTimeoutProtocol, log_config=None
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:
            time.sleep(0.01)
        stall = threading.Thread(target=httpx.get, args=(f"http://127.0.0.1:{port}/stall",))
        stall.start()
        time.sleep(0.1)  # the loop is stalled now
        with socket.create_connection(("127.0.0.1", port)) as caller:
            caller.sendall(b"GET /check HTTP/1.1\r\nHost: proxy\r\n\r\n")
            caller.shutdown(socket.SHUT_WR)  # gone before the server reads a byte
            stall.join()
            deadline = time.monotonic() + 5
            while not seen and time.monotonic() < deadline:
                time.sleep(0.01)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    assert seen == [True]


def fake_cycle(**state: object) -> Any:
    """What ``RequestConnection`` reads of uvicorn's response cycle."""
    fields = {
        "chunked_encoding": True,
        "response_started": True,
        "response_complete": False,
        "disconnected": False,
        "flow": SimpleNamespace(write_paused=False),
        "transport": RecordingTransport(),
    }
    return SimpleNamespace(**{**fields, **state})


def test_more_body_is_written_as_one_http_chunk() -> None:
    cycle = fake_cycle()
    assert serving.RequestConnection(cycle).write_more_body(b"data: 1\n\n")
    assert cycle.transport.writes == [b"9\r\ndata: 1\n\n\r\n"]


def test_more_body_is_left_to_send_while_the_socket_buffer_is_full() -> None:
    # ``send`` waits for the buffer to drain: a caller that stops reading stops the relay.
    for state in (
        {"flow": SimpleNamespace(write_paused=True)},
        {"chunked_encoding": False},  # a content-length body: uvicorn counts it
        {"response_started": False},
        {"response_complete": True},
    ):
        cycle = fake_cycle(**state)
        assert not serving.RequestConnection(cycle).write_more_body(b"data: 1\n\n"), state
        assert cycle.transport.writes == []


def test_more_body_after_a_hang_up_is_dropped() -> None:
    cycle = fake_cycle(disconnected=True)
    assert serving.RequestConnection(cycle).write_more_body(b"data: 1\n\n")
    assert cycle.transport.writes == []
