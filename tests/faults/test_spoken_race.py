"""A barge-in whose 905 ("what the bot said") reaches the proxy before the abandoned stream
is closed: the engine does not order its server callbacks after its LLM connection.

The 905 belongs to the reply still streaming; it must never rewrite an earlier reply that
happens to begin with the same words (most replies start alike: "Sure, ...").
"""

from __future__ import annotations

import asyncio
import time

import orjson
import pytest

from proxy.dev.voice.engine import EngineConfig, run_session
from tests.faults.helpers import assert_valid_history, live_messages, new_task

SIGN_KEY = "faultsignkey0123"
FIRST = "Sure, I can help you with your booking today."
SECOND = "Sure, here is a long story about the sea, the wind and an old lighthouse keeper."


@pytest.fixture
def proxy(stateful_proxy):
    return stateful_proxy(callback_sign_key=SIGN_KEY, spoken_grace_seconds=0.3)


def engine(proxy, task: str, order: str) -> EngineConfig:
    return EngineConfig(
        url=proxy.base_url + "/chat/completions",
        model="voice",
        task_id=task,
        timeout_s=5,
        callback_url=proxy.url + "/callbacks/trtc",
        callback_key=SIGN_KEY,
        callback_order=order,  # type: ignore[arg-type]
        chars_per_second=12,
    )


def converse(proxy, task: str, order: str):
    turns = [
        {"say": "Can you help me?", "mock": {"reply": FIRST}},
        # ~0.5 s of speech ("Sure, ") while the reply is still streaming (2 s in all).
        {
            "say": "Tell me a story.",
            "interrupt_after_ms": 500,
            "mock": {"reply": SECOND, "chunks": 16, "gap_ms": 120},
        },
        {"say": "Thanks.", "wait_ms": 500, "mock": {"reply": "You're welcome."}},
    ]
    result = asyncio.run(run_session(engine(proxy, task, order), turns))
    assert [r.error_code for r in result.rounds] == [None, None, None]
    assert all(c.delivered for c in result.callbacks)
    return result


def expected(heard: str) -> list[tuple[str, str, bool]]:
    return [
        ("user", "Can you help me?", False),
        ("assistant", FIRST, False),
        ("user", "Tell me a story.", False),
        ("assistant", heard, True),
        ("user", "Thanks.", False),
        ("assistant", "You're welcome.", False),
    ]


def stored(proxy, task: str) -> list[tuple[str, str, bool]]:
    time.sleep(0.5)  # past the spoken grace period
    messages = live_messages(proxy, task)
    assert_valid_history(messages)
    return [(m["role"], m["content"], m["interrupted"]) for m in messages]


def test_a_905_after_the_stream_closed_trims_the_interrupted_reply(proxy, mock):
    task = new_task()
    result = converse(proxy, task, "after")
    heard = result.rounds[1].spoken_text
    assert heard and SECOND.startswith(heard) and heard != SECOND
    assert stored(proxy, task) == expected(heard)


def test_a_905_before_the_stream_closed_never_rewrites_the_previous_reply(proxy, mock):
    task = new_task()
    result = converse(proxy, task, "before")
    heard = result.rounds[1].spoken_text
    assert heard and SECOND.startswith(heard) and heard != SECOND
    assert stored(proxy, task) == expected(heard), orjson.dumps(live_messages(proxy, task))
