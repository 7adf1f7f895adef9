"""What the Responses API adds over chat completions, measured in one run.

``python -m proxy.dev.bench.responses [--requests N]`` starts the mock upstream and a proxy
(processes of their own), then sends the same streamed turn through
``/v1/chat/completions`` and ``/v1/responses`` in alternating blocks (A B B A ...), and
prints time to the first text and to the end of the stream, p50 / p95, and the
difference: the translation's cost (chat chunks -> Responses events).
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import aiohttp
import uvloop

from proxy.dev.bench.procs import Processes, start_mock, start_proxy, wait_ready

BLOCK = 25


async def _one(
    session: aiohttp.ClientSession, url: str, body: dict[str, Any], marker: bytes
) -> tuple[float, float]:
    started = time.perf_counter()
    first = None
    async with session.post(url, json=body) as response:
        response.raise_for_status()
        async for line in response.content:
            if first is None and marker in line:
                first = time.perf_counter() - started
    return first or float("nan"), time.perf_counter() - started


async def _measure(base: str, requests: int) -> dict[str, list[tuple[float, float]]]:
    chat = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    responses = {"model": "m", "stream": True, "input": "hi", "store": False}
    cases = {
        "chat": (f"{base}/chat/completions", chat, b'"content"'),
        "responses": (f"{base}/responses", responses, b"response.output_text.delta"),
    }
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in cases}
    order = ["chat", "responses", "responses", "chat"]
    async with aiohttp.ClientSession() as session:
        for name in cases:  # warm up both paths
            await _one(session, *cases[name])
        block = 0
        while min(len(s) for s in samples.values()) < requests:
            name = order[block % len(order)]
            for _ in range(BLOCK):
                samples[name].append(await _one(session, *cases[name]))
            block += 1
    return samples


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def _row(name: str, values: tuple[float, ...]) -> str:
    return f"{name:<12}" + "".join(f"{v:>11.2f}" for v in values)


async def _run(requests: int) -> dict[str, list[tuple[float, float]]]:
    procs = Processes()
    try:
        mock = start_mock(procs, first_token_ms=20, gap_ms=5, chunks=10)
        proxy = start_proxy(procs, upstream_base_url=mock.url + "/v1")
        async with aiohttp.ClientSession() as session:
            await wait_ready(session, mock, "/v1/models")
            await wait_ready(session, proxy, "/healthz")
        return await _measure(proxy.url + "/v1", requests)
    finally:
        procs.stop_all()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Responses API cost over chat completions")
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args(argv)
    samples = uvloop.run(_run(args.requests))
    print(f"{args.requests} streamed turns each; mock: 20 ms to first token, 10 chunks 5 ms apart")
    print(f"{'endpoint':<12}{'first p50':>11}{'first p95':>11}{'end p50':>11}{'end p95':>11} (ms)")
    rows: dict[str, tuple[float, ...]] = {}
    for name, values in samples.items():
        firsts, ends = [v[0] for v in values], [v[1] for v in values]
        rows[name] = (_pct(firsts, 0.5), _pct(firsts, 0.95), _pct(ends, 0.5), _pct(ends, 0.95))
        print(_row(name, rows[name]))
    added = tuple(r - c for r, c in zip(rows["responses"], rows["chat"], strict=True))
    print(_row("added", added))
    return 0


if __name__ == "__main__":
    sys.exit(main())
