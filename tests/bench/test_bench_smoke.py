"""Smoke runs of ``proxy bench`` with tiny numbers: it starts, measures, reports, cleans up.

Nothing here asserts on latency or throughput figures: only that the program exits 0,
prints its table with numbers in it, made no failed requests and leaves no keys behind.
"""

from __future__ import annotations

import math
import os
import uuid

import orjson
import pytest
import redis

from proxy.dev.bench.gateway import main

REDIS_URL = os.environ.get("PROXY_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
HEADERS = ("profile", "case", "conc", "direct p50", "proxy p99", "added p50", "rps prx", "RSS MiB")
# A faster latency mock than the default 50 ms + 20 x 10 ms: these runs are about plumbing.
TINY = ["--requests", "3", "--concurrency", "1,2", "--warmup", "2", "--rounds", "2", "--json"]
TINY += ["--first-token-ms", "20", "--gap-ms", "1"]


def _report(out: str) -> tuple[str, list[dict[str, object]]]:
    table, _, json_text = out.partition("\n[")
    return table, orjson.loads("[" + json_text)


def _assert_numeric_row(table: str, startswith: str) -> None:
    line = next(line for line in table.splitlines() if line.startswith(startswith))
    # "added" columns can be negative: on a tiny, noisy run the proxy's sample may be faster.
    numbers = [float(f) for f in line.split() if f.lstrip("-").replace(".", "", 1).isdigit()]
    assert len(numbers) >= 14, line  # conc, n, 9 TTFT columns, 2 totals, rps...


def test_latency_and_throughput(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--profile", "all", *TINY, "--duration", "1"]) == 0
    table, rows = _report(capsys.readouterr().out)
    for header in HEADERS:
        assert header in table
    _assert_numeric_row(table, "latency")
    _assert_numeric_row(table, "throughput")
    assert [(r["profile"], r["concurrency"]) for r in rows] == [
        ("latency", 1),
        ("latency", 2),
        ("throughput", 50),
    ]
    for row in rows:
        assert row["errors_direct"] == row["errors_proxy"] == 0
        for key in ("ttft_p50_direct_ms", "ttft_p99_proxy_ms", "ttft_p50_added_ms", "rps_proxy"):
            assert isinstance(row[key], float) and math.isfinite(row[key])
        assert isinstance(row["proxy_peak_rss_mib"], float) and row["proxy_peak_rss_mib"] > 0
    assert rows[0]["requests"] == rows[1]["requests"] == 3


def test_history_against_real_redis(capsys: pytest.CaptureFixture[str]) -> None:
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except (redis.RedisError, OSError) as exc:
        client.close()
        if "PROXY_TEST_REDIS_URL" in os.environ:
            raise
        pytest.skip(f"no redis at {REDIS_URL}: {exc}")
    prefix = f"proxybenchtest:{uuid.uuid4().hex[:12]}:"
    try:
        argv = ["--profile", "latency", "--history", "--turns", "10", "--redis-prefix", prefix]
        argv += [*TINY, "--concurrency", "1", "--history-concurrency", "2"]
        argv += ["--redis-url", REDIS_URL]
        assert main(argv) == 0
        table, rows = _report(capsys.readouterr().out)
        assert "history on, 10 turns" in table
        assert "vs history off" in table
        history = {r["case"]: r for r in rows if r["profile"] == "history"}
        assert set(history) == {"history off", "history on, 0 turns", "history on, 10 turns"}
        for row in history.values():
            assert row["errors_direct"] == row["errors_proxy"] == 0
            assert isinstance(row["ttft_p50_added_ms"], float)
        assert list(client.scan_iter(match=f"{prefix}*", count=1000)) == []  # cleaned up
    finally:
        leftovers = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if leftovers:
            client.delete(*leftovers)
        client.close()
