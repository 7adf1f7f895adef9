"""Who gets meta.info events (PROXY_META_INFO_EVENTS, overridden per key and profile)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from proxy.call import CallContext
from proxy.chat.meta import meta_info_event, upstream_meta_info, wants_meta_info

TRTC = CallContext.from_headers({"x-task-id": "t", "x-room-id": "r1"})
TRTC_APP = CallContext.from_headers({"x-task-id": "t", "x-sdk-app-id": "1400000001"})
GENERIC = CallContext.from_headers({"x-task-id": "t"})
STATELESS = CallContext.from_headers({"x-room-id": "r1"})


@pytest.mark.parametrize(
    ("mode", "call", "expected"),
    [
        ("engine", TRTC, True),
        ("engine", TRTC_APP, True),
        ("engine", GENERIC, False),  # an agent framework with a task id: not the engine
        ("engine", STATELESS, False),
        ("always", GENERIC, True),
        ("always", STATELESS, False),  # no task, nothing to attach it to
        ("never", TRTC, False),
    ],
)
def test_default_modes(mode: str, call: CallContext, expected: bool) -> None:
    assert wants_meta_info(mode, call, None) is expected


def test_profile_wins_over_key_which_wins_over_the_default() -> None:
    keyed = replace(CallContext.from_headers({"x-task-id": "t"}), meta_info_events="always")
    assert wants_meta_info("engine", keyed, None) is True
    assert wants_meta_info("engine", keyed, "never") is False
    assert wants_meta_info("never", TRTC, "engine") is True


def test_event_shape_and_upstream_detection() -> None:
    event = meta_info_event("chatcmpl-1", {"a": 1}, "m")
    assert event["object"] == "chat.completion.chunk" and event["choices"] == []
    assert event["id"] == "chatcmpl-1" and event["model"] == "m" and event["type"] == "meta.info"
    assert upstream_meta_info(b'{"id":"x","type":"meta.info","metainfo":{"b":2}}') == {"b": 2}
    assert upstream_meta_info(b'{"id":"x","choices":[{"delta":{"content":"meta.info"}}]}') is None
    assert upstream_meta_info(b'{"choices":[{"delta":{"content":"\\"meta.info\\""}}]}') is None
