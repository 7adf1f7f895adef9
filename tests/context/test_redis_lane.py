"""The scripts' lane (``proxy.context.redis_lane``) against real redis-servers: replies
matched to their calls, redis-py's rules on errors, restarts, stalls, passwords."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest
import redis.asyncio as redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.sentinel import Sentinel
from redis.exceptions import AuthenticationError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from proxy.context.redis_lane import LaneProtocol, LaneScript, ScriptLane, as_is, script_lane
from tests.context.redis_server import redis_server

ECHO = "return {ARGV[1], redis.call('INCR', KEYS[1])}"


def lane_on(port: int, **options: object) -> tuple[redis.Redis, ScriptLane]:
    client = redis.Redis(port=port, socket_timeout=0.3, **options)  # type: ignore[arg-type]
    lane = script_lane(client)
    assert lane is not None
    return client, lane


async def test_every_concurrent_call_gets_its_own_reply_on_one_connection() -> None:
    with redis_server() as (port, _):
        client, lane = lane_on(port)
        echo = LaneScript(client.register_script(ECHO), lane)
        await client.script_load(ECHO)
        replies = await asyncio.gather(*(echo(["n"], [f"call-{i}"]) for i in range(500)))
        assert [reply[0] for reply in replies] == [f"call-{i}".encode() for i in range(500)]
        assert sorted(reply[1] for reply in replies) == list(range(1, 501))  # each ran once
        clients = await client.client_list()
        assert len([c for c in clients if c["cmd"] == "evalsha"]) == 1  # one connection
        lane.close()
        await client.aclose()


async def test_an_error_reply_is_redis_pys_exception_and_the_lane_goes_on() -> None:
    with redis_server() as (port, _):
        client, lane = lane_on(port)
        await client.set("text", "not a list")
        with pytest.raises(ResponseError, match="WRONGTYPE"):
            await lane.execute("LPUSH", "text", "x")
        failing = LaneScript(client.register_script("return redis.error_reply('NOPE')"), lane)
        with pytest.raises(ResponseError, match="NOPE"):
            await failing(["k"], [])
        assert await lane.execute("GET", "text") == b"not a list"  # same connection, in step
        lane.close()
        await client.aclose()


async def test_a_server_without_the_script_gets_it_loaded() -> None:
    with redis_server() as (port, _):
        client, lane = lane_on(port)
        echo = LaneScript(client.register_script(ECHO), lane)
        assert await echo(["n"], ["first"]) == [b"first", 1]  # never loaded: NOSCRIPT
        await client.script_flush()
        assert await echo(["n"], ["again"]) == [b"again", 2]
        assert await client.get("n") == b"2"  # each call ran once
        lane.close()
        await client.aclose()


async def test_a_restart_costs_no_call_and_a_dead_server_is_a_connection_error() -> None:
    with redis_server() as (port, process):
        client, lane = lane_on(port)
        assert await lane.execute("SET", "k", "1") == b"OK"
        # Restarted while the loop is busy: the lane has not seen its connection close.
        process.kill()
        process.wait(5)
        with redis_server(port=port) as (_, restarted):
            assert await lane.execute("INCR", "k") == 1  # the fresh server, on a new connection
            stats = await client.info("commandstats")
            assert stats["cmdstat_incr"]["calls"] == 1  # retried once: ran once
            restarted.kill()
            restarted.wait(5)
            with pytest.raises(RedisConnectionError):
                await lane.execute("GET", "k")  # down: refused, then refused again
        lane.close()
        await client.aclose()


async def test_a_stalled_server_fails_every_waiting_call_in_time_then_recovers() -> None:
    with redis_server() as (port, process):
        client, lane = lane_on(port)
        await lane.execute("SET", "k", "0")
        os.kill(process.pid, signal.SIGSTOP)
        try:
            began = time.monotonic()
            calls = [lane.call(("INCR", "k"), as_is) for _ in range(20)]
            outcomes = await asyncio.gather(*calls, return_exceptions=True)
            waited = time.monotonic() - began
        finally:
            os.kill(process.pid, signal.SIGCONT)
        assert [type(o) for o in outcomes] == [RedisTimeoutError] * 20
        assert 0.3 <= waited < 1.5  # the socket timeout, not a hang
        # The stalled server ran the calls it had read when it woke (a timed-out call
        # may have run, as with redis-py); none is retried, and the lane works again.
        assert await lane.execute("INCR", "k") == 21
        lane.close()
        await client.aclose()


async def test_a_shielded_call_settles_after_its_caller_left() -> None:
    with redis_server() as (port, process):
        client, lane = lane_on(port)
        os.kill(process.pid, signal.SIGSTOP)
        claim = lane.call(("SET", "claim", "mine"), as_is)
        caller = asyncio.ensure_future(asyncio.shield(claim))
        await asyncio.sleep(0.05)
        caller.cancel()
        os.kill(process.pid, signal.SIGCONT)
        assert await claim == b"OK"  # the outcome is known to whoever kept the future
        lane.close()
        await client.aclose()


async def test_password_and_database_are_those_of_the_client() -> None:
    with redis_server("--requirepass", "s3cret") as (port, _):
        client, lane = lane_on(port, password="s3cret", db=3)
        await lane.execute("SET", "where", "db3")
        assert await client.get("where") == b"db3"  # redis-py, same database
        _, wrong = lane_on(port, password="wrong")
        with pytest.raises(AuthenticationError):
            await wrong.execute("GET", "where")
        lane.close()
        await client.aclose()


def test_only_a_plain_standalone_client_gets_a_lane() -> None:
    assert script_lane(redis.Redis.from_url("redis://127.0.0.1:6379/0")) is not None
    assert script_lane(redis.Redis.from_url("rediss://127.0.0.1:6379/0")) is None
    assert script_lane(redis.Redis.from_url("unix:///tmp/redis.sock")) is None
    assert script_lane(redis.Redis.from_url("redis://127.0.0.1:6379/0", protocol=3)) is None
    assert script_lane(RedisCluster(host="127.0.0.1", port=6379)) is None
    sentinel = Sentinel([("127.0.0.1", 26379)])  # nothing is sent before a call
    assert script_lane(sentinel.master_for("primary")) is None


async def test_a_closed_lane_fails_its_calls_and_never_reconnects() -> None:
    with redis_server() as (port, process):
        client, lane = lane_on(port)
        await lane.execute("PING")
        before = (await client.info("stats"))["total_connections_received"]
        os.kill(process.pid, signal.SIGSTOP)
        waiting = lane.call(("PING",), as_is)
        lane.close()  # shutting down with a call in flight
        os.kill(process.pid, signal.SIGCONT)
        with pytest.raises(RedisConnectionError, match="closed"):
            await waiting
        with pytest.raises(RedisConnectionError, match="closed"):
            await lane.execute("PING")
        assert (await client.info("stats"))["total_connections_received"] == before
        await client.aclose()


def test_a_command_for_a_connection_lost_meanwhile_fails_over_to_a_retry() -> None:
    """A connection can break between being opened and the first command written to it
    (the callback that sends runs a moment later): the call gets a ConnectionError, which
    the lane retries once, and never hangs."""
    protocol = LaneProtocol(timeout=1.0)
    got: list[object] = []
    protocol.send(b"PING\r\n", got.append)  # never connected
    protocol.connection_lost(None)
    protocol.send(b"PING\r\n", got.append)  # lost since
    assert [type(reply) for reply in got] == [RedisConnectionError, RedisConnectionError]
