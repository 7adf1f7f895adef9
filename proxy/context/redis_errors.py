"""What the Redis adapter's exceptions mean to the store-agnostic code.

redis-py's exception tree stays here, beside the adapter (``redis_store``,
``redis_client``): the guard, the commit retrier and the admin API ask these questions
and never import ``redis`` themselves. The embedded store raises only the builtin
``TimeoutError`` / ``OSError`` family, which the same answers cover.
"""

from __future__ import annotations

from redis import exceptions as redis_errors

# Failures a later attempt may well not meet: a stall, a lost connection, a failover.
_TRANSIENT = (
    TimeoutError,
    OSError,  # ConnectionError included
    redis_errors.ConnectionError,  # BusyLoadingError, MaxConnectionsError included
    redis_errors.TimeoutError,
    redis_errors.ReadOnlyError,  # a replica just promoted, or a failover in progress
    redis_errors.TryAgainError,
    # A cluster mid-failover: CLUSTERDOWN, MASTERDOWN, redirections past redis-py's TTL
    # ("TTL exhausted"), a slot no node serves yet.
    redis_errors.ClusterError,
    redis_errors.SlotNotCoveredError,
    # A promoted replica or a restarted node lacks the scripts (redis-py loads them).
    redis_errors.NoScriptError,
)
# The cluster client's own exception (not a RedisError) also says that no node could
# be reached or that the nodes do not agree on the slots yet (a failover in progress);
# its other messages (keys in different slots, an unsupported command) are faults.
_CLUSTER_IN_FLUX = ("not covered", "cannot be connected", "could not agree", "no targets")

# Every error a store call can end with (the admin API answers them with 503).
STORE_ERRORS = (redis_errors.RedisError, redis_errors.RedisClusterException, OSError, TimeoutError)


def transient(exc: BaseException) -> bool:
    """The store may answer the same call a moment later: nothing refused it as wrong.

    Only a refusal is final: the server's error reply (NOPERM, WRONGTYPE, OOM, MOVED to
    a standalone client, a script error...), a refused password, input the client
    rejects (``DataError``) or the cluster client's misuse errors. Anything else, the
    client's own trouble in the middle of a topology change included (seen in CI as a
    turn refused during a failover, its exception unknown), is worth another attempt:
    a commit is idempotent, and one that never lands is counted (``gave_up``)."""
    # A refused password is a ConnectionError to redis-py, but no retry will fix it.
    if isinstance(exc, redis_errors.AuthenticationError):
        return False
    if isinstance(exc, redis_errors.RedisClusterException):
        message = str(exc).lower()
        return any(words in message for words in _CLUSTER_IN_FLUX)
    if isinstance(exc, _TRANSIENT):
        return True
    return not isinstance(exc, redis_errors.ResponseError | redis_errors.DataError)


def slow(exc: BaseException) -> bool:
    """The store is there but busy: it did not answer in time (and may even have run the
    call), or this process has every connection to it in use. Not an outage."""
    return isinstance(
        exc, TimeoutError | redis_errors.TimeoutError | redis_errors.MaxConnectionsError
    )
