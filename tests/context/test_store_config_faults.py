"""A store error that is not an outage is a configuration fault, never a silent stateless turn.

Real Redis ACL users that lack a permission (NOPERM), and a key another application
wrote under the prefix (WRONGTYPE): the turn is still answered, and ``/readyz`` names
the fault (503), ``proxy_store_config_faults_total`` counts each refused call, the log
says what to fix. (MOVED, a standalone client on a cluster: tests/e2e/test_redis_cluster.py.)
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Iterator

import httpx
import pytest
import redis

from tests.conftest import REDIS_URL
from tests.context.engine_calls import SYSTEM, say, task_key, user


@pytest.fixture
def acl_user() -> Iterator[tuple[str, redis.Redis]]:
    """A fresh ACL user name (deleted afterwards) and an admin client to set it up."""
    admin = redis.Redis.from_url(REDIS_URL)
    name = f"proxytest-{uuid.uuid4().hex[:10]}"
    yield name, admin
    admin.acl_deluser(name)
    admin.close()


def faults(proxy) -> dict[str, float]:
    text = httpx.get(proxy.url + "/metrics", timeout=5).text
    pattern = r'^proxy_store_config_faults_total\{error="([^"]+)"\} (\S+)$'
    return {name: float(value) for name, value in re.findall(pattern, text, re.MULTILINE)}


def nonzero(counts: dict[str, float]) -> dict[str, float]:
    return {name: value for name, value in counts.items() if value}


@pytest.mark.parametrize(
    ("keys", "commands", "refused_per_turn"),
    [
        # An ACL written for another prefix: every call is refused (the turn's start:
        # claim, history and meta.info queue in one script; the usage counters).
        (["~elsewhere:*"], ["+@all"], 2),
        # Reads and writes allowed, scripts not: PING, GET and SET work, and the turn's
        # start (one script) is refused.
        (None, ["+@all", "-@scripting"], 1),
    ],
    ids=["keys-of-another-prefix", "no-scripting"],
)
def test_a_redis_user_without_permission_is_a_named_fault(
    make_proxy, mock, redis_prefix, acl_user, caplog, keys, commands, refused_per_turn
):
    name, admin = acl_user
    admin.acl_setuser(
        name,
        enabled=True,
        passwords=["+secret-pw"],
        keys=keys or [f"~{redis_prefix}*"],
        commands=commands,
    )
    url = REDIS_URL.replace("redis://", f"redis://{name}:secret-pw@", 1)
    proxy = make_proxy(redis=True, redis_url=url)
    with caplog.at_level(logging.ERROR, logger="proxy.context.redis_faults"):
        for n in range(2):  # answered, without history
            assert say(proxy, "task-acl", [SYSTEM, user(f"hello {n}")], reply="hi") == "hi"
    assert mock.requests[-1].body["messages"] == [SYSTEM, user("hello 1")]
    assert nonzero(faults(proxy)) == {"NOPERM": 2 * refused_per_turn}
    ready = httpx.get(proxy.url + "/readyz", timeout=5)
    assert ready.status_code == 503 and ready.json()["status"] == "not ready"
    assert ready.json()["checks"]["history"].startswith("NOPERM: the Redis user lacks")
    logged = [r.getMessage() for r in caplog.records if "configuration fault" in r.getMessage()]
    assert len(logged) == 1  # once, not once per call
    assert "NOPERM" in logged[0] and "~<PROXY_REDIS_PREFIX>*" in logged[0]


def test_a_key_of_another_kind_under_the_prefix_is_a_named_fault(make_proxy, mock, redis_prefix):
    proxy = make_proxy(redis=True)
    client = redis.Redis.from_url(REDIS_URL)
    client.set(f"{redis_prefix}{{{task_key('task-x')}}}:msgs", "not a list")
    client.close()
    assert say(proxy, "task-x", [SYSTEM, user("hello")], reply="hi") == "hi"
    assert nonzero(faults(proxy)) == {"WRONGTYPE": 1}  # the history read
    ready = httpx.get(proxy.url + "/readyz", timeout=5)
    assert ready.status_code == 503
    assert ready.json()["checks"]["history"].startswith("WRONGTYPE: a key under")


def test_a_working_store_is_ready_and_counts_no_fault(make_proxy, mock):
    proxy = make_proxy(redis=True)
    assert say(proxy, "task-ok", [SYSTEM, user("hello")], reply="hi") == "hi"
    counts = faults(proxy)
    assert set(counts) == {"MOVED", "ASK", "CROSSSLOT", "NOPERM", "NOAUTH", "WRONGPASS"} | {
        "WRONGTYPE",
        "OOM",
        "NOSCRIPT",
        "ERR",
        "other",
    }
    assert nonzero(counts) == {}
    ready = httpx.get(proxy.url + "/readyz", timeout=5)
    assert ready.status_code == 200 and ready.json()["checks"]["history"] == "ok"
