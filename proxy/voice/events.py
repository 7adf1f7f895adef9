"""Parsing the engine's server callbacks (CONTRACT §5), liberal in what it accepts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from proxy.call import MAX_TASK_ID

TASK_STARTED, TASK_STOPPED, SENTENCE, SPEECH_STARTED = 901, 902, 903, 904
SPEAKING_FINISHED, METRIC, ERROR_METRIC, SESSION_READY = 905, 906, 908, 909
KNOWN_EVENTS = {901, 902, 903, 904, 905, 906, 908, 909}
MAX_ID_LENGTH = 128  # task, room and round ids as stored
MAX_EVENT_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z, the last storable instant

# 903 (and 904) have two spellings in the documents: CamelCase and an older lower case.
_ALIASES = {
    "userid": "UserId",
    "text": "Text",
    "roundid": "RoundId",
    "start_ms_ts": "StartTimeMs",
    "end_ms_ts": "EndTimeMs",
}


class MalformedEvent(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class EngineEvent:
    event_type: int
    task_id: str
    event_ms_ts: int
    room_id: str | None
    room_id_type: int | None
    payload: dict[str, Any]
    raw: dict[str, Any]

    @property
    def round_id(self) -> str | None:
        tag = self.payload.get("Tag")
        value = self.payload.get("RoundId") or (
            tag.get("RoundId") if isinstance(tag, dict) else None
        )
        text = str(value) if value else None
        return text if text and len(text) <= MAX_ID_LENGTH else None  # what the column holds

    @property
    def dedupe_key(self) -> str:
        return f"cb:{self.task_id}:{self.event_type}:{self.event_ms_ts}"


def _int(value: Any, field: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise MalformedEvent(f"{field} must be a number") from None


def normalise_payload(payload: dict[str, Any]) -> dict[str, Any]:
    """CamelCase keys for both spellings; the original keys are kept too."""
    merged = dict(payload)
    for old, new in _ALIASES.items():
        if old in payload and new not in payload:
            merged[new] = payload[old]
    return merged


def parse_event(body: Any) -> EngineEvent:
    if not isinstance(body, dict):
        raise MalformedEvent("the callback body must be a JSON object")
    info = body.get("EventInfo")
    if not isinstance(info, dict):
        raise MalformedEvent("EventInfo is missing")
    task_id = info.get("TaskId")
    if not isinstance(task_id, str) or not task_id or len(task_id) > MAX_TASK_ID:
        raise MalformedEvent("EventInfo.TaskId is missing")
    room_id = str(info["RoomId"]) if info.get("RoomId") is not None else None
    if room_id is not None and len(room_id) > MAX_ID_LENGTH:
        raise MalformedEvent("EventInfo.RoomId is too long")
    payload = info.get("Payload") or {}
    if not isinstance(payload, dict):
        raise MalformedEvent("EventInfo.Payload must be an object")
    room_type = info.get("RoomIdType")
    event_ms_ts = _int(info.get("EventMsTs"), "EventInfo.EventMsTs")
    if not 0 <= event_ms_ts <= MAX_EVENT_MS:  # acknowledged but unstorable otherwise
        raise MalformedEvent("EventInfo.EventMsTs is out of range")
    event_type = _int(body.get("EventType"), "EventType")
    if not 0 <= event_type < 2**31:
        raise MalformedEvent("EventType is out of range")
    return EngineEvent(
        event_type=event_type,
        task_id=task_id,
        event_ms_ts=event_ms_ts,
        room_id=room_id,
        room_id_type=_int(room_type, "RoomIdType") if room_type is not None else None,
        payload=normalise_payload(payload),
        raw=body,
    )
