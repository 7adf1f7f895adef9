"""Engine adapters against the vendors' documented custom-LLM payloads (tests/engines/fixtures)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from proxy.call import CallContext
from proxy.engines.adapt import adapt_request
from proxy.engines.request import OPENAI_FIELDS
from proxy.engines.variables import render
from proxy.errors import InvalidRequest

FIXTURES = Path(__file__).parents[2] / "engines" / "fixtures"


def fixture(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())


def test_vapi_variable_metadata_mode() -> None:
    body = fixture("vapi_custom_llm.json")
    adapted = adapt_request(body)
    assert set(adapted.body) == {"model", "messages", "temperature", "max_tokens", "stream"}
    assert adapted.body["messages"] == body["messages"]
    assert adapted.engine == "vapi" and adapted.task_id == body["call"]["id"]
    assert adapted.user_id == "+14155550123"
    assert adapted.variables["guest_name"] == "Ada"
    assert render("{{customer.name}} ({{ loyalty_tier }})", adapted.variables) == (
        "Ada Lovelace (gold)"
    )
    call = adapted.applied_to(CallContext(app_id="vapi-org").for_tenant(None))
    assert call.task_id == "vapi-org:" + body["call"]["id"] and call.engine == "vapi"


def test_vapi_destructured_metadata_never_goes_upstream() -> None:
    adapted = adapt_request(fixture("vapi_custom_llm_destructured.json"))
    assert set(adapted.body) == {"model", "messages", "stream"}
    assert adapted.variables["guest_name"] == "Grace" and adapted.variables["room"] == "1204"
    assert render("Room {{room}}, {{unknown}}", adapted.variables) == "Room 1204, {{unknown}}"


def test_elevenlabs_extra_body_and_user_id() -> None:
    body = fixture("elevenlabs_custom_llm.json")
    adapted = adapt_request(body)
    assert set(adapted.body) <= OPENAI_FIELDS
    assert adapted.body["tools"] == body["tools"]
    assert adapted.engine == "elevenlabs" and adapted.task_id == "conv_01jxk7c2q9"
    assert adapted.variables == {
        "conversation_id": "conv_01jxk7c2q9",
        "plan": "premium",
        "user_id": "customer-8812",
    }


def test_trtc_metainfo_is_read_and_stays_for_the_target_to_drop() -> None:
    body = {"model": "m", "messages": [], "MetaInfo": {"city": "Shenzhen"}}
    adapted = adapt_request(body)
    assert adapted.engine is None and adapted.body is body
    assert render("in {{city}}", adapted.variables) == "in Shenzhen"


def test_a_generic_client_is_untouched() -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "user": "u1"}
    adapted = adapt_request(body)
    assert adapted.body is body and adapted.variables == {}
    call = CallContext(task_id="t")
    assert adapted.applied_to(call) is call


def test_an_unusable_call_id_is_a_400() -> None:
    adapted = adapt_request({"model": "m", "messages": [], "call": {"id": "has space"}})
    with pytest.raises(InvalidRequest) as caught:
        adapted.applied_to(CallContext())
    assert caught.value.status == 400 and caught.value.code == "invalid_task_id"
