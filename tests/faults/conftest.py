"""Fixtures of the fault tests: a proxy on real Redis with the admin API, throwaway servers."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.faults.helpers import ADMIN, SilentServer, SlowToolServer, ThrowawayRedis
from tests.pg_cluster import ThrowawayPostgres
from tests.servers import ProxyServer


@pytest.fixture
def stateful_proxy(make_proxy: Callable[..., ProxyServer]) -> Callable[..., ProxyServer]:
    """``make_proxy`` with real Redis (per-test prefix) and the admin API on."""

    def start(**fields: Any) -> ProxyServer:
        fields.setdefault("admin_token", ADMIN)
        fields.setdefault("redis", True)
        return make_proxy(**fields)

    return start


@pytest.fixture
def throwaway_redis() -> Iterator[ThrowawayRedis]:
    try:
        server = ThrowawayRedis()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    yield server.start()
    server.stop()


@pytest.fixture
def postgres() -> Iterator[ThrowawayPostgres]:
    try:
        cluster = ThrowawayPostgres()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    cluster.start()
    yield cluster
    cluster.remove()


@pytest.fixture
def silent_server() -> Iterator[SilentServer]:
    server = SilentServer()
    yield server
    server.stop()


@pytest.fixture
def slow_tool_server() -> Iterator[SlowToolServer]:
    server = SlowToolServer(delay=3.0)
    yield server
    server.stop()
