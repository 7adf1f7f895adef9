"""The history scripts' lane to a standalone Redis: commands written straight to one
pipelined connection, each reply parsed by hiredis and settled in the protocol's callback.

Through redis-py a script call costs about 110 us of CPU (a pool checkout, the retry
wrapper, observability hooks, a health check, stream reads) and, as a task of its own,
a trip round the event loop to start and another to hand its result over. Through the
lane it costs about 40 us: the command is written when the call is made, and the reply
(decoded in the same callback) wakes its caller in one hop. Redis answers a
connection's commands in order, so one connection carries every call at once: replies
match a queue of waiting calls.

The lane keeps redis-py's rules for these calls:

- each call is time-boxed by the client's socket timeout. A reply that is late closes
  the connection, and every call waiting on it fails with ``TimeoutError``: the replies
  behind it could no longer be matched. A timed-out call is never retried;
- a lost connection (or a refused one) fails its calls with ``ConnectionError``, and each
  is retried once on a fresh connection: a Redis restart leaves every connection stale,
  and the scripts are idempotent per attempt (redis-py's stale-connection retry);
- the server's error replies raise redis-py's exceptions (``NoPermissionError``...), so
  the guard and the commit retries judge them the same; a NOSCRIPT (a restarted or
  promoted server) runs the script through redis-py, which loads it.

Only a plain TCP, RESP2, standalone client gets a lane (``script_lane``); Sentinel,
Cluster, TLS and unix sockets keep redis-py for everything (``PyScript``).
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol, TypeVar, cast

import hiredis
import redis.asyncio as redis
from redis._parsers.base import BaseParser
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError
from redis.exceptions import TimeoutError as RedisTimeoutError

T = TypeVar("T")
Arg = bytes | str | int
Reply = Any  # what hiredis parses (bytes, int, None, lists of them), as redis-py's replies
Sink = Callable[[Reply], None]  # gets a reply, an error reply, or the connection's error


def as_is(reply: Reply) -> Reply:
    return reply


def _pack(command: Sequence[Arg]) -> bytes:
    packed: bytes = hiredis.pack_command(tuple(command))  # type: ignore[arg-type]  # stub: a 1-tuple
    return packed


class LaneProtocol(asyncio.Protocol):
    """One connection: commands go out in order, replies come back in order."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.transport: asyncio.Transport | None = None
        self.broken = False  # lost, timed out or out of step: a new call reconnects
        # parse_error gives redis-py's exception for each error reply.
        self._reader = hiredis.Reader(replyError=BaseParser.parse_error)
        self._waiting: collections.deque[tuple[Sink, asyncio.TimerHandle]]
        self._waiting = collections.deque()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass

    def send(self, packed: bytes, sink: Sink) -> None:
        """Writes one command now; its reply (or the connection's failure) goes to
        ``sink``, whoever still waits for it."""
        if self.broken or self.transport is None:  # lost since it was handed out
            sink(RedisConnectionError("Connection to Redis lost"))
            return
        timer = asyncio.get_running_loop().call_later(self.timeout, self._late)
        self._waiting.append((sink, timer))
        self.transport.write(packed)

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        while True:
            try:
                reply = self._reader.gets()
            except hiredis.ProtocolError as exc:
                self._fail(RedisConnectionError(f"Protocol error from Redis: {exc}"))
                return
            if reply is False:
                return
            if not self._waiting:  # a reply nobody asked for: out of step
                self._fail(RedisConnectionError("Redis sent a reply to no command"))
                return
            sink, timer = self._waiting.popleft()
            timer.cancel()
            sink(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(RedisConnectionError(f"Connection to Redis lost: {exc or 'closed'}"))

    def close(self) -> None:
        self._fail(RedisConnectionError("the Redis lane was closed"))

    def _late(self) -> None:
        """The oldest unanswered call is past its time: every call on the connection
        fails (the replies behind it could not be matched) and the connection closes."""
        self._fail(RedisTimeoutError("Timeout reading from Redis"))

    def _fail(self, error: Exception) -> None:
        self.broken = True
        while self._waiting:
            sink, timer = self._waiting.popleft()
            timer.cancel()
            sink(error)
        if self.transport is not None and not self.transport.is_closing():
            self.transport.abort()


class ScriptLane:
    """Commands on one pipelined connection, opened on first use and after a loss."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        db: int = 0,
        username: str | None = None,
        password: str | None = None,
        timeout: float = 1.0,
        connect_timeout: float = 1.0,
    ) -> None:
        self.host, self.port, self.db = host, port, db
        self.username, self.password = username, password
        self.timeout, self.connect_timeout = timeout, connect_timeout
        self._protocol: LaneProtocol | None = None
        self._connecting: asyncio.Future[LaneProtocol] | None = None
        self.closed = False  # by ``close``: no call opens a connection again

    def call(
        self,
        command: Sequence[Arg],
        decode: Callable[[Reply], T],
        *,
        fallback: Callable[[], Awaitable[Reply]] | None = None,
    ) -> asyncio.Future[T]:
        """The command, written now if the connection is open; the future gets its reply
        through ``decode``, or its error. ``fallback`` runs instead if the server lacks
        the script. The call goes on if its caller stops waiting (a shielded claim)."""
        result: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        _Call(self, _pack(command), decode, fallback, result).send()
        return result

    async def execute(self, *command: Arg) -> Reply:
        return await self.call(command, as_is)

    def protocol(self) -> LaneProtocol | asyncio.Future[LaneProtocol]:
        """The open connection, or the attempt to open one (one at a time)."""
        if self.closed:
            raise RedisConnectionError("the Redis lane was closed")
        protocol = self._protocol
        if protocol is not None and not protocol.broken:
            return protocol
        if self._connecting is None:
            self._connecting = asyncio.ensure_future(self._open())
            self._connecting.add_done_callback(self._opened)
        return self._connecting

    def _opened(self, opening: asyncio.Future[LaneProtocol]) -> None:
        self._connecting = None
        if not opening.cancelled() and opening.exception() is None:
            self._protocol = opening.result()
            if self.closed:  # closed while it was opening
                self._protocol.close()

    async def _open(self) -> LaneProtocol:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, protocol = await loop.create_connection(
                    lambda: LaneProtocol(self.timeout), self.host, self.port
                )
                hello: list[bytes] = []
                if self.password is not None:
                    who = (self.username,) if self.username else ()
                    hello.append(_pack(("AUTH", *who, self.password)))
                if self.db:
                    hello.append(_pack(("SELECT", self.db)))
                answers = [_answer(protocol, packed) for packed in hello]
                for reply in [await answer for answer in answers]:
                    if isinstance(reply, Exception):  # a refused password: AuthenticationError
                        protocol.close()
                        raise reply
        except TimeoutError:
            raise RedisTimeoutError("Timeout connecting to Redis") from None
        except OSError as exc:
            raise RedisConnectionError(f"Error connecting to Redis: {exc}") from exc
        return protocol

    def close(self) -> None:
        """Every call waiting fails (``ConnectionError``); later calls fail at once."""
        self.closed = True
        if self._protocol is not None:
            self._protocol.close()


def _answer(protocol: LaneProtocol, packed: bytes) -> asyncio.Future[Reply]:
    answer: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()

    def settle(reply: Reply) -> None:
        if not answer.done():
            answer.set_result(reply)

    protocol.send(packed, settle)
    return answer


class _Call:
    """One command through the lane, until its future is settled."""

    __slots__ = ("decode", "fallback", "lane", "packed", "result", "retried")

    def __init__(
        self,
        lane: ScriptLane,
        packed: bytes,
        decode: Callable[[Reply], Any],
        fallback: Callable[[], Awaitable[Reply]] | None,
        result: asyncio.Future[Any],
    ) -> None:
        self.lane, self.packed, self.decode = lane, packed, decode
        self.fallback, self.result, self.retried = fallback, result, False

    def send(self) -> None:
        try:
            protocol = self.lane.protocol()
        except RedisConnectionError as closed:
            self.retried = True
            self.settle(closed)
            return
        if isinstance(protocol, LaneProtocol):
            protocol.send(self.packed, self.settle)
        else:  # opening a connection: sent once it is open
            protocol.add_done_callback(self._send_on)

    def _send_on(self, opening: asyncio.Future[LaneProtocol]) -> None:
        if opening.cancelled():
            self.settle(RedisConnectionError("the connection to Redis was not opened"))
        elif (error := opening.exception()) is not None:
            self.settle(error)
        else:
            opening.result().send(self.packed, self.settle)

    def settle(self, reply: Reply) -> None:
        result = self.result
        if result.done():
            return  # nobody waits for it any more (its caller was cancelled)
        if isinstance(reply, RedisConnectionError) and not self.retried:
            self.retried = True  # a stale connection: once more, on a fresh one
            self.send()
        elif isinstance(reply, NoScriptError) and self.fallback is not None:
            asyncio.ensure_future(self.fallback()).add_done_callback(self._fell_back)
        elif isinstance(reply, Exception):
            result.set_exception(reply)
        else:
            try:
                result.set_result(self.decode(reply))
            except Exception as exc:
                result.set_exception(exc)

    def _fell_back(self, done: asyncio.Future[Reply]) -> None:
        if self.result.done():
            return
        if done.cancelled():
            self.result.cancel()
        elif (error := done.exception()) is not None:
            self.result.set_exception(error)
        else:
            self.fallback = None
            self.settle(done.result())


class StoreScript(Protocol):
    """A history script: started now (``start``) or awaited (``__call__``)."""

    def start(
        self, keys: Sequence[Arg], args: Sequence[Arg], decode: Callable[[Reply], T]
    ) -> asyncio.Future[T]: ...

    async def __call__(self, keys: Sequence[Arg] = (), args: Sequence[Arg] = ()) -> Reply: ...


class LaneScript:
    """A registered script, called through the lane."""

    def __init__(self, script: AsyncScript, lane: ScriptLane) -> None:
        self.script, self.lane = script, lane

    def start(
        self, keys: Sequence[Arg], args: Sequence[Arg], decode: Callable[[Reply], T]
    ) -> asyncio.Future[T]:
        command = ("EVALSHA", self.script.sha, len(keys), *keys, *args)
        return self.lane.call(
            command, decode, fallback=lambda: self.script(keys=_keys(keys), args=_keys(args))
        )

    async def __call__(self, keys: Sequence[Arg] = (), args: Sequence[Arg] = ()) -> Reply:
        return await self.start(keys, args, as_is)


class PyScript:
    """A registered script, called through redis-py (a task of its own to start it)."""

    def __init__(self, script: AsyncScript) -> None:
        self.script = script

    def start(
        self, keys: Sequence[Arg], args: Sequence[Arg], decode: Callable[[Reply], T]
    ) -> asyncio.Future[T]:
        async def run() -> T:
            return decode(await self(keys, args))

        return asyncio.ensure_future(run())

    async def __call__(self, keys: Sequence[Arg] = (), args: Sequence[Arg] = ()) -> Reply:
        return await self.script(keys=_keys(keys), args=_keys(args))


def _keys(values: Sequence[Arg]) -> list[bytes | str]:
    """redis-py's script call takes ints too (its annotations do not say so)."""
    return cast(list[bytes | str], list(values))


def script_lane(client: object) -> ScriptLane | None:
    """A lane for ``client``'s server, or None where redis-py must stay (Sentinel,
    Cluster, TLS, a unix socket, RESP3)."""
    if type(client) is not redis.Redis:
        return None
    pool = client.connection_pool
    options = pool.connection_kwargs
    if (
        type(pool) is not redis.ConnectionPool
        or pool.connection_class is not redis.Connection
        or options.get("protocol") not in (None, 2, "2")
    ):
        return None
    timeout = options.get("socket_timeout") or 5.0
    return ScriptLane(
        str(options.get("host", "localhost")),
        int(options.get("port", 6379)),
        db=int(options.get("db") or 0),
        username=options.get("username"),
        password=options.get("password"),
        timeout=float(timeout),
        connect_timeout=float(options.get("socket_connect_timeout") or timeout),
    )
