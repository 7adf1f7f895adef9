"""``proxy soak``: many voice sessions for a while, then every history checked.

Starts the soak mock upstream (50 ms to the first token, 20 chunks 10 ms apart) and
the proxy (``python -m proxy serve``: Redis under a unique key prefix, a temporary
SQLite database, signed callbacks, the admin API) as subprocesses on free loopback
ports, then runs ``--sessions`` concurrent engine stand-ins (``proxy.dev.voice.engine``)
for ``--duration`` seconds. Each session is a stream of conversations (tasks) of
``--turns-per-session`` turns: normal turns, barge-ins while the reply streams and
while it is spoken (905 carries the spoken prefix), first attempts that stall past the
engine's Timeout and are retried under the same request id, first tokens that come
just as the engine gives up (a reply streamed to an engine that left, then the retry's),
turns that time out twice, upstream 503s, streams cut mid-way, and (``--tools``)
server-side tool turns; some sessions re-send engine history (History 4), some use a
profile with a knowledge base (retrieval). Every turn the engine ran is then compared with
``GET /admin/tasks/{id}``: lost, duplicated and mismatched turns (the history must
hold what the user heard: the whole reply, the spoken prefix after a barge-in, the
user's words alone when every attempt timed out, nothing after an error before the
first byte). The proxy's RSS is sampled every second (slope over the second half of
the run, in MB/min). ``--seed`` fixes each caller's sequence of calls and turns (how
many fit in the duration depends on timing); ``--dump-failures`` writes every failing
task, turns and stored history, as JSON lines.

Exit status: 0 when nothing was lost, duplicated or mismatched, every error was an
injected one and memory stayed flat; 1 otherwise; 2 when the soak could not run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from typing import Any

import aiohttp
import orjson
import uvloop

from proxy.dev.bench.procs import delete_keys, redis_error
from proxy.dev.bench.soak_callers import (
    ADMIN_TOKEN,
    SIGN_KEY,
    Conversation,
    caller,
    read_histories,
    set_up,
)
from proxy.dev.bench.soak_procs import HOST, Child, Sampler, SoakError, start_child, wait_ready
from proxy.dev.bench.soak_report import build_report, render

SETTLE_S = 3.0  # after the last turn: 905s and background writes land (grace is 2 s)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="proxy soak", description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--sessions", type=int, default=200, help="concurrent voice sessions (200)")
    # Four minutes: at 200 sessions the proxy's RSS climbs for about two (pools, caches,
    # allocator arenas) and the memory bar judges the second half of the run.
    add("--duration", type=float, default=240.0, help="seconds new turns are started (240)")
    add("--turns-per-session", type=int, default=8, help="turns per conversation/task (8)")
    # The engine's speech clock is virtual (the bot's speech is not waited out), so the
    # pause before a turn stands for the user's utterance, the VAD silence and the bot's
    # speech of the turn before: about 6 s in a real call.
    add("--think-ms", type=float, default=6000.0, help="mean pause before a turn (6000)")
    add("--seed", type=int, default=1)
    add("--tools", action="store_true", help="also server-side tool turns (a tools profile)")
    add("--no-retrieval", action="store_true", help="no knowledge-base sessions")
    add("--max-slope", type=float, default=10.0, help="RSS MB/min allowed (second half)")
    add("--redis-url", default=os.environ.get("PROXY_TEST_REDIS_URL", "redis://127.0.0.1:6379/0"))
    add("--json", action="store_true", help="print the report as JSON")
    add("--dump-failures", metavar="PATH", help="write each failing task (turns, history) here")
    args = parser.parse_args(argv)
    if args.sessions < 1 or args.duration <= 0 or args.turns_per_session < 1:
        parser.error("--sessions, --duration and --turns-per-session must be positive")
    return args


# Running.


async def soak(args: argparse.Namespace) -> dict[str, Any]:
    problem = redis_error(args.redis_url)
    if problem:
        raise SoakError(f"Redis at {args.redis_url} is not usable: {problem}")
    workdir = tempfile.mkdtemp(prefix="proxy-soak-")
    prefix = f"proxysoak:{uuid.uuid4().hex[:12]}:"
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("PROXY_")}
    children: list[Child] = []
    try:
        mock = start_child(
            "mock",
            ["proxy.dev.bench.soak_sessions", "--first-token-ms", "50", "--gap-ms", "10"],
            base_env,
            workdir,
        )
        children.append(mock)
        proxy_env = {
            **base_env,
            "PROXY_UPSTREAM_BASE_URL": f"http://{HOST}:{mock.port}/v1",
            "PROXY_UPSTREAM_API_KEY": "soak-upstream-key",
            "PROXY_REDIS_URL": args.redis_url,
            "PROXY_REDIS_PREFIX": prefix,
            "PROXY_HISTORY_TTL_SECONDS": "3600",
            "PROXY_CALLBACK_SIGN_KEY": SIGN_KEY,
            "PROXY_ADMIN_TOKEN": ADMIN_TOKEN,
            "PROXY_DATABASE_URL": f"sqlite+aiosqlite:///{workdir}/proxy.db",
            "PROXY_LOG_LEVEL": "warning",
            # The injected stalls model an upstream the *engine* gives up on (its timeout
            # and retry are what the soak checks): the proxy's own first-token timeout
            # (1.5 s by default) must not answer 504 before the engine's 2 s.
            "PROXY_UPSTREAM_FIRST_TOKEN_TIMEOUT": "10",
        }
        serve = ["proxy", "serve", "--host", HOST, "--graceful-timeout", "2"]
        proxy = start_child("proxy", serve, proxy_env, workdir)
        children.append(proxy)
        return await _soak(args, mock, proxy)
    finally:
        for child in reversed(children):
            child.stop()
        delete_keys(args.redis_url, prefix)
        shutil.rmtree(workdir, ignore_errors=True)


async def _soak(args: argparse.Namespace, mock: Child, proxy: Child) -> dict[str, Any]:
    connector = aiohttp.TCPConnector(limit=64)
    async with aiohttp.ClientSession(connector=connector) as http:
        await wait_ready(http, mock, "/v1/models")
        await wait_ready(http, proxy, "/healthz")
        retrieval = not args.no_retrieval
        keys = await set_up(http, proxy, mock, tools=args.tools, retrieval=retrieval)
        await asyncio.sleep(0.5)  # the proxy's catalog picks up the new keys
        sampler = Sampler(proxy.proc.pid)
        stop_sampling = asyncio.Event()
        started = time.monotonic()
        sampling = asyncio.create_task(sampler.run(started, stop_sampling))
        conversations: list[Conversation] = []
        deadline = started + args.duration
        with no_full_collections():
            await asyncio.gather(
                *(
                    caller(n, proxy, keys, args, deadline, conversations)
                    for n in range(args.sessions)
                )
            )
        finished = time.monotonic()
        await asyncio.sleep(SETTLE_S)
        stop_sampling.set()
        await sampling
        histories = await read_histories(http, proxy, conversations)
    return build_report(args, conversations, histories, sampler, finished - started, proxy)


@contextlib.contextmanager
def no_full_collections() -> Iterator[None]:
    """The instrument must not pause: the sessions keep every round and callback until
    the end, and full garbage collections over them stopped this process for up to 1.1 s
    at 200 sessions, long enough for engine timeouts the soak never injected. Young
    collections go on; the full one waits for the end of the run."""
    gc.collect()
    gc.freeze()  # the setup's objects: never walked again
    thresholds = gc.get_threshold()
    gc.set_threshold(thresholds[0], thresholds[1], 1_000_000)
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        report = uvloop.run(soak(args))
    except SoakError as exc:
        print(f"proxy soak: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    if args.json:
        sys.stdout.write(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        sys.stdout.write(render(report))
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
