"""The server protocol: the response head leaves in the same write as the first body
bytes, and a hang-up is known as soon as it is read."""

from __future__ import annotations

import asyncio
import json
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


def test_a_caller_that_stops_reading_stops_the_relay(monkeypatch, make_proxy) -> None:
    """Events written straight to the connection respect its flow control: once the
    socket's buffer is full they go through ``send``, which waits for it to drain, so a
    caller that stops reading holds the proxy's buffer at its high-water mark instead of
    the whole reply."""
    buffered: list[int] = []
    write_more_body = serving.RequestConnection.write_more_body

    def recording(self: serving.RequestConnection, data: bytes) -> bool:
        written = write_more_body(self, data)
        buffered.append(self._cycle.transport._transport.get_write_buffer_size())  # type: ignore[attr-defined]
        return written

    monkeypatch.setattr(serving.RequestConnection, "write_more_body", recording)
    server = make_proxy(max_body_bytes=8_000_000)
    # 6 MB in 300 events of 20 KB, 2 ms apart (one read each): more than the kernel's
    # socket buffers on loopback hold (up to 4 MB for the proxy's send side).
    reply = "word " * 1_200_000
    body = {
        "model": "gpt-4o",
        "stream": True,
        "messages": [{"role": "user", "content": "hi"}],
        "mock": {"reply": reply, "chunks": 300, "gap_ms": 2},
    }
    payload = json.dumps(body).encode()
    head = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: proxy\r\nContent-Type: application/json\r\n"
        b"Content-Length: " + str(len(payload)).encode() + b"\r\n\r\n"
    )
    with socket.socket() as caller:
        caller.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        caller.connect(("127.0.0.1", server.port))
        caller.sendall(head + payload)
        caller.settimeout(10)
        assert caller.recv(4096).startswith(b"HTTP/1.1 200")
        time.sleep(1.5)  # the caller reads nothing more; the relay must wait for it
        stalled_at = len(buffered)
        # uvloop's high-water mark (64 KiB) and the one event that crossed it (20 KB):
        # without the flow control, 3 MB (measured).
        assert max(buffered) <= 64 * 1024 + 24 * 1024, max(buffered)
        received = b""
        while not received.endswith(b"0\r\n\r\n") and (piece := caller.recv(65536)):
            received += piece
    assert stalled_at < 300  # it did stop, before the end of the reply
    assert b"data: [DONE]" in received
