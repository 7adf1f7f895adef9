"""How the Redis history store encodes messages and reads its scripts' replies.

Messages are encoded with a fixed key order: ``id`` and ``request_id`` first (the
scripts match them by plain string prefix, without decoding), ``content``,
``interrupted``, ``tokens`` and ``heard_at`` last (``update_message`` replaces that
tail in place, so messages written before ``heard_at`` existed are updated alike).
Lua never re-encodes a message: its cjson would round floats to 14 digits and turn
empty lists into objects.
"""

from __future__ import annotations

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
    # One parse of all of them (each is a JSON object as the store keeps it).
    decoded = orjson.loads(b"[" + b",".join(encoded) + b"]") if encoded else []
    return TaskHistory(
        messages=[StoredMessage.from_dict(value) for value in decoded],
        summary=text(summary) if summary is not None else None,
        total_messages=int(total),
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
