"""HTTP/1.1 for upstream calls: a connection's exchanges, one at a time, each response
parsed by httptools (the C parser the server side already uses) and its body handed over
as it arrives.

Why not aiohttp's client, which served here before: at 100 concurrent streams it was
about a quarter of the proxy's event-loop CPU (py-spy): a task to write each request
body, a stream reader with its timers, Python-level bookkeeping on every read. Here a
request is one write, and a read is one C parse and a list append
(``tests/bench/clients.py`` compares the clients in one run).

The connections are kept alive by ``proxy.upstream.pool``. Together they do what
upstream calls need and no more: ``POST`` and ``GET``, http and https, keep-alive with
a bounded pool, chunked, sized and close-delimited bodies, gzip and deflate (never asked
for: the request says ``identity``), one deadline for the whole exchange. No proxies
from the environment, no cookies (the aiohttp session here used neither) and no
redirects (a 3xx is an upstream error).
"""

from __future__ import annotations

import asyncio
import zlib
from dataclasses import dataclass
from functools import lru_cache
from typing import Protocol, cast
from urllib.parse import urlsplit

import httptools

MAX_HEADERS = 100  # a response with more is malformed (a hostile upstream)
MAX_HEADER_BYTES = 64 * 1024
READ_HIGH_WATER = 256 * 1024  # unread body bytes before the socket stops being read
MAX_INFLATE = 16 * 1024 * 1024  # what one read of a compressed body may expand to


class HTTPError(Exception):
    """The exchange failed below HTTP (connection, framing)."""


class InvalidRequest(HTTPError):
    """The request cannot be sent as asked (its URL or a header): a configuration fault."""


class ConnectFailed(HTTPError):
    """No connection could be made (refused, unreachable, name not found, TLS)."""


class ConnectionBroke(HTTPError):
    """The connection closed or sent something malformed before the response ended."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A URL as a request needs it."""

    scheme: str
    host: str
    port: int
    target: str  # path and query
    host_header: str


@lru_cache(maxsize=1024)  # upstream URLs come from configuration: a handful
def endpoint(url: str) -> Endpoint:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidRequest(f"not an http(s) URL: {url}")
    default = 443 if parts.scheme == "https" else 80
    port = parts.port or default
    host = parts.hostname
    shown = f"[{host}]" if ":" in host else host
    host_header = shown if port == default else f"{shown}:{port}"
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Endpoint(parts.scheme, host, port, target, host_header)


def request_head(method: str, where: Endpoint, headers: dict[str, str], length: int) -> bytes:
    lines = [f"{method} {where.target} HTTP/1.1", f"Host: {where.host_header}"]
    for name, value in headers.items():
        if "\r" in value or "\n" in value or "\r" in name or "\n" in name:
            raise InvalidRequest(f"header {name!r} has a line break")
        lines.append(f"{name}: {value}")
    lines.append("Accept-Encoding: identity")
    if method != "GET" or length:
        lines.append(f"Content-Length: {length}")
    try:
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    except UnicodeEncodeError as exc:  # HTTP/1.1 headers are bytes; latin-1 is the most
        raise InvalidRequest("a header or the URL has characters HTTP cannot carry") from exc


class ConnectionOwner(Protocol):
    """Where a connection goes when its exchange is over (``proxy.upstream.pool``)."""

    def put_back(self, connection: Connection) -> None: ...  # reusable: kept for the next

    def discarded(self) -> None: ...  # closed: its slot is free


class Response:
    """One response, read as it arrives. ``close()`` when done with it (always)."""

    __slots__ = (
        "_buffered",
        "_chunks",
        "_connection",
        "_deadline",
        "_decoder",
        "_ended",
        "_error",
        "_header_bytes",
        "_header_count",
        "_lingering",
        "_released",
        "_waiter",
        "head",
        "headers",
        "received_any",
        "status",
    )

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self.status = 0
        self.headers: dict[str, str] = {}  # lower-case names; repeated ones joined
        self.head: asyncio.Future[None] = connection.loop.create_future()
        self.received_any = False  # any byte of the response arrived
        self._chunks: list[bytes] = []
        self._buffered = 0
        self._waiter: asyncio.Future[None] | None = None
        self._error: BaseException | None = None
        self._ended = False  # the whole body arrived
        self._released = False
        self._lingering = False  # read all it wants; waits for the body's end to reuse
        self._decoder: zlib._Decompress | None = None
        self._deadline: asyncio.TimerHandle | None = None
        self._header_bytes = 0
        self._header_count = 0

    async def read_chunk(self) -> bytes:
        """The body bytes that arrived since the last read (waiting for some); b"" at
        the end. Raises ``TimeoutError`` past the deadline, ``ConnectionBroke``."""
        while not self._chunks:
            if self._error is not None:
                raise self._error
            if self._ended:
                self._done()
                return b""
            self._waiter = self._connection.loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        chunks, self._chunks = self._chunks, []
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        if self._buffered > READ_HIGH_WATER:
            self._connection.resume()
        self._buffered = 0
        return data

    async def read(self, limit: int) -> bytes:
        """The body, up to ``limit`` bytes (the rest is not read)."""
        parts: list[bytes] = []
        size = 0
        while size < limit and (chunk := await self.read_chunk()):
            parts.append(chunk)
            size += len(chunk)
        return b"".join(parts)[:limit]

    def close(self) -> None:
        """Done with the response: its connection goes back to the pool if the whole
        body arrived, else it is closed (the upstream sees it and stops generating)."""
        if self._released:
            return
        if self._ended and self._error is None:
            self._done()
        else:
            self._release(reusable=False)

    def close_after_end(self, grace: float) -> None:
        """Done with a response that has nothing more to say (an SSE stream's ``[DONE]``
        was read) though its body has not ended yet: the end (a chunked body's last
        chunk, often a read of its own) is waited for, up to ``grace`` seconds, and the
        connection then goes back to the pool instead of costing the next request a
        new connection (and TLS handshake). Anything else arriving is dropped."""
        if self._released:
            return
        if self._ended or self._error is not None:
            self.close()
            return
        self._lingering = True
        self._chunks, self._buffered = [], 0
        self._connection.resume()
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline = self._connection.loop.call_later(grace, self._expire)

    # --- from the connection -------------------------------------------------------

    def _header(self, name: bytes, value: bytes) -> None:
        self._header_bytes += len(name) + len(value)
        self._header_count += 1
        if self._header_count > MAX_HEADERS or self._header_bytes > MAX_HEADER_BYTES:
            raise ConnectionBroke("upstream response headers are too large")
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        self.headers[key] = f"{self.headers[key]}, {text}" if key in self.headers else text

    def _headers_done(self, status: int) -> None:
        if status < 200:  # 1xx: an interim response; the real one follows
            self.headers.clear()
            return
        self.status = status
        coding = self.headers.get("content-encoding", "identity").strip().lower()
        if coding in ("gzip", "x-gzip"):
            self._decoder = zlib.decompressobj(wbits=31)
        elif coding == "deflate":
            self._decoder = zlib.decompressobj()
        elif coding != "identity":
            raise ConnectionBroke(f"upstream used an unsupported Content-Encoding: {coding}")
        if not self.head.done():
            self.head.set_result(None)

    def _body(self, data: bytes) -> None:
        if self._decoder is not None:
            try:
                data = self._decoder.decompress(data, MAX_INFLATE)
            except zlib.error as exc:
                raise ConnectionBroke("upstream sent a body that does not decompress") from exc
            if self._decoder.unconsumed_tail:  # a compression bomb, not an answer
                raise ConnectionBroke("upstream sent a body that expands without bound")
        if not data or self._lingering:
            return
        self._chunks.append(data)
        self._buffered += len(data)
        if self._buffered > READ_HIGH_WATER:
            self._connection.pause()
        self._wake()

    def _message_done(self) -> None:
        if self.status == 0 or self._ended:  # the end of a 1xx; a repeated end
            return
        self._ended = True
        if self._deadline is not None:
            self._deadline.cancel()
        if self._lingering:
            self._done()
            return
        self._wake()

    def _fail(self, error: BaseException) -> None:
        if self._ended or self._error is not None:
            return
        self._error = error
        if self._lingering:
            self._release(reusable=False)
            return
        if not self.head.done():
            self.head.set_exception(error)
            self.head.exception()  # retrieved: nobody may be waiting on it any more
        self._wake()

    def _expire(self) -> None:
        self._fail(TimeoutError("the upstream exchange passed its deadline"))
        self._release(reusable=False)

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _done(self) -> None:
        self._release(reusable=self._connection.keep_alive)

    def _release(self, reusable: bool) -> None:
        if self._released:
            return
        self._released = True
        if self._deadline is not None:
            self._deadline.cancel()
        self._connection.finished(reusable)


class Connection(asyncio.Protocol):
    """One connection to an upstream; one exchange at a time."""

    def __init__(self, pool: ConnectionOwner, key: tuple[str, str, int]) -> None:
        self.pool = pool
        self.key = key
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.response: Response | None = None
        self.closed = False
        self.keep_alive = False
        self.idle_since = 0.0
        self._paused = False

    # --- asyncio.Protocol -----------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        response = self.response
        if response is None:  # bytes nobody asked for: the connection is not usable
            self.abort()
            return
        response.received_any = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:  # ours, raised in a callback
            cause = exc.__context__
            self._broke(cause if isinstance(cause, ConnectionBroke) else ConnectionBroke(str(exc)))
        except httptools.HttpParserError as exc:
            self._broke(ConnectionBroke(f"upstream sent a malformed response: {exc}"))

    def eof_received(self) -> bool:
        self.closed = True  # never sent on again, even before the transport's close
        response = self.response
        if response is not None and response.status and _close_delimited(response.headers):
            self.keep_alive = False  # the body ends where the bytes end
            response._message_done()
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        response = self.response
        if response is not None:
            response._fail(ConnectionBroke("upstream closed the connection mid-response"))

    # --- httptools callbacks ----------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        assert self.response is not None
        self.response._header(name, value)

    def on_headers_complete(self) -> None:
        assert self.response is not None
        self.response._headers_done(self.parser.get_status_code())

    def on_body(self, body: bytes) -> None:
        assert self.response is not None
        self.response._body(body)

    def on_message_complete(self) -> None:
        assert self.response is not None
        self.keep_alive = self.parser.should_keep_alive()
        self.response._message_done()

    # --- for the pool and the response ---------------------------------------------------

    def send(self, head: bytes, body: bytes, deadline: float) -> Response:
        assert self.transport is not None
        response = self.response = Response(self)
        response._deadline = self.loop.call_at(deadline, response._expire)
        self.transport.write(head + body if body else head)
        return response

    def finished(self, reusable: bool) -> None:
        self.response = None
        if self._paused:
            self.resume()
        if reusable and not self.closed:
            self.pool.put_back(self)
        else:
            self.abort()
            self.pool.discarded()

    def pause(self) -> None:
        if not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()

    def resume(self) -> None:
        if self._paused and self.transport is not None and not self.closed:
            self._paused = False
            self.transport.resume_reading()

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    def _broke(self, error: ConnectionBroke) -> None:
        if self.response is not None:
            self.response._fail(error)
        self.abort()


def _close_delimited(headers: dict[str, str]) -> bool:
    return "content-length" not in headers and "chunked" not in headers.get("transfer-encoding", "")
