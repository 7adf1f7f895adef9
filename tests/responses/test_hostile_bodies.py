"""Generated Responses API bodies against a real proxy: never a 500 or a traceback;
what the proxy refuses never reaches the upstream."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.hostile.conftest import assert_no_server_error, module_proxy
from tests.servers import ProxyServer

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=12,
)
ITEM_TYPES = st.sampled_from(
    ["message", "function_call", "function_call_output", "item_reference", "reasoning", None]
)
ITEM = st.fixed_dictionaries(
    {"type": ITEM_TYPES},
    optional={
        "role": st.sampled_from(["user", "assistant", "system", "tool", 3]),
        "content": JSON,
        "call_id": JSON,
        "name": JSON,
        "arguments": JSON,
        "output": JSON,
        "id": st.sampled_from(["msg_x.1", "msg_cmVzcC14CnI.1", "fc_1", 5]),
    },
)
BODY = st.fixed_dictionaries(
    {"model": st.sampled_from(["m", "", 7])},
    optional={
        "input": st.text(max_size=10) | st.lists(ITEM, max_size=4) | JSON,
        "instructions": JSON,
        "tools": st.lists(
            st.fixed_dictionaries(
                {"type": st.sampled_from(["function", "x"])},
                optional={"name": JSON, "parameters": JSON},
            ),
            max_size=2,
        )
        | JSON,
        "tool_choice": JSON,
        "previous_response_id": st.sampled_from(["resp_cmVzcC14CnI", "resp_", "x"]) | JSON,
        "text": JSON,
        "reasoning": JSON,
        "max_output_tokens": JSON,
        "metadata": JSON,
        "store": JSON,
        "stream": st.booleans() | JSON,
    },
)


@pytest.fixture(scope="module")
def proxy(upstream: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyServer]:
    with module_proxy(upstream, tmp_path_factory.mktemp("responses")) as server:
        yield server


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=BODY)
def test_generated_bodies_never_crash_the_proxy(proxy, upstream, body):
    upstream.clear()
    response = httpx.post(proxy.base_url + "/responses", json=body, timeout=15)
    assert_no_server_error(response)
    if response.status_code == 400:
        assert upstream.requests == []


@pytest.mark.parametrize("raw", [b"", b"[]", b"{", b'"x"', b'{"model": "m", "input": "x"'])
def test_broken_json_is_a_400(proxy, upstream, raw):
    upstream.clear()
    response = httpx.post(
        proxy.base_url + "/responses", content=raw, headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert upstream.requests == []
