"""Two proxy processes, one Redis: a conversation alternating between them stays one history."""

from __future__ import annotations

import uuid

import pytest

from tests.conftest import REDIS_URL
from tests.context.engine_calls import SYSTEM, assistant, say, user
from tests.e2e.procs import ProxyProcess


class Replica:
    def __init__(self, process: ProxyProcess) -> None:
        self.process = process
        self.base_url = process.url + "/v1"


@pytest.fixture
def replicas(mock, redis_prefix, tmp_path):
    env = {
        "PROXY_UPSTREAM_BASE_URL": mock.base_url,
        "PROXY_REDIS_URL": REDIS_URL,
        "PROXY_REDIS_PREFIX": redis_prefix,
        "PROXY_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/shared.db",
    }
    processes = [ProxyProcess(env).start(), ProxyProcess(env, workers=2).start()]
    yield [Replica(p) for p in processes]
    for process in processes:
        process.stop()


def test_a_conversation_alternating_between_replicas(replicas, mock):
    task = f"task-{uuid.uuid4().hex[:8]}"
    expected = [SYSTEM]
    for n in range(6):
        replica = replicas[n % 2]
        reply = f"answer {n}"
        assert say(replica, task, [SYSTEM, user(f"question {n}")], reply=reply) == reply
        expected += [user(f"question {n}")]
        assert mock.requests[-1].body["messages"] == expected
        expected += [assistant(reply)]
    # A retry of the last request on the other replica is replayed, not regenerated.
    requests_before = len(mock.requests)
    rid = "retry-me"
    say(replicas[0], task, [SYSTEM, user("last one")], reply="final", request_id=rid)
    assert (
        say(replicas[1], task, [SYSTEM, user("last one")], reply="other", request_id=rid) == "final"
    )
    assert len(mock.requests) == requests_before + 1
