"""Which task and turn a Responses API request is: ``X-Task-Id``, ``previous_response_id``,
or a new conversation.

- ``X-Task-Id`` names the task, as on chat completions (an engine or framework that
  keeps its own conversation key).
- ``previous_response_id`` names a task and its turn: the request continues that task.
  The proxy keeps one history per task, so only the task's latest response can be
  continued; an older one is refused (400) rather than answered from a history that
  holds turns the client did not choose.
- Neither: a new task, so that the reply can be continued later. ``store: false``
  without a task is stateless, as the caller asked.

The turn is the request id (``X-Request-Id``, or a new one): a retry that carries the
same id is replayed by the pipeline, and gets the same response id. A retry without it
(the openai SDK's own, after a timeout) resends the same input with the same
``previous_response_id``, after the timed-out attempt stored its user turn with no reply:
it may continue that response still, and the pipeline answers it as the same turn
(``proxy.chat.retried_turn``), its user turn stored once.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass, replace
from typing import Any

from proxy.access.catalog import Caller
from proxy.call import CallContext
from proxy.chat.retried_turn import retried_turn
from proxy.context.assembly import split_request
from proxy.context.history import HistoryStore, StoredMessage
from proxy.errors import InvalidRequest
from proxy.responses.ids import ResponseRef, new_request_id, new_task_id
from proxy.responses.request import ResponsesRequest

log = logging.getLogger(__name__)

RECENT_MESSAGES = 16  # enough to find the newest turn's request id behind tool messages


@dataclass(frozen=True, slots=True)
class ResponseTurn:
    call: CallContext
    response_id: str


async def resolve_turn(
    request: ResponsesRequest,
    headers: CallContext,
    caller: Caller,
    history: HistoryStore,
    store_timeout: float,
) -> ResponseTurn:
    call = headers.for_tenant(caller.app_id)
    request_id = call.request_id or new_request_id()
    call = replace(call, request_id=request_id)
    ref = request.previous
    if ref is not None:
        if caller.app_id and not ref.task_key.startswith(f"{caller.app_id}:"):
            raise _not_found(ref)  # another tenant's task: as if it did not exist
        if call.task_id is not None and call.task_id != ref.task_key:
            raise InvalidRequest(
                "previous_response_id belongs to another conversation than X-Task-Id",
                param="previous_response_id",
                code="previous_response_task_mismatch",
            )
        new_turn = split_request(request.chat_body["messages"]).new_turn
        await _check_latest(ref, request_id, new_turn, history, store_timeout)
        call = replace(call, task_id=ref.task_key)
    elif call.task_id is None and request.store:
        call = replace(headers, task_id=new_task_id(), request_id=request_id).for_tenant(
            caller.app_id
        )
    if call.task_id is None:
        return ResponseTurn(call, f"resp_{uuid.uuid4().hex}")
    return ResponseTurn(call, ResponseRef(call.task_id, request_id).response_id)


async def _check_latest(
    ref: ResponseRef,
    request_id: str,
    new_turn: list[dict[str, Any]],
    history: HistoryStore,
    wait_s: float,
) -> None:
    try:
        async with asyncio.timeout(wait_s):
            stored = await history.load(ref.task_key, RECENT_MESSAGES)
    except Exception as exc:  # the pipeline answers statelessly; it logs the outage
        log.warning("could not check previous_response_id: %r", exc)
        return
    latest = _latest_request_id(stored.messages)
    if latest is None:
        raise _not_found(ref)
    retried = retried_turn(stored, new_turn)  # a timed-out attempt of this very turn
    if retried is not None and _latest_request_id(stored.messages[:retried]) == ref.request_id:
        return
    if latest not in (ref.request_id, request_id):  # its own id: a retry of this request
        raise InvalidRequest(
            "previous_response_id must name the latest response of its conversation: the "
            "proxy keeps one history per conversation and cannot branch from an older one",
            param="previous_response_id",
            code="previous_response_not_latest",
        )


def _latest_request_id(messages: list[StoredMessage]) -> str | None:
    return next((m.request_id for m in reversed(messages) if m.request_id), None)


def _not_found(ref: ResponseRef) -> InvalidRequest:
    return InvalidRequest(
        f"Previous response with id {ref.response_id!r} not found (expired, or never stored)",
        param="previous_response_id",
        code="previous_response_not_found",
    )
