"""The floor for ``proxy bench``: a bare aiohttp relay, nothing but bytes in and out.

It forwards ``POST /v1/chat/completions`` to one upstream over a pooled aiohttp session
and streams the response back as it arrives: no parsing, no auth, no history. What
the proxy adds beyond what this adds is the proxy's own cost.
``proxy bench-relay --upstream URL --port N`` runs it.
"""

from __future__ import annotations

import argparse

import aiohttp
import uvloop
from aiohttp import web

FORWARDED = ("Content-Type", "Accept", "Authorization")


def build_app(upstream: str) -> web.Application:
    app = web.Application()
    state: dict[str, aiohttp.ClientSession] = {}

    async def start(_: web.Application) -> None:
        connector = aiohttp.TCPConnector(limit=2000, limit_per_host=0)
        state["session"] = aiohttp.ClientSession(connector=connector, auto_decompress=False)

    async def stop(_: web.Application) -> None:
        await state["session"].close()

    async def relay(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = {k: request.headers[k] for k in FORWARDED if k in request.headers}
        async with state["session"].post(
            f"{upstream}/chat/completions", data=body, headers=headers
        ) as upstream_response:
            response = web.StreamResponse(
                status=upstream_response.status,
                headers={"Content-Type": upstream_response.headers.get("Content-Type", "")},
            )
            await response.prepare(request)
            while chunk := await upstream_response.content.readany():
                await response.write(chunk)
            await response.write_eof()
            return response

    app.on_startup.append(start)
    app.on_cleanup.append(stop)
    app.router.add_post("/v1/chat/completions", relay)
    app.router.add_get("/healthz", lambda _: _ok())
    return app


async def _ok() -> web.Response:
    return web.Response(text="ok")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="proxy bench-relay", description=__doc__)
    parser.add_argument("--upstream", required=True, help="base URL ending in /v1")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8901)
    args = parser.parse_args(argv)
    uvloop.install()
    web.run_app(
        build_app(args.upstream.rstrip("/")),
        host=args.host,
        port=args.port,
        access_log=None,
        print=None,
        backlog=4096,
    )
    return 0
