"""The history store on standalone Redis and on a 3-master Redis Cluster, same run.

    uv run python -m tests.bench.store_cluster [--tasks 200] [--turns 5] [--concurrency 50]

A turn is what the proxy does per request: the claim and the history load at once, then
the commit. Prints the latency of a turn (p50/p99) and turns per second for: standalone
Redis (the baseline), the cluster through the cluster client, and the cluster through a
standalone client (what ``main`` did): how many turns met MOVED. Starts and removes its
own cluster; uses the standalone server at PROXY_TEST_REDIS_URL under a random prefix.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import time
import uuid

import redis.asyncio as redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import MovedError

from proxy.context.history import StoredAnswer, StoredMessage
from proxy.context.redis_store import RedisClient, RedisHistoryStore
from tests.redis_cluster import ThrowawayRedisCluster

STANDALONE_URL = os.environ.get("PROXY_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


async def one_turn(store: RedisHistoryStore, task: str, n: int) -> float:
    started = time.perf_counter()
    request_id = f"r{n}"
    claim, _ = await asyncio.gather(store.claim_request(task, request_id), store.load(task, 40))
    turn = [
        StoredMessage(role="user", content=f"question {n}", request_id=request_id),
        StoredMessage(role="assistant", content=f"answer {n}", request_id=request_id),
    ]
    answer = StoredAnswer(content=f"answer {n}")
    await store.commit_turn(task, request_id, claim.attempt_id, turn, answer=answer)
    return time.perf_counter() - started


async def measure(client: RedisClient, args: argparse.Namespace) -> dict[str, float]:
    store = RedisHistoryStore(client, prefix=f"proxybench:{uuid.uuid4().hex[:8]}:")
    await store.load_scripts()
    tasks = [f"app:task-{n}" for n in range(args.tasks)]
    gate = asyncio.Semaphore(args.concurrency)
    times: list[float] = []
    moved = 0

    async def task_turns(task: str) -> None:
        nonlocal moved
        for n in range(args.turns):
            async with gate:
                try:
                    times.append(await one_turn(store, task, n))
                except MovedError:
                    moved += 1

    started = time.perf_counter()
    await asyncio.gather(*(task_turns(task) for task in tasks))
    elapsed = time.perf_counter() - started
    for task in tasks:
        with contextlib.suppress(MovedError):  # on the throwaway cluster: removed with it
            await store.reset(task)
    await client.aclose()
    times.sort()
    return {
        "turns": len(times),
        "moved": moved,
        "p50_ms": 1000 * statistics.median(times) if times else float("nan"),
        "p99_ms": 1000 * times[int(0.99 * (len(times) - 1))] if times else float("nan"),
        "turns_per_s": len(times) / elapsed,
    }


async def run(args: argparse.Namespace, cluster: ThrowawayRedisCluster) -> None:
    rows = [
        ("standalone Redis", await measure(redis.Redis.from_url(STANDALONE_URL), args)),
        ("cluster, cluster client", await measure(RedisCluster.from_url(cluster.url), args)),
        ("cluster, standalone client", await measure(redis.Redis.from_url(cluster.url), args)),
    ]
    total = args.tasks * args.turns
    print(f"{args.tasks} tasks x {args.turns} turns, concurrency {args.concurrency}")
    print(f"{'store':28} {'recorded':>9} {'MOVED':>6} {'p50 ms':>7} {'p99 ms':>7} {'turns/s':>8}")
    for name, row in rows:
        print(
            f"{name:28} {int(row['turns']):>4}/{total:<4} {int(row['moved']):>6} "
            f"{row['p50_ms']:>7.2f} {row['p99_ms']:>7.2f} {row['turns_per_s']:>8.0f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--turns", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=50)
    args = parser.parse_args()
    cluster = ThrowawayRedisCluster().start()
    try:
        asyncio.run(run(args, cluster))
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()
