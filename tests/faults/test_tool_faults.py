"""A tool endpoint that never answers: filler, timeout, the model is told, the turn ends.

And the engine's 905 for a tool turn: the user heard the filler and the answer as one
reply, which must not come back into the history as a second assistant message.
"""

from __future__ import annotations

import asyncio
import time

import httpx
import orjson
import pytest

from proxy.dev.voice.engine import EngineConfig, run_session
from proxy.settings import KeySpec, ProfileSpec
from tests.faults.helpers import (
    ADMIN_HEADERS,
    assert_valid_history,
    chat_body,
    data_events,
    elapsed,
    live_messages,
    new_task,
    post_chat,
    spoken,
    wait_for,
)

AGENT_KEY = "fault-tools-key-0123456789"
SIGN_KEY = "faultsignkey0123"
FILLER = "Let me look that up."


@pytest.fixture
def proxy(stateful_proxy, monkeypatch, silent_server):
    monkeypatch.setenv("FAULT_TOOLS_KEY", AGENT_KEY)
    proxy = stateful_proxy(
        keys=[KeySpec(name="agent", key_env="FAULT_TOOLS_KEY", profile="desk")],
        profiles={"desk": ProfileSpec(tools=["lookup"])},
        callback_sign_key=SIGN_KEY,
        spoken_grace_seconds=0.3,
    )
    created = httpx.post(
        f"{proxy.url}/admin/tools",
        headers=ADMIN_HEADERS,
        json={
            "name": "lookup",
            "description": "Look an order up",
            "parameters": {"type": "object", "properties": {"order": {"type": "string"}}},
            "url": f"{silent_server.url}/lookup",
            "allow_private_network": True,
            "timeout_seconds": 0.5,
            "filler": FILLER,
        },
        timeout=10,
    )
    assert created.status_code == 201, created.text
    return proxy


TOOL_CALL = {"tool_calls": [{"name": "lookup", "arguments": {"order": "42"}}]}
APOLOGY = "Sorry, the order system is not answering right now."


def test_a_hung_tool_times_out_and_the_model_is_told(proxy, mock, silent_server):
    task = new_task()
    mock.script([TOOL_CALL, {"reply": APOLOGY}])
    with elapsed() as took:
        response = post_chat(
            proxy,
            task,
            chat_body("where is order 42?"),
            headers={"Authorization": f"Bearer {AGENT_KEY}"},
        )
    assert response.status_code == 200
    events = data_events(response.text)
    assert events[-1] == "[DONE]"
    assert not any('"error"' in e for e in events[:-1])
    assert spoken(events) == FILLER + " " + APOLOGY
    assert 0.5 <= took[0] < 3.0  # the tool's 0.5 s timeout, not the silent server, decided
    # The model was told, in a tool message answering its call.
    second = mock.requests[1].body["messages"]
    assert [m["role"] for m in second[-2:]] == ["assistant", "tool"]
    assert "timed out" in second[-1]["content"]
    assert second[-1]["tool_call_id"] == second[-2]["tool_calls"][0]["id"]
    # The proxy hung up on the silent tool.
    assert wait_for(lambda: silent_server.closed, timeout=2)
    messages = live_messages(proxy, task)
    assert_valid_history(messages)
    assert [(m["role"], m["content"]) for m in messages] == [
        ("user", "where is order 42?"),
        ("assistant", FILLER),
        ("tool", second[-1]["content"]),
        ("assistant", APOLOGY),
    ]
    # The gate is left once the response has ended, a moment after the caller has it.
    assert wait_for(lambda: proxy.state.concurrency.active == 0)


def test_the_905_of_a_tool_turn_does_not_duplicate_the_reply(proxy, mock):
    task = new_task()
    mock.script([TOOL_CALL, {"reply": APOLOGY}, {"reply": "You are welcome."}])
    config = EngineConfig(
        url=proxy.base_url + "/chat/completions",
        api_key=AGENT_KEY,
        model="voice",
        task_id=task,
        timeout_s=5,
        callback_url=proxy.url + "/callbacks/trtc",
        callback_key=SIGN_KEY,
    )
    result = asyncio.run(
        run_session(config, [{"say": "where is order 42?"}, {"say": "thanks", "wait_ms": 800}])
    )
    assert [r.error_code for r in result.rounds] == [None, None]
    assert result.rounds[0].spoken_text == FILLER + " " + APOLOGY
    assert all(c.delivered for c in result.callbacks)
    time.sleep(0.6)  # past the spoken grace period
    messages = live_messages(proxy, task)
    assert_valid_history(messages)
    assert [(m["role"], m["content"]) for m in messages if m["role"] != "tool"] == [
        ("user", "where is order 42?"),
        ("assistant", FILLER),
        ("assistant", APOLOGY),
        ("user", "thanks"),
        ("assistant", "You are welcome."),
    ], orjson.dumps(messages).decode()
