"""The HTTP server's protocol: uvicorn's httptools protocol with two additions.

**A deadline for request headers.** A connection must finish its request headers in time.

uvicorn closes a connection that stays idle *after* a response (``timeout_keep_alive``),
but has no limit on a connection that never sends a request, or sends its headers a
byte at a time (slowloris): each one holds a socket and a protocol object forever.
``HeaderTimeoutProtocol`` adds that limit: from the moment a connection opens, and from
the first byte of every further request on it, the headers must be complete within
``header_timeout`` seconds, or the connection is closed. A request whose headers are in
is not affected (streams may run for minutes).

**The response head leaves with the first body bytes.** uvicorn writes the status line
and headers as soon as the app sends ``http.response.start``, and the first body bytes
in a second write. On loopback and on a busy host each write is a wake-up of the client
(its process scheduled, its event loop run) before the proxy's next step: measured, the
head alone cost about 0.25 ms of every stream's first token. ``HeadWithFirstBody`` holds
the head until the body follows, in the same step of the event loop (an SSE stream's
first event, a JSON body), and sends both in one write; a head whose body does not
follow at once leaves at the end of the loop iteration, so nothing waits on it. This is
what aiohttp's server does (``proxy bench``'s bare relay).

**A hang-up is known when it is read.** ``eof_received`` marks the request disconnected
at once (uvicorn waits for the transport's close, one loop iteration later), and the
scope's ``CONNECTION_EXTENSION`` lets the app ask without an ASGI ``receive``, which
costs a trip round the loop while the caller is still there (``caller_left``).

**A stream's events after the first are written as they are** (``write_more_body``),
not as ASGI messages: the relay's cost per event is most of the proxy's CPU per stream.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from starlette.types import Scope
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

log = logging.getLogger(__name__)

DEFAULT_HEADER_TIMEOUT = 10.0
CONNECTION_EXTENSION = "proxy.connection"  # scope["extensions"]: ``RequestConnection``


class HeaderTimeoutProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline for the request headers."""

    # Set once per process before serving (``proxy serve`` and each worker's factory).
    header_timeout: float = DEFAULT_HEADER_TIMEOUT
    closed_for_timeout = 0  # connections closed by the deadline, per process

    _header_timer: asyncio.TimerHandle | None = None
    _request: RequestConnection | None = None  # the current request's

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start_header_timer()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._start_header_timer()

    def on_headers_complete(self) -> None:
        self._stop_header_timer()
        super().on_headers_complete()
        if self.cycle is not None:  # the request's cycle, just made: nothing written yet
            self.cycle.transport = HeadWithFirstBody(self.transport, self.loop)
            # ASGI types each extension as a dict; the app reads this one as what it is.
            extensions: dict[str, object] = self.cycle.scope.setdefault(  # type: ignore[assignment]
                "extensions", {}
            )
            self._request = RequestConnection(self.cycle)
            extensions[CONNECTION_EXTENSION] = self._request

    def eof_received(self) -> None:
        # The caller closed its side: the request is disconnected now, as it is once the
        # transport closes (``connection_lost``, one loop iteration later).
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            cycle.disconnected = True
            cycle.message_event.set()
            self._hung_up()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_header_timer()
        super().connection_lost(exc)
        self._hung_up()

    def _hung_up(self) -> None:
        request = self._request
        if request is not None and request.gone:
            request.hung_up()

    def _start_header_timer(self) -> None:
        if self._header_timer is None and self.header_timeout > 0:
            self._header_timer = self.loop.call_later(self.header_timeout, self._headers_late)

    def _stop_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_late(self) -> None:
        self._header_timer = None
        type(self).closed_for_timeout += 1
        if not self.transport.is_closing():
            self.transport.close()


class RequestConnection:
    """One request's side of its connection, for the app to use without ASGI messages:
    whether its caller hung up (an ASGI ``receive`` costs a trip round the event loop
    while the caller is still there), and the body of a streamed response written as it
    comes (an ASGI message per SSE event costs a dict, a middleware's wrapper and
    uvicorn's checks). The scope's ``CONNECTION_EXTENSION``."""

    __slots__ = ("_cycle", "on_gone")

    def __init__(self, cycle: RequestResponseCycle) -> None:
        self._cycle = cycle
        # Called once, from the protocol, when the caller hangs up before the response
        # is complete: a watch with no task of its own (``DisconnectWatch``).
        self.on_gone: Callable[[], None] | None = None

    @property
    def gone(self) -> bool:
        return bool(self._cycle.disconnected)

    def hung_up(self) -> None:
        on_gone, self.on_gone = self.on_gone, None
        if on_gone is not None:
            on_gone()

    def write_more_body(self, data: bytes) -> bool:
        """Write ``data`` as the next chunk of a started chunked body, as uvicorn's
        ``send`` does; False, with nothing written, when ``send`` must do it instead
        (the response is not a started chunked body, or the socket's buffer is full and
        the sender waits for it to drain). The end of the body always goes by ``send``."""
        cycle = self._cycle
        if (
            not cycle.chunked_encoding
            or not cycle.response_started
            or cycle.response_complete
            or cycle.flow.write_paused
        ):
            return False
        if data and not cycle.disconnected:  # after a hang-up, dropped (as ``send`` does)
            cycle.transport.write(b"%x\r\n%b\r\n" % (len(data), data))
        return True


def request_connection(scope: Scope) -> RequestConnection | None:
    """The request's ``RequestConnection``; None under another server (use ASGI)."""
    found: RequestConnection | None = scope.get("extensions", {}).get(CONNECTION_EXTENSION)
    return found


class HeadWithFirstBody(asyncio.Transport):
    """What one request's response cycle writes to: its first write (the response head)
    is held until the next write or the end of the loop iteration, whichever is first."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self._transport = transport
        self._loop = loop
        self._head: bytes | None = None
        self._first = True

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._first:
            self._first = False
            self._head = bytes(data)
            self._loop.call_soon(self._send_head)
            return
        if self._head is not None:
            data, self._head = self._head + data, None
        self._transport.write(data)

    def _send_head(self) -> None:
        head, self._head = self._head, None
        if head is not None and not self._transport.is_closing():
            self._transport.write(head)

    def close(self) -> None:
        self._send_head()
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def get_extra_info(self, name: str, default: object = None) -> object:
        return self._transport.get_extra_info(name, default)
