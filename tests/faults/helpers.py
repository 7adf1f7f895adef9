"""Shared helpers of the fault tests: engine-style calls, history checks, throwaway servers."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import orjson

from proxy.dev.voice import room
from proxy.voice.signing import sign
from tests.context.engine_calls import APP_ID, engine_headers, task_key
from tests.servers import free_port

ADMIN = "admin-token-for-fault-tests-0123456789"
ADMIN_HEADERS = {"Authorization": f"Bearer {ADMIN}"}
SYSTEM = {"role": "system", "content": "You are a helpful voice assistant."}
# Finite, generous client timeouts: a proxy that hangs fails the test instead of the run.
CLIENT_TIMEOUT = httpx.Timeout(15.0, connect=5.0)


def new_task() -> str:
    return f"fault-{uuid.uuid4().hex[:10]}"


def user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


def wait_for(predicate: Callable[[], Any], timeout: float = 5.0, step: float = 0.02) -> Any:
    """Poll ``predicate`` until it returns something truthy; returns that (or the last value)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(step)


def chat_body(text: str, *, stream: bool = True, **mock: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "voice", "stream": stream, "messages": [SYSTEM, user(text)]}
    if mock:
        body["mock"] = mock
    return body


def data_events(raw: str) -> list[str]:
    """The ``data:`` payloads of an SSE body, in order."""
    return [line[5:].strip() for line in raw.split("\n") if line.startswith("data:")]


def spoken(events: list[str]) -> str:
    """The content text of SSE payloads (what a voice engine would speak)."""
    text = []
    for payload in events:
        if payload == "[DONE]":
            continue
        event = orjson.loads(payload)
        for choice in event.get("choices") or ():
            text.append((choice.get("delta") or {}).get("content") or "")
    return "".join(text)


def post_chat(
    proxy: Any,
    task_id: str | None,
    body: dict[str, Any],
    *,
    request_id: str | None = None,
    headers: dict[str, str] | None = None,
    timeout: httpx.Timeout | float = CLIENT_TIMEOUT,
) -> httpx.Response:
    all_headers = engine_headers(task_id, request_id) if task_id else {}
    all_headers.update(headers or {})
    return httpx.post(
        proxy.base_url + "/chat/completions", json=body, headers=all_headers, timeout=timeout
    )


def task_view(proxy: Any, task_id: str, timeout: float = 20.0) -> httpx.Response:
    return httpx.get(
        f"{proxy.url}/admin/tasks/{task_key(task_id)}", headers=ADMIN_HEADERS, timeout=timeout
    )


def stored_messages(proxy: Any, task_id: str) -> list[dict[str, Any]]:
    response = task_view(proxy, task_id)
    assert response.status_code == 200, response.text
    messages: list[dict[str, Any]] = response.json()["messages"]
    return messages


def live_messages(proxy: Any, task_id: str) -> list[dict[str, Any]]:
    """The task's live history; [] for a task the proxy has no record of (404)."""
    response = task_view(proxy, task_id)
    if response.status_code == 404:
        return []
    assert response.status_code == 200, response.text
    messages: list[dict[str, Any]] = response.json()["messages"]
    return messages


def wait_for_history(
    proxy: Any, task_id: str, count: int, timeout: float = 5.0
) -> list[dict[str, Any]]:
    """The task's live history once it holds at least ``count`` messages."""

    def probe() -> list[dict[str, Any]] | None:
        response = task_view(proxy, task_id)
        if response.status_code != 200:
            return None
        messages: list[dict[str, Any]] = response.json()["messages"]
        return messages if len(messages) >= count else None

    return wait_for(probe, timeout) or stored_messages(proxy, task_id)


def assert_valid_history(messages: list[dict[str, Any]]) -> None:
    """A history the next turn can build on: what OpenAI would accept and nothing twice.

    - each request id contributes at most one user message (a retry never adds one);
    - every ``tool`` message answers a call of the assistant message just before it, and
      every call is answered before the next user or assistant message (no orphans);
    - every message has a role the upstream accepts and text or tool calls.
    """
    users_by_request: dict[str, int] = {}
    open_calls: set[str] = set()
    for message in messages:
        role = message["role"]
        assert role in ("system", "user", "assistant", "tool"), message
        if role == "user" and message.get("request_id"):
            request_id = message["request_id"]
            users_by_request[request_id] = users_by_request.get(request_id, 0) + 1
        if role == "tool":
            assert message.get("tool_call_id") in open_calls, f"orphan tool message {message}"
            open_calls.discard(message["tool_call_id"])
            continue
        assert not open_calls, f"unanswered tool calls {open_calls} before {message}"
        if role == "assistant":
            open_calls = {call["id"] for call in message.get("tool_calls") or ()}
            assert message.get("content") is not None or open_calls, message
    assert not open_calls, f"unanswered tool calls at the end: {open_calls}"
    duplicated = {rid: n for rid, n in users_by_request.items() if n > 1}
    assert not duplicated, f"user turns stored more than once: {duplicated}"


def post_callback(
    proxy: Any, sign_key: str, task_id: str, event_type: int, payload: dict[str, Any]
) -> httpx.Response:
    """One signed engine callback (CONTRACT §5), as the engine sends it."""
    body = room.callback_body(event_type, room.now_ms(), task_id, "room-1", "1", payload)
    raw = orjson.dumps(body)
    headers = {"Content-Type": "application/json", "Sign": sign(sign_key, raw), "SdkAppId": APP_ID}
    return httpx.post(proxy.url + "/callbacks/trtc", content=raw, headers=headers, timeout=15)


def roles_and_texts(messages: list[dict[str, Any]]) -> list[tuple[str, Any]]:
    return [(m["role"], m["content"]) for m in messages]


# A raw HTTP/1.1 client, for disconnects at points httpx does not let a test choose.


class RawStream:
    """One chat request over a plain socket: send, read events one at a time, hang up."""

    def __init__(self, url: str, path: str, body: dict[str, Any], headers: dict[str, str]):
        host_port = url.removeprefix("http://").split("/", 1)[0]
        host, _, port = host_port.partition(":")
        self.sock = socket.create_connection((host, int(port)), timeout=10)
        self.payload = orjson.dumps(body)
        lines = [f"POST {path} HTTP/1.1", f"Host: {host_port}", "Content-Type: application/json"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        lines.append(f"Content-Length: {len(self.payload)}")
        self.head = ("\r\n".join(lines) + "\r\n\r\n").encode()
        self.buffer = b""

    def send_head_and_part(self, fraction: float = 0.5) -> None:
        """The headers and part of the body only: the caller leaves before sending the rest."""
        self.sock.sendall(self.head + self.payload[: int(len(self.payload) * fraction)])

    def send(self) -> None:
        self.sock.sendall(self.head + self.payload)

    def read_until(self, marker: bytes, timeout: float = 10.0) -> bytes:
        """Read until ``marker`` has arrived; returns everything read so far."""
        self.read_while(lambda: marker not in self.buffer, timeout, repr(marker))
        return self.buffer

    def read_until_text(self, text: str, timeout: float = 10.0, *, exact: bool = False) -> None:
        """Read until the content received so far holds ``text`` (or is it, ``exact``)."""

        def more() -> bool:
            received = self.received_text()
            return received != text if exact else text not in received

        self.read_while(more, timeout, repr(text))

    def read_while(self, more: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while more():
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"{what} did not arrive; got {self.buffer[-500:]!r}"
            self.sock.settimeout(remaining)
            chunk = self.sock.recv(65536)
            assert chunk, f"connection closed before {what}; got {self.buffer[-500:]!r}"
            self.buffer += chunk

    def received_text(self) -> str:
        """The content of the complete events received so far (chunked framing ignored)."""
        body = self.buffer.split(b"\r\n\r\n", 1)[-1].decode(errors="replace")
        events = [
            line[5:].strip()
            for line in body.split("\n")
            if line.startswith("data: {") and line.rstrip().endswith("}")
        ]
        return spoken(events)

    def close(self) -> None:
        """Hang up hard (RST), as an engine abandoning a request does."""
        with contextlib.suppress(OSError):
            self.sock.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
            )
        self.sock.close()


# Throwaway servers.


class ThrowawayRedis:
    """A ``redis-server`` on a fixed free port: start, stop (terminate), start again, stall."""

    def __init__(self) -> None:
        if shutil.which("redis-server") is None:
            raise FileNotFoundError("redis-server is not installed")
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> ThrowawayRedis:
        args = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
        args += ["--save", "", "--appendonly", "no"]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not self._answers():
            assert self.process.poll() is None, "throwaway redis-server exited"
            assert time.monotonic() < deadline, "throwaway redis-server did not start"
            time.sleep(0.05)
        return self

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGCONT)  # a stalled one must be able to exit
            self.process.terminate()
            self.process.wait(10)
        self.process = None

    def pause(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGCONT)


class SilentServer:
    """Accepts TCP connections and never answers (a hung tool endpoint).

    Records when each connection was accepted and when the peer closed it.
    """

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.accepted: list[float] = []
        self.closed: list[float] = []
        self._stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _serve(self) -> None:
        self.listener.settimeout(0.1)
        while not self._stop.is_set():
            try:
                connection, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted.append(time.monotonic())
            threading.Thread(target=self._hold, args=(connection,), daemon=True).start()

    def _hold(self, connection: socket.socket) -> None:
        with connection:
            connection.settimeout(0.1)
            while not self._stop.is_set():
                try:
                    if not connection.recv(65536):
                        break  # the peer hung up
                except TimeoutError:
                    continue
                except OSError:
                    break
        self.closed.append(time.monotonic())

    def stop(self) -> None:
        self._stop.set()
        self.listener.close()


class SlowToolServer:
    """HTTP tool endpoints: POST /slow answers after ``delay`` s; records calls and hang-ups."""

    def __init__(self, delay: float = 2.0) -> None:
        self.started: list[float] = []
        self.finished: list[tuple[float, bool]] = []  # (when, answer delivered)
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                server.started.append(time.monotonic())
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                time.sleep(delay)
                payload = b'{"ok": true}'
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    server.finished.append((time.monotonic(), True))
                except OSError:
                    server.finished.append((time.monotonic(), False))

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@contextlib.contextmanager
def elapsed() -> Iterator[list[float]]:
    """``with elapsed() as took: ...`` then ``took[0]`` is the seconds the block took."""
    took: list[float] = []
    started = time.monotonic()
    try:
        yield took
    finally:
        took.append(time.monotonic() - started)
