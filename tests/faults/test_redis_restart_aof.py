"""Redis restarts with AOF under a replica that holds a pool of connections: every turn
after the restart is answered *and* recorded (stale pooled connections are retried once
on a fresh connection; none counts as an outage)."""

from __future__ import annotations

import asyncio
import subprocess
import time

import httpx
import pytest

from tests.context.engine_calls import engine_headers
from tests.faults.helpers import (
    SYSTEM,
    ThrowawayRedis,
    data_events,
    live_messages,
    new_task,
    spoken,
    user,
)

TASKS = 20
TURNS_AFTER = 40


class AofRedis(ThrowawayRedis):
    """A throwaway ``redis-server`` that keeps its data across a restart (AOF, fsync always)."""

    def __init__(self, directory: str) -> None:
        super().__init__()
        self.directory = directory

    def start(self) -> AofRedis:
        args = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
        args += ["--save", "", "--appendonly", "yes", "--appendfsync", "always"]
        args += ["--dir", self.directory]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not self._answers():
            assert self.process.poll() is None, "throwaway redis-server exited"
            assert time.monotonic() < deadline, "throwaway redis-server did not start"
            time.sleep(0.05)
        return self


@pytest.fixture
def aof_redis(tmp_path):
    try:
        server = AofRedis(str(tmp_path))
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    yield server.start()
    server.stop()


async def turn(client: httpx.AsyncClient, proxy, task: str, text: str) -> str:
    body = {
        "model": "voice",
        "stream": True,
        "messages": [SYSTEM, user(text)],
        "mock": {"reply": f"re: {text}"},
    }
    response = await client.post(
        proxy.base_url + "/chat/completions", json=body, headers=engine_headers(task)
    )
    assert response.status_code == 200, response.text
    return spoken(data_events(response.text))


async def concurrently(proxy, turns: list[tuple[str, str]]) -> list[str]:
    async with httpx.AsyncClient(timeout=15, limits=httpx.Limits(max_connections=100)) as client:
        return await asyncio.gather(*(turn(client, proxy, task, text) for task, text in turns))


@pytest.mark.slow
def test_turns_right_after_a_redis_restart_are_all_recorded(stateful_proxy, mock, aof_redis):
    proxy = stateful_proxy(redis_url=aof_redis.url, redis_timeout_ms=500)
    tasks = [new_task() for _ in range(TASKS)]
    # Fill the connection pool: every task speaks at once.
    before = [(task, f"hello {n}") for n, task in enumerate(tasks)]
    assert asyncio.run(concurrently(proxy, before)) == [f"re: {text}" for _, text in before]

    aof_redis.stop()
    aof_redis.start()  # same port, same AOF: the data is back; the pooled sockets are dead

    # Two waves, each one turn per task at once: a task speaks one turn at a time (a new
    # turn of a task ends the one still streaming, as an engine's barge-in does).
    after = [(tasks[n % TASKS], f"after {n}") for n in range(TURNS_AFTER)]
    answered = []
    for wave in range(0, TURNS_AFTER, TASKS):
        answered += asyncio.run(concurrently(proxy, after[wave : wave + TASKS]))
    assert answered == [f"re: {text}" for _, text in after]
    recorded = lost = duplicated = 0
    for task in tasks:
        said = [m["content"] for m in live_messages(proxy, task) if m["role"] == "user"]
        for _, text in [t for t in before + after if t[0] == task]:
            count = said.count(text)
            recorded += count == 1
            lost += count == 0
            duplicated += count > 1
    assert (recorded, lost, duplicated) == (TASKS + TURNS_AFTER, 0, 0)
    status = httpx.get(proxy.url + "/readyz", timeout=5).json()["status"]
    assert status == "ready"
