"""Response ids that name a task and a turn.

``previous_response_id`` is how Responses API clients continue a conversation. The
proxy keeps the conversation as the task's history, so a response id carries the task
key and the request id of the turn that produced it: ``resp_<base64url(key\\nrequest)>``.
Both parts are printable ASCII without spaces (``proxy.call`` checks them), so the
newline separates them unambiguously. An id is not a secret: whoever holds it may
continue the task only within the tenant their key acts for (checked by the caller).
"""

from __future__ import annotations

import base64
import binascii
import re
import uuid
from dataclasses import dataclass

from proxy.call import MAX_TASK_KEY
from proxy.errors import InvalidRequest

PREFIX = "resp_"
MAX_REQUEST_ID = 128
_PART = re.compile(r"^[\x21-\x7e]+$")


@dataclass(frozen=True, slots=True)
class ResponseRef:
    task_key: str
    request_id: str

    @property
    def response_id(self) -> str:
        raw = f"{self.task_key}\n{self.request_id}".encode()
        return PREFIX + base64.urlsafe_b64encode(raw).decode().rstrip("=")


def new_task_id() -> str:
    """A task for a conversation that names none: continued by ``previous_response_id``."""
    return f"resp-{uuid.uuid4().hex}"


def new_request_id() -> str:
    return uuid.uuid4().hex


def parse_response_id(value: object, param: str = "previous_response_id") -> ResponseRef:
    """The task and turn a response id names; a clear 400 for anything else."""
    if not isinstance(value, str) or not value.startswith(PREFIX) or len(value) > 512:
        raise _not_ours(value, param)
    encoded = value[len(PREFIX) :]
    try:
        raw = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise _not_ours(value, param) from None
    task_key, sep, request_id = raw.partition("\n")
    if (
        not sep
        or not _PART.match(task_key)
        or not _PART.match(request_id)
        or len(task_key) > MAX_TASK_KEY
        or len(request_id) > MAX_REQUEST_ID
    ):
        raise _not_ours(value, param)
    return ResponseRef(task_key, request_id)


def _not_ours(value: object, param: str) -> InvalidRequest:
    shown = value[:80] if isinstance(value, str) else type(value).__name__
    return InvalidRequest(
        f"Previous response with id {shown!r} not found: it is not a response id this proxy issued",
        param=param,
        code="previous_response_not_found",
    )
