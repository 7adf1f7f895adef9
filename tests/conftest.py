"""Shared fixtures: a real mock upstream, real Redis, and a proxy factory."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from proxy.dev.mock.upstream import MockUpstreamThread
from proxy.settings import Settings
from tests.servers import ProxyServer

pytest_plugins = ["tests.db_fixtures", "tests.redis_cluster", "tests.gc_heap"]

REDIS_URL = os.environ.get("PROXY_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
# Settings must come from the test, never from the developer's shell.
for _name in [name for name in os.environ if name.startswith("PROXY_") and "TEST" not in name]:
    del os.environ[_name]


@pytest.fixture(scope="session")
def upstream() -> Iterator[MockUpstreamThread]:
    mock = MockUpstreamThread()
    mock.start()
    yield mock
    mock.stop()


@pytest.fixture
def mock(upstream: MockUpstreamThread) -> MockUpstreamThread:
    """The session's mock upstream with a clean record and script."""
    upstream.clear()
    return upstream


@pytest.fixture
def redis_prefix() -> str:
    return f"proxytest:{uuid.uuid4().hex[:12]}:"


@pytest.fixture
def make_proxy(
    mock: MockUpstreamThread, redis_prefix: str, tmp_path: Path
) -> Iterator[Callable[..., ProxyServer]]:
    """Start a proxy pointed at the mock; keyword arguments become Settings fields.

    ``redis=True`` uses the real Redis server with a per-test key prefix.
    """
    started: list[ProxyServer] = []

    def start(*, redis: bool = False, **fields: Any) -> ProxyServer:
        fields.setdefault("upstream_base_url", mock.base_url)
        fields.setdefault("upstream_api_key", "upstream-secret")
        fields.setdefault("database_url", f"sqlite+aiosqlite:///{tmp_path}/proxy.db")
        if redis:
            fields.setdefault("redis_url", REDIS_URL)
            fields.setdefault("redis_prefix", redis_prefix)
        server = ProxyServer(Settings(**fields)).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
    _delete_keys(redis_prefix)


def _delete_keys(prefix: str) -> None:
    import redis

    try:
        client = redis.Redis.from_url(REDIS_URL)
        keys = list(client.scan_iter(f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()
    except redis.RedisError:
        pass
