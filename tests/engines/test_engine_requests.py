"""Engine payloads and upstream shapes, end to end against the mock, which records the
path, headers and body it got (issue 16, items 1, 5 and 7)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import orjson

from proxy.settings import KeySpec, ProfileSpec

ADMIN = "admin-token-for-tests-0123456789"
FIXTURES = Path(__file__).parent / "fixtures"


def fixture(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())


def chat(proxy, body: dict, headers: dict | None = None) -> httpx.Response:
    response = httpx.post(
        proxy.base_url + "/chat/completions", json=body, headers=headers or {}, timeout=20
    )
    assert response.status_code == 200, response.text
    return response


def events(response: httpx.Response) -> list[dict]:
    return [orjson.loads(x[6:]) for x in response.text.split("\n") if x.startswith("data: {")]


def stored(proxy, task: str) -> list[tuple[str, str]]:
    got = httpx.get(f"{proxy.url}/admin/tasks/{task}", headers={"Authorization": f"Bearer {ADMIN}"})
    assert got.status_code == 200, got.text
    return [(m["role"], m["content"]) for m in got.json()["messages"]]


def test_vapi_call_is_the_task_and_its_fields_stay_home(make_proxy, mock, monkeypatch):
    monkeypatch.setenv("TEST_VAPI_KEY", "vapi-key")
    proxy = make_proxy(
        redis=True,
        admin_token=ADMIN,
        keys=[KeySpec(name="vapi", key_env="TEST_VAPI_KEY", profile="desk")],
        profiles={
            "desk": ProfileSpec(system_prompt="Guest: {{guest_name}} ({{customer.number}}).")
        },
    )
    body = fixture("vapi_custom_llm.json")
    call_id = body["call"]["id"]
    mock.script([{"reply": "Yes, we have one."}, {"reply": "Done."}])
    chat(proxy, body, {"Authorization": "Bearer vapi-key"})
    sent = mock.requests[0]
    assert set(sent.body) == {
        "model",
        "messages",
        "temperature",
        "max_tokens",
        "stream",
        "stream_options",
    }
    assert sent.body["messages"] == [
        {
            "role": "system",
            "content": "Guest: Ada (+14155550123).\n\nYou are the front desk of the Harbour Hotel.",
        },
        *body["messages"][1:],
    ]
    assert sent.headers["Authorization"] == "Bearer upstream-secret"
    # call.id names the task: the next request of the call continues its history.
    later = {
        **body,
        "messages": [
            *body["messages"],
            {"role": "assistant", "content": "Yes, we have one."},
            {"role": "user", "content": "Book it."},
        ],
    }
    chat(proxy, later, {"Authorization": "Bearer vapi-key"})
    assert [m["content"] for m in mock.requests[1].body["messages"]][1:] == [
        "Hello, Harbour Hotel, how can I help?",
        "Do you have a room for tonight?",
        "Yes, we have one.",
        "Book it.",
    ]
    assert stored(proxy, call_id)[-4:] == [
        ("user", "Do you have a room for tonight?"),
        ("assistant", "Yes, we have one."),
        ("user", "Book it."),
        ("assistant", "Done."),
    ]


def test_vapi_destructured_metadata_never_goes_upstream(make_proxy, mock):
    proxy = make_proxy(redis=True, admin_token=ADMIN)
    body = fixture("vapi_custom_llm_destructured.json")
    chat(proxy, body)
    assert set(mock.requests[0].body) == {"model", "messages", "stream", "stream_options"}
    assert stored(proxy, body["call"]["id"])[0] == ("user", "What time is check-out?")


def test_elevenlabs_extra_body_and_user_id_stay_home(make_proxy, mock):
    proxy = make_proxy(redis=True, admin_token=ADMIN)
    body = fixture("elevenlabs_custom_llm.json")
    chat(proxy, body)
    sent = mock.requests[0].body
    assert "elevenlabs_extra_body" not in sent and "user_id" not in sent
    assert sent["tools"] == body["tools"] and sent["max_tokens"] == 5000
    assert stored(proxy, "conv_01jxk7c2q9")[0] == ("user", "My order has not arrived.")


def test_trtc_metainfo_is_consumed_unless_the_route_forwards_it(make_proxy, mock):
    proxy = make_proxy(
        routes={
            "forwarding": {
                "targets": [{"base_url": mock.base_url, "forward_metainfo": True, "model": "m"}]
            }
        }
    )
    body = fixture("trtc_metainfo.json")  # what TRTC adds to the body: MetaInfo
    chat(proxy, body)
    chat(proxy, {**body, "model": "forwarding"})
    assert mock.requests[0].body == {"model": "plain", "messages": body["messages"]}
    assert mock.requests[1].body["MetaInfo"] == {"city": "Shenzhen"}


def test_azure_openai_and_minimax_shapes(make_proxy, mock, monkeypatch):
    monkeypatch.setenv("TEST_AZURE_KEY", "azure-secret")
    monkeypatch.setenv("TEST_MINIMAX_KEY", "minimax-secret")
    monkeypatch.setenv("TEST_MINIMAX_GROUP", "group-7")
    proxy = make_proxy(
        routes={
            "azure": {
                "targets": [
                    {
                        "base_url": mock.url + "/openai/deployments/gpt-4o-mini",
                        "api_key_env": "TEST_AZURE_KEY",
                        "auth_header": "api-key",
                        "query": {"api-version": "2024-10-21"},
                        "drop_params": ["seed"],
                    }
                ]
            },
            "minimax": {
                "targets": [
                    {
                        "base_url": mock.url,
                        "path": "/v1/text/chatcompletion_v2",
                        "api_key_env": "TEST_MINIMAX_KEY",
                        "headers": {"X-Group-Id": "${TEST_MINIMAX_GROUP}"},
                        "model": "MiniMax-Text-01",
                    }
                ]
            },
        }
    )
    messages = [{"role": "user", "content": "hi"}]
    chat(proxy, {"model": "azure", "messages": messages, "seed": 7, "stream": True})
    chat(proxy, {"model": "minimax", "messages": messages})
    azure, minimax = mock.requests
    assert azure.path == "/openai/deployments/gpt-4o-mini/chat/completions"
    assert azure.query == {"api-version": "2024-10-21"}
    assert azure.headers["api-key"] == "azure-secret" and "Authorization" not in azure.headers
    assert "seed" not in azure.body and azure.body["messages"] == messages
    assert minimax.path == "/v1/text/chatcompletion_v2" and minimax.query == {}
    assert minimax.headers["Authorization"] == "Bearer minimax-secret"
    assert minimax.headers["X-Group-Id"] == "group-7"
    assert minimax.body["model"] == "MiniMax-Text-01"


def test_meta_info_override_per_profile_and_per_key(make_proxy, mock, monkeypatch):
    monkeypatch.setenv("TEST_LOUD_KEY", "loud-key")
    monkeypatch.setenv("TEST_QUIET_KEY", "quiet-key")
    proxy = make_proxy(
        keys=[
            KeySpec(name="loud", key_env="TEST_LOUD_KEY", profile="shows"),
            KeySpec(name="quiet", key_env="TEST_QUIET_KEY", meta_info_events="never"),
        ],
        profiles={"shows": ProfileSpec(meta_info_events="always")},
    )
    body = {
        "model": "m",
        "stream": True,
        "messages": [{"role": "user", "content": "hi"}],
        "mock": {"meta_info": {"from": "upstream"}},
    }

    def metas(key: str, **headers: str) -> list[dict]:
        sent = {"Authorization": f"Bearer {key}", "X-Task-Id": f"t-{key}", **headers}
        return [e["metainfo"] for e in events(chat(proxy, body, sent)) if e.get("type")]

    assert metas("loud-key") == [{"from": "upstream"}]  # a generic caller, profile "always"
    assert metas("quiet-key", **{"X-Room-Id": "room-1"}) == []  # the engine, key "never"
