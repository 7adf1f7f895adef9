"""A throwaway redis-server on a free port, for tests that stop, stall or configure it."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from tests.servers import free_port


@contextmanager
def redis_server(
    *options: str, port: int | None = None
) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """``(port, process)`` of a fresh server (nothing on disk), stopped on exit."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    port = port or free_port()
    command = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    process = subprocess.Popen(
        [*command, "--appendonly", "no", *options], stdout=subprocess.DEVNULL
    )
    password = options[options.index("--requirepass") + 1] if "--requirepass" in options else None
    ping = [
        "redis-cli",
        "-p",
        str(port),
        *(["--no-auth-warning", "-a", password] if password else []),
        "ping",
    ]
    deadline = time.monotonic() + 5
    while subprocess.run(ping, capture_output=True).stdout.strip() != b"PONG":
        assert time.monotonic() < deadline, "throwaway redis-server did not start"
        time.sleep(0.05)
    try:
        yield port, process
    finally:
        if process.poll() is None:  # the test may have stopped it already
            os.kill(process.pid, signal.SIGCONT)
            process.terminate()
            process.wait(5)
