"""Who is calling: the engine's ``X-*`` headers for one chat request, and its tenant.

A task belongs to a tenant (the TRTC SdkAppId). The proxy keys everything it keeps for a
task (live history, replays, queued meta.info, the durable record) by the *task key*
``<app id>:<task id>``, so two tenants can never reach each other's task, even with
the same X-Task-Id. App ids hold no ``:``, which keeps the key unambiguous.

The headers that scope state are validated, never silently dropped: a request whose
``X-Task-Id``, ``X-Request-Id`` or ``X-Sdk-App-Id`` is not a valid id gets a 400
``invalid_request_error`` rather than a stateless answer (or a merged task).

A leaf of the package: settings, stores, the API and the CLI all read these ids, so this
module imports nothing from ``proxy`` but the error tree (itself a leaf). The unit test
``tests/unit/test_layers.py`` keeps it that way.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace

from proxy.errors import InvalidRequest, PermissionDenied

MAX_TASK_ID = 256
MAX_APP_ID = 64
MAX_TASK_KEY = MAX_APP_ID + 1 + MAX_TASK_ID

# Header values end up in Redis keys and logs: keep them printable and bounded.
_SAFE_VALUE = re.compile(r"^[\x21-\x7e]{1,128}$")
# A task or request id: printable ASCII without spaces, 1-256 characters.
ID_PATTERN = r"^[\x21-\x7e]{1,256}$"
_ID = re.compile(ID_PATTERN)
APP_ID_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"
_APP_ID = re.compile(APP_ID_PATTERN)


def valid_app_id(value: str | None) -> str | None:
    """The app id if it is one (letters, digits, ``_.-``; at most 64), else None."""
    value = value.strip() if value else None
    return value if value and _APP_ID.match(value) else None


def valid_task_id(value: str) -> bool:
    """Printable ASCII, no spaces, 1-256 characters (what a task or request id may be)."""
    return bool(_ID.match(value))


def _scoping_header(
    headers: Mapping[str, str], pattern: re.Pattern[str], *names: str
) -> str | None:
    """A header that scopes state: absent (or empty) is None, invalid is a 400."""
    for name in names:
        value = headers.get(name)
        if value is None or not value.strip():
            continue
        value = value.strip()
        if not pattern.match(value):
            what = (
                "letters, digits, '_', '.', '-'; at most 64"
                if pattern is _APP_ID
                else ("printable ASCII without spaces; at most 256 characters")
            )
            raise InvalidRequest(f"invalid {name} header ({what})", param=name)
        return value
    return None


def task_key(app_id: str | None, task_id: str) -> str:
    """Where a task's state lives: scoped by its tenant when one is known."""
    return f"{app_id}:{task_id}" if app_id else task_id


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
    task_id: str | None = None  # X-Task-Id; the task key once ``for_tenant`` has scoped it
    request_id: str | None = None
    app_id: str | None = None
    user_id: str | None = None
    room_id: str | None = None
    room_id_type: str | None = None
    # Which voice engine calls: "trtc" (its X-Sdk-App-Id / X-Room-Id headers), or the one an
    # engine adapter recognised in the body (proxy.engines); None for any other client.
    engine: str | None = None
    meta_info_events: str | None = None  # the caller key's override of PROXY_META_INFO_EVENTS
    # False where the caller's protocol has no place for meta.info (the Responses API):
    # the turn takes none from the task's queue (it waits for the next chat reply).
    meta_info_capable: bool = True

    @classmethod
    def from_headers(cls, headers: Mapping[str, str]) -> CallContext:
        """Read the engine's headers; one seed spells the request id ``X-Rquest-Id``.

        InvalidRequest if a task, request or app id header is present but invalid."""
        app_id = _scoping_header(headers, _APP_ID, "x-sdk-app-id")
        room_id = _header(headers, "x-room-id")
        return cls(
            task_id=_scoping_header(headers, _ID, "x-task-id"),
            request_id=_scoping_header(headers, _ID, "x-request-id", "x-rquest-id"),
            app_id=app_id,
            user_id=_header(headers, "x-user-id"),
            room_id=room_id,
            room_id_type=_header(headers, "x-room-id-type"),
            engine="trtc" if app_id or room_id else None,
        )

    def for_tenant(self, bound_app_id: str | None) -> CallContext:
        """The call as its tenant sees it: ``task_id`` becomes the task key.

        A key bound to an app acts for that app only (a different X-Sdk-App-Id is
        refused); an unbound key acts for the app the engine names, or for none.
        """
        if bound_app_id and self.app_id and self.app_id != bound_app_id:
            raise PermissionDenied(
                "this API key may not act for that X-Sdk-App-Id", code="app_id_mismatch"
            )
        app_id = bound_app_id or self.app_id
        if self.task_id is None:
            return self if app_id == self.app_id else replace(self, app_id=app_id)
        return replace(self, app_id=app_id, task_id=task_key(app_id, self.task_id))

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
