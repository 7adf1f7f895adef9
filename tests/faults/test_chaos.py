"""``proxy chaos`` scenarios as end-to-end tests: real processes, exact counts.

The kill -9 + retry and Redis restart scenarios measure the chat pipeline, whose fixes
are tested elsewhere; here they are only checked to run and to report consistently.
"""

from __future__ import annotations

import asyncio
import shutil

import pytest

from proxy.dev.chaos.cli import table
from proxy.dev.chaos.cluster import cluster_failover
from proxy.dev.chaos.engine import Tally
from proxy.dev.chaos.scenarios import (
    Options,
    erasure_race,
    kill9_after_turn,
    kill9_retry,
    model_names,
    postgres_down_across_restart,
    redis_restart,
)
from tests.pg_cluster import pg_bin

pytestmark = pytest.mark.slow

needs_postgres = pytest.mark.skipif(
    pg_bin("initdb") is None or pg_bin("pg_ctl") is None, reason="PostgreSQL binaries missing"
)
needs_redis = pytest.mark.skipif(shutil.which("redis-server") is None, reason="no redis-server")


def consistent(tally: Tally, turns: int) -> None:
    assert tally.answered + tally.unanswered == turns
    assert tally.recorded + tally.lost == tally.answered
    assert tally.duplicated >= 0
    assert table([tally]).count("\n") == 2  # header, rule, one row


@needs_postgres
@needs_redis
def test_postgres_down_across_a_proxy_restart_loses_nothing() -> None:
    tally = asyncio.run(postgres_down_across_restart(Options(sessions=5)))
    # 5 sessions x 2 turns, 5 tasks x 4 callbacks: every one acknowledged and recorded once.
    assert (tally.answered, tally.recorded, tally.lost, tally.duplicated) == (30, 30, 0, 0)
    assert tally.unanswered == 0


@needs_postgres
def test_kill9_just_after_the_turns_loses_no_transcript_row() -> None:
    tally = asyncio.run(kill9_after_turn(Options(sessions=8)))
    assert (tally.answered, tally.recorded, tally.lost, tally.duplicated) == (8, 8, 0, 0)


@needs_postgres
@needs_redis
def test_erasure_racing_queued_writes_stays_final() -> None:
    tally = asyncio.run(erasure_race(Options(sessions=9)))  # 3 tasks x (2 turns + 1 racing)
    assert (tally.answered, tally.recorded) == (9, 0)
    assert tally.measures == {
        "erased": 3,
        "raced": 3,
        "came_back": 0,
        "live_after": 0,
        "new_turns": 3,
        "new_recorded_once": 3,
    }


def test_thousands_of_model_names_make_one_label() -> None:
    tally = asyncio.run(model_names(Options(model_names=1000)))
    assert (tally.answered, tally.unanswered) == (1000, 0)
    assert tally.measures["model_labels"] == 1  # "other"
    assert tally.measures["metrics_bytes"] < 64 * 1024


@needs_redis
def test_kill9_retry_scenario_runs_and_reports_consistently() -> None:
    tally = asyncio.run(kill9_retry(Options(sessions=6)))
    consistent(tally, 6 * 3)


@needs_redis
def test_redis_restart_scenario_runs_and_reports_consistently() -> None:
    tally = asyncio.run(redis_restart(Options(sessions=6)))
    consistent(tally, 6 * 3)  # the 3 turns after the restart


@needs_redis
def test_redis_cluster_failover_loses_no_turn_silently() -> None:
    """3 masters + 3 replicas; one master is kill -9ed mid-run and its replica promoted
    (cluster-node-timeout 1 s, about 2.5 s to a whole cluster). The cluster client follows
    the new slot map. Every turn is recorded once: one whose calls failed, or that found
    its slot's master gone when it started (answered without history), is recorded by the
    commit retries once the replica serves the slot. (Redis replicates asynchronously: a
    write acknowledged just before the master died could be lost; on loopback none was.)"""
    tally = asyncio.run(cluster_failover(Options(sessions=12)))
    consistent(tally, 12 * 8)
    assert tally.answered == 96 and tally.duplicated == 0, tally
    assert tally.measures["tasks_on_killed_master"] > 0  # the fault hit some sessions
    assert tally.measures["store_errors"] > 0  # ... while they were talking
    assert tally.measures["lost_silently"] == 0, tally.notes
    assert (tally.recorded, tally.measures["refused_loudly"]) == (96, 0), tally.notes
