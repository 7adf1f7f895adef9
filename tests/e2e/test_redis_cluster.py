"""A proxy process on a real 3-master Redis Cluster: every task keeps its exact history.

Twenty engine tasks talk at once, three turns each; their keys land on all three
masters. Each task's next upstream request must carry exactly its own history. The
same run with a standalone client (``PROXY_REDIS_CLUSTER=false``, what ``main`` always
did) shows the failure it fixes: tasks on the other masters meet ``MOVED``, are answered
without history, and the proxy now says so: ``/readyz`` names the fault and the metric
counts every refused call.
"""

from __future__ import annotations

import re
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import httpx
import pytest
import redis

from tests.context.engine_calls import APP_ID, SYSTEM, assistant, say, task_key, user
from tests.e2e.procs import ProxyProcess
from tests.redis_cluster import ThrowawayRedisCluster

pytestmark = pytest.mark.slow

TASKS = 20
TURNS = 3


class Replica:
    def __init__(self, process: ProxyProcess) -> None:
        self.process = process
        self.base_url = process.url + "/v1"


@pytest.fixture
def cluster_prefix(redis_cluster: ThrowawayRedisCluster):
    prefix = f"proxytest:{uuid.uuid4().hex[:12]}:"
    yield prefix
    client = redis.RedisCluster.from_url(redis_cluster.url)
    for key in list(client.scan_iter(match=f"{prefix}*", count=1000)):
        client.delete(key)
    client.close()


def start_proxy(mock, cluster, prefix, tmp_path, **env: str) -> ProxyProcess:
    return ProxyProcess(
        {
            "PROXY_UPSTREAM_BASE_URL": mock.base_url,
            "PROXY_REDIS_URL": cluster.url,
            "PROXY_REDIS_PREFIX": prefix,
            "PROXY_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/proxy.db",
            # A loaded CI machine must not turn a slow call into a turn without history.
            "PROXY_REDIS_TIMEOUT_MS": "3000",
            "PROXY_UPSTREAM_CONNECT_TIMEOUT": "30",
            "PROXY_UPSTREAM_FIRST_TOKEN_TIMEOUT": "30",
            **env,
        }
    ).start(timeout=60)  # a loaded CI machine takes its time to import the proxy


def converse(replica: Replica, mock, tasks: list[str]) -> dict[str, list[list[dict[str, str]]]]:
    """``TURNS`` rounds, all tasks at once in each; per task, the messages each of its
    upstream requests carried."""
    seen: dict[str, list[list[dict[str, str]]]] = {task: [] for task in tasks}
    with ThreadPoolExecutor(max_workers=len(tasks)) as pool:
        for turn in range(TURNS):

            def one(task: str, turn: int = turn) -> str:
                text = f"{task} question {turn}"
                return say(replica, task, [SYSTEM, user(text)], reply=f"{task} answer {turn}")

            replies = list(pool.map(one, tasks))
            assert replies == [f"{task} answer {turn}" for task in tasks]
            by_question = {r.body["messages"][-1]["content"]: r for r in mock.requests}
            for task in tasks:
                seen[task].append(by_question[f"{task} question {turn}"].body["messages"])
    return seen


def full_history(task: str, turn: int) -> list[dict[str, str]]:
    expected = [SYSTEM]
    for earlier in range(turn):
        expected += [user(f"{task} question {earlier}"), assistant(f"{task} answer {earlier}")]
    return [*expected, user(f"{task} question {turn}")]


def config_faults(process: ProxyProcess) -> dict[str, float]:
    text = httpx.get(process.url + "/metrics", timeout=5).text
    pattern = r'^proxy_store_config_faults_total\{error="([^"]+)"\} (\S+)$'
    return {name: float(value) for name, value in re.findall(pattern, text, re.MULTILINE)}


def masters_of(cluster: ThrowawayRedisCluster, keys: list[str]) -> dict[str, str]:
    client = redis.RedisCluster.from_url(cluster.url)
    try:
        return {key: client.get_node_from_key(key).name for key in keys}
    finally:
        client.close()


def test_twenty_tasks_on_a_cluster_keep_their_exact_history(
    redis_cluster, cluster_prefix, mock, tmp_path
):
    tasks = [f"task-{n:02d}-{uuid.uuid4().hex[:6]}" for n in range(TASKS)]
    # Auto-detection: no PROXY_REDIS_CLUSTER, the proxy asks the node it was given.
    process = start_proxy(mock, redis_cluster, cluster_prefix, tmp_path)
    try:
        seen = converse(Replica(process), mock, tasks)
        ready = httpx.get(process.url + "/readyz", timeout=5)
        faults = config_faults(process)
    finally:
        process.stop()

    keys = [f"{cluster_prefix}{{{task_key(task)}}}:msgs" for task in tasks]
    assert len(set(masters_of(redis_cluster, keys).values())) == 3  # all masters in play
    for task in tasks:
        assert seen[task] == [full_history(task, turn) for turn in range(TURNS)], task
    client = redis.RedisCluster.from_url(redis_cluster.url)
    recorded = {key: client.llen(key) for key in keys}
    client.close()
    assert recorded == dict.fromkeys(keys, 2 * TURNS)  # every turn once: none lost or doubled
    assert ready.status_code == 200 and ready.json()["checks"]["history"] == "ok"
    assert set(faults.values()) == {0.0} and "MOVED" in faults


def test_a_standalone_client_on_a_cluster_is_reported_not_silent(
    redis_cluster, cluster_prefix, mock, tmp_path
):
    tasks = [f"task-{n:02d}-{uuid.uuid4().hex[:6]}" for n in range(TASKS)]
    process = start_proxy(
        mock, redis_cluster, cluster_prefix, tmp_path, PROXY_REDIS_CLUSTER="false"
    )
    # The node the proxy was given owns some tasks; the others answer MOVED.
    node = f"127.0.0.1:{redis_cluster.ports[0]}"
    history_keys = {t: f"{cluster_prefix}{{{task_key(t)}}}:msgs" for t in tasks}
    today = datetime.now(UTC).strftime("%Y%m%d")
    budget_key = f"{cluster_prefix}budget:app:{APP_ID}:{today}"  # the app's usage counter
    owner = masters_of(redis_cluster, [*history_keys.values(), budget_key])
    local = [t for t in tasks if owner[history_keys[t]] == node]
    moved = [t for t in tasks if t not in local]
    # Per turn of a task elsewhere: its start (claim, history and queued meta.info, one
    # script in the task's slot); the usage counter has a slot of its own.
    expected = TURNS * len(moved)
    expected += TURNS * TASKS * (owner[budget_key] != node)
    try:
        seen = converse(Replica(process), mock, tasks)
        faults = config_faults(process)
        deadline = time.monotonic() + 10  # usage counters are charged in the background
        while faults["MOVED"] < expected and time.monotonic() < deadline:
            time.sleep(0.1)
            faults = config_faults(process)
        ready = httpx.get(process.url + "/readyz", timeout=5)
    finally:
        process.stop()
    output = process.process.stdout.read().decode()  # type: ignore[union-attr]

    assert 0 < len(local) < TASKS
    for task in local:
        assert seen[task] == [full_history(task, turn) for turn in range(TURNS)], task
    for task in moved:  # answered, but without their history
        assert seen[task] == [[SYSTEM, user(f"{task} question {n}")] for n in range(TURNS)]
    assert faults["MOVED"] == expected
    assert ready.status_code == 503
    assert ready.json()["checks"]["history"].startswith("MOVED: Redis is a cluster")
    assert "PROXY_REDIS_CLUSTER=true" in output
