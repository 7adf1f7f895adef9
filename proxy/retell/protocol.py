"""Retell's custom-LLM WebSocket messages (docs.retellai.com/api-references/llm-websocket).

Retell -> proxy, by ``interaction_type``: ``ping_pong``, ``call_details``,
``update_only`` (the live transcript), ``response_required`` / ``reminder_required``
(with a ``response_id``). Proxy -> Retell, by ``response_type``: ``config``,
``response`` (streamed ``content`` pieces, then ``content_complete``), ``metadata``
(passed to the web client: where meta.info goes), ``ping_pong``.

A transcript is the call's utterances, oldest first: ``{"role": "agent" | "user",
"content": str}``. The agent's utterances are what it actually *said*: a reply cut
short by the caller appears shortened.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

RESPONSE_REQUIRED = "response_required"
REMINDER_REQUIRED = "reminder_required"
UPDATE_ONLY = "update_only"
PING_PONG = "ping_pong"
CALL_DETAILS = "call_details"


class ProtocolError(ValueError):
    """A message that does not follow Retell's protocol (logged and skipped)."""


@dataclass(frozen=True, slots=True)
class Utterance:
    role: str  # "agent" | "user" (anything else is kept but not a turn)
    content: str


@dataclass(frozen=True, slots=True)
class RetellEvent:
    interaction_type: str
    transcript: tuple[Utterance, ...] = ()
    response_id: int | None = None
    timestamp: int | None = None


def parse_event(message: Any) -> RetellEvent:
    if not isinstance(message, dict):
        raise ProtocolError("a Retell message must be a JSON object")
    kind = message.get("interaction_type")
    if not isinstance(kind, str):
        raise ProtocolError("a Retell message needs an 'interaction_type'")
    transcript = _transcript(message.get("transcript"))
    response_id = message.get("response_id")
    if kind in (RESPONSE_REQUIRED, REMINDER_REQUIRED) and (
        not isinstance(response_id, int) or isinstance(response_id, bool)
    ):
        raise ProtocolError(f"{kind} needs an integer 'response_id'")
    timestamp = message.get("timestamp")
    return RetellEvent(
        kind,
        transcript,
        response_id if isinstance(response_id, int) else None,
        timestamp if isinstance(timestamp, int) else None,
    )


def _transcript(value: Any) -> tuple[Utterance, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ProtocolError("'transcript' must be an array")
    out: list[Utterance] = []
    for item in value:
        if not isinstance(item, dict) or not isinstance(item.get("content"), str):
            raise ProtocolError("each utterance needs a 'role' and a string 'content'")
        out.append(Utterance(str(item.get("role")), item["content"]))
    return tuple(out)


def config_event(*, auto_reconnect: bool = True, call_details: bool = True) -> dict[str, Any]:
    return {
        "response_type": "config",
        "config": {"auto_reconnect": auto_reconnect, "call_details": call_details},
    }


def response_event(response_id: int, content: str, complete: bool) -> dict[str, Any]:
    return {
        "response_type": "response",
        "response_id": response_id,
        "content": content,
        "content_complete": complete,
        "end_call": False,
    }


def metadata_event(metadata: dict[str, Any]) -> dict[str, Any]:
    return {"response_type": "metadata", "metadata": metadata}


def pong_event(timestamp: int | None) -> dict[str, Any]:
    return {"response_type": "ping_pong", "timestamp": timestamp}
