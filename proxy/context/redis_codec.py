"""How the Redis history store encodes messages and reads its scripts' replies.

Messages are encoded with a fixed key order: ``id`` and ``request_id`` first (the
scripts match them by plain string prefix, without decoding), ``content``,
``interrupted``, ``tokens`` and ``heard_at`` last (``update_message`` replaces that
tail in place, so messages written before ``heard_at`` existed are updated alike).
Lua never re-encodes a message: its cjson would round floats to 14 digits and turn
empty lists into objects.

Every turn's start decodes the task's loaded history (up to the load limit), nearly all
of it decoded alike at the task's previous turn. Decoded messages are kept, keyed by
their bytes as stored, and each load gets copies: a message changed in the store has
new bytes, so a kept one is never stale. Only small messages whose fields are all
immutable (text content, no tool calls) are kept, so a copy shares nothing mutable with
the one kept. Bounded: ``DECODED_KEPT`` messages of at most ``DECODED_MAX_BYTES``, the
least recently loaded dropped first.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import orjson

from proxy.context.history import (
    ClaimState,
    RequestClaim,
    StoredAnswer,
    StoredMessage,
    TaskHistory,
)

# update_message rewrites these; they must stay the last keys of an encoded message.
MUTABLE_FIELDS = ("content", "interrupted", "tokens", "heard_at")
DECODED_KEPT = 8192  # decoded messages kept for the next load (16 MiB of bytes at most)
DECODED_MAX_BYTES = 2048  # a larger encoded message is decoded at every load

_decoded: OrderedDict[bytes, StoredMessage] = OrderedDict()


def encode_message(message: StoredMessage) -> bytes:
    fields = message.to_dict()
    head = {"id": fields.pop("id"), "request_id": fields.pop("request_id")}
    tail = {name: fields.pop(name) for name in MUTABLE_FIELDS}
    return orjson.dumps({**head, **fields, **tail})


def time_ms(at: float | None) -> bytes | int:
    """A wall-clock time for the scripts, in ms ('' when unknown: not checked)."""
    return b"" if at is None else int(at * 1000)


def id_prefix(message_id: str) -> bytes:
    """How every encoded message with this id starts (see ``encode_message``)."""
    return b'{"id":' + orjson.dumps(message_id) + b","


def decode_history(encoded: list[bytes], summary: bytes | None, total: int) -> TaskHistory:
    """A ``TaskHistory`` from what the load and turn-start scripts return."""
    kept = _decoded
    found: list[StoredMessage | None] = []
    missing: list[bytes] = []
    for item in encoded:
        message = kept.get(item)
        if message is None:
            missing.append(item)
        else:
            kept.move_to_end(item)  # before any is added: the ones this load uses stay
        found.append(message)
    # One parse of all the others (each is a JSON object as the store keeps it).
    parsed = iter(orjson.loads(b"[" + b",".join(missing) + b"]") if missing else ())
    messages: list[StoredMessage] = []
    for item, message in zip(encoded, found, strict=True):
        if message is not None:
            messages.append(message.copy())
            continue
        message = StoredMessage.from_dict(next(parsed))
        if len(item) <= DECODED_MAX_BYTES and _immutable(message):
            kept[item] = message.copy()
            if len(kept) > DECODED_KEPT:
                kept.popitem(last=False)
        messages.append(message)
    return TaskHistory(
        messages=messages,
        summary=text(summary) if summary is not None else None,
        total_messages=int(total),
    )


def _immutable(message: StoredMessage) -> bool:
    """Whether a shallow copy shares nothing that can change (no list, no dict)."""
    return message.tool_calls is None and (
        message.content is None or isinstance(message.content, str)
    )


def decode_claim(attempt_id: str, claimed: list[Any]) -> RequestClaim:
    """A ``RequestClaim`` from what the claim function of the scripts returns."""
    state, previous, marker, pending, others = claimed
    claim_state = ClaimState(text(state))
    claim = RequestClaim(
        claim_state, attempt_id, pending_spoken=int(pending), others_in_flight=int(others)
    )
    if claim_state is ClaimState.REPLAY:
        claim.answer = decode_answer(orjson.loads(marker).get("answer"))
    elif claim_state is ClaimState.TAKEOVER:
        claim.previous_attempt_id = text(previous)
    return claim


def decode_answer(data: dict[str, Any] | None) -> StoredAnswer | None:
    if not data:
        return None
    return StoredAnswer(
        content=data.get("content") or "",
        model=data.get("model"),
        finish_reason=data.get("finish_reason"),
        completion_id=data.get("completion_id"),
    )


def text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
