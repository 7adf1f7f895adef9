"""An idle engine connection outlives the engine's pause between turns.

uvicorn's default closes idle connections after 5 s; voice turns are often further
apart, and a client reusing the connection just as the server closes it gets a reset
(seen in the soak as "ClientOSError: Connection reset by peer")."""

from __future__ import annotations

import socket
import time

from tests.e2e.procs import ProxyProcess

REQUEST = b"GET /healthz HTTP/1.1\r\nHost: proxy\r\n\r\n"


def exchange(connection: socket.socket) -> bytes:
    """One request and its whole response (status line, headers and body)."""
    connection.sendall(REQUEST)
    received = b""
    while b"\r\n\r\n" not in received:
        chunk = connection.recv(4096)
        assert chunk, "the proxy closed the connection"
        received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        chunk = connection.recv(4096)
        assert chunk, "the proxy closed the connection"
        body += chunk
    return head


def test_an_idle_connection_is_kept_past_the_pause_between_turns(tmp_path):
    proxy = ProxyProcess({"PROXY_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/p.db"}).start()
    try:
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as connection:
            assert exchange(connection).startswith(b"HTTP/1.1 200")
            time.sleep(7.0)  # longer than uvicorn's default keep-alive (5 s)
            assert exchange(connection).startswith(b"HTTP/1.1 200")
    finally:
        proxy.stop()
