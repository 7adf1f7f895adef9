"""Retell's custom-LLM WebSocket, end to end: a real WebSocket client (``websockets``)
plays Retell with the messages of its documentation (docs.retellai.com/api-references/
llm-websocket) against a real proxy, the real mock upstream and real Redis."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import redis.asyncio as redis
from websockets.asyncio.client import ClientConnection, connect

from proxy.context.redis_store import RedisHistoryStore
from proxy.retell.session import NUDGE
from tests.conftest import REDIS_URL
from tests.gateway.test_metrics import scrape, value

CALL_ID = "Jabr9TXYYJHfvl6Syypi88rdAHYHmcq6"  # the docs' example call id

# Retell -> proxy, as the docs show them.
CALL_DETAILS = {
    "interaction_type": "call_details",
    "call": {
        "call_type": "phone_call",
        "call_id": CALL_ID,
        "agent_id": "oBeDLoLOeuAbiuaMFXRtDOLriTJ5tSxD",
        "call_status": "registered",
        "metadata": {},
        "retell_llm_dynamic_variables": {"customer_name": "John Doe"},
    },
}
PING = {"interaction_type": "ping_pong", "timestamp": 1703302407333}


def agent(text: str) -> dict[str, str]:
    return {"role": "agent", "content": text}


def user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


def required(response_id: int, *transcript: dict[str, str], kind: str = "response_required"):
    return {"interaction_type": kind, "response_id": response_id, "transcript": list(transcript)}


def update_only(*transcript: dict[str, str]) -> dict[str, Any]:
    return {"interaction_type": "update_only", "transcript": list(transcript)}


async def send(ws: ClientConnection, message: dict[str, Any]) -> None:
    await ws.send(json.dumps(message))


async def recv(ws: ClientConnection) -> dict[str, Any]:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout=10))


async def reply_to(ws: ClientConnection, response_id: int) -> tuple[list[str], list[dict]]:
    """The content pieces of one response up to ``content_complete``; other events too."""
    pieces: list[str] = []
    others: list[dict[str, Any]] = []
    while True:
        event = await recv(ws)
        if event.get("response_type") != "response" or event["response_id"] != response_id:
            others.append(event)
            continue
        if event["content_complete"]:
            assert event["content"] == ""
            return pieces, others
        pieces.append(event["content"])


async def opened(ws: ClientConnection, begin: str = "") -> None:
    assert await recv(ws) == {
        "response_type": "config",
        "config": {"auto_reconnect": True, "call_details": True},
    }
    assert await recv(ws) == {
        "response_type": "response",
        "response_id": 0,
        "content": begin,
        "content_complete": True,
        "end_call": False,
    }


def ws_url(proxy) -> str:
    return f"ws://127.0.0.1:{proxy.port}/retell/llm-websocket/{CALL_ID}"


async def stored(prefix: str) -> list[tuple[str, Any, bool]]:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        history = await RedisHistoryStore(client, prefix=prefix, ttl_seconds=60).load(CALL_ID, 50)
    finally:
        await client.aclose()
    return [(m.role, m.content, m.interrupted) for m in history.messages]


async def test_begin_message_then_a_streamed_response(make_proxy, mock, redis_prefix):
    begin = "Hello, this is Ava from the clinic. How can I help?"
    proxy = make_proxy(redis=True, retell_model="gpt-test", retell_begin_message=begin)
    mock.script([{"reply": "Sure, what day would you like?", "chunks": 4}])
    async with connect(ws_url(proxy)) as ws:
        await opened(ws, begin)
        await send(ws, CALL_DETAILS)
        await send(ws, PING)
        assert await recv(ws) == {"response_type": "ping_pong", "timestamp": 1703302407333}
        await send(ws, required(1, agent(begin), user("I'd like to book an appointment.")))
        pieces, others = await reply_to(ws, 1)
    assert "".join(pieces) == "Sure, what day would you like?"
    assert len(pieces) == 4 and others == []
    body = mock.requests[0].body
    assert body["model"] == "gpt-test" and body["stream"] is True
    assert body["messages"] == [
        {"role": "assistant", "content": begin},
        {"role": "user", "content": "I'd like to book an appointment."},
    ]
    assert len(mock.requests) == 1
    assert await stored(redis_prefix) == [
        ("assistant", begin, False),
        ("user", "I'd like to book an appointment.", False),
        ("assistant", "Sure, what day would you like?", False),
    ]
    series = scrape(proxy)
    assert (
        value(
            series,
            "proxy_requests_total",
            route="/retell/llm-websocket",
            model="other",
            status="200",
        )
        == 1
    )


async def test_shortened_agent_utterance_is_what_the_model_sees_next(
    make_proxy, mock, redis_prefix
):
    proxy = make_proxy(redis=True, retell_model="gpt-test")
    long_reply = "The weather in Paris is sunny and warm today, with a light breeze."
    mock.script(
        [
            {"reply": long_reply, "chunks": 12, "gap_ms": 150},
            {"reply": "London is rainy.", "chunks": 2},
        ]
    )
    question = user("What's the weather in Paris?")
    async with connect(ws_url(proxy)) as ws:
        await opened(ws)
        await send(ws, required(1, question))
        first = [await recv(ws) for _ in range(6)]  # the reply is being spoken
        assert "".join(e["content"] for e in first).strip() == "The weather in Paris is sunny"
        # The caller cuts in after four words: Retell's transcript holds what the agent
        # really said, shorter than what it was sent.
        said = agent("The weather in Paris")
        follow_up = user("Actually, what about London?")
        await send(ws, update_only(question, said, follow_up))
        await send(ws, required(2, question, said, follow_up))
        pieces, others = await reply_to(ws, 2)
    assert "".join(pieces) == "London is rainy."
    assert all(e["response_id"] == 1 and not e["content_complete"] for e in others)
    cut = await asyncio.to_thread(mock.wait_for_outcome, 0)
    assert cut.outcome == "client_closed"  # the older stream's upstream was closed
    assert len(mock.requests) == 2
    assert mock.requests[1].body["messages"] == [
        {"role": "user", "content": "What's the weather in Paris?"},
        {"role": "assistant", "content": "The weather in Paris"},
        {"role": "user", "content": "Actually, what about London?"},
    ]
    assert await stored(redis_prefix) == [
        ("user", "What's the weather in Paris?", False),
        ("assistant", "The weather in Paris", True),
        ("user", "Actually, what about London?", False),
        ("assistant", "London is rainy.", False),
    ]


async def test_newer_response_id_cancels_the_older_stream(make_proxy, mock, redis_prefix):
    proxy = make_proxy(redis=True, retell_model="gpt-test")
    mock.script([{"first_token_ms": 5000, "reply": "Too late."}, {"reply": "Hi Mike Trump."}])
    async with connect(ws_url(proxy)) as ws:
        await opened(ws)
        await send(ws, required(1, user("My name is Mike")))
        await asyncio.to_thread(mock.wait_for_requests, 1)
        # The caller kept talking: the same utterance, longer, and a newer response_id.
        await send(ws, required(2, user("My name is Mike Trump")))
        pieces, others = await reply_to(ws, 2)
    assert "".join(pieces) == "Hi Mike Trump."
    assert others == []  # not one event of the cancelled response
    cut = await asyncio.to_thread(mock.wait_for_outcome, 0)
    assert cut.outcome == "client_closed"
    assert len(mock.requests) == 2
    assert mock.requests[1].body["messages"] == [
        {"role": "user", "content": "My name is Mike Trump"}
    ]
    # One user turn: the longer utterance replaced the one cut off before any reply.
    assert await stored(redis_prefix) == [
        ("user", "My name is Mike Trump", False),
        ("assistant", "Hi Mike Trump.", False),
    ]


async def test_reminder_required_after_silence(make_proxy, mock, redis_prefix):
    proxy = make_proxy(redis=True, retell_model="gpt-test")
    mock.script([{"reply": "What time suits you?"}, {"reply": "Are you still there?"}])
    async with connect(ws_url(proxy)) as ws:
        await opened(ws)
        await send(ws, required(1, user("Book me in for Monday.")))
        await reply_to(ws, 1)
        transcript = (user("Book me in for Monday."), agent("What time suits you?"))
        await send(ws, update_only(*transcript))
        await send(ws, required(2, *transcript, kind="reminder_required"))
        pieces, _ = await reply_to(ws, 2)
    assert "".join(pieces) == "Are you still there?"
    assert mock.requests[1].body["messages"] == [
        {"role": "user", "content": "Book me in for Monday."},
        {"role": "assistant", "content": "What time suits you?"},
        {"role": "user", "content": NUDGE},
    ]


async def test_meta_info_goes_to_retell_as_metadata(make_proxy, mock):
    proxy = make_proxy(redis=True, retell_model="gpt-test", meta_info_events="always")
    mock.script([{"reply": "Here it is.", "chunks": 2, "meta_info": {"card": "weather"}}])
    async with connect(ws_url(proxy)) as ws:
        await opened(ws)
        await send(ws, required(1, user("Show me the weather.")))
        pieces, others = await reply_to(ws, 1)
    assert "".join(pieces) == "Here it is."
    assert others == [{"response_type": "metadata", "metadata": {"card": "weather"}}]


async def test_a_key_is_required_when_keys_are_configured(make_proxy, mock):
    proxy = make_proxy(api_keys="retell-key", retell_model="gpt-test")
    async with connect(ws_url(proxy) + "?api_key=retell-key") as ws:
        await opened(ws)
    refused = False
    try:
        async with connect(ws_url(proxy) + "?api_key=wrong") as ws:
            await ws.recv()
    except Exception as exc:  # the handshake is refused (HTTP 403)
        refused = "403" in str(exc)
    assert refused


async def test_call_hangup_mid_reply_closes_the_upstream(make_proxy, mock, redis_prefix):
    proxy = make_proxy(redis=True, retell_model="gpt-test")
    mock.script([{"reply": "one two three four five six seven eight", "chunks": 8, "gap_ms": 200}])
    async with connect(ws_url(proxy)) as ws:
        await opened(ws)
        await send(ws, {"interaction_type": "not_a_thing"})  # unknown: ignored
        await ws.send("{not json")  # skipped, the call goes on
        await send(ws, required(1, user("Count for me.")))
        first = [await recv(ws) for _ in range(2)]
    assert [e["response_id"] for e in first] == [1, 1]
    cut = await asyncio.to_thread(mock.wait_for_outcome, 0)
    assert cut.outcome == "client_closed"
    assert cut.ended_at - cut.started_at < 1.5
    for _ in range(50):
        history = await stored(redis_prefix)
        if len(history) == 2:
            break
        await asyncio.sleep(0.05)
    assert history[0] == ("user", "Count for me.", False)
    assert history[1][0] == "assistant" and history[1][2] is True
    assert str(history[1][1]).split() in (["one", "two"], ["one", "two", "three"])


async def test_a_whole_reply_the_agent_never_said_is_kept_as_unheard(
    make_proxy, mock, redis_prefix
):
    proxy = make_proxy(redis=True, retell_model="gpt-test")
    mock.script([{"reply": "Nice to meet you, Mike."}, {"reply": "Hello, Mike Trump."}])
    async with connect(ws_url(proxy)) as ws:
        await opened(ws)
        await send(ws, required(1, user("My name is Mike")))
        await reply_to(ws, 1)  # sent whole, but the caller went on talking
        await send(ws, update_only(user("My name is Mike Trump")))
        await send(ws, required(2, user("My name is Mike Trump")))
        pieces, _ = await reply_to(ws, 2)
    assert "".join(pieces) == "Hello, Mike Trump."
    assert mock.requests[1].body["messages"] == [
        {"role": "user", "content": "My name is Mike"},
        {"role": "assistant", "content": ""},
        {"role": "user", "content": "My name is Mike Trump"},
    ]
    assert await stored(redis_prefix) == [
        ("user", "My name is Mike", False),
        ("assistant", "", True),
        ("user", "My name is Mike Trump", False),
        ("assistant", "Hello, Mike Trump.", False),
    ]


async def test_a_reconnect_does_not_greet_again(make_proxy, mock):
    begin = "Hello, this is Ava."
    proxy = make_proxy(redis=True, retell_model="gpt-test", retell_begin_message=begin)
    mock.script([{"reply": "Sure."}, {"reply": "Done."}])
    async with connect(ws_url(proxy)) as ws:
        await opened(ws, begin)
        await send(ws, required(1, agent(begin), user("Book Monday.")))
        await reply_to(ws, 1)
    # Retell's auto_reconnect: the same call id, the conversation goes on.
    async with connect(ws_url(proxy)) as ws:
        await opened(ws, "")
        transcript = (agent(begin), user("Book Monday."), agent("Sure."), user("At nine."))
        await send(ws, required(3, *transcript))
        pieces, _ = await reply_to(ws, 3)
    assert "".join(pieces) == "Done."
    assert mock.requests[1].body["messages"] == [
        {"role": "assistant", "content": begin},
        {"role": "user", "content": "Book Monday."},
        {"role": "assistant", "content": "Sure."},
        {"role": "user", "content": "At nine."},
    ]


async def test_the_profile_tools_run_for_retell_and_their_card_is_metadata(
    make_proxy, mock, redis_prefix
):
    from proxy.settings import ProfileSpec
    from tests.gateway.test_tool_loop import ToolServer

    tools = ToolServer()
    try:
        admin = "admin-token-for-tests-0123456789"
        proxy = make_proxy(
            redis=True,
            admin_token=admin,
            retell_model="gpt-test",
            retell_profile="concierge",
            meta_info_events="always",
            profiles={"concierge": ProfileSpec(tools=["weather"], system_prompt="Be kind.")},
        )
        created = await asyncio.to_thread(
            httpx.post,
            f"{proxy.url}/admin/tools",
            headers={"Authorization": f"Bearer {admin}"},
            json={
                "name": "weather",
                "description": "The weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
                "url": f"{tools.url}/weather",
                "allow_private_network": True,
                "filler": "Let me check the weather.",
                "show_result": True,
            },
        )
        assert created.status_code == 201, created.text
        mock.script(
            [
                {"tool_calls": [{"name": "weather", "arguments": {"city": "Paris"}}]},
                {"reply": "It is sunny in Paris."},
            ]
        )
        async with connect(ws_url(proxy)) as ws:
            await opened(ws)
            await send(ws, required(1, user("Weather in Paris?")))
            pieces, others = await reply_to(ws, 1)
    finally:
        tools.httpd.shutdown()
    assert pieces[0].strip() == "Let me check the weather."
    assert "".join(pieces[1:]).strip() == "It is sunny in Paris."
    card = {"tool": "weather", "result": {"city": "Paris", "sky": "sunny", "celsius": 24}}
    assert others == [{"response_type": "metadata", "metadata": card}]
    assert [call[0] for call in tools.calls] == ["/weather"]
    assert len(mock.requests) == 2
    first = mock.requests[0].body
    assert first["messages"] == [
        {"role": "system", "content": "Be kind."},
        {"role": "user", "content": "Weather in Paris?"},
    ]
    assert [t["function"]["name"] for t in first["tools"]] == ["weather"]
    assert [m["role"] for m in mock.requests[1].body["messages"]] == [
        "system",
        "user",
        "assistant",
        "tool",
    ]
    assert [role for role, _, _ in await stored(redis_prefix)] == [
        "user",
        "assistant",
        "tool",
        "assistant",
    ]


async def test_a_cut_reply_still_streaming_is_settled_once(make_proxy, mock, redis_prefix):
    """The caller cuts in while the model still streams, and talks for longer than the
    reconciler's grace: the shortened utterance still replaces the reply, once."""
    proxy = make_proxy(redis=True, retell_model="gpt-test", spoken_grace_seconds=0.3)
    long_reply = "one two three four five six seven eight nine ten eleven twelve"
    mock.script([{"reply": long_reply, "chunks": 12, "gap_ms": 150}, {"reply": "Sure."}])
    question = user("Count to twelve.")
    async with connect(ws_url(proxy)) as ws:
        await opened(ws)
        await send(ws, required(1, question))
        [await recv(ws) for _ in range(4)]
        said, more = agent("one two"), user("Stop, please count in French instead.")
        await send(ws, update_only(question, said, more))
        await asyncio.sleep(0.8)  # the caller is still talking; the grace runs out
        await send(ws, required(2, question, said, more))
        await reply_to(ws, 2)
    assert mock.requests[1].body["messages"] == [
        {"role": "user", "content": "Count to twelve."},
        {"role": "assistant", "content": "one two"},
        {"role": "user", "content": "Stop, please count in French instead."},
    ]
    await asyncio.sleep(0.5)  # nothing settles late either
    assert await stored(redis_prefix) == [
        ("user", "Count to twelve.", False),
        ("assistant", "one two", True),
        ("user", "Stop, please count in French instead.", False),
        ("assistant", "Sure.", False),
    ]


async def test_a_key_over_its_rate_limit_is_told_to_try_later(make_proxy, mock, monkeypatch):
    from websockets.exceptions import ConnectionClosed

    from proxy.settings import KeySpec

    monkeypatch.setenv("TEST_RETELL_KEY", "retell-key")
    proxy = make_proxy(
        retell_model="gpt-test",
        keys=[KeySpec(name="retell", key_env="TEST_RETELL_KEY", rate_limit_per_minute=1)],
    )
    async with connect(ws_url(proxy) + "?api_key=retell-key") as ws:
        await opened(ws)
    async with connect(ws_url(proxy) + "?api_key=retell-key") as ws:
        try:
            await ws.recv()
            closed = None
        except ConnectionClosed as exc:
            closed = exc.rcvd.code if exc.rcvd else None
    assert closed == 1013
