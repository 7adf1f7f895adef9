"""The Redis client behind the history store: standalone, Sentinel or Cluster.

Every deployment gets the same limits: calls time-boxed by ``PROXY_REDIS_TIMEOUT_MS``
(connect and read), no retry of a timed-out call (the turn's own retry knows whether it
may have run), at most ``PROXY_REDIS_MAX_CONNECTIONS`` connections (per node on a
cluster). ``PROXY_REDIS_CLUSTER``: true uses the cluster client (``PROXY_REDIS_URL``
names any node), false the standalone one, unset asks the server on start
(``INFO cluster``).
"""

from __future__ import annotations

import logging
from typing import Any

import redis.asyncio as redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from proxy.settings import Settings

log = logging.getLogger(__name__)

RedisClient = redis.Redis | RedisCluster


def _options(settings: Settings) -> dict[str, Any]:
    timeout = settings.redis_timeout_ms / 1000
    options: dict[str, Any] = {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "health_check_interval": 30,
        # redis-py's own default (100) refused calls at 200 concurrent voice sessions.
        "max_connections": settings.redis_max_connections,
    }
    if settings.redis_password is not None:
        options["password"] = settings.redis_password.get_secret_value()
    return options


def stale_connection_retry() -> dict[str, Any]:
    """After a Redis restart every pooled connection is stale: one that fails is retried
    once, at once, on a fresh connection, instead of counting as "down" (claims and
    commits are idempotent per attempt; a timeout is never retried). The cluster client
    has its own: it retries a lost connection after refreshing the slot map."""
    return {
        "retry": Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
        "retry_on_error": [RedisConnectionError],
    }


async def server_is_cluster(url: str, options: dict[str, Any]) -> bool | None:
    """Whether the server at ``url`` runs in cluster mode; None if it cannot tell."""
    probe = redis.Redis.from_url(url, **options)
    try:
        info = await probe.info("cluster")
    except redis.RedisError as exc:  # down, or INFO not allowed to this user
        log.warning("could not ask %s whether it is a cluster: %r", _safe(url), exc)
        return None
    finally:
        await probe.aclose()
    return bool(info.get("cluster_enabled"))


async def connect_redis(settings: Settings) -> RedisClient:
    """The client for the configured Redis (nothing is sent before its first call,
    except the cluster question when ``PROXY_REDIS_CLUSTER`` is unset)."""
    options = _options(settings)
    if settings.redis_sentinels:
        return _sentinel_client(settings, options)
    url = settings.redis_url
    assert url is not None
    cluster = settings.redis_cluster
    if cluster is None:
        cluster = await server_is_cluster(url, options)
        if cluster is None:
            log.warning(
                "using a standalone Redis client; if %s is a cluster node, /readyz will "
                "report MOVED: set PROXY_REDIS_CLUSTER=true",
                _safe(url),
            )
        elif cluster:
            log.info("%s is a Redis Cluster node: using the cluster client", _safe(url))
    if cluster:
        # The cluster client finds the other nodes, follows MOVED/ASK and keeps a pool
        # per node; a script or a transaction goes to the node that owns its keys' slot.
        return RedisCluster.from_url(url, **options)
    return redis.Redis.from_url(url, retry_on_timeout=False, **stale_connection_retry(), **options)


def _sentinel_client(settings: Settings, options: dict[str, Any]) -> redis.Redis:
    hosts = [(h.rsplit(":", 1)[0], int(h.rsplit(":", 1)[1])) for h in settings.redis_sentinels]
    sentinel_password = settings.redis_sentinel_password
    # redis-py leaves Sentinel untyped.
    sentinel = Sentinel(  # type: ignore[no-untyped-call,unused-ignore]
        hosts,
        sentinel_kwargs={
            "password": sentinel_password.get_secret_value() if sentinel_password else None,
            "socket_timeout": options["socket_timeout"],
        },
        retry_on_timeout=False,
        **stale_connection_retry(),
        **options,
    )
    master: redis.Redis = sentinel.master_for(settings.redis_sentinel_master, db=settings.redis_db)
    return master


def _safe(url: str) -> str:
    """The URL without its password, for logs."""
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.rsplit('@', 1)[-1]}" if rest else url
