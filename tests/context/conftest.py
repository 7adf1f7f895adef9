"""Fixtures for the history store contract: every implementation behind one ``store``."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as redis
from redis.asyncio.cluster import RedisCluster

from proxy.context.history import HistoryStore
from proxy.context.memory_store import MemoryHistoryStore
from proxy.context.redis_lane import script_lane
from proxy.context.redis_store import RedisHistoryStore
from tests.redis_cluster import ThrowawayRedisCluster

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture
def memory_store() -> MemoryHistoryStore:
    return MemoryHistoryStore(ttl_seconds=3600, max_tasks=1000)


@pytest.fixture
async def redis_client() -> AsyncIterator[redis.Redis]:
    """A client on the test server; skipped only if no URL was given and none answers."""
    url = os.environ.get("PROXY_TEST_REDIS_URL")
    client = redis.Redis.from_url(url or DEFAULT_REDIS_URL)
    try:
        await client.ping()
    except (redis.ConnectionError, OSError) as exc:
        await client.aclose()
        if url:
            raise
        pytest.skip(f"no redis at {DEFAULT_REDIS_URL}: {exc}")
    yield client
    await client.aclose()


@pytest.fixture
async def redis_store(redis_client: redis.Redis) -> AsyncIterator[RedisHistoryStore]:
    prefix = f"proxytest:{uuid.uuid4().hex}:"
    store = RedisHistoryStore(redis_client, prefix=prefix, ttl_seconds=3600)
    yield store
    keys = [key async for key in redis_client.scan_iter(match=f"{prefix}*", count=1000)]
    if keys:
        await redis_client.delete(*keys)


@pytest.fixture
async def lane_store(redis_client: redis.Redis) -> AsyncIterator[RedisHistoryStore]:
    """The Redis store with its scripts on their own lane, as the proxy runs it."""
    lane = script_lane(redis_client)
    assert lane is not None
    prefix = f"proxytest:{uuid.uuid4().hex}:"
    yield RedisHistoryStore(redis_client, prefix=prefix, ttl_seconds=3600, lane=lane)
    lane.close()
    keys = [key async for key in redis_client.scan_iter(match=f"{prefix}*", count=1000)]
    if keys:
        await redis_client.delete(*keys)


@pytest.fixture
async def cluster_store(
    redis_cluster: ThrowawayRedisCluster,
) -> AsyncIterator[RedisHistoryStore]:
    """The Redis store on a real 3-master cluster, through the cluster client."""
    client = RedisCluster.from_url(redis_cluster.url)
    prefix = f"proxytest:{uuid.uuid4().hex}:"
    store = RedisHistoryStore(client, prefix=prefix, ttl_seconds=3600)
    await store.load_scripts()  # as the app does on start
    yield store
    keys = [key async for key in client.scan_iter(match=f"{prefix}*", count=1000)]
    for key in keys:  # one by one: they live in many slots
        await client.delete(key)
    await client.aclose()


@pytest.fixture(params=["memory", "redis", "lane", "cluster"])
def store(request: pytest.FixtureRequest) -> HistoryStore:
    """Each implementation in turn; the contract tests run against all of them."""
    implementation: HistoryStore = request.getfixturevalue(f"{request.param}_store")
    return implementation
