"""A connection that stalls before its request headers are complete is closed.

``proxy serve`` as a real process, with ``--header-timeout`` 1 s (the chart ships 10 s).
"""

from __future__ import annotations

import socket
import time

import httpx
import pytest

from tests.e2e.procs import ProxyProcess


@pytest.fixture(scope="module")
def proxy(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("slowloris")
    process = ProxyProcess(
        {
            "PROXY_DATABASE_URL": f"sqlite+aiosqlite:///{workdir}/proxy.db",
            "PROXY_HEADER_TIMEOUT_SECONDS": "1",
        }
    ).start()
    yield process
    process.stop()


def closed_after(sock: socket.socket) -> float:
    """Seconds until the server closes the connection (reads EOF)."""
    started = time.monotonic()
    sock.settimeout(10)
    while sock.recv(1024):
        pass
    return time.monotonic() - started


def test_an_idle_connection_that_sends_nothing_is_closed(proxy) -> None:
    with socket.create_connection(("127.0.0.1", proxy.port)) as sock:
        assert closed_after(sock) < 5


def test_partial_headers_are_closed_even_while_bytes_trickle(proxy) -> None:
    with socket.create_connection(("127.0.0.1", proxy.port)) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")
        started = time.monotonic()
        with pytest.raises(OSError):  # a byte every 0.2 s until the server hangs up
            for _ in range(50):
                sock.sendall(b"X-Slow: 1\r\n")
                time.sleep(0.2)
        assert time.monotonic() - started < 5


def test_a_second_request_on_a_kept_alive_connection_has_the_same_deadline(proxy) -> None:
    with socket.create_connection(("127.0.0.1", proxy.port)) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert b"200 OK" in sock.recv(4096)
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # never finished
        assert closed_after(sock) < 5


def test_a_stream_longer_than_the_header_deadline_runs_to_the_end(proxy) -> None:
    words = " ".join(f"w{n}" for n in range(150))  # the echo model: 15 ms a word, ~2.3 s
    body = {"model": "echo", "stream": True, "messages": [{"role": "user", "content": words}]}
    with httpx.stream(
        "POST", f"{proxy.url}/v1/chat/completions", json=body, timeout=30
    ) as response:
        lines = [line for line in response.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
