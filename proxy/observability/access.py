"""Every request: an ``x-request-id`` on the response, one JSON access-log line, and for
chat turns the trace span.

Pure ASGI (no ``BaseHTTPMiddleware``): streamed replies pass through unbuffered, and the
line is written when the response has ended, with its true duration. The request id is
the engine's ``X-Request-Id`` (or the misspelt ``X-Rquest-Id``) when it sends a usable
one, so the proxy's logs, traces and the engine's logs meet on one id; otherwise a new
one. The key is logged by its name, never the key itself.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from proxy.observability import turnlog
from proxy.observability.tracing import Tracing, current_ids

log = logging.getLogger("proxy.access")

CHAT_PATHS = frozenset({"/v1/chat/completions", "/chat/completions"})
REQUEST_ID_HEADERS = (b"x-request-id", b"x-rquest-id")
USABLE_ID = re.compile(rb"^[\x21-\x7e]{1,128}$")  # printable, no spaces: safe in a header
MAX_LOGGED = 128  # characters of a header value in a log line


def request_id_of(headers: list[tuple[bytes, bytes]]) -> str:
    found = dict(headers)
    for name in REQUEST_ID_HEADERS:
        value = found.get(name)
        if value is not None and USABLE_ID.match(value):
            return value.decode()
    return uuid.uuid4().hex


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> str | None:
    """A header's value for the log line, only if it is a plain id: a value the proxy
    refuses or drops (control characters, spaces, non-ASCII, too long) is never logged."""
    for key, value in headers:
        if key == name:
            return value.decode() if USABLE_ID.match(value) else None
    return None


PLAIN_PATH = re.compile(r"[\x21-\x7e]*")


def _path(path: str) -> str:
    path = path[: MAX_LOGGED * 2]
    if PLAIN_PATH.fullmatch(path):  # the usual case: nothing to replace
        return path
    return "".join(ch if " " < ch < "\x7f" else "?" for ch in path)


class AccessMiddleware:
    def __init__(self, app: ASGIApp, *, tracing: Tracing, access_log: bool = True) -> None:
        self.app = app
        self.tracing = tracing
        self.access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        request_id = request_id_of(headers)
        raw_id = request_id.encode()
        status = 500  # if the app fails before answering
        chat = scope["path"] in CHAT_PATHS
        turn = turnlog.begin(request_id) if chat else None

        first_body = True  # until the first body byte: then every message passes as is

        async def send_with_id(message: Message) -> None:
            nonlocal status, first_body
            if first_body:
                if message["type"] == "http.response.start":
                    status = message["status"]
                    out = list(message.get("headers", ()))
                    if not any(name.lower() == b"x-request-id" for name, _ in out):
                        out.append((b"x-request-id", raw_id))
                    message = {**message, "headers": out}
                elif message.get("body"):
                    first_body = False
                    if turn is not None:
                        turn.first_byte_ms = (time.perf_counter() - started) * 1000
            await send(message)

        traced = self.tracing.enabled and chat
        ids: dict[str, str] = {}
        try:
            if traced:
                with self.tracing.turn(_turn_attributes(scope, request_id)):
                    ids = current_ids()
                    await self.app(scope, receive, send_with_id)
            else:
                await self.app(scope, receive, send_with_id)
        finally:
            if turn is not None:
                self._keep(scope, turn, status, started)
            if self.access_log and log.isEnabledFor(logging.INFO):
                self._log(scope, status, started, request_id, ids)

    @staticmethod
    def _keep(scope: Scope, turn: turnlog.TurnLog, status: int, started: float) -> None:
        app = scope.get("app")
        # The app's services (``proxy.services``), when there is an app that runs them.
        running = getattr(getattr(app, "state", None), "services", None)
        writer = getattr(running, "turn_logs", None)
        if writer is not None:
            writer.submit(turn, status, (time.perf_counter() - started) * 1000)

    def _log(
        self, scope: Scope, status: int, started: float, request_id: str, ids: dict[str, str]
    ) -> None:
        headers = scope["headers"]
        caller = (scope.get("state") or {}).get("caller")
        line: dict[str, Any] = {
            "method": scope["method"],
            "path": _path(scope["path"]),
            "status": status,
            "duration_ms": round((time.perf_counter() - started) * 1000, 2),
            "request_id": request_id,
            "task_id": _header(headers, b"x-task-id"),
            "app_id": _header(headers, b"x-sdk-app-id"),
            "key_name": getattr(caller, "name", None),
            **ids,
        }
        log.info("request", extra={k: v for k, v in line.items() if v is not None})


def _turn_attributes(scope: Scope, request_id: str) -> dict[str, str | int | float | bool]:
    return {
        "gen_ai.operation.name": "chat",
        "proxy.request_id": request_id,
        "http.request.method": scope["method"],
        "url.path": scope["path"],
    }
