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
    redis_errors.ClusterDownError,
)

# Every error a store call can end with (the admin API answers them with 503).
STORE_ERRORS = (redis_errors.RedisError, OSError, TimeoutError)


def transient(exc: BaseException) -> bool:
    """The store may answer the same call a moment later (nothing refused it as wrong)."""
    # A refused password is a ConnectionError to redis-py, but no retry will fix it.
    return isinstance(exc, _TRANSIENT) and not isinstance(exc, redis_errors.AuthenticationError)


def slow(exc: BaseException) -> bool:
    """The store is there but busy: it did not answer in time (and may even have run the
    call), or this process has every connection to it in use. Not an outage."""
    return isinstance(
        exc, TimeoutError | redis_errors.TimeoutError | redis_errors.MaxConnectionsError
    )
