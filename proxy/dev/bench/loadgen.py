"""The load generator: streamed chat completions over one aiohttp session, timed.

Per request: TTFT is the time from sending to the first SSE event whose
``choices[0].delta.content`` is non-empty, total is the time to ``data: [DONE]``.
Parsing is minimal: the stream is only searched for ``"content":"`` followed by a
non-quote byte, and that one event is confirmed with orjson. The rest of the stream is
only searched for ``[DONE]``, and read to its end so the connection is reused.
"""

from __future__ import annotations

import asyncio
import gc
import math
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from time import perf_counter
from typing import Any

import aiohttp
import orjson

CONTENT_MARK = b'"content":"'
DONE_MARK = b"data: [DONE]"
QUOTE = ord('"')
REQUEST_TIMEOUT_S = 30.0
POINTS = (50, 95, 99)
SYSTEM_PROMPT = "You are a friendly voice assistant. Answer in one or two short sentences."
USER_TEXT = "What will the weather be like tomorrow afternoon in Lisbon?"


def chat_body(model: str = "mock-model") -> bytes:
    """One precomputed streamed chat request, as a voice engine sends it."""
    messages = [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": USER_TEXT},
    ]
    return orjson.dumps({"model": model, "stream": True, "messages": messages})


@dataclass(slots=True)
class Target:
    """Where a block of requests goes and how they look."""

    name: str
    url: str  # the full chat completions URL
    body: bytes
    headers: dict[str, str]
    task_ids: list[str] | None = None  # per worker: X-Task-Id plus a fresh X-Request-Id
    cycle_s: float = 0.0  # median request duration seen last: spreads the workers' starts
    cpu: Callable[[], float] | None = None  # CPU seconds of the server behind ``url``


@dataclass(slots=True)
class Samples:
    ttft: list[float] = field(default_factory=list)  # seconds
    total: list[float] = field(default_factory=list)
    errors: int = 0
    elapsed: float = 0.0  # wall-clock seconds of the blocks these came from
    cpu_s: float = 0.0  # CPU seconds the server used during those blocks (if known)

    def add(self, other: Samples) -> None:
        self.ttft += other.ttft
        self.total += other.total
        self.errors += other.errors
        self.elapsed += other.elapsed
        self.cpu_s += other.cpu_s

    @property
    def cpu_ms_per_request(self) -> float:
        """The server's CPU per answered request (NaN when not measured)."""
        if not self.cpu_s or not self.total:
            return math.nan
        return self.cpu_s / len(self.total) * 1000

    @property
    def rps(self) -> float:
        return len(self.total) / self.elapsed if self.elapsed > 0 else 0.0


def percentiles(values: Iterable[float], points: Iterable[float]) -> list[float]:
    """Linear-interpolated percentiles (numpy's default); NaN for no values."""
    ordered = sorted(values)
    if not ordered:
        return [math.nan for _ in points]
    result = []
    for point in points:
        rank = (len(ordered) - 1) * point / 100
        low = math.floor(rank)
        high = min(low + 1, len(ordered) - 1)
        result.append(ordered[low] + (ordered[high] - ordered[low]) * (rank - low))
    return result


def has_content_event(data: bytes) -> bool:
    """Whether the complete SSE events in ``data`` hold one with non-empty delta content."""
    at = data.find(CONTENT_MARK)
    while at != -1:
        after = at + len(CONTENT_MARK)
        if after < len(data) and data[after] != QUOTE:
            start = data.rfind(b"data:", 0, at)
            end = data.find(b"\n", at)
            if start != -1 and end != -1:
                try:
                    event = orjson.loads(data[start + 5 : end])
                    content = event["choices"][0]["delta"].get("content")
                except (orjson.JSONDecodeError, LookupError, TypeError, AttributeError):
                    content = None
                if isinstance(content, str) and content:
                    return True
        at = data.find(CONTENT_MARK, after)
    return False


async def one_request(
    session: aiohttp.ClientSession, target: Target, headers: dict[str, str]
) -> tuple[float, float] | None:
    """(TTFT, total) in seconds, or None when the request failed."""
    ttft = done = 0.0
    pending = b""  # before the first token: bytes of an event not complete yet
    tail = b""  # the end of the previous chunk, for a [DONE] split across reads
    started = perf_counter()
    async with session.post(target.url, data=target.body, headers=headers) as response:
        if response.status != 200:
            await response.read()
            return None
        read = response.content.readany
        while chunk := await read():
            if not ttft:
                data = pending + chunk if pending else chunk
                cut = data.rfind(b"\n\n") + 2  # only complete events
                if cut > 1 and has_content_event(data[:cut]):
                    ttft = perf_counter() - started
                    pending = b""
                else:
                    pending = data[cut:] if cut > 1 else data
            if not done and DONE_MARK in (tail + chunk if tail else chunk):
                done = perf_counter() - started
            tail = chunk[-len(DONE_MARK) :]
    if not ttft or not done:
        return None
    return ttft, done


async def run_block(
    session: aiohttp.ClientSession,
    target: Target,
    concurrency: int,
    *,
    requests: int | None = None,
    duration_s: float | None = None,
    limit_s: float = 600.0,
    stagger: bool = True,
) -> Samples:
    """``concurrency`` workers sending back to back: ``requests`` in all, or for ``duration_s``.

    With ``stagger``, worker i sends its first request ``i / concurrency`` of a request
    duration late: identical requests would otherwise arrive in synchronised bursts of
    ``concurrency`` for the whole block, which no real set of callers does.
    """
    if (requests is None) == (duration_s is None):
        raise ValueError("give exactly one of requests and duration_s")
    samples = Samples()
    remaining = requests if requests is not None else 0
    started = perf_counter()
    deadline = started + (duration_s if duration_s is not None else limit_s)
    ttfts, totals = samples.ttft, samples.total

    async def worker(index: int) -> None:
        nonlocal remaining
        task_id = target.task_ids[index] if target.task_ids else None
        headers = target.headers
        if stagger and target.cycle_s > 0 and index:
            await asyncio.sleep(min(target.cycle_s, 5.0) * index / concurrency)
        while perf_counter() < deadline:
            if requests is not None:
                if remaining <= 0:
                    return
                remaining -= 1
            if task_id is not None:
                headers = {**target.headers, "X-Task-Id": task_id}
                headers["X-Request-Id"] = uuid.uuid4().hex
            try:
                timing = await one_request(session, target, headers)
            except (aiohttp.ClientError, TimeoutError, OSError):
                timing = None
            if timing is None:
                samples.errors += 1
                await asyncio.sleep(0.01)  # a failing target must not become a busy loop
                continue
            ttfts.append(timing[0])
            totals.append(timing[1])

    gc_was_enabled = gc.isenabled()
    gc.disable()  # the instrument must not pause mid-measurement; collected after
    cpu_at_start = target.cpu() if target.cpu is not None else 0.0
    try:
        async with asyncio.timeout(limit_s + REQUEST_TIMEOUT_S):
            await asyncio.gather(*(worker(i) for i in range(concurrency)))
    finally:
        samples.elapsed = perf_counter() - started
        if target.cpu is not None:
            samples.cpu_s = target.cpu() - cpu_at_start
        if samples.total:
            target.cycle_s = percentiles(samples.total, (50,))[0]
        if gc_was_enabled:
            gc.enable()
        gc.collect()
    return samples


def new_session(max_connections: int = 2000) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(
        limit=max_connections, limit_per_host=0, keepalive_timeout=60, use_dns_cache=True
    )
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S, sock_connect=5.0),
        auto_decompress=False,
        skip_auto_headers=("User-Agent", "Accept-Encoding"),
    )


def base_headers() -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "Accept": "text/event-stream",
        "Authorization": "Bearer bench",
    }


# Results.


@dataclass
class Row:
    profile: str
    case: str
    concurrency: int
    direct: Samples
    proxy: Samples
    rss_mib: float | None = None
    relay: Samples | None = None  # the bare aiohttp relay, measured in the same blocks

    def summary(self) -> dict[str, Any]:
        d_ttft = percentiles(self.direct.ttft, POINTS)
        p_ttft = percentiles(self.proxy.ttft, POINTS)
        out: dict[str, Any] = {
            "profile": self.profile,
            "case": self.case,
            "concurrency": self.concurrency,
            "requests": len(self.proxy.ttft),
            "direct_requests": len(self.direct.ttft),
        }
        for point, d, p in zip(POINTS, d_ttft, p_ttft, strict=True):
            out[f"ttft_p{point}_direct_ms"] = d * 1000
            out[f"ttft_p{point}_proxy_ms"] = p * 1000
            out[f"ttft_p{point}_added_ms"] = (p - d) * 1000
        out["total_p50_direct_ms"] = percentiles(self.direct.total, (50,))[0] * 1000
        out["total_p50_proxy_ms"] = percentiles(self.proxy.total, (50,))[0] * 1000
        out["rps_direct"], out["rps_proxy"] = self.direct.rps, self.proxy.rps
        out["cpu_ms_per_request_direct"] = self.direct.cpu_ms_per_request
        out["cpu_ms_per_request_proxy"] = self.proxy.cpu_ms_per_request
        out["errors_direct"], out["errors_proxy"] = self.direct.errors, self.proxy.errors
        out["proxy_peak_rss_mib"] = self.rss_mib
        if self.relay is not None:
            r_ttft = percentiles(self.relay.ttft, POINTS)
            for point, d, r in zip(POINTS, d_ttft, r_ttft, strict=True):
                out[f"ttft_p{point}_relay_ms"] = r * 1000
                out[f"ttft_p{point}_relay_added_ms"] = (r - d) * 1000
            out["errors_relay"] = self.relay.errors
            out["cpu_ms_per_request_relay"] = self.relay.cpu_ms_per_request
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in out.items()}


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def render_table(rows: list[Row]) -> str:
    head = f"{'profile':<10} {'case':<24} {'conc':>4} {'n':>6}"
    cols = [f"{who} p{p}" for who in ("direct", "proxy", "added") for p in POINTS]
    head += "".join(f" {c:>11}" for c in cols)
    head += f" {'tot dir p50':>11} {'tot prx p50':>11} {'rps dir':>8} {'rps prx':>8}"
    head += f" {'errors':>7} {'RSS MiB':>8}"
    lines = [
        "TTFT = first non-empty delta.content; ms; "
        "added = pX(proxy) - pX(direct), percentile by percentile",
        head,
        "-" * len(head),
    ]
    for row in rows:
        s = row.summary()
        line = f"{row.profile:<10} {row.case:<24} {row.concurrency:>4} {s['requests']:>6}"
        for who in ("direct", "proxy", "added"):
            line += "".join(f" {_ms(s[f'ttft_p{p}_{who}_ms']):>11}" for p in POINTS)
        line += f" {_ms(s['total_p50_direct_ms']):>11} {_ms(s['total_p50_proxy_ms']):>11}"
        line += f" {s['rps_direct']:>8.1f} {s['rps_proxy']:>8.1f}"
        line += f" {s['errors_direct']:>3}/{s['errors_proxy']:<3}"
        line += f" {_ms(row.rss_mib):>8}"
        lines.append(line)
    for row in rows:
        s = row.summary()
        if row.relay is None or s["ttft_p50_relay_added_ms"] is None:
            continue
        proxy_added, relay_added = s["ttft_p50_added_ms"], s["ttft_p50_relay_added_ms"]
        ratio = proxy_added / relay_added if relay_added and relay_added > 0 else math.nan
        lines.append(
            f"  floor, concurrency {row.concurrency}: added TTFT p50 proxy {proxy_added:.2f} ms,"
            f" bare aiohttp relay {relay_added:.2f} ms (p95 {s['ttft_p95_added_ms']:.2f} /"
            f" {s['ttft_p95_relay_added_ms']:.2f}), proxy/relay {ratio:.2f}x;"
            f" CPU per request proxy {_ms(s['cpu_ms_per_request_proxy'])} ms,"
            f" relay {_ms(s['cpu_ms_per_request_relay'])} ms"
        )
    off = next((r.summary() for r in rows if r.case == "history off"), None)
    if off is not None and off["ttft_p50_added_ms"] is not None:
        for row in rows:
            s = row.summary()
            if (
                row.profile == "history"
                and row.case != "history off"
                and s["ttft_p50_added_ms"] is not None
            ):
                delta = s["ttft_p50_added_ms"] - off["ttft_p50_added_ms"]
                lines.append(
                    f"  {row.case}: added TTFT p50 vs history off {delta:+.2f} ms; CPU per"
                    f" request {_ms(s['cpu_ms_per_request_proxy'])} ms"
                    f" (off: {_ms(off['cpu_ms_per_request_proxy'])} ms)"
                )
    return "\n".join(lines)
