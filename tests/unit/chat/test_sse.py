"""SSE frames, and replaying a finished answer to a retried request id."""

from __future__ import annotations

import orjson
import pytest

from proxy.chat.replay import replay_completion, replay_frames
from proxy.chat.sse import DONE_FRAME, chunk_event, error_frame, frame, json_frame
from proxy.context.history import StoredAnswer
from proxy.errors import UpstreamError

NOW = 1_700_000_000


@pytest.fixture(autouse=True)
def fixed_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("time.time", lambda: NOW + 0.75)


def test_frames() -> None:
    assert frame(b"x") == b"data: x\n\n"
    assert json_frame({"a": 1}) == b'data: {"a":1}\n\n'
    assert DONE_FRAME == b"data: [DONE]\n\n"


def test_an_error_after_the_first_byte_is_an_openai_envelope_in_the_stream() -> None:
    sent = error_frame(UpstreamError("upstream failed mid-stream: overloaded"))
    assert sent.startswith(b"data: ") and sent.endswith(b"\n\n")
    assert orjson.loads(sent[6:]) == {
        "error": {
            "message": "upstream failed mid-stream: overloaded",
            "type": UpstreamError.error_type,
            "code": UpstreamError.code,
            "param": None,
        }
    }


def test_chunk_event() -> None:
    assert chunk_event("chatcmpl-1", None, {"content": "Hi"}, None) == {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": NOW,
        "model": "",
        "choices": [{"index": 0, "delta": {"content": "Hi"}, "finish_reason": None}],
    }


async def test_a_replayed_stream_is_the_whole_answer_then_done() -> None:
    answer = StoredAnswer("Hello there.", "m-1", "stop", "chatcmpl-7")
    frames = [piece async for piece in replay_frames(answer)]
    assert len(frames) == 1  # one write: a retry gets the answer at once
    events = frames[0].split(b"\n\n")
    assert events[-2:] == [b"data: [DONE]", b""]
    assert [orjson.loads(e.removeprefix(b"data: ")) for e in events[:-2]] == [
        chunk_event("chatcmpl-7", "m-1", {"role": "assistant", "content": "Hello there."}, None),
        chunk_event("chatcmpl-7", "m-1", {}, "stop"),
    ]


def test_a_replayed_completion() -> None:
    assert replay_completion(StoredAnswer("Hi.", None, "length", None)) == {
        "id": "chatcmpl-replay",
        "object": "chat.completion",
        "created": NOW,
        "model": "",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hi."},
                "finish_reason": "length",
            }
        ],
    }
