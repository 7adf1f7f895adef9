"""Helpers for the hostile-input tests: envelopes, an admin client, a raw HTTP client."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from proxy.settings import Settings
from tests.conftest import REDIS_URL, _delete_keys
from tests.servers import ProxyServer

ADMIN = "admin-token-for-hostile-tests-0123456789"
ENVELOPE_FIELDS = {"message", "type", "code", "param"}


def assert_envelope(response: httpx.Response, status: int | tuple[int, ...]) -> dict[str, Any]:
    """An OpenAI error envelope with the expected status, and nothing of the internals."""
    statuses = status if isinstance(status, tuple) else (status,)
    assert response.status_code in statuses, (response.status_code, response.text[:500])
    assert response.headers["content-type"].startswith("application/json"), response.headers
    error = response.json()["error"]
    assert set(error) == ENVELOPE_FIELDS, error
    assert isinstance(error["message"], str) and error["message"]
    assert "Traceback" not in response.text and 'File "' not in response.text
    return error


def assert_no_server_error(response: httpx.Response) -> None:
    assert response.status_code < 500 or response.status_code in (502, 503, 504), (
        response.status_code,
        response.text[:500],
    )
    if response.status_code >= 400:
        assert_envelope(response, response.status_code)


def admin_client(proxy: Any, token: str | None = ADMIN) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=proxy.url, headers=headers, timeout=15)


def raw_request(port: int, head: bytes, body: bytes = b"", timeout: float = 10) -> bytes:
    """Send bytes as they are (httpx refuses CR, LF and NUL in header values) and
    return the whole response; the request asks the server to close the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(head + body)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    return received


def raw_status(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


@contextmanager
def module_proxy(upstream: Any, directory: Path, **fields: Any) -> Iterator[ProxyServer]:
    """A proxy like ``make_proxy(redis=True, admin_token=ADMIN)`` for a whole module:
    the hostile cases are many, and each start costs a few hundred milliseconds."""
    prefix = f"proxytest:{uuid.uuid4().hex[:12]}:"
    fields = {
        "upstream_base_url": upstream.base_url,
        "upstream_api_key": "upstream-secret",
        "database_url": f"sqlite+aiosqlite:///{directory}/proxy.db",
        "redis_url": REDIS_URL,
        "redis_prefix": prefix,
        "admin_token": ADMIN,
        **fields,
    }
    server = ProxyServer(Settings(**fields)).start()
    try:
        yield server
    finally:
        server.stop()
        _delete_keys(prefix)


def redis_keys(proxy: ProxyServer) -> list[bytes]:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        return list(client.scan_iter(f"{proxy.settings.redis_prefix}*", count=1000))
    finally:
        client.close()
