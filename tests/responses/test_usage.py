"""Usage is recorded for Responses API and Retell turns as for chat completions (the
console's /admin/usage), through a real proxy, the real mock upstream and real Redis."""

from __future__ import annotations

import asyncio
import time

import openai
from websockets.asyncio.client import connect

from tests.api.conftest import ADMIN_TOKEN, admin_client
from tests.retell.test_llm_websocket import opened, reply_to, required, send, user


async def test_responses_and_retell_turns_are_recorded(make_proxy, mock):
    proxy = make_proxy(redis=True, admin_token=ADMIN_TOKEN, retell_model="gpt-test")
    client = openai.OpenAI(
        base_url=proxy.base_url,
        api_key="unused",
        max_retries=0,
        default_headers={"X-Task-Id": "t-usage"},
    )
    client.responses.create(model="gpt-test", input="one")
    list(client.responses.create(model="gpt-test", input="two", stream=True))
    async with connect(f"ws://127.0.0.1:{proxy.port}/retell/llm-websocket/call-usage") as ws:
        await opened(ws)
        await send(ws, required(1, user("three")))
        await reply_to(ws, 1)
    assert len(mock.requests) == 3
    deadline = time.monotonic() + 10
    with admin_client(proxy) as admin:
        while True:
            answer = admin.get("/admin/usage", params={"group_by": "task"}).json()
            if answer["totals"]["requests"] >= 3 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
    tasks = {row["task_id"]: row["requests"] for row in answer["items"]}
    assert tasks == {"t-usage": 2, "call-usage": 1}
    assert answer["totals"]["completion_tokens"] > 0
