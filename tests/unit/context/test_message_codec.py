"""A stored message survives its encoding: every field, in its place."""

from __future__ import annotations

import dataclasses

from proxy.context.history import StoredMessage
from proxy.context.redis_codec import decode_history, encode_message


def every_field_distinct() -> StoredMessage:
    return StoredMessage(
        role="assistant",
        content="Your card is blocked.",
        name="agent",
        tool_calls=[{"id": "call_1", "type": "function", "function": {"name": "f"}}],
        tool_call_id="call_0",
        id="m-1",
        request_id="r-1",
        interrupted=True,
        created_at=1_700_000_000.25,
        tokens=7,
        source="seed",
        heard_at=1_700_000_001.5,
        reasoning_content="thinking",
    )


def test_from_dict_reads_each_field_into_its_place() -> None:
    message = every_field_distinct()
    assert StoredMessage.from_dict(message.to_dict()) == message
    assert set(message.to_dict()) == {f.name for f in dataclasses.fields(StoredMessage)}


def test_a_history_decodes_as_it_was_encoded() -> None:
    first, second = every_field_distinct(), StoredMessage(role="user", content="Hi", id="m-0")
    history = decode_history([encode_message(second), encode_message(first)], b"summary", 9)
    assert history.messages == [second, first]
    assert (history.summary, history.total_messages) == ("summary", 9)
    assert decode_history([], None, 0).messages == []
