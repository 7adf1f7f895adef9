"""Why the upstream client is the proxy's own (``proxy.upstream.http1``): three HTTP
clients, same run, same mock upstream.

    uv run python -m tests.bench.clients [--concurrency 1,10,100] [--rounds 3]

Starts the mock upstream as its own process (the voice profile of ``proxy bench``:
first token after 50 ms, then 20 chunks 10 ms apart) and streams chat completions from
it with the proxy's ``ConnectionPool`` (``proxy.upstream.pool``), ``aiohttp.ClientSession`` and
``httpx.AsyncClient`` (each with a pool as large as the concurrency), in alternating
rounds, from one event loop as the proxy's relay would. Prints time to the first content
event (p50 / p95 / p99) and this process's CPU time per request, per client and
concurrency; the TTFT figure to compare is the gap over the mock's own 50 ms. httpx is
only a dev dependency: this program lives with the tests, not in the product.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable
from time import perf_counter, process_time

import aiohttp
import httpx
import uvloop

from proxy.dev.bench.loadgen import chat_body, has_content_event, percentiles
from proxy.dev.bench.procs import Processes, start_mock, wait_ready
from proxy.upstream.pool import ConnectionPool

Stream = Callable[[], Awaitable[float]]  # one streamed request -> seconds to first content


def aiohttp_stream(session: aiohttp.ClientSession, url: str, body: bytes) -> Stream:
    async def one() -> float:
        started, seen, first = perf_counter(), b"", 0.0
        async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as r:
            async for chunk in r.content.iter_any():
                if not first:
                    seen += chunk
                    if has_content_event(seen[: seen.rfind(b"\n\n") + 2]):
                        first = perf_counter() - started
        return first

    return one


def http1_stream(pool: ConnectionPool, url: str, body: bytes) -> Stream:
    headers = {"Content-Type": "application/json"}

    async def one() -> float:
        started, seen, first = perf_counter(), b"", 0.0
        response = await pool.request(
            "POST", url, headers, body, connect_timeout=5, total_timeout=60
        )
        try:
            while chunk := await response.read_chunk():
                if not first:
                    seen += chunk
                    if has_content_event(seen[: seen.rfind(b"\n\n") + 2]):
                        first = perf_counter() - started
        finally:
            response.close()
        return first

    return one


def httpx_stream(client: httpx.AsyncClient, url: str, body: bytes) -> Stream:
    async def one() -> float:
        started, seen, first = perf_counter(), b"", 0.0
        headers = {"Content-Type": "application/json"}
        async with client.stream("POST", url, content=body, headers=headers) as r:
            async for chunk in r.aiter_raw():
                if not first:
                    seen += chunk
                    if has_content_event(seen[: seen.rfind(b"\n\n") + 2]):
                        first = perf_counter() - started
        return first

    return one


async def block(stream: Stream, concurrency: int, requests: int) -> list[float]:
    """``requests`` streams, ``concurrency`` at a time; their times to first content."""
    times: list[float] = []

    async def worker(count: int) -> None:
        for _ in range(count):
            times.append(await stream())

    share = [requests // concurrency + (i < requests % concurrency) for i in range(concurrency)]
    await asyncio.gather(*(worker(n) for n in share))
    return times


Row = tuple[str, int, list[float], float]  # client, concurrency, TTFTs, CPU s per request


async def run(args: argparse.Namespace) -> list[Row]:
    procs = Processes()
    try:
        mock = start_mock(procs, first_token_ms=50, gap_ms=10, chunks=20)
        async with aiohttp.ClientSession() as probe:
            await wait_ready(probe, mock, "/v1/models")
        url, body = mock.url + "/v1/chat/completions", chat_body()
        rows = []
        for concurrency in args.concurrency:
            limits = httpx.Limits(
                max_connections=concurrency, max_keepalive_connections=concurrency
            )
            connector = aiohttp.TCPConnector(limit=concurrency)
            async with (
                aiohttp.ClientSession(connector=connector) as session,
                httpx.AsyncClient(limits=limits, timeout=60) as client,
            ):
                clients = {
                    "http1": http1_stream(ConnectionPool(concurrency), url, body),
                    "aiohttp": aiohttp_stream(session, url, body),
                    "httpx": httpx_stream(client, url, body),
                }
                samples: dict[str, list[float]] = {name: [] for name in clients}
                cpu = dict.fromkeys(clients, 0.0)
                for stream in clients.values():  # warm the pools
                    await block(stream, concurrency, concurrency)
                for round_number in range(args.rounds):
                    order = list(clients) if round_number % 2 == 0 else list(clients)[::-1]
                    for name in order:
                        cpu_before = process_time()
                        samples[name] += await block(clients[name], concurrency, args.requests)
                        cpu[name] += process_time() - cpu_before
                rows += [
                    (name, concurrency, times, cpu[name] / len(times))
                    for name, times in samples.items()
                ]
            print(f"clients: concurrency {concurrency} done", file=sys.stderr)
        return rows
    finally:
        procs.stop_all()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.clients", description=__doc__)
    parser.add_argument("--concurrency", default="1,10,100")
    parser.add_argument("--requests", type=int, default=200, help="per client, round, level")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    rows = uvloop.run(run(args))
    print(
        f"{'client':<8} {'conc':>5} {'n':>5} {'TTFT p50':>9} {'p95':>8} {'p99':>8}"
        f" {'CPU/req':>8}  (ms)"
    )
    for name, concurrency, times, cpu in rows:
        p50, p95, p99 = (v * 1000 for v in percentiles(times, (50, 95, 99)))
        print(
            f"{name:<8} {concurrency:>5} {len(times):>5} {p50:>9.1f} {p95:>8.1f} {p99:>8.1f}"
            f" {cpu * 1000:>8.3f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
