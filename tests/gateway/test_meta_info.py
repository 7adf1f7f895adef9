"""meta.info events: exact shape, never inside delta.content, operator values delivered once."""

from __future__ import annotations

import httpx
import orjson

from proxy.settings import ProfileSpec

ADMIN = "admin-token-for-tests-0123456789"


def events(text: str) -> list[dict]:
    return [orjson.loads(line[6:]) for line in text.split("\n") if line.startswith("data: {")]


def test_operator_metainfo_goes_out_with_the_next_reply_only(make_proxy, mock):
    proxy = make_proxy(redis=True, admin_token=ADMIN)
    queued = httpx.post(
        f"{proxy.url}/admin/tasks/meta-task/metainfo",
        params={"app_id": "app-1"},  # before the task's first turn: named with its app
        json={"metainfo": {"card": "vip", "points": 1200}},
        headers={"Authorization": f"Bearer {ADMIN}"},
    )
    assert queued.status_code == 202
    body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    headers = {"X-Task-Id": "meta-task", "X-Request-Id": "r1", "X-Sdk-App-Id": "app-1"}
    first = events(
        httpx.post(proxy.base_url + "/chat/completions", json=body, headers=headers).text
    )
    meta = [e for e in first if e.get("type") == "meta.info"]
    assert len(meta) == 1 and first[0] is meta[0]  # at the start of the reply
    assert set(meta[0]) == {"id", "object", "created", "model", "choices", "type", "metainfo"}
    assert meta[0]["metainfo"] == {"card": "vip", "points": 1200}
    assert meta[0]["object"] == "chat.completion.chunk" and meta[0]["choices"] == []
    assert isinstance(meta[0]["created"], int)
    assert {e["id"] for e in first} == {meta[0]["id"]}  # the stream's own completion id
    content = "".join(c["delta"].get("content") or "" for e in first for c in e.get("choices", []))
    assert "vip" not in content and "meta.info" not in content
    second = events(
        httpx.post(
            proxy.base_url + "/chat/completions",
            json=body,
            headers={**headers, "X-Request-Id": "r2"},
        ).text
    )
    assert [e for e in second if e.get("type") == "meta.info"] == []


def test_non_streaming_replies_carry_metainfo(make_proxy, mock):
    proxy = make_proxy(redis=True, admin_token=ADMIN)
    httpx.post(
        f"{proxy.url}/admin/tasks/meta-task-2/metainfo",
        params={"app_id": "app-1"},
        json={"metainfo": {"order": "A-17"}},
        headers={"Authorization": f"Bearer {ADMIN}"},
    )
    reply = httpx.post(
        proxy.base_url + "/chat/completions",
        json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
        headers={"X-Task-Id": "meta-task-2", "X-Sdk-App-Id": "app-1"},
    ).json()
    assert reply["metainfo"] == {"order": "A-17"}


def test_upstream_meta_info_follows_the_same_rule_as_ours(make_proxy, mock):
    proxy = make_proxy()
    body = {
        "model": "m",
        "stream": True,
        "messages": [{"role": "user", "content": "hi"}],
        "mock": {"meta_info": {"from": "upstream"}},
    }
    url = proxy.base_url + "/chat/completions"
    generic = events(httpx.post(url, json=body, headers={"X-Task-Id": "t-generic"}).text)
    assert [e for e in generic if e.get("type") == "meta.info"] == []
    assert all(e["object"] == "chat.completion.chunk" for e in generic)
    engine = {"X-Task-Id": "t-engine", "X-Sdk-App-Id": "1400000001"}
    got = events(httpx.post(url, json=body, headers=engine).text)
    meta = [e for e in got if e.get("type") == "meta.info"]
    assert [e["metainfo"] for e in meta] == [{"from": "upstream"}]
    assert meta[0]["choices"] == [] and meta[0]["object"] == "chat.completion.chunk"
    assert meta[0]["id"] == got[-1]["id"]
    stateless = events(httpx.post(url, json=body, headers={"X-Room-Id": "r"}).text)
    assert [e for e in stateless if e.get("type") == "meta.info"] == []  # no task, no meta.info


def test_fast_first_words_speaks_a_filler_and_keeps_it_in_history(make_proxy, mock, monkeypatch):
    monkeypatch.setenv("TEST_FAST_KEY", "fast-key")
    from proxy.settings import KeySpec

    proxy = make_proxy(
        redis=True,
        admin_token=ADMIN,
        keys=[KeySpec(name="fast", key_env="TEST_FAST_KEY", profile="quick")],
        profiles={
            "quick": ProfileSpec(filler_phrases=["Hmm, let me think. "], fast_first_words_ms=100)
        },
    )
    body = {
        "model": "m",
        "stream": True,
        "messages": [{"role": "user", "content": "a hard question"}],
        "mock": {"first_token_ms": 600, "reply": "The answer is 42.", "chunks": 4},
    }
    headers = {"Authorization": "Bearer fast-key", "X-Task-Id": "fast-task", "X-Request-Id": "r1"}
    got = events(httpx.post(proxy.base_url + "/chat/completions", json=body, headers=headers).text)
    text = "".join(c["delta"].get("content") or "" for e in got for c in e.get("choices", []))
    assert text == "Hmm, let me think. The answer is 42."
    assert got[0]["choices"][0]["delta"] == {"role": "assistant", "content": "Hmm, let me think."}
    assert got[1]["choices"][0]["delta"]["content"] == " The"  # joined as a sentence
    stored = httpx.get(
        f"{proxy.url}/admin/tasks/fast-task", headers={"Authorization": f"Bearer {ADMIN}"}
    ).json()["messages"]
    assert stored[-1]["content"] == "Hmm, let me think. The answer is 42."
    # A fast model gets no filler.
    quick = {**body, "mock": {"reply": "Quick.", "chunks": 1}}
    got = events(
        httpx.post(
            proxy.base_url + "/chat/completions",
            json=quick,
            headers={**headers, "X-Request-Id": "r2"},
        ).text
    )
    assert (
        "".join(c["delta"].get("content") or "" for e in got for c in e.get("choices", []))
        == "Quick."
    )
