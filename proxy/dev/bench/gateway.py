"""``proxy bench``: time to first token and total time, through the proxy and direct.

Both are measured in the same run, against the same mock upstream process: for each
case the direct and the proxied blocks alternate (A B B A ...) so drift cancels out.
ADDED TTFT is the per-percentile difference, pX(through proxy) - pX(direct).

Profiles: ``latency`` (mock 50 ms to first token, 10 ms between 20 chunks; concurrency
1, 10, 100), ``throughput`` (zero-delay mock, 50 concurrent, fixed duration) and, with
``--history``, the latency mock at 10 concurrent with per-task history in Redis: off,
and on with tasks (one per worker) pre-filled with 0 and ``--turns`` stored turns. Every
request adds a turn, so a case pre-filled with T turns ends near T + requests/concurrency.
Workers' first requests are spread over one request duration (``--synchronized``: not).
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import sys
import threading
import time
import uuid
from types import FrameType
from typing import Any

import orjson
import uvloop

from proxy.dev.bench.loadgen import (
    Row,
    Samples,
    Target,
    base_headers,
    chat_body,
    new_session,
    render_table,
    run_block,
)
from proxy.dev.bench.procs import (
    BenchError,
    Child,
    Processes,
    delete_keys,
    prefill_tasks,
    redis_error,
    start_mock,
    start_proxy,
    start_relay,
    wait_ready,
)

THROUGHPUT_MOCK = {"first_token_ms": 0.0, "gap_ms": 0.0}


def _ints(text: str) -> list[int]:
    values = [int(item) for item in text.split(",") if item.strip()]
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("expected positive integers separated by commas")
    return values


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="proxy bench", description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--profile", choices=("latency", "throughput", "prefix", "all"), default="all")
    add("--prefix-turns", type=int, default=40, help="prefix-reuse turns after the budget (40)")
    add("--requests", type=int, help="per concurrency level and target (default max(80, 30*c))")
    add("--concurrency", type=_ints, default=[1, 10, 100], help="latency levels (1,10,100)")
    add("--first-token-ms", type=float, default=50.0, help="latency mock: to first token (50)")
    add("--gap-ms", type=float, default=10.0, help="latency mock: between chunks (10)")
    add("--chunks", type=int, default=20, help="content chunks per reply, both mocks (20)")
    add("--duration", type=float, default=10.0, help="throughput seconds per target (10)")
    add("--throughput-concurrency", type=int, default=50)
    add("--history", action="store_true", help="also measure per-task history (Redis)")
    add("--turns", type=_ints, default=[10, 100, 1000], help="pre-filled turns (10,100,1000)")
    add("--history-concurrency", type=int, default=10)
    add("--redis-url", default=os.environ.get("PROXY_TEST_REDIS_URL", "redis://127.0.0.1:6379/0"))
    add("--redis-prefix", help="key prefix for the proxy and the pre-fill (default: random)")
    add("--workers", type=int, default=1, help="proxy worker processes (1)")
    add("--warmup", type=int, default=50, help="discarded requests per target and profile (50)")
    add("--rounds", type=int, default=4, help="alternating direct/proxy blocks per case (4)")
    add("--synchronized", action="store_true", help="start each block's workers all at once")
    add("--json", action="store_true", help="also print a JSON summary")
    args = parser.parse_args(argv)
    if args.requests is not None and args.requests < 1:
        parser.error("--requests must be at least 1")
    if min(args.duration, args.throughput_concurrency, args.history_concurrency) <= 0:
        parser.error("--duration and the concurrency values must be positive")
    if min(args.first_token_ms, args.gap_ms) < 0 or args.chunks < 1:
        parser.error("--first-token-ms and --gap-ms must not be negative, --chunks at least 1")
    if args.workers < 1 or args.rounds < 1 or args.warmup < 0:
        parser.error("--workers and --rounds must be at least 1, --warmup not negative")
    return args


def _progress(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def _requests_for(args: argparse.Namespace, concurrency: int) -> int:
    return int(args.requests) if args.requests is not None else max(80, 30 * concurrency)


async def _warm(session: Any, targets: list[Target], concurrency: int, count: int) -> None:
    for target in targets:
        if count > 0:
            await run_block(session, target, concurrency, requests=count)


async def _alternate(
    session: Any, targets: list[Target], concurrency: int, total: int, args: argparse.Namespace
) -> list[Samples]:
    """``total`` requests per target in ``rounds`` blocks, order reversed every round."""
    results = [Samples() for _ in targets]
    rounds = max(1, min(args.rounds, total))
    sizes = [total // rounds + (1 if r < total % rounds else 0) for r in range(rounds)]
    order = list(range(len(targets)))
    for size in sizes:
        for index in order:
            block = await run_block(
                session, targets[index], concurrency, requests=size, stagger=not args.synchronized
            )
            results[index].add(block)
        order.reverse()
    return results


async def _start_pair(
    session: Any,
    procs: Processes,
    args: argparse.Namespace,
    mock_settings: dict[str, Any],
    redis_prefix: str | None,
) -> tuple[Child, Child]:
    mock = start_mock(procs, **mock_settings)
    proxy = start_proxy(
        procs,
        upstream_base_url=f"{mock.url}/v1",
        workers=args.workers,
        redis_url=args.redis_url if redis_prefix else None,
        redis_prefix=redis_prefix,
    )
    await wait_ready(session, mock, "/v1/models")
    await wait_ready(session, proxy, "/healthz")
    return mock, proxy


def _targets(mock: Child, proxy: Child) -> tuple[Target, Target]:
    body, headers = chat_body(), base_headers()
    direct = Target(
        "direct", f"{mock.url}/v1/chat/completions", body, headers, cpu=mock.cpu_seconds
    )
    proxied = Target(
        "proxy", f"{proxy.url}/v1/chat/completions", body, headers, cpu=proxy.cpu_seconds
    )
    return direct, proxied


async def latency_profile(
    session: Any, procs: Processes, args: argparse.Namespace, redis_prefix: str | None
) -> list[Row]:
    rows: list[Row] = []
    mock_settings = {"first_token_ms": args.first_token_ms, "gap_ms": args.gap_ms}
    mock_settings["chunks"] = args.chunks
    mock, proxy = await _start_pair(session, procs, args, mock_settings, redis_prefix)
    direct, proxied = _targets(mock, proxy)
    # The floor: a bare aiohttp relay to the same mock, in the same alternating blocks.
    relay_child = start_relay(procs, upstream_base_url=f"{mock.url}/v1")
    await wait_ready(session, relay_child, "/healthz")
    relay = Target(
        "relay",
        f"{relay_child.url}/v1/chat/completions",
        direct.body,
        direct.headers,
        cpu=relay_child.cpu_seconds,
    )
    targets = [direct, proxied, relay]
    top = max(args.concurrency)
    _progress(f"latency: warm-up at concurrency {top}")
    await _warm(session, targets, top, max(args.warmup, top) if args.warmup else 0)
    for level in args.concurrency:
        total = _requests_for(args, level)
        _progress(f"latency: concurrency {level}, {total} requests per target")
        await _warm(session, targets, level, level if args.warmup else 0)
        d, p, r = await _alternate(session, targets, level, total, args)
        rows.append(Row("latency", "stateless", level, d, p, relay=r))
    procs.stop(relay_child)
    if args.history and redis_prefix:
        rows += await history_section(session, args, direct, proxied, redis_prefix)
    rss = proxy.peak_rss_mib()
    for row in rows:
        row.rss_mib = rss
    procs.stop(proxy)
    procs.stop(mock)
    return rows


async def history_section(
    session: Any, args: argparse.Namespace, direct: Target, stateless: Target, prefix: str
) -> list[Row]:
    level = args.history_concurrency
    run = uuid.uuid4().hex[:8]
    cases: list[tuple[str, int | None]] = [("history off", None), ("history on, 0 turns", 0)]
    cases += [(f"history on, {turns} turns", turns) for turns in args.turns]
    targets = [direct]
    for name, turns in cases:
        if turns is None:
            targets.append(stateless)
            continue
        task_ids = [f"bench-{run}-t{turns}-w{worker}" for worker in range(level)]
        targets.append(
            Target(
                name, stateless.url, stateless.body, stateless.headers, task_ids, cpu=stateless.cpu
            )
        )
        if turns:
            _progress(f"history: pre-filling {level} tasks with {turns} turns")
            await prefill_tasks(args.redis_url, prefix, task_ids, turns)
    total = _requests_for(args, level)
    _progress(f"history: concurrency {level}, {total} requests per case")
    await _warm(session, targets, level, max(args.warmup, level) if args.warmup else 0)
    results = await _alternate(session, targets, level, total, args)
    return [
        Row("history", name, level, results[0], samples)
        for (name, _), samples in zip(cases, results[1:], strict=True)
    ]


async def throughput_profile(session: Any, procs: Processes, args: argparse.Namespace) -> Row:
    mock_settings = {**THROUGHPUT_MOCK, "chunks": args.chunks}
    mock, proxy = await _start_pair(session, procs, args, mock_settings, None)
    direct, proxied = _targets(mock, proxy)
    level = args.throughput_concurrency
    _progress(f"throughput: warm-up, then {args.duration:g} s per target at concurrency {level}")
    await _warm(session, [direct, proxied], level, max(args.warmup, level) if args.warmup else 0)
    results = [Samples(), Samples()]
    half = args.duration / 2
    for order in ((0, 1), (1, 0)):  # A B B A: each target gets the full duration
        for index in order:
            target = (direct, proxied)[index]
            results[index].add(await run_block(session, target, level, duration_s=half))
    row = Row("throughput", "stateless", level, results[0], results[1], proxy.peak_rss_mib())
    procs.stop(proxy)
    procs.stop(mock)
    return row


async def run(args: argparse.Namespace, procs: Processes, redis_prefix: str | None) -> list[Row]:
    rows: list[Row] = []
    if args.profile == "prefix":
        return rows
    async with new_session() as session:
        if args.profile in ("latency", "all"):
            rows += await latency_profile(session, procs, args, redis_prefix)
        if args.profile in ("throughput", "all"):
            rows.append(await throughput_profile(session, procs, args))
    return rows


def _cpu_seconds() -> tuple[float, float, float]:
    """(wall, busy CPU seconds of the whole machine, of this process and its waited children)."""
    busy = math.nan
    try:
        with open("/proc/stat", encoding="ascii") as stat:
            fields = [int(v) for v in stat.readline().split()[1:]]
        busy = (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        pass
    t = os.times()
    return time.monotonic(), busy, t.user + t.system + t.children_user + t.children_system


def _foreign_cpu(start: tuple[float, float, float]) -> str:
    end = _cpu_seconds()
    wall, machine, ours = (b - a for a, b in zip(start, end, strict=True))
    cpus = os.cpu_count() or 1
    other = max(0.0, machine - ours)
    return (
        f"CPU: {cpus} cpus shared by the load generator, mocks and proxy; this run used "
        f"{ours:.1f} s, other processes {other:.1f} s ({100 * other / (wall * cpus):.0f}% "
        f"of the machine over {wall:.0f} s)"
    )


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # unwinds through every finally: children stop, keys go


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    redis_prefix = None
    if args.history:
        redis_prefix = args.redis_prefix or f"proxybench:{uuid.uuid4().hex[:12]}:"
    if redis_prefix and (problem := redis_error(args.redis_url)):
        print(f"proxy bench: --history needs Redis at {args.redis_url}: {problem}", file=sys.stderr)
        return 2
    if args.history and args.profile == "throughput":
        print("proxy bench: --history runs with the latency profile", file=sys.stderr)
    procs = Processes()
    cpu = _cpu_seconds()  # other work on the machine skews every figure: say so
    previous = signal.getsignal(signal.SIGTERM)
    in_main_thread = threading.current_thread() is threading.main_thread()
    try:
        if in_main_thread:
            signal.signal(signal.SIGTERM, _terminate)
        rows = uvloop.run(run(args, procs, redis_prefix))
    except BenchError as exc:
        print(f"proxy bench: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("proxy bench: interrupted", file=sys.stderr)
        return 130
    finally:
        procs.stop_all()
        if redis_prefix:
            delete_keys(args.redis_url, redis_prefix)
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)
    if rows:
        print(render_table(rows))
    if args.profile in ("prefix", "all"):
        from proxy.dev.bench.prefix_reuse import report

        print(report(args.prefix_turns))
    print(_foreign_cpu(cpu))
    if args.json:
        print(orjson.dumps([row.summary() for row in rows], option=orjson.OPT_INDENT_2).decode())
    return 0
