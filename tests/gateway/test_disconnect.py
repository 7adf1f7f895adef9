"""A caller that leaves cancels the upstream request at once."""

from __future__ import annotations

import asyncio
import contextlib
import time

import httpx
import pytest

from proxy.api.relay import cancel_on_disconnect
from proxy.errors import InvalidRequest


def wait_for(predicate, timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


LONG_STORY = {  # 5 s of streaming: a hang-up comes long before its end
    "model": "m",
    "stream": True,
    "messages": [{"role": "user", "content": "tell me a long story"}],
    "mock": {"chunks": 50, "gap_ms": 100},
}


def test_disconnect_mid_stream_closes_the_upstream(make_proxy, mock):
    proxy = make_proxy()
    with httpx.stream("POST", proxy.base_url + "/chat/completions", json=LONG_STORY) as response:
        lines = response.iter_lines()
        assert next(lines).startswith("data: ")
    left_at = time.monotonic()
    assert wait_for(lambda: mock.requests and mock.requests[0].outcome == "client_closed")
    # Closed well before the 5 s the full answer would take.
    assert mock.requests[0].ended_at - mock.requests[0].started_at < 2.0
    assert time.monotonic() - left_at < 2.0


def test_a_served_stream_watches_its_caller_with_no_task_of_its_own(make_proxy, mock):
    """Under ``proxy serve``'s protocol the hang-up comes from the connection itself
    (``RequestConnection.on_gone``): no watcher task per stream, and it still cancels."""
    proxy = make_proxy()

    async def watchers() -> int:
        names = [task.get_coro().__qualname__ for task in asyncio.all_tasks()]
        return names.count("_wait_for_disconnect")

    with httpx.stream("POST", proxy.base_url + "/chat/completions", json=LONG_STORY) as response:
        lines = response.iter_lines()
        assert next(lines).startswith("data: ")
        assert proxy.run(watchers) == 0
    assert wait_for(lambda: mock.requests and mock.requests[0].outcome == "client_closed")
    assert mock.requests[0].ended_at - mock.requests[0].started_at < 2.0


def test_disconnect_before_the_first_token_closes_the_upstream(make_proxy, mock):
    proxy = make_proxy()
    body = {
        "model": "m",
        "stream": True,
        "messages": [{"role": "user", "content": "hi"}],
        "mock": {"first_token_ms": 5000},
    }
    with httpx.Client() as client, contextlib.suppress(httpx.ReadTimeout):
        client.post(proxy.base_url + "/chat/completions", json=body, timeout=0.3)
    assert wait_for(lambda: mock.requests and mock.requests[0].outcome == "client_closed")
    assert mock.requests[0].ended_at - mock.requests[0].started_at < 2.0


def test_disconnect_before_a_non_streaming_reply_closes_the_upstream(make_proxy, mock):
    proxy = make_proxy()
    body = {
        "model": "m",
        "stream": False,
        "messages": [{"role": "user", "content": "hi"}],
        "mock": {"first_token_ms": 5000},
    }
    with httpx.Client() as client, contextlib.suppress(httpx.ReadTimeout):
        client.post(proxy.base_url + "/chat/completions", json=body, timeout=0.3)
    assert wait_for(lambda: mock.requests and mock.requests[0].outcome == "client_closed")
    assert mock.requests[0].ended_at - mock.requests[0].started_at < 2.0
    assert wait_for(lambda: proxy.state.concurrency.active == 0)


# cancel_on_disconnect on its own: only the caller leaving turns into a 499.


async def test_cancel_on_disconnect_returns_the_work_while_the_caller_stays() -> None:
    never = asyncio.Event()

    async def receive() -> dict:
        await never.wait()
        return {"type": "http.disconnect"}

    assert await cancel_on_disconnect(receive, asyncio.sleep(0.01, result="reply")) == "reply"
    await asyncio.sleep(0)  # the watcher is gone: nothing cancels this task later
    assert asyncio.current_task().cancelling() == 0


async def test_cancel_on_disconnect_cancels_the_work_when_the_caller_leaves() -> None:
    cancelled = asyncio.Event()

    async def receive() -> dict:
        await asyncio.sleep(0.01)
        return {"type": "http.disconnect"}

    async def work() -> str:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "never"

    with pytest.raises(InvalidRequest) as left:
        await cancel_on_disconnect(receive, work())
    assert (left.value.status, left.value.code) == (499, "client_disconnected")
    assert cancelled.is_set() and asyncio.current_task().cancelling() == 0


async def test_cancel_on_disconnect_lets_another_cancellation_through() -> None:
    async def receive() -> dict:
        await asyncio.Event().wait()
        return {"type": "http.disconnect"}

    async def request() -> str:
        return await cancel_on_disconnect(receive, asyncio.sleep(10))

    serving = asyncio.create_task(request())
    await asyncio.sleep(0.01)
    serving.cancel()  # a retry took the request over
    with pytest.raises(asyncio.CancelledError):
        await serving
