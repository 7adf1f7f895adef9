"""Which store errors are configuration faults, and under which name (a closed set)."""

from __future__ import annotations

import pytest
from redis import exceptions as redis_errors

from proxy.context.guard import transient
from proxy.context.redis_faults import FAULTS, FaultRecord, config_fault

CASES = [
    (redis_errors.MovedError("3999 127.0.0.1:7001"), "MOVED"),
    (redis_errors.AskError("3999 127.0.0.1:7001"), "ASK"),
    (redis_errors.ClusterCrossSlotError(), "CROSSSLOT"),
    (
        redis_errors.RedisClusterException("Keys in request don't hash to the same slot"),
        "CROSSSLOT",
    ),
    (redis_errors.NoPermissionError("this user has no permissions"), "NOPERM"),
    (redis_errors.AuthenticationError("Authentication required."), "NOAUTH"),
    (redis_errors.AuthenticationError("invalid username-password pair"), "WRONGPASS"),
    (redis_errors.ResponseError("WRONGTYPE Operation against a key"), "WRONGTYPE"),
    (
        redis_errors.ResponseError(
            "Command # 1 (LRANGE x -1 -1) of pipeline caused error: ('WRONGTYPE Operation',)"
        ),
        "WRONGTYPE",
    ),
    (redis_errors.OutOfMemoryError("command not allowed when used memory > 'maxmemory'"), "OOM"),
    (redis_errors.ResponseError("OOM command not allowed"), "OOM"),
    (redis_errors.ResponseError("Error running script"), "ERR"),
    (redis_errors.DataError("invalid input"), "other"),
    # Outages and passing states are not faults.
    (TimeoutError(), None),
    (redis_errors.TimeoutError(), None),
    (redis_errors.ConnectionError("Connection refused"), None),
    (ConnectionRefusedError(), None),
    (redis_errors.ReadOnlyError("replica"), None),
    (redis_errors.TryAgainError(), None),
    (redis_errors.ClusterDownError("CLUSTERDOWN"), None),
    (redis_errors.BusyLoadingError(), None),
    (ValueError("not a store error"), None),
    # A cluster mid-failover (as redis-py 8.1 raises them): transient, not faults.
    (redis_errors.ClusterError("TTL exhausted."), None),
    (redis_errors.MasterDownError("MASTERDOWN Link with MASTER is down"), None),
    (redis_errors.SlotNotCoveredError('Slot "5" is not covered by the cluster.'), None),
    (
        redis_errors.RedisClusterException(
            "All slots are not covered after query all startup_nodes. 10923 of 16384 covered..."
        ),
        None,
    ),
    (redis_errors.RedisClusterException("Redis Cluster cannot be connected."), None),
    (redis_errors.NoScriptError("No matching script. Please use EVAL."), None),
]

# A cluster whose topology is moving, a node without the scripts: a retry can land.
IN_FLUX = [error for error, name in CASES[-6:]]
# Misuse the cluster client refuses the same way every time: never retried.
MISUSE = [
    redis_errors.RedisClusterException("Keys in request don't hash to the same slot"),
    redis_errors.RedisClusterException("No way to dispatch this command to Redis Cluster."),
]


@pytest.mark.parametrize(("error", "name"), CASES, ids=lambda c: repr(c)[:60])
def test_fault_names(error: Exception, name: str | None) -> None:
    assert config_fault(error) == name
    assert name is None or name in FAULTS


@pytest.mark.parametrize("error", IN_FLUX, ids=lambda c: repr(c)[:60])
def test_a_cluster_failing_over_is_transient(error: Exception) -> None:
    assert transient(error)


@pytest.mark.parametrize("error", MISUSE, ids=lambda c: repr(c)[:60])
def test_cluster_misuse_is_not_retried(error: Exception) -> None:
    assert not transient(error)


def test_a_refused_password_is_never_retried() -> None:
    assert not transient(redis_errors.AuthenticationError("invalid username-password pair"))


def test_the_record_counts_every_fault_and_keeps_the_latest() -> None:
    record = FaultRecord()
    assert record.note(TimeoutError()) is None
    assert record.note(redis_errors.NoPermissionError("no permissions")) == "NOPERM"
    assert record.note(redis_errors.NoPermissionError("no permissions")) == "NOPERM"
    assert {k: v for k, v in record.counts.items() if v} == {"NOPERM": 2}
    latest = record.recent()
    assert latest is not None and latest.describe().startswith("NOPERM: the Redis user")
    assert record.recent(seconds=-1) is None
