"""Who is calling: the engine's ``X-*`` headers for one chat request."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

# Header values end up in Redis keys and logs: keep them printable and bounded.
_SAFE_VALUE = re.compile(r"^[\x21-\x7e]{1,128}$")


def _header(headers: Mapping[str, str], *names: str) -> str | None:
    for name in names:
        value = headers.get(name)
        if value:
            value = value.strip()
            if _SAFE_VALUE.match(value):
                return value
            return None
    return None


@dataclass(frozen=True, slots=True)
class CallContext:
    task_id: str | None = None
    request_id: str | None = None
    app_id: str | None = None
    user_id: str | None = None
    room_id: str | None = None
    room_id_type: str | None = None

    @classmethod
    def from_headers(cls, headers: Mapping[str, str]) -> CallContext:
        """Read the engine's headers; one seed spells the request id ``X-Rquest-Id``."""
        return cls(
            task_id=_header(headers, "x-task-id"),
            request_id=_header(headers, "x-request-id", "x-rquest-id"),
            app_id=_header(headers, "x-sdk-app-id"),
            user_id=_header(headers, "x-user-id"),
            room_id=_header(headers, "x-room-id"),
            room_id_type=_header(headers, "x-room-id-type"),
        )

    @property
    def stateful(self) -> bool:
        return self.task_id is not None

    def log_fields(self) -> dict[str, str]:
        fields = {
            "task_id": self.task_id,
            "request_id": self.request_id,
            "app_id": self.app_id,
            "room_id": self.room_id,
        }
        return {key: value for key, value in fields.items() if value}
