"""The fault scenarios. Each starts its own servers, injects one fault and counts.

Every scenario returns a ``Tally``: how many turns (or callbacks) were answered, and of
those how many the stores hold exactly once (recorded), not at all (lost) or more than
once (duplicated).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import aiohttp

from proxy.dev.bench.procs import Child, Processes, start_mock, wait_ready
from proxy.dev.chaos.engine import (
    Session,
    Tally,
    chat_turn,
    erase,
    first_token_seconds,
    live_user_turns,
    postgres_counts,
    run_sessions,
    send_callback,
)
from proxy.dev.chaos.servers import (
    AofRedis,
    ThrowawayPostgres,
    kill9,
    migrate,
    proxy_env,
    sigterm,
    start_proxy,
)

TRUTH = "truth (in-flight leases / Redis reconnect)"
USER_ROWS = "SELECT content #>> '{}' FROM messages WHERE role = 'user' AND task_id = ANY($1)"
EVENT_ROWS = (
    "SELECT task_id || ':' || event_type || ':' || event_ms_ts FROM callback_events "
    "WHERE task_id = ANY($1)"
)


@dataclass
class Options:
    python_path: str | None = None  # another checkout's proxy (the "before" column)
    sessions: int = 30
    model_names: int = 5000


@asynccontextmanager
async def _world() -> AsyncIterator[tuple[Processes, aiohttp.ClientSession, Child]]:
    """Scratch processes, an HTTP client, and the mock upstream (~0.5 s per reply)."""
    procs = Processes()
    try:
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=200, force_close=True)
        ) as http:
            mock = start_mock(procs, first_token_ms=50, gap_ms=20, chunks=20)
            await wait_ready(http, mock, "/v1/models")
            yield procs, http, mock
    finally:
        procs.stop_all()


@dataclass
class Stores:
    """A throwaway PostgreSQL (and Redis with AOF, when asked) and the proxy's env."""

    env: dict[str, str]
    pg: ThrowawayPostgres
    redis: AofRedis | None


@asynccontextmanager
async def _stores(
    procs: Processes, mock: Child, options: Options, *, redis: bool, **extra: str
) -> AsyncIterator[Stores]:
    """Start the stores, migrate the database; stop them at the end, whatever happened."""
    pg = ThrowawayPostgres(procs.workdir).start()
    aof = AofRedis(procs.workdir).start() if redis else None
    try:
        env = proxy_env(
            procs,
            upstream=f"{mock.url}/v1",
            redis_url=aof.url if aof is not None else None,
            database_url=pg.url,
            python_path=options.python_path,
            **extra,
        )
        migrate(procs, env)
        yield Stores(env, pg, aof)
    finally:
        if aof is not None:
            aof.stop()
        pg.stop()


async def _ready(http: aiohttp.ClientSession, *replicas: Child) -> None:
    for replica in replicas:
        await wait_ready(http, replica, "/healthz")


async def _live_tally(
    tally: Tally, http: aiohttp.ClientSession, url: str, sessions: list[Session]
) -> Tally:
    for session in sessions:
        tally.count(session.answered, await live_user_turns(http, url, session.task_id))
    tally.unanswered = sum(len(s.failed) for s in sessions)
    if tally.unanswered:
        tally.notes = f"{tally.unanswered} turn(s) not answered"
    return tally


async def kill9_retry(options: Options) -> Tally:
    """Replica A is killed mid-turn; the engine retries each turn on replica B."""
    tally = Tally("kill -9 mid-turn, retry on B", depends_on=TRUTH)
    async with _world() as (procs, http, mock):
        redis = AofRedis(procs.workdir).start()
        try:
            env = proxy_env(
                procs,
                upstream=f"{mock.url}/v1",
                redis_url=redis.url,
                python_path=options.python_path,
            )
            a, b = start_proxy(procs, env, "replica-a"), start_proxy(procs, env, "replica-b")
            await _ready(http, a, b)
            sessions = [Session(f"kill9-{n}") for n in range(options.sessions)]
            play = asyncio.create_task(run_sessions(http, sessions, 3, lambda s, n: [a.url, b.url]))
            await asyncio.sleep(0.3)  # every session is inside its first reply
            kill9(a)
            await play
            return await _live_tally(tally, http, b.url, sessions)
        finally:
            redis.stop()


async def redis_restart(options: Options) -> Tally:
    """Redis (AOF) restarts between turns; the next turns must be recorded all the same."""
    tally = Tally("Redis restart (AOF)", depends_on=TRUTH)
    async with _world() as (procs, http, mock):
        redis = AofRedis(procs.workdir).start()
        try:
            env = proxy_env(
                procs,
                upstream=f"{mock.url}/v1",
                redis_url=redis.url,
                python_path=options.python_path,
            )
            proxy = start_proxy(procs, env, "proxy")
            await _ready(http, proxy)
            sessions = [Session(f"redis-{n}") for n in range(options.sessions)]
            await run_sessions(http, sessions, 1, lambda s, n: [proxy.url])  # warm pools
            redis.stop()
            redis.start()  # same port, same AOF: the data is back, the pooled sockets dead
            await run_sessions(http, sessions, 3, lambda s, n: [proxy.url], label="after")
            for session in sessions:
                stored = await live_user_turns(http, proxy.url, session.task_id)
                after = [text for text in session.answered if " after " in text]
                tally.count(after, stored)
                tally.unanswered += sum(1 for text in session.failed if " after " in text)
            return tally
        finally:
            redis.stop()


async def postgres_down_across_restart(options: Options) -> Tally:
    """PostgreSQL stops; turns and callbacks are acknowledged; the proxy gets SIGTERM and
    starts again; PostgreSQL comes back: every acknowledged row must arrive, once."""
    tally = Tally("PostgreSQL down across a proxy restart")
    async with _world() as (procs, http, mock), _stores(procs, mock, options, redis=True) as stores:
        pg, env = stores.pg, stores.env
        proxy = start_proxy(procs, env, "proxy")
        await _ready(http, proxy)
        pg.stop()
        sessions = [Session(f"pgdown-{n}") for n in range(options.sessions)]
        await run_sessions(http, sessions, 2, lambda s, n: [proxy.url])
        events = await _callbacks(http, proxy.url, [s.task_id for s in sessions], per_task=4)
        sigterm(proxy)
        proxy = start_proxy(procs, env, "proxy-again", port=proxy.port)
        await _ready(http, proxy)
        pg.start()
        tasks = [s.task_id for s in sessions]
        turns = [text for s in sessions for text in s.answered]
        stored_turns, stored_events = await _settled(
            lambda: postgres_counts(pg.url, USER_ROWS, tasks),
            lambda: postgres_counts(pg.url, EVENT_ROWS, tasks),
            expected=len(turns) + len(events),
        )
        tally.count(turns, stored_turns)
        tally.count(events, stored_events)
        tally.unanswered = sum(len(s.failed) for s in sessions) + 4 * len(tasks) - len(events)
        tally.notes = f"{len(turns)} turns + {len(events)} callbacks"
        return tally


async def kill9_after_turn(options: Options) -> Tally:
    """A kill -9 right after the turns were answered (transcript rows still queued)."""
    tally = Tally("kill -9 just after the turns")
    async with (
        _world() as (procs, http, mock),
        _stores(procs, mock, options, redis=False, PROXY_TRANSCRIPT_FLUSH_SECONDS="2") as stores,
    ):
        pg, env = stores.pg, stores.env
        proxy = start_proxy(procs, env, "proxy")
        await _ready(http, proxy)
        sessions = [Session(f"k9after-{n}") for n in range(options.sessions)]
        await run_sessions(http, sessions, 1, lambda s, n: [proxy.url])
        kill9(proxy)
        proxy = start_proxy(procs, env, "proxy-again", port=proxy.port)
        await _ready(http, proxy)
        tasks = [s.task_id for s in sessions]
        turns = [t for s in sessions for t in s.answered]
        (stored,) = await _settled(
            lambda: postgres_counts(pg.url, USER_ROWS, tasks), expected=len(turns)
        )
        tally.count(turns, stored)
        tally.unanswered = sum(len(s.failed) for s in sessions)
        return tally


async def erasure_race(options: Options) -> Tally:
    """Turns on replica A (transcript rows still queued there, and one more reply still
    streaming), erased on replica B: the task must stay erased, live and in the
    transcript. Then one turn per task after the erasure, which must be recorded once.
    "recorded" counts rows of the erased turns that came back (should be 0)."""
    tally = Tally("erasure racing queued and in-flight writes")
    async with _world() as (procs, http, mock), _stores(procs, mock, options, redis=True) as stores:
        pg, env = stores.pg, stores.env
        a = start_proxy(procs, {**env, "PROXY_TRANSCRIPT_FLUSH_SECONDS": "3"}, "replica-a")
        b = start_proxy(procs, env, "replica-b")
        await _ready(http, a, b)
        sessions = [Session(f"erase-{n}") for n in range(max(1, options.sessions // 3))]
        tasks = [s.task_id for s in sessions]
        await run_sessions(http, sessions, 2, lambda s, n: [a.url])
        # One reply per task is streaming on A (~0.5 s) when B erases the task.
        racing = [
            asyncio.ensure_future(chat_turn(http, [a.url], t, f"{t}-racing", f"{t} racing"))
            for t in tasks
        ]
        await asyncio.sleep(0.2)
        statuses = Counter(await asyncio.gather(*(erase(http, b.url, t) for t in tasks)))
        raced = sum(await asyncio.gather(*racing))
        await asyncio.sleep(5)  # A's queue flushes (every 3 s)
        (rows,) = await _settled(lambda: postgres_counts(pg.url, USER_ROWS, tasks), quiet=4)
        live = sum([sum((await live_user_turns(http, b.url, t)).values()) for t in tasks])
        tally.answered = sum(len(s.answered) for s in sessions) + raced
        tally.recorded = sum(rows.values())
        back = sum(1 for t in tasks if any(k.startswith(f"{t} ") for k in rows))
        # A new conversation on the same task ids, after the erasure: recorded once.
        after = [await chat_turn(http, [a.url], t, f"{t}-after", f"{t} after") for t in tasks]
        (rows,) = await _settled(
            lambda: postgres_counts(pg.url, USER_ROWS, tasks), expected=len(tasks)
        )
        live_new = [await live_user_turns(http, b.url, t) for t in tasks]
        kept = sum(
            1
            for t, turns in zip(tasks, live_new, strict=True)
            if turns == Counter({f"{t} after": 1})
            and {k: n for k, n in rows.items() if k.startswith(f"{t} ")} == {f"{t} after": 1}
        )
        tally.measures = {
            "erased": statuses[204],
            "raced": raced,
            "came_back": back,
            "live_after": live,
            "new_turns": sum(after),
            "new_recorded_once": kept,
        }
        tally.notes = (
            f"erased {statuses[204]}/{len(tasks)} tasks (204), {raced} replies in flight; "
            f"{back} came back in the transcript; {live} live messages after erasure; "
            f"{kept}/{sum(after)} turns after the erasure recorded once"
        )
        return tally


async def model_names(options: Options) -> Tally:
    """Thousands of distinct model names: /metrics size, and a stream's time to first
    token while /metrics is scraped."""
    tally = Tally(f"{options.model_names:,} distinct model names")
    async with _world() as (procs, http, mock):
        env = proxy_env(procs, upstream=f"{mock.url}/v1", python_path=options.python_path)
        proxy = start_proxy(procs, env, "proxy")
        await _ready(http, proxy)
        before = await first_token_seconds(http, proxy.url, "ttft-probe")
        gate = asyncio.Semaphore(50)

        async def one(n: int) -> bool:
            async with gate:
                return await chat_turn(
                    http, [proxy.url], f"models-{n}", f"m{n}", "hi", model=f"model-{n:05d}-x"
                )

        answered = await asyncio.gather(*(one(n) for n in range(options.model_names)))
        started = time.perf_counter()
        scrape = asyncio.create_task(_scrape(http, proxy.url))
        await asyncio.sleep(0.01)
        during = await first_token_seconds(http, proxy.url, "ttft-probe")
        body = await scrape
        size = len(body)
        scrape_seconds = time.perf_counter() - started
        tally.answered = tally.recorded = sum(answered)
        tally.unanswered = options.model_names - tally.answered
        tally.measures = {
            "metrics_bytes": size,
            "model_labels": len(set(re.findall(rb'[{,]model="([^"]*)"', body))),
            "ttft_before": before,
            "ttft_during_scrape": during,
        }
        tally.notes = (
            f"/metrics {size / 1024:,.0f} KiB in {scrape_seconds:.2f} s; TTFT "
            f"{before * 1000:.0f} ms before, {during * 1000:.0f} ms during a scrape"
        )
        return tally


async def _scrape(http: aiohttp.ClientSession, url: str) -> bytes:
    async with http.get(f"{url}/metrics", timeout=aiohttp.ClientTimeout(total=120)) as response:
        return await response.read()


async def _callbacks(
    http: aiohttp.ClientSession, url: str, tasks: list[str], *, per_task: int
) -> list[str]:
    """Signed 906 callbacks; the keys ("task:906:ms") of those answered {"code": 0}."""
    acknowledged = []
    base = int(time.time() * 1000)
    for n, task in enumerate(tasks):
        for k in range(per_task):
            ms = base + n * 100 + k
            metric = {"Metric": "llm_first_token", "Value": 100 + k, "Tag": {"RoundId": f"r{k}"}}
            if await send_callback(http, url, task, 906, ms, metric):
                acknowledged.append(f"{task}:906:{ms}")
    return acknowledged


async def _settled(
    *reads: Callable[[], Awaitable[Counter[str]]],
    expected: int | None = None,
    quiet: float = 8.0,
    limit: float = 60.0,
) -> list[Counter[str]]:
    """Read until the stores hold ``expected`` rows in all, or nothing changed for
    ``quiet`` seconds (longer than a writer's longest retry pause), or ``limit`` seconds."""
    deadline = time.monotonic() + limit
    last: list[Counter[str]] = []
    changed = time.monotonic()
    while True:
        try:
            now = [await read() for read in reads]
        except OSError:
            now = []
        if now != last:
            last, changed = now, time.monotonic()
        total = sum(sum(c.values()) for c in last)
        if last and expected is not None and total >= expected:
            return last
        if time.monotonic() - changed >= quiet or time.monotonic() > deadline:
            return last or [Counter() for _ in reads]
        await asyncio.sleep(0.5)


SCENARIOS: dict[str, Callable[[Options], Awaitable[Tally]]] = {
    "kill9-retry": kill9_retry,
    "redis-restart": redis_restart,
    "postgres-restart": postgres_down_across_restart,
    "kill9-after-turn": kill9_after_turn,
    "erasure-race": erasure_race,
    "model-names": model_names,
}
