"""Server-side tools: the engine only hears text; tools run in parallel; history stays valid."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import orjson
import pytest

from proxy.settings import KeySpec, ProfileSpec

ADMIN = "admin-token-for-tests-0123456789"


class ToolServer:
    """Real HTTP tool endpoints on loopback: /weather, /clock, /broken, /slow."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict, float, float]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                started = time.monotonic()
                args = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if self.path == "/slow":
                    time.sleep(2)
                elif self.path != "/broken":
                    time.sleep(0.3)
                status, body = 200, {"ok": True}
                if self.path == "/weather":
                    body = {"city": args.get("city"), "sky": "sunny", "celsius": 24}
                elif self.path == "/clock":
                    body = {"time": "12:00"}
                elif self.path == "/broken":
                    status, body = 500, {"error": "database down"}
                payload = json.dumps(body).encode()
                server.calls.append((self.path, args, started, time.monotonic()))
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except OSError:
                    pass  # the proxy gave up (timeout)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture
def tool_server():
    server = ToolServer()
    yield server
    server.httpd.shutdown()


@pytest.fixture
def proxy(make_proxy, tool_server, monkeypatch):
    monkeypatch.setenv("TEST_AGENT_KEY", "agent-key")
    proxy = make_proxy(
        redis=True,
        admin_token=ADMIN,
        tool_max_steps=3,
        keys=[KeySpec(name="agent", key_env="TEST_AGENT_KEY", profile="concierge")],
        profiles={
            "concierge": ProfileSpec(
                tools=["weather", "clock", "broken", "slow"], filler_phrases=["Just a second."]
            )
        },
    )
    admin = {"Authorization": f"Bearer {ADMIN}"}
    object_schema = {"type": "object", "properties": {"city": {"type": "string"}}}
    for name, extra in (
        ("weather", {"filler": "Let me check the weather.", "show_result": True}),
        ("clock", {}),
        ("broken", {}),
        ("slow", {"timeout_seconds": 0.5}),
    ):
        created = httpx.post(
            f"{proxy.url}/admin/tools",
            headers=admin,
            json={
                "name": name,
                "description": f"The {name} tool",
                "parameters": object_schema,
                "url": f"{tool_server.url}/{name}",
                "allow_private_network": True,
                **extra,
            },
        )
        assert created.status_code == 201, created.text
    return proxy


def talk(proxy, text: str, request_id: str) -> list[dict]:
    body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": text}]}
    headers = {
        "Authorization": "Bearer agent-key",
        "X-Task-Id": "tool-task",
        "X-Request-Id": request_id,
        "X-Room-Id": "room-1",  # the TRTC engine: it gets meta.info
    }
    response = httpx.post(
        proxy.base_url + "/chat/completions", json=body, headers=headers, timeout=20
    )
    assert response.status_code == 200
    return [
        orjson.loads(line[6:]) for line in response.text.split("\n") if line.startswith("data: {")
    ]


def spoken(events: list[dict]) -> str:
    return "".join(c["delta"].get("content") or "" for e in events for c in e.get("choices", []))


def assert_valid_tool_pairs(messages: list[dict]) -> None:
    """What OpenAI checks: each tool message answers a call of the assistant just before."""
    open_calls: set[str] = set()
    for message in messages:
        if message["role"] == "assistant":
            open_calls = {c["id"] for c in message.get("tool_calls") or []}
        elif message["role"] == "tool":
            assert message["tool_call_id"] in open_calls, messages
            open_calls.discard(message["tool_call_id"])
        else:
            assert not open_calls, f"unanswered tool calls before {message}"


def test_two_tools_in_parallel_then_an_answer(proxy, mock, tool_server):
    mock.script(
        [
            {
                "tool_calls": [
                    {"name": "weather", "arguments": {"city": "Paris"}},
                    {"name": "clock", "arguments": {}},
                ]
            },
            {"reply": "It is sunny in Paris and it is noon."},
        ]
    )
    events = talk(proxy, "Weather and time in Paris?", "r1")
    assert spoken(events) == "Let me check the weather. It is sunny in Paris and it is noon."
    assert not any(c["delta"].get("tool_calls") for e in events for c in e.get("choices", []))
    assert not any(
        c.get("finish_reason") == "tool_calls" for e in events for c in e.get("choices", [])
    )
    meta = [e["metainfo"] for e in events if e.get("type") == "meta.info"]
    assert meta == [{"tool": "weather", "result": {"city": "Paris", "sky": "sunny", "celsius": 24}}]
    (weather, clock) = sorted(tool_server.calls)[1], sorted(tool_server.calls)[0]
    assert weather[1] == {"city": "Paris"}
    assert weather[2] < clock[3] and clock[2] < weather[3], "the calls did not overlap"
    second = mock.requests[1].body["messages"]
    assert [m["role"] for m in second[-3:]] == ["assistant", "tool", "tool"]
    assert_valid_tool_pairs(second)

    mock.script([{"reply": "You're welcome."}])
    talk(proxy, "Thanks!", "r2")
    following = mock.requests[-1].body["messages"]
    assert [m["role"] for m in following] == [
        "user",
        "assistant",
        "tool",
        "tool",
        "assistant",
        "user",
    ]
    assert following[1]["content"] == "Let me check the weather."
    assert_valid_tool_pairs(following)


def test_failing_and_slow_tools_are_told_to_the_model(proxy, mock, tool_server):
    mock.script(
        [
            {
                "tool_calls": [
                    {"name": "broken", "arguments": {}},
                    {"name": "slow", "arguments": {}},
                ]
            },
            {"reply": "Sorry, I could not look that up."},
        ]
    )
    events = talk(proxy, "Look it up", "r1")
    assert spoken(events) == "Just a second. Sorry, I could not look that up."
    results = [m for m in mock.requests[1].body["messages"] if m["role"] == "tool"]
    assert "500" in results[0]["content"] and "timed out" in results[1]["content"]


def test_step_limit_ends_with_words(proxy, mock):
    call = {"tool_calls": [{"name": "clock", "arguments": {}}]}
    mock.script([call, call, call, call])
    events = talk(proxy, "Loop forever", "r1")
    assert events and spoken(events) == "Just a second."
    assert len(mock.requests) == 3  # tool_max_steps
    assert mock.requests[-1].body["tool_choice"] == "none"
