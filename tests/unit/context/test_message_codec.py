"""A stored message survives its encoding: every field, in its place."""

from __future__ import annotations

import dataclasses

import pytest

from proxy.context import redis_codec
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


def as_read(encoded: bytes) -> bytes:
    """The same bytes as a new object, as each read from Redis gives them."""
    return bytes(bytearray(encoded))


def test_a_kept_message_is_copied_at_each_load_and_a_change_of_it_stays_its_own() -> None:
    redis_codec._decoded.clear()
    original = StoredMessage(role="user", content="Hi", id="m-kept")
    stored = encode_message(original)
    first = decode_history([as_read(stored)], None, 1).messages[0]
    assert first == original
    assert list(redis_codec._decoded) == [stored]
    first.content, first.interrupted, first.tokens = "changed", True, 3  # as a turn may
    second = decode_history([as_read(stored)], None, 1).messages[0]
    assert second == original
    assert second is not first and second is not redis_codec._decoded[stored]


def test_messages_with_lists_or_dicts_or_large_ones_are_decoded_at_every_load() -> None:
    redis_codec._decoded.clear()
    with_calls = every_field_distinct()
    parts = StoredMessage(role="user", content=[{"type": "text", "text": "Hi"}], id="m-parts")
    large = StoredMessage(role="user", content="x" * redis_codec.DECODED_MAX_BYTES, id="m-big")
    encoded = [encode_message(m) for m in (with_calls, parts, large)]
    first = decode_history([as_read(e) for e in encoded], None, 3).messages
    second = decode_history([as_read(e) for e in encoded], None, 3).messages
    assert first == second == [with_calls, parts, large]
    assert not redis_codec._decoded
    assert first[0].tool_calls is not second[0].tool_calls
    assert first[1].content is not second[1].content


def test_the_kept_messages_are_bounded_the_least_recently_loaded_dropped_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    redis_codec._decoded.clear()
    monkeypatch.setattr(redis_codec, "DECODED_KEPT", 3)
    encoded = [
        encode_message(StoredMessage(role="user", content=f"m{i}", id=f"m-{i}")) for i in range(5)
    ]
    decode_history(encoded[:3], None, 3)
    decode_history([encoded[0]], None, 1)  # loaded again: now the most recent
    decode_history(encoded[3:], None, 2)
    assert list(redis_codec._decoded) == [encoded[0], encoded[3], encoded[4]]
    history = decode_history([as_read(e) for e in encoded], None, 5)
    assert [m.content for m in history.messages] == [f"m{i}" for i in range(5)]
    assert len(redis_codec._decoded) == 3
