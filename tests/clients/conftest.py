"""A real proxy process (``python -m proxy serve``) in front of the mock upstream, with
real Redis, for the real client libraries. meta.info goes to every task's caller
(``PROXY_META_INFO_EVENTS=always``): strict clients must survive it."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from proxy.dev.mock.upstream import MockUpstreamThread
from tests.clients.scenario import ADMIN_TOKEN, API_KEY, APP_ID
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
            # The scenario's slow turn must outlast the client's timeout, not the proxy's.
            "PROXY_UPSTREAM_FIRST_TOKEN_TIMEOUT": "10",
            # The clients' key acts for one app: their tasks live under "<app>:<task id>".
            "PROXY_KEYS": json.dumps(
                [{"name": "clients", "key_env": "TEST_CLIENTS_KEY", "app_id": APP_ID}]
            ),
            "TEST_CLIENTS_KEY": API_KEY,
        }
    )
    _start(proxy, within_s=90)  # a loaded 2-core CI machine can take 20 s to import it all
    yield proxy
    proxy.stop()
    _delete_keys(prefix)


def _start(proxy: ProxyProcess, within_s: float) -> None:
    proxy.process = subprocess.Popen(
        proxy.args, env=proxy.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        assert proxy.process.poll() is None, "the proxy exited at start-up"
        try:
            if httpx.get(proxy.url + "/healthz", timeout=0.5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proxy.stop()
    raise RuntimeError(f"the proxy did not start within {within_s} s")


@pytest.fixture
def task_id() -> str:
    return f"client-{uuid.uuid4().hex[:10]}"
