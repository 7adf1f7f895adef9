"""A mock OpenAI-compatible upstream server for the proxy's tests and benchmarks.

``MockUpstream`` (``proxy.dev.mock.server``) is the server on the running loop,
``MockUpstreamThread`` (``proxy.dev.mock.thread``) the same in a thread for sync tests; what
it answers is a ``MockBehaviour`` (``proxy.dev.mock.behaviour``). ``python -m
proxy.dev.mock.upstream`` / ``main()`` (``proxy mock-upstream``) runs it standalone.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

import uvloop

from proxy.dev.mock.behaviour import MockBehaviour
from proxy.dev.mock.recording import Headers, RecordedRequest
from proxy.dev.mock.server import MockUpstream, ScriptEntry
from proxy.dev.mock.thread import MockUpstreamThread

__all__ = [
    "Headers",
    "MockBehaviour",
    "MockUpstream",
    "MockUpstreamThread",
    "RecordedRequest",
    "ScriptEntry",
    "main",
]


async def _serve_until_signalled(server: MockUpstream) -> None:
    await server.start()
    print(f"mock upstream listening on {server.base_url}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        await server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="proxy mock-upstream", description="Run the mock OpenAI-compatible upstream."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8900)
    parser.add_argument("--first-token-ms", type=float, default=0.0)
    parser.add_argument("--gap-ms", type=float, default=0.0)
    parser.add_argument("--chunks", type=int, default=MockBehaviour().chunks)
    parser.add_argument("--no-record", action="store_true", help="record nothing (benchmarks)")
    args = parser.parse_args(argv)
    defaults = MockBehaviour(
        first_token_ms=args.first_token_ms, gap_ms=args.gap_ms, chunks=args.chunks
    )
    server = MockUpstream(args.host, args.port, defaults, record=not args.no_record)
    uvloop.run(_serve_until_signalled(server))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
