"""A short ``proxy soak``: 20 voice sessions against a real proxy, Redis and mock upstream,
every turn checked against its stored history.

The 200-session run is the README's; this one keeps the same mix of turns (barge-ins,
retries under the same request id, turns the engine gives up on, upstream errors, cut
streams, engine history, retrieval) small enough for CI, and counts exactly: every turn
the engine ran is recorded as it was heard, none lost, duplicated or mismatched, and
every error seen is one the soak injected.
"""

from __future__ import annotations

import os

import orjson
import pytest

from proxy.dev.bench.soak import main

pytestmark = pytest.mark.slow

REDIS_URL = os.environ.get("PROXY_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def test_twenty_sessions_every_turn_recorded_as_heard(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--sessions", "20", "--duration", "15", "--think-ms", "1500", "--seed", "7"]
    # 15 s is warm-up only (pools, caches, allocator arenas): memory is judged by the
    # long runs, not here.
    args += ["--max-slope", "1000", "--tools", "--redis-url", REDIS_URL, "--json"]
    status = main(args)
    report = orjson.loads(capsys.readouterr().out)
    turns = report["turns"]
    assert turns == sum(report["turns_by_kind"].values())
    # How many turns fit in 15 s is timing; that each one is accounted for is not.
    assert turns >= 20
    history = {k: v for k, v in report["history"].items() if k != "examples"}
    assert history == {"ok": turns, "lost": 0, "duplicated": 0, "mismatched": 0}, report
    assert report["errors"]["unexpected"] == {}, report["errors"]
    assert status == 0 and report["passed"] is True
