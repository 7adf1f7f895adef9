"""The HTTP server's own guard: a connection must finish its request headers in time.

uvicorn closes a connection that stays idle *after* a response (``timeout_keep_alive``),
but has no limit on a connection that never sends a request, or sends its headers a
byte at a time (slowloris): each one holds a socket and a protocol object forever.
``HeaderTimeoutProtocol`` adds that limit: from the moment a connection opens, and from
the first byte of every further request on it, the headers must be complete within
``header_timeout`` seconds, or the connection is closed. A request whose headers are in
is not affected (streams may run for minutes).
"""

from __future__ import annotations

import asyncio
import logging

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger(__name__)

DEFAULT_HEADER_TIMEOUT = 10.0


class HeaderTimeoutProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline for the request headers."""

    # Set once per process before serving (``proxy serve`` and each worker's factory).
    header_timeout: float = DEFAULT_HEADER_TIMEOUT
    closed_for_timeout = 0  # connections closed by the deadline, per process

    _header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start_header_timer()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._start_header_timer()

    def on_headers_complete(self) -> None:
        self._stop_header_timer()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_header_timer()
        super().connection_lost(exc)

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
