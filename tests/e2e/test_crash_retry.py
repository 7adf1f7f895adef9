"""A replica killed (SIGKILL) mid-turn: the engine retries the same request id on the other
replica, and every answered turn is recorded exactly once (the dead attempt's lease is
adopted)."""

from __future__ import annotations

import asyncio
import signal
import time
import uuid

import httpx
import orjson
import pytest

from tests.conftest import REDIS_URL
from tests.context.engine_calls import SYSTEM, engine_headers, task_key
from tests.e2e.replicas import LoggedProxy

SESSIONS = 30
ADMIN = "admin-token-for-crash-tests-0123456789"


@pytest.fixture
def replicas(mock, redis_prefix, tmp_path):
    env = {
        "PROXY_UPSTREAM_BASE_URL": mock.base_url,
        "PROXY_REDIS_URL": REDIS_URL,
        "PROXY_REDIS_PREFIX": redis_prefix,
        "PROXY_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/shared.db",
        "PROXY_ADMIN_TOKEN": ADMIN,
    }
    # B's store calls get a tiny time box, so the retries' claims answer after it, as they
    # do when 30 sessions land on a replica at once (each opening a Redis connection).
    slow_b = {**env, "PROXY_REDIS_TIMEOUT_MS": "20"}
    processes = [
        LoggedProxy(env, tmp_path / "replica-0.log").start(),
        LoggedProxy(slow_b, tmp_path / "replica-1.log").start(),
    ]
    yield processes
    for process in processes:
        process.stop()


def body(text: str, **mock: object) -> dict:
    return {
        "model": "voice",
        "stream": True,
        "messages": [SYSTEM, {"role": "user", "content": text}],
        "mock": mock,
    }


def spoken(raw: bytes) -> str:
    text = []
    for line in raw.decode().split("\n"):
        if line.startswith("data:") and line[5:].strip() != "[DONE]":
            for choice in orjson.loads(line[5:]).get("choices") or ():
                text.append((choice.get("delta") or {}).get("content") or "")
    return "".join(text)


async def first_attempt(client, url, task, rid, started: asyncio.Event) -> None:
    """Streams a slow reply until the replica dies under it."""
    try:
        async with client.stream(
            "POST",
            url + "/v1/chat/completions",
            json=body("question", chunks=40, gap_ms=150, reply="slow " * 40),
            headers=engine_headers(task, rid),
        ) as response:
            async for _ in response.aiter_bytes():
                started.set()
    except httpx.HTTPError:
        pass  # the replica was killed


async def retry(client, url, task, rid) -> str:
    response = await client.post(
        url + "/v1/chat/completions",
        json=body("question", reply=f"answer for {task}"),
        headers=engine_headers(task, rid),
    )
    assert response.status_code == 200, response.text
    return spoken(response.content)


def tally(replica, tasks: list[str], answered: dict[str, str]) -> tuple[int, int, int]:
    """(recorded, lost, duplicated): each answered reply stored once, with its user turn."""
    recorded = lost = duplicated = 0
    for task in tasks:
        view = httpx.get(
            f"{replica.url}/admin/tasks/{task_key(task)}",
            headers={"Authorization": f"Bearer {ADMIN}"},
            timeout=20,
        )
        messages = view.json()["messages"] if view.status_code == 200 else []
        users = [m for m in messages if m["role"] == "user"]
        replies = [m["content"] for m in messages if m["role"] == "assistant"]
        if replies == [answered[task]] and len(users) == 1:
            recorded += 1
        elif not replies:
            lost += 1
        else:
            duplicated += 1
    return recorded, lost, duplicated


@pytest.mark.slow
def test_kill_9_mid_turn_then_retry_on_the_other_replica(replicas):
    a, b = replicas
    tasks = [f"crash-{uuid.uuid4().hex[:8]}" for _ in range(SESSIONS)]
    rids = {task: uuid.uuid4().hex for task in tasks}

    async def run() -> dict[str, str]:
        timeout = httpx.Timeout(30.0)
        limits = httpx.Limits(max_connections=2 * SESSIONS)
        async with httpx.AsyncClient(timeout=timeout, limits=limits) as client:
            started = {task: asyncio.Event() for task in tasks}
            streams = [
                asyncio.create_task(first_attempt(client, a.url, t, rids[t], started[t]))
                for t in tasks
            ]
            await asyncio.wait_for(asyncio.gather(*(e.wait() for e in started.values())), 20)
            assert a.process is not None
            a.process.send_signal(signal.SIGKILL)
            await asyncio.gather(*streams)
            replies = await asyncio.gather(*(retry(client, b.url, t, rids[t]) for t in tasks))
            return dict(zip(tasks, replies, strict=True))

    answered = asyncio.run(run())
    assert answered == {task: f"answer for {task}" for task in tasks}
    # A retry whose claim answered too late adopts the dead attempt's request once that
    # attempt's lease has ended (within PROXY lease, 4 s): wait that out, then count.
    deadline = time.monotonic() + 15
    while (counts := tally(b, tasks, answered))[0] < SESSIONS and time.monotonic() < deadline:
        time.sleep(0.5)
    assert counts == (SESSIONS, 0, 0)
    not_recorded = [
        line
        for line in (b.log_path.read_text()).splitlines()
        if "proxy_turns_not_recorded" in line or "turn not recorded" in line
    ]
    assert not_recorded == []
