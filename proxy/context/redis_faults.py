"""Store errors that are configuration faults, not outages: named, counted, explained.

A timeout or a refused connection heals by itself; ``MOVED`` (a standalone client on a
cluster), ``NOPERM`` (an ACL user without a permission) or ``WRONGTYPE`` (another
application writing under the key prefix) never do, and until fixed every turn is
answered without its history. So each is named from a closed set (a metric label),
counted, kept for ``/readyz``, and logged with what to fix.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass

from redis import exceptions as redis_errors

from proxy.context.redis_errors import transient

log = logging.getLogger(__name__)

# What to do about each fault: the log line and /readyz say it.
ADVICE = {
    "MOVED": "Redis is a cluster but the proxy uses a standalone client: set "
    "PROXY_REDIS_CLUSTER=true (or leave it unset to detect it on start)",
    "ASK": "a cluster slot is migrating and the proxy uses a standalone client: set "
    "PROXY_REDIS_CLUSTER=true",
    "CROSSSLOT": "a multi-key call spans cluster slots: keep '{' and '}' out of "
    "PROXY_REDIS_PREFIX, and report it (the proxy's keys share one slot per task)",
    "NOPERM": "the Redis user lacks a permission: grant it the keys "
    "'~<PROXY_REDIS_PREFIX>*' and the commands '+@read +@write +@scripting "
    "+@transaction +@connection' (see the README)",
    "NOAUTH": "Redis requires a password: set PROXY_REDIS_PASSWORD or put "
    "user:password in PROXY_REDIS_URL",
    "WRONGPASS": "Redis refused the user name or password: check PROXY_REDIS_URL and "
    "PROXY_REDIS_PASSWORD",
    "WRONGTYPE": "a key under PROXY_REDIS_PREFIX holds another kind of value: another "
    "application writes there; give the proxy a prefix of its own",
    "OOM": "Redis is out of memory and evicts nothing: raise maxmemory or set "
    "maxmemory-policy to volatile-lru",
    "NOSCRIPT": "Redis forgot a script the proxy loaded: check that no proxy shares "
    "this prefix with another client that runs SCRIPT FLUSH",
    "ERR": "Redis refused a command: see the error; an old Redis (< 6.2) lacks "
    "commands the proxy uses",
    "other": "see the error",
}
FAULTS = tuple(ADVICE)  # the closed label set of proxy_store_config_faults_total
# How long a fault met by traffic keeps /readyz failing after it was last seen.
RECENT_SECONDS = 60.0
LOG_EVERY_SECONDS = 10.0  # per fault name: one log line, not one per turn

_CODES = re.compile(r"\b(" + "|".join(name for name in FAULTS if name.isupper()) + r")\b")


def config_fault(exc: BaseException) -> str | None:
    """The fault's name (one of ``FAULTS``), or None for an outage or a non-store error."""
    if transient(exc):  # not a fault: the same call may work a moment later
        return None
    if isinstance(exc, redis_errors.AuthenticationError):
        return "NOAUTH" if "required" in str(exc).lower() else "WRONGPASS"
    if isinstance(exc, redis_errors.MovedError):
        return "MOVED"
    if isinstance(exc, redis_errors.AskError):
        return "ASK"
    if isinstance(exc, redis_errors.ClusterCrossSlotError):
        return "CROSSSLOT"
    if isinstance(exc, redis_errors.NoPermissionError):
        return "NOPERM"
    if isinstance(exc, redis_errors.OutOfMemoryError):
        return "OOM"
    if isinstance(exc, redis_errors.ResponseError):
        # redis-py drops the code of some errors ("ERR") and keeps others ("WRONGTYPE").
        match = _CODES.search(str(exc))
        return match.group(1) if match else "ERR"
    if isinstance(exc, redis_errors.RedisClusterException):
        return "CROSSSLOT" if "same slot" in str(exc) else "other"
    if isinstance(exc, redis_errors.ConnectionError | redis_errors.TimeoutError):
        return None
    if isinstance(exc, redis_errors.RedisError):
        return "other"
    return None


@dataclass(slots=True)
class Fault:
    name: str
    message: str
    at: float  # time.monotonic()

    def describe(self) -> str:
        return f"{self.name}: {ADVICE[self.name]} (Redis said: {self.message})"


class FaultRecord:
    """Configuration faults met so far: counts by name, and the latest one."""

    def __init__(self) -> None:
        self.counts = dict.fromkeys(FAULTS, 0)
        self.latest: Fault | None = None
        self._logged: dict[str, float] = {}

    def note(self, exc: BaseException) -> str | None:
        """Count and log ``exc`` if it is a configuration fault; its name, or None."""
        name = config_fault(exc)
        if name is None:
            return None
        now = time.monotonic()
        self.counts[name] += 1
        self.latest = fault = Fault(name, str(exc)[:300], now)
        if now - self._logged.get(name, -LOG_EVERY_SECONDS) >= LOG_EVERY_SECONDS:
            self._logged[name] = now
            log.error(
                "history store configuration fault %s: turns are answered without their "
                "history until it is fixed. %s",
                name,
                fault.describe(),
            )
        return name

    def recent(self, seconds: float = RECENT_SECONDS) -> Fault | None:
        latest = self.latest
        if latest is None or time.monotonic() - latest.at > seconds:
            return None
        return latest
