"""The Vercel AI SDK's default OpenAI provider, ``openai(model)``, which speaks the
Responses API: a node script (tests/clients/responses_js) as the client of a real proxy,
the real mock upstream and real Redis. ``.ci/run`` installs its packages (``npm ci``)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

CLIENT_DIR = Path(__file__).parents[1] / "clients" / "responses_js"


def run_client(proxy, scenario: str) -> dict[str, Any]:
    if shutil.which("node") is None or not (CLIENT_DIR / "node_modules").is_dir():
        pytest.fail(f"the AI SDK client is not installed: run `npm ci` in {CLIENT_DIR}")
    done = subprocess.run(
        ["node", "run.mjs", scenario],
        cwd=CLIENT_DIR,
        env={**os.environ, "PROXY_BASE_URL": proxy.base_url},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    assert result["ok"], result
    return result


def test_generate_text(make_proxy, mock):
    proxy = make_proxy(redis=True)
    mock.script([{"reply": "Hi JS."}])
    result = run_client(proxy, "text")
    assert result["text"] == "Hi JS." and result["finishReason"] == "stop"
    assert result["responseId"].startswith("resp_")
    assert len(mock.requests) == 1
    assert mock.requests[0].body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hello from JS"},
    ]


def test_stream_text_without_errors(make_proxy, mock):
    proxy = make_proxy(redis=True)
    mock.script([{"reply": "Streamed JS.", "chunks": 3}])
    result = run_client(proxy, "stream")
    assert result == {"ok": True, "text": "Streamed JS.", "errors": [], "finishReason": "stop"}
    assert len(mock.requests) == 1 and mock.requests[0].body["stream"] is True


@pytest.mark.parametrize("scenario", ["tools", "stream_tools"])
def test_tool_loop(make_proxy, mock, scenario):
    proxy = make_proxy(redis=True)
    city = "Paris" if scenario == "tools" else "Rome"
    arguments = json.dumps({"city": city}, separators=(",", ":"))  # as the SDK re-sends it
    mock.script(
        [
            {"tool_calls": [{"name": "get_weather", "arguments": arguments}]},
            {"reply": f"Sunny in {city}."},
        ]
    )
    result = run_client(proxy, scenario)
    assert result["text"] == f"Sunny in {city}." and result["steps"] == 2
    assert len(mock.requests) == 2
    first, second = (r.body["messages"] for r in mock.requests)
    assert first == [{"role": "user", "content": f"Weather in {city}?"}]
    call_id = second[1]["tool_calls"][0]["id"]
    assert second == [
        {"role": "user", "content": f"Weather in {city}?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": call_id,
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": arguments},
                }
            ],
        },
        {"role": "tool", "tool_call_id": call_id, "content": f"sunny in {city}"},
    ]


def test_multi_turn_resolves_item_references(make_proxy, mock):
    """The SDK sends the earlier reply as an ``item_reference`` (store is on by default)."""
    proxy = make_proxy(redis=True)
    mock.script([{"reply": "Hello Ann."}, {"reply": "You are Ann."}])
    result = run_client(proxy, "multiturn")
    assert (result["first"], result["second"]) == ("Hello Ann.", "You are Ann.")
    assert len(mock.requests) == 2
    assert mock.requests[1].body["messages"] == [
        {"role": "user", "content": "I am Ann."},
        {"role": "assistant", "content": "Hello Ann."},
        {"role": "user", "content": "Who am I?"},
    ]
