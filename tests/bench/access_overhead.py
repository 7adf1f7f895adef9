"""What the access middleware adds per request: ``uv run python -m tests.bench.access_overhead``.

A minimal ASGI app answers in-process (no network), bare and wrapped by
``AccessMiddleware`` (request id, access-log line through the server's own logging set-up
writing to /dev/null, turn log on chat paths; tracing off), in alternating blocks of the
same run. Prints microseconds per request for each.
"""

from __future__ import annotations

import asyncio
import logging
import os
import statistics
import time
from typing import Any

from proxy.logs import configure_logging
from proxy.observability.access import AccessMiddleware
from proxy.observability.tracing import Tracing

BLOCK = 5_000
ROUNDS = 6


async def app(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"data: {}\n\n", "more_body": False})


def scope(path: str) -> dict[str, Any]:
    headers = [(b"x-request-id", b"engine-request-1"), (b"x-task-id", b"task-1")]
    return {"type": "http", "method": "POST", "path": path, "headers": headers, "state": {}}


async def block(target: Any, path: str) -> float:
    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        return None

    started = time.perf_counter()
    for _ in range(BLOCK):
        await target(scope(path), receive, send)
    return (time.perf_counter() - started) / BLOCK * 1e6


async def main() -> None:
    configure_logging("info")  # the server's own logging set-up, writing to /dev/null
    handler = logging.getLogger().handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(open(os.devnull, "w"))  # noqa: SIM115, ASYNC230
    cases = {
        "bare app": app,
        "middleware, log off": AccessMiddleware(app, tracing=Tracing(), access_log=False),
        "middleware, log on": AccessMiddleware(app, tracing=Tracing(), access_log=True),
    }
    results: dict[tuple[str, str], list[float]] = {}
    for _ in range(ROUNDS):
        for path in ("/healthz", "/v1/chat/completions"):
            for name, target in cases.items():
                results.setdefault((name, path), []).append(await block(target, path))
    print(f"{'case':<22} {'path':<22} {'us/request (median of ' + str(ROUNDS) + ')':>28}")
    for (name, path), values in results.items():
        print(f"{name:<22} {path:<22} {statistics.median(values):>28.2f}")


if __name__ == "__main__":
    asyncio.run(main())
