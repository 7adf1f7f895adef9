"""A real proxy process (``python -m proxy serve``) in front of the mock upstream, with
real Redis, for the real client libraries. meta.info goes to every task's caller
(``PROXY_META_INFO_EVENTS=always``): strict clients must survive it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from proxy.mock.upstream import MockUpstreamThread
from tests.clients.scenario import ADMIN_TOKEN
from tests.conftest import REDIS_URL, _delete_keys
from tests.e2e.procs import ProxyProcess


@pytest.fixture(scope="module")
def client_proxy(
    upstream: MockUpstreamThread, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ProxyProcess]:
    prefix = f"proxytest:{uuid.uuid4().hex[:12]}:"
    database = Path(tmp_path_factory.mktemp("clients")) / "proxy.db"
    proxy = ProxyProcess(
        {
            "PROXY_UPSTREAM_BASE_URL": upstream.base_url,
            "PROXY_UPSTREAM_API_KEY": "upstream-secret",
            "PROXY_REDIS_URL": REDIS_URL,
            "PROXY_REDIS_PREFIX": prefix,
            "PROXY_DATABASE_URL": f"sqlite+aiosqlite:///{database}",
            "PROXY_ADMIN_TOKEN": ADMIN_TOKEN,
            "PROXY_META_INFO_EVENTS": "always",
        }
    ).start()
    yield proxy
    proxy.stop()
    _delete_keys(prefix)


@pytest.fixture
def task_id() -> str:
    return f"client-{uuid.uuid4().hex[:10]}"
