"""A turn's start on Redis: three calls at once (claim, load, queued meta.info) against
one script (``begin_turn``) through redis-py and through the scripts' lane
(``proxy.context.redis_lane``), same run, same tasks, on uvloop as the proxy serves.

    uv run python -m tests.bench.store_turn_start [--concurrency 10] [--turns 10] [--starts 2000]

Each of ``--concurrency`` workers starts turns of its own task (pre-filled with ``--turns``
turns), alternating the ways in blocks, and prints the latency of a start (p50, p95,
p99). Uses the server at PROXY_TEST_REDIS_URL (default
local) under a random prefix, removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable

import redis.asyncio as redis
import uvloop

from proxy.context.history import StoredAnswer, StoredMessage
from proxy.context.redis_lane import script_lane
from proxy.context.redis_store import RedisHistoryStore

URL = os.environ.get("PROXY_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
LIMIT = 200  # the default history policy's load limit
BLOCK = 50  # starts per block; the ways alternate block by block


async def gathered(store: RedisHistoryStore, task: str, attempt: str) -> None:
    request_id = uuid.uuid4().hex
    await asyncio.gather(
        store.claim_request(task, request_id, attempt),
        store.load(task, LIMIT),
        store.take_meta(task),
    )


async def one_script(store: RedisHistoryStore, task: str, attempt: str) -> None:
    request_id = uuid.uuid4().hex
    await store.begin_turn(task, request_id, attempt, limit=LIMIT, take_meta=True)


async def prefill(store: RedisHistoryStore, task: str, turns: int) -> None:
    for n in range(turns):
        claim = await store.claim_request(task, f"fill-{n}")
        messages = [
            StoredMessage(role="user", content=f"question {n} " * 8, request_id=f"fill-{n}"),
            StoredMessage(role="assistant", content=f"answer {n} " * 20, request_id=f"fill-{n}"),
        ]
        answer = StoredAnswer(content="answer")
        await store.commit_turn(task, f"fill-{n}", claim.attempt_id, messages, answer=answer)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--turns", type=int, default=10)
    parser.add_argument("--starts", type=int, default=2000, help="per way, all workers")
    args = parser.parse_args()
    client = redis.Redis.from_url(URL, max_connections=100)
    prefix = f"bench-start:{uuid.uuid4().hex[:8]}:"
    store = RedisHistoryStore(client, prefix=prefix, ttl_seconds=600)
    lane = script_lane(client)
    laned = RedisHistoryStore(client, prefix=prefix, ttl_seconds=600, lane=lane)
    await store.load_scripts()
    tasks = [f"task-{n}" for n in range(args.concurrency)]
    await asyncio.gather(*(prefill(store, task, args.turns) for task in tasks))
    Way = tuple[RedisHistoryStore, Callable[[RedisHistoryStore, str, str], Awaitable[None]]]
    ways: dict[str, Way] = {
        "claim + load + meta: 3 calls at once": (store, gathered),
        "begin_turn: 1 script, redis-py": (store, one_script),
        "begin_turn: 1 script, lane": (laned, one_script),
    }
    times: dict[str, list[float]] = {name: [] for name in ways}

    async def worker(way: Way, task: str, out: list[float]) -> None:
        on, start = way
        for _ in range(BLOCK):
            attempt = uuid.uuid4().hex
            started = time.perf_counter()
            await start(on, task, attempt)
            out.append((time.perf_counter() - started) * 1000)
            # Untimed: the lease ends, as a turn's commit ends it. Thousands of live
            # leases would make the claim's scan of them the only thing measured.
            await store.release(task, attempt)

    try:
        per_block = BLOCK * len(tasks)
        for way in ways.values():  # warm-up
            await asyncio.gather(*(worker(way, task, []) for task in tasks))
        for _ in range(max(1, args.starts // per_block)):
            for name, way in ways.items():
                await asyncio.gather(*(worker(way, task, times[name]) for task in tasks))
    finally:
        keys = [key async for key in client.scan_iter(match=f"{prefix}*", count=1000)]
        if keys:
            await client.delete(*keys)
        if lane is not None:
            lane.close()
        await client.aclose()
    print(
        f"turn start on Redis ({URL}), {args.concurrency} concurrent, tasks of "
        f"{args.turns} turns, load limit {LIMIT}; ms"
    )
    print(f"{'way':38} {'n':>6} {'p50':>7} {'p95':>7} {'p99':>7}")
    for name, values in times.items():
        q = statistics.quantiles(values, n=100)
        print(f"{name:38} {len(values):6} {q[49]:7.3f} {q[94]:7.3f} {q[98]:7.3f}")


if __name__ == "__main__":
    uvloop.run(main())
