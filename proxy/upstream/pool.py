"""Keep-alive connections to upstreams (``proxy.upstream.http1``), pooled per origin:
a bound on exchanges in flight and on idle connections, idle ones closed after a while,
and one retry on a fresh connection when a pooled one turns out closed (the keep-alive
race: the upstream gave up on it as the request went out)."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque

from proxy.upstream.http1 import (
    ConnectFailed,
    Connection,
    ConnectionBroke,
    Endpoint,
    Response,
    endpoint,
    request_head,
)

DEFAULT_IDLE_SECONDS = 15.0  # an idle pooled connection is closed after this


class ConnectionPool:
    """Keep-alive connections per origin, at most ``max_connections`` exchanges at once
    and as many idle connections; an idle one is closed after ``idle_seconds``."""

    def __init__(
        self,
        max_connections: int,
        idle_seconds: float = DEFAULT_IDLE_SECONDS,
        tls: ssl.SSLContext | None = None,  # default: the system's trusted certificates
    ) -> None:
        self._slots = asyncio.Semaphore(max_connections)
        self._max_idle = max_connections
        self._idle_seconds = idle_seconds
        self._idle: dict[tuple[str, str, int], deque[Connection]] = {}
        self._idle_count = 0
        self._sweep: asyncio.TimerHandle | None = None
        # Made now, at start-up: loading the trusted certificates reads files (tens of ms),
        # which the first https request would otherwise wait for on the event loop.
        self._tls = tls or ssl.create_default_context()
        self.opened = 0  # connections made, ever (reuse shows as few)

    async def request(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        body: bytes = b"",
        *,
        connect_timeout: float,
        total_timeout: float,
    ) -> Response:
        """Send the request; return once the response's status and headers are in.
        Raises ``InvalidRequest`` (before anything is sent), ``ConnectFailed``,
        ``ConnectionBroke`` or ``TimeoutError``."""
        where = endpoint(url)
        deadline = asyncio.get_running_loop().time() + total_timeout
        head = request_head(method, where, headers, len(body))
        await self._slots.acquire()  # given back when the response is released
        for attempt in range(2):
            try:
                connection, reused = await self._connection(where, connect_timeout, deadline)
            except BaseException:
                self._slots.release()
                raise
            response = connection.send(head, body, deadline)
            try:
                await response.head
                return response
            except ConnectionBroke:
                # A pooled connection the upstream had just closed: once more, anew.
                again = reused and not response.received_any and attempt == 0
                response.close()
                if not again:
                    raise
                await self._slots.acquire()
            except BaseException:
                response.close()
                raise
        raise AssertionError("unreachable: the second attempt returns or raises")

    async def close(self) -> None:
        for idle in self._idle.values():
            for connection in idle:
                connection.abort()
        self._idle.clear()
        self._idle_count = 0
        if self._sweep is not None:
            self._sweep.cancel()

    # --- connections ---------------------------------------------------------------------

    async def _connection(
        self, where: Endpoint, connect_timeout: float, deadline: float
    ) -> tuple[Connection, bool]:
        key = (where.scheme, where.host, where.port)
        idle = self._idle.get(key)
        while idle:
            connection = idle.pop()
            self._idle_count -= 1
            if not connection.closed:
                return connection, True
        loop = asyncio.get_running_loop()
        wait = min(connect_timeout, max(deadline - loop.time(), 0.0))
        tls = self._tls if where.scheme == "https" else None
        try:
            async with asyncio.timeout(wait):
                _, protocol = await loop.create_connection(
                    lambda: Connection(self, key),
                    where.host,
                    where.port,
                    ssl=tls,
                    server_hostname=where.host if tls else None,
                )
        except TimeoutError:  # an OSError too: a timeout stays a timeout
            raise
        except (OSError, ssl.SSLError) as exc:
            raise ConnectFailed(f"cannot connect to {where.host}:{where.port}: {exc}") from exc
        self.opened += 1
        return protocol, False

    def put_back(self, connection: Connection) -> None:
        self._slots.release()
        if self._idle_count >= self._max_idle:
            connection.abort()
            return
        connection.idle_since = time.monotonic()
        self._idle.setdefault(connection.key, deque()).append(connection)
        self._idle_count += 1
        if self._sweep is None:
            self._sweep = connection.loop.call_later(self._idle_seconds, self._close_stale)

    def discarded(self) -> None:
        self._slots.release()

    def _close_stale(self) -> None:
        self._sweep = None
        oldest = time.monotonic() - self._idle_seconds
        for key, idle in list(self._idle.items()):
            while idle and (idle[0].closed or idle[0].idle_since <= oldest):
                idle.popleft().abort()
                self._idle_count -= 1
            if not idle:
                del self._idle[key]
        if self._idle_count:
            self._sweep = asyncio.get_running_loop().call_later(
                self._idle_seconds, self._close_stale
            )
