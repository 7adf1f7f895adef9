"""Retell's messages, parsed and built (pure)."""

from __future__ import annotations

import pytest

from proxy.retell.protocol import ProtocolError, Utterance, parse_event, response_event


def test_response_required_from_the_docs():
    event = parse_event(
        {
            "interaction_type": "response_required",
            "response_id": 1,
            "transcript": [
                {"role": "agent", "content": "Hey there, I'm your personal AI therapist."},
                {"role": "user", "content": "Hi, I'm feeling a bit down."},
            ],
        }
    )
    assert event.response_id == 1
    assert event.transcript[-1] == Utterance("user", "Hi, I'm feeling a bit down.")


@pytest.mark.parametrize(
    "message",
    [
        [],
        {"transcript": []},
        {"interaction_type": "response_required", "transcript": []},
        {"interaction_type": "reminder_required", "response_id": True},
        {"interaction_type": "update_only", "transcript": [{"role": "user"}]},
        {"interaction_type": "update_only", "transcript": "hi"},
    ],
)
def test_malformed_messages_are_protocol_errors(message):
    with pytest.raises(ProtocolError):
        parse_event(message)


def test_response_event_shape():
    assert response_event(3, "Hi", False) == {
        "response_type": "response",
        "response_id": 3,
        "content": "Hi",
        "content_complete": False,
        "end_call": False,
    }
