"""Building a task's rounds from the transcript, the turn records and the engine's events."""

from __future__ import annotations

from datetime import UTC, datetime

from proxy.console.charts import latency_parts
from proxy.console.timeline import build_rounds, split_heard
from proxy.db.models import CallbackEvent, RoundMetric, TranscriptMessage, TurnRecord

T0 = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
STORY = "Once upon a time, a ship sailed the sea."


def message(role, content, request_id=None, *, interrupted=False, source="turn"):
    return TranscriptMessage(
        role=role,
        content=content,
        request_id=request_id,
        interrupted=interrupted,
        source=source,
        created_at=T0,
    )


def turn(request_id, outcome="answered", sent=None, **fields):
    return TurnRecord(
        task_id="t",
        request_id=request_id,
        created_at=T0,
        status=200,
        outcome=outcome,
        sent_text=sent,
        tools=fields.pop("tools", []),
        meta=fields.pop("meta", []),
        **fields,
    )


def event(event_type, ms, payload, round_id):
    body = {"EventType": event_type, "EventInfo": {"TaskId": "t", "Payload": payload}}
    return CallbackEvent(
        task_id="t", event_type=event_type, event_ms_ts=ms, round_id=round_id, payload=body
    )


def test_rounds_join_what_was_sent_heard_retried_and_measured():
    transcript = [
        message("assistant", "Welcome!", source="spoken"),
        message("user", "hello", "r1"),
        message("assistant", "Hi there.", "r1"),
        message("user", "tell me a story", "r2"),
        message("assistant", "Once upon a time,", "r2", interrupted=True),
        message("user", "and then?", "r3"),
    ]
    turns = [
        turn("r1", sent="Hi there.", proxy_ms=3.0, upstream_ms=40.0),
        turn("r2", "failed"),
        turn(
            "r2",
            "interrupted",
            sent=STORY,
            proxy_ms=2.0,
            upstream_ms=30.0,
            tools=[{"name": "weather", "ok": True, "ms": 12.0}],
            meta=[{"sources": [{"title": "Sea book", "knowledge_base": "kb"}]}],
        ),
        turn("r2", "replayed"),
        turn("r9", "failed", error="upstream failed"),
    ]
    events = [
        event(903, 1, {"Text": "tell me a story", "RoundId": "round-2"}, "round-2"),
        event(905, 2, {"Text": "Once upon a time,", "RoundId": "round-2"}, "round-2"),
    ]
    metrics = [
        RoundMetric(task_id="t", round_id="round-2", metric="llm_first_token", value=90.0, tags={}),
        RoundMetric(task_id="t", round_id="round-2", metric="asr_latency", value=200.0, tags={}),
        RoundMetric(
            task_id="t",
            round_id="round-2",
            metric="tts_error",
            value=None,
            tags={"Code": 1, "Message": "tts down"},
        ),
        RoundMetric(task_id="t", round_id="other", metric="asr_latency", value=5.0, tags={}),
    ]
    rounds = build_rounds(transcript, turns, events, metrics)
    assert [(r.number, r.user_text, r.request_id) for r in rounds] == [
        (1, "", None),
        (2, "hello", "r1"),
        (3, "tell me a story", "r2"),
        (4, "and then?", "r3"),
        (5, "", "r9"),
    ]
    welcome, hello, story, then, failed = rounds
    assert welcome.heard == "Welcome!" and not welcome.interrupted
    assert hello.heard == "Hi there." and hello.cut() is None and not hello.interrupted
    assert story.sent == STORY and story.heard == "Once upon a time,"
    assert story.interrupted and story.round_id == "round-2"
    assert story.cut() == ("Once upon a time,", " a ship sailed the sea.")
    assert (story.retries, story.replays) == (1, 1)
    assert story.tools == [{"name": "weather", "ok": True, "ms": 12.0}]
    assert story.sources == [{"title": "Sea book", "knowledge_base": "kb"}]
    assert story.metrics == {"llm_first_token": 90.0, "asr_latency": 200.0}
    assert story.errors == [{"metric": "tts_error", "code": 1, "message": "tts down"}]
    assert latency_parts(story) == {"asr": 200.0, "proxy": 2.0, "upstream": 30.0, "network": 58.0}
    assert then.heard is None and then.attempts == []
    assert failed.attempts[0].error == "upstream failed"


def test_the_cut_ignores_spacing_and_punctuation():
    assert split_heard("Hello, world. How are you?", "hello world how") == (
        "Hello, world. How",
        " are you?",
    )
    assert split_heard("Hello", "Hello") is None
    assert split_heard("Hello", "Goodbye") is None
