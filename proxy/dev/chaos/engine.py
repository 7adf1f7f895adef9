"""The engine's side of a scenario: turns (retried on another replica), callbacks, counts.

A turn is answered when the caller got the whole stream (``data: [DONE]``), on any
attempt; the engine retries a failed attempt with the same request id on the next
replica, as a voice engine behind a load balancer does. What was recorded is counted
from the stores afterwards, per turn: once is recorded, never is lost, more is
duplicated.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from proxy.dev.chaos.servers import ADMIN_TOKEN, SIGN_KEY
from proxy.voice.signing import sign

TURN_TIMEOUT = aiohttp.ClientTimeout(total=20, sock_connect=2)
SYSTEM = {"role": "system", "content": "You are a chaos test."}


@dataclass
class Tally:
    """One row of the table."""

    scenario: str
    answered: int = 0
    recorded: int = 0
    lost: int = 0
    duplicated: int = 0
    notes: str = ""
    depends_on: str = ""  # whose fix the figures depend on
    unanswered: int = 0  # turns the engine gave up on (every replica failed)
    measures: dict[str, float] = field(default_factory=dict)  # scenario-specific figures

    def count(self, acknowledged: list[str], stored: Counter[str]) -> None:
        """Tally acknowledged items (turn texts, event keys) against the stored ones."""
        self.answered += len(acknowledged)
        for key in acknowledged:
            copies = stored.get(key, 0)
            if copies == 0:
                self.lost += 1
            else:
                self.recorded += 1
                self.duplicated += copies - 1


@dataclass
class Session:
    """One engine task: its id and the turns it had answered."""

    task_id: str
    answered: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


async def chat_turn(
    http: aiohttp.ClientSession,
    urls: list[str],
    task_id: str,
    request_id: str,
    text: str,
    *,
    model: str = "chaos",
    stream: bool = True,
    extra_headers: dict[str, str] | None = None,
) -> bool:
    """One turn; each attempt goes to the next URL with the same request id."""
    body = {
        "model": model,
        "stream": stream,
        "messages": [SYSTEM, {"role": "user", "content": text}],
    }
    headers = {"X-Task-Id": task_id, "X-Request-Id": request_id, **(extra_headers or {})}
    for url in urls:
        try:
            async with http.post(
                f"{url}/v1/chat/completions", json=body, headers=headers, timeout=TURN_TIMEOUT
            ) as response:
                if response.status != 200:
                    await response.read()
                    continue
                if not stream:
                    await response.read()
                    return True
                async for line in response.content:
                    if line.strip() == b"data: [DONE]":
                        return True
        except (aiohttp.ClientError, TimeoutError, ConnectionError):
            pass
    return False


async def first_token_seconds(http: aiohttp.ClientSession, url: str, task_id: str) -> float:
    """Time to the first content chunk of a streamed turn (-1 if none)."""
    body = {
        "model": "chaos",
        "stream": True,
        "messages": [SYSTEM, {"role": "user", "content": "hi"}],
    }
    started = time.perf_counter()
    async with http.post(
        f"{url}/v1/chat/completions",
        json=body,
        headers={"X-Task-Id": task_id},
        timeout=TURN_TIMEOUT,
    ) as response:
        async for line in response.content:
            if line.startswith(b"data: {") and b'"content"' in line:
                return time.perf_counter() - started
    return -1.0


async def send_callback(
    http: aiohttp.ClientSession, url: str, task_id: str, event_type: int, ms: int, payload: Any
) -> bool:
    """A signed engine callback; True when answered ``{"code": 0}``."""
    body = orjson.dumps(
        {
            "EventGroupId": 9,
            "EventType": event_type,
            "CallbackTs": ms,
            "EventInfo": {
                "EventMsTs": ms,
                "TaskId": task_id,
                "RoomId": "chaos",
                "Payload": payload,
            },
        }
    )
    headers = {"Content-Type": "application/json", "Sign": sign(SIGN_KEY, body)}
    try:
        async with http.post(f"{url}/callbacks/trtc", data=body, headers=headers) as response:
            return response.status == 200 and (await response.json()).get("code") == 0
    except (aiohttp.ClientError, TimeoutError):
        return False


def admin_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN_TOKEN}"}


async def live_user_turns(http: aiohttp.ClientSession, url: str, task_id: str) -> Counter[str]:
    """The user messages of a task's live history (via the admin API), by text."""
    async with http.get(f"{url}/admin/tasks/{task_id}", headers=admin_headers()) as response:
        if response.status == 404:
            return Counter()
        data = await response.json()
    return Counter(m["content"] for m in data["messages"] if m["role"] == "user")


async def erase(http: aiohttp.ClientSession, url: str, task_id: str) -> int:
    async with http.delete(f"{url}/admin/tasks/{task_id}", headers=admin_headers()) as response:
        return response.status


async def run_sessions(
    http: aiohttp.ClientSession,
    sessions: list[Session],
    turns: int,
    urls_for: Any,
    *,
    pause: float = 0.0,
    label: str = "turn",
) -> None:
    """Every session plays ``turns`` turns in order; sessions run concurrently.
    ``urls_for(session, n)`` says which replicas a turn tries, in order. ``label`` keeps
    the texts and request ids of different rounds apart."""

    async def play(session: Session) -> None:
        for n in range(turns):
            text = f"{session.task_id} {label} {n}"
            request_id = f"{session.task_id}-{label}-{n}"
            ok = await chat_turn(http, urls_for(session, n), session.task_id, request_id, text)
            (session.answered if ok else session.failed).append(text)
            if pause:
                await asyncio.sleep(pause)

    await asyncio.gather(*(play(s) for s in sessions))


async def postgres_counts(url: str, sql: str, *args: Any) -> Counter[str]:
    """``sql`` returns one text column; how often each value occurs."""
    import asyncpg

    connection = await asyncpg.connect(url)
    try:
        return Counter(str(row[0]) for row in await connection.fetch(sql, *args))
    finally:
        await connection.close()
