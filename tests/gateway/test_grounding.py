"""Retrieval in the chat path: chunks kept with their turn, sources in meta.info."""

from __future__ import annotations

import httpx
import orjson

from proxy.settings import KeySpec, ProfileSpec

ADMIN = "admin-token-for-tests-0123456789"


def test_a_turn_is_grounded_in_the_profiles_knowledge(make_proxy, mock, monkeypatch):
    monkeypatch.setenv("TEST_SHOP_KEY", "shop-key")
    proxy = make_proxy(
        redis=True,
        admin_token=ADMIN,
        retrieval_token_budget=200,
        keys=[KeySpec(name="shop", key_env="TEST_SHOP_KEY", profile="shop")],
        profiles={
            "shop": ProfileSpec(system_prompt="You are Acme's assistant.", knowledge_bases=["faq"])
        },
    )
    admin = {"Authorization": f"Bearer {ADMIN}"}
    assert (
        httpx.post(
            f"{proxy.url}/admin/knowledge-bases", json={"name": "faq"}, headers=admin
        ).status_code
        == 201
    )
    for source, text in (
        ("returns", "Returns are accepted within 30 days with the receipt."),
        ("shipping", "Shipping to Europe takes five to seven working days."),
        ("退货", "门店营业时间为每天上午九点到晚上九点。"),
    ):
        added = httpx.post(
            f"{proxy.url}/admin/knowledge-bases/faq/documents",
            json={"source_id": source, "title": source.title(), "content": text},
            headers=admin,
        )
        assert added.status_code == 201, added.text
    body = {
        "model": "m",
        "stream": True,
        "messages": [{"role": "user", "content": "How many days do I have to return something?"}],
    }
    headers = {
        "Authorization": "Bearer shop-key",
        "X-Task-Id": "shop-task",
        "X-Request-Id": "r1",
        "X-Sdk-App-Id": "1400000001",  # an engine call: meta.info events go to it
    }
    response = httpx.post(proxy.base_url + "/chat/completions", json=body, headers=headers)
    events = [
        orjson.loads(line[6:]) for line in response.text.split("\n") if line.startswith("data: {")
    ]
    sent = mock.requests[-1].body["messages"]
    # The leading system message is unchanged (a stable, cacheable prefix); the knowledge
    # comes after the history, just before the new turn.
    assert sent[0] == {"role": "system", "content": "You are Acme's assistant."}
    assert [m["role"] for m in sent] == ["system", "system", "user"]
    assert "within 30 days" in sent[1]["content"]
    sources = [e["metainfo"]["sources"] for e in events if e.get("type") == "meta.info"]
    assert sources and sources[0][0]["source_id"] == "returns"
    # The knowledge is kept with its turn (marked), so that the next request repeats
    # this prompt as its prefix (upstream prompt caches) instead of replacing its tail.
    stored = httpx.get(f"{proxy.url}/admin/tasks/shop-task", headers=admin).json()["messages"]
    assert [(m["role"], m["source"]) for m in stored] == [
        ("system", "retrieval"),
        ("user", "turn"),
        ("assistant", "turn"),
    ]
    assert stored[0]["content"] == sent[1]["content"]
    # The same question again: the chunks already in the prompt are not added twice,
    # and the previous request is this one's prefix.
    first_prompt = sent
    body["messages"] = [{"role": "user", "content": "And how many days for returns again?"}]
    httpx.post(
        proxy.base_url + "/chat/completions",
        json=body,
        headers={**headers, "X-Request-Id": "r2"},
    )
    second_prompt = mock.requests[-1].body["messages"]
    assert second_prompt[: len(first_prompt)] == first_prompt
    assert [m["role"] for m in second_prompt[len(first_prompt) :]] == ["assistant", "user"]
