"""Noticing a caller leaving at once, even while the upstream is silent.

Starlette's StreamingResponse only sees a disconnect when a write fails; a voice engine
that barges in while the model is still thinking would leave the upstream generating.
Here the request's own task opens the upstream stream and relays it, cancelled the moment
``http.disconnect`` arrives: the upstream connection closes and the interrupted reply
is recorded. Errors before the first byte still leave as a JSON envelope with a status.

A non-streaming reply has nothing to write until it is complete, so nothing would
notice the caller leaving (the engine's ``Timeout``): ``cancel_on_disconnect`` awaits
it with the same watch on ``http.disconnect``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from proxy.api.errors import error_response
from proxy.errors import InvalidRequest, ProxyError, ServiceUnavailable
from proxy.serving import RequestConnection, request_connection

log = logging.getLogger(__name__)

SSE_HEADERS = {
    "cache-control": "no-cache",
    "x-accel-buffering": "no",  # nginx and friends must not buffer the stream
}

RAW_SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    *((name.encode(), value.encode()) for name, value in SSE_HEADERS.items()),
]

Opener = Coroutine[Any, Any, AsyncIterator[bytes]]
T = TypeVar("T")

CLIENT_CLOSED = 499  # the status proxies log for a request its client abandoned


class RelayResponse(Response):
    media_type = "text/event-stream"

    # Streams cancelled before their first byte while the caller still waited (each got
    # a 503): a wrong cancellation somewhere; never expected, watched by the tests.
    unanswered = 0

    def __init__(
        self,
        opener: Opener,
        on_close: Callable[[], None] | None = None,
        on_unstarted: Callable[[int], None] | None = None,
        final_frame: bytes | None = None,
    ) -> None:
        self.opener = opener
        self.on_close = on_close
        self.on_unstarted = on_unstarted  # the status sent for a stream cancelled unstarted
        # A chunk ending with this frame ends the response: it leaves with the end of the
        # body in one write (``data: [DONE]``: nothing may follow it in a chat stream).
        self.final_frame = final_frame
        self.status_code = 200
        self.background = None
        self._started = False
        self.raw_headers = RAW_SSE_HEADERS  # the same for every stream: built once

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self._serve(scope, receive, send)
        finally:
            if self.on_close is not None:
                self.on_close()

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        # The stream is relayed in the request's own task (no task of its own: a trip
        # round the event loop before the first byte), cancelled the moment the caller
        # leaves. A cancel from anyone else (a retry taking the request over, a newer
        # turn of the task, a shutdown) ends the response as below.
        with DisconnectWatch(receive, request_connection(scope)) as watch:
            try:
                await self._relay(scope, receive, send)
                return  # answered (or failed loudly)
            except asyncio.CancelledError:
                if watch.task.uncancel() > 0 and not watch.caller_left:
                    raise  # cancelled twice (a shutdown too): not ours to absorb
        if watch.caller_left:
            return  # nobody is left to answer
        if self._started:
            # Taken over (or shut down) mid-stream: end this response cleanly.
            with contextlib.suppress(OSError):
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        # Cancelled before its first byte while the caller waits: returning now would
        # leave the server to answer a bare 500 ("returned without starting response").
        RelayResponse.unanswered += 1
        log.warning("a stream was cancelled before its first byte, its caller waiting: 503")
        error = ServiceUnavailable(
            "the reply was interrupted before it started; retry the request",
            headers={"retry-after": "1"},
        )
        if self.on_unstarted is not None:
            self.on_unstarted(error.status)
        with contextlib.suppress(OSError):
            await error_response(error)(scope, receive, send)

    async def _relay(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            frames = await self.opener
        except ProxyError as exc:
            await error_response(exc)(scope, receive, send)
            return
        except Exception:
            log.exception("unexpected error opening a stream")
            await error_response(ProxyError("internal error"))(scope, receive, send)
            return
        try:
            self._started = True  # before the await: a cancel there may have sent it
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            ended = False
            final = self.final_frame
            # After the first body bytes (through ``send``: the middleware times them), the
            # events go straight to the connection where the server offers it.
            connection = request_connection(scope)
            body_started = False
            async for chunk in frames:
                if ended:  # the stream's own clean-up runs; nothing more is sent
                    log.warning("a stream yielded %d bytes after its final frame", len(chunk))
                    continue
                ended = final is not None and chunk.endswith(final)
                if (
                    ended
                    or not body_started
                    or connection is None
                    or not connection.write_more_body(chunk)
                ):
                    more = not ended
                    await send({"type": "http.response.body", "body": chunk, "more_body": more})
                    body_started = True
            if not ended:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            await frames.aclose()  # type: ignore[attr-defined]


async def _wait_for_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


class DisconnectWatch:
    """While open, the caller hanging up cancels the current task (``caller_left`` says
    so). The request body must have been read. The server's ``RequestConnection`` calls
    it when the caller hangs up; under another server, a watcher task waits for
    ``http.disconnect``."""

    def __init__(self, receive: Receive, connection: RequestConnection | None) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.task = task
        self.caller_left = False
        self._watching = True
        self._connection = connection
        self._watcher: asyncio.Task[None] | None = None
        if connection is None:
            self._watcher = asyncio.create_task(_wait_for_disconnect(receive))
            self._watcher.add_done_callback(self._on_disconnect)
        elif connection.gone:
            self._left()
        else:
            connection.on_gone = self._left

    def _on_disconnect(self, watcher: asyncio.Task[None]) -> None:
        if not watcher.cancelled() and watcher.exception() is None:
            self._left()

    def _left(self) -> None:
        if self._watching:
            self.caller_left = True
            self.task.cancel()

    def __enter__(self) -> DisconnectWatch:
        return self

    def __exit__(self, *exc: object) -> None:
        self._watching = False
        if self._connection is not None:
            self._connection.on_gone = None
        if self._watcher is not None:
            self._watcher.cancel()


async def cancel_on_disconnect(
    receive: Receive, work: Awaitable[T], connection: RequestConnection | None = None
) -> T:
    """Await ``work`` in this task, cancelled the moment the caller leaves.

    The request body must have been read. Cancelling this very task (as
    ``asyncio.timeout`` does) keeps ``work`` where it runs, so a retry that takes over
    the request still finds it. Raises
    ``InvalidRequest`` (499, ``client_disconnected``) when the caller left.
    ``connection``: the request's ``RequestConnection``, if the server gives one.
    """
    with DisconnectWatch(receive, connection) as watch:
        try:
            return await work
        except asyncio.CancelledError:
            # Ours, not a takeover's or a shutdown's: the caller left.
            if watch.caller_left and watch.task.uncancel() == 0:
                raise InvalidRequest(
                    "the client closed the connection before the reply",
                    code="client_disconnected",
                    status=CLIENT_CLOSED,
                ) from None
            raise
