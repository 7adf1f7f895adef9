"""SIGTERM with streams in flight: they finish, new requests are refused, nothing is lost."""

from __future__ import annotations

import signal
import sqlite3
import threading
import time

import httpx

from tests.e2e.procs import ProxyProcess


def test_sigterm_lets_streams_finish_then_exits_cleanly(mock, tmp_path):
    db = tmp_path / "proxy.db"
    proxy = ProxyProcess(
        {
            "PROXY_UPSTREAM_BASE_URL": mock.base_url,
            "PROXY_DATABASE_URL": f"sqlite+aiosqlite:///{db}",
            # A long flush interval: only the shutdown flush can write the transcript in time.
            "PROXY_TRANSCRIPT_FLUSH_SECONDS": "30",
        }
    ).start()
    results: dict[int, str] = {}

    def stream(n: int) -> None:
        body = {
            "model": "m",
            "stream": True,
            "messages": [{"role": "user", "content": f"stream {n}"}],
            "mock": {"chunks": 20, "gap_ms": 100},  # about two seconds each
        }
        headers = {"X-Task-Id": f"shutdown-task-{n}", "X-Request-Id": f"r{n}"}
        with httpx.stream(
            "POST", proxy.url + "/v1/chat/completions", json=body, headers=headers, timeout=20
        ) as response:
            results[n] = response.read().decode()

    threads = [threading.Thread(target=stream, args=(n,)) for n in range(3)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 5
    while (
        len([r for r in mock.requests if r.outcome == "in_progress"]) < 3
        and time.monotonic() < deadline
    ):
        time.sleep(0.02)
    assert proxy.process is not None
    proxy.process.send_signal(signal.SIGTERM)
    time.sleep(0.3)

    refused = False
    try:
        httpx.get(proxy.url + "/readyz", timeout=1)
    except httpx.TransportError:
        refused = True
    assert refused, "a new connection was accepted after SIGTERM"

    for thread in threads:
        thread.join(20)
    assert proxy.process.wait(20) == 0
    for n in range(3):
        assert results[n].rstrip().endswith("data: [DONE]"), results[n][-200:]
    with sqlite3.connect(db) as connection:
        rows = connection.execute(
            "SELECT task_id, role FROM messages ORDER BY task_id, role"
        ).fetchall()
    assert rows == [
        (f"shutdown-task-{n}", role) for n in range(3) for role in ("assistant", "user")
    ]
