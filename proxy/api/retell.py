"""Retell's custom-LLM WebSocket: ``/retell/llm-websocket/{call_id}``.

Retell opens it for each call. The caller key comes as ``Authorization: Bearer`` or an
``api_key`` query parameter (Retell's dashboard only takes a URL); with no keys
configured the endpoint is open, like the chat endpoint.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson
from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from proxy.api.chat import RequestCount
from proxy.api.deps import bearer_token
from proxy.call import CallContext
from proxy.context.history import HistoryStore
from proxy.errors import ProxyError
from proxy.observability import turnlog
from proxy.retell.protocol import ProtocolError, parse_event
from proxy.retell.session import RetellCall, RetellSession
from proxy.services import services
from proxy.usage import recorder as usage

log = logging.getLogger(__name__)
router = APIRouter()
PATH = "/retell/llm-websocket/{call_id}"
POLICY_VIOLATION = 1008
TRY_AGAIN_LATER = 1013


@router.websocket(PATH)
async def retell_llm_websocket(websocket: WebSocket, call_id: str) -> None:
    state = services(websocket)
    settings = state.settings
    token = bearer_token(websocket) or websocket.query_params.get("api_key")
    caller = state.catalog.authenticate(token)
    if caller is None:
        await websocket.close(POLICY_VIOLATION, "missing or invalid API key")
        return
    try:
        await state.rate_limiter.check(caller)  # a call counts as one request of its key
    except ProxyError as exc:  # accepted first, so that Retell sees why (a 1013 close)
        await websocket.accept()
        await websocket.close(TRY_AGAIN_LATER, exc.message[:120])
        return
    call = CallContext.from_headers({"x-task-id": call_id})  # the header's rules for a task id
    if call.task_id is None:
        await websocket.close(POLICY_VIOLATION, "invalid call id")
        return
    profile_name = settings.retell_profile or caller.profile
    profile = state.catalog.profile(profile_name) if profile_name else None
    call = call.for_tenant(caller.app_id)
    begin = settings.retell_begin_message
    if begin and await _call_has_history(state.history, call, settings.redis_timeout_ms / 1000):
        begin = ""  # Retell reconnected mid-call: the agent does not greet again
    setup = RetellCall(call, profile, settings.retell_model, begin)
    count = RequestCount(state.metrics.requests, "/retell/llm-websocket")
    count.model = setup.model
    usage.bind(state.usage, usage.owner_for(caller, setup.call, setup.model))  # every turn
    await websocket.accept()
    lock = asyncio.Lock()  # the stream and the receive loop both send

    async def send(event: dict[str, Any]) -> None:
        async with lock:
            await websocket.send_text(orjson.dumps(event).decode())

    async def before_turn(turn: CallContext) -> None:
        """What the chat endpoint does per request: the budget, then usage and traces."""
        await state.budgets.check(caller, turn.app_id)
        usage.bind(state.usage, usage.owner_for(caller, turn, setup.model))
        turnlog.identify(turn.task_id, setup.model)

    spoken = state.spoken
    session = RetellSession(setup, state.chat, state.history, spoken, send, count.done, before_turn)
    log.info("Retell call connected", extra={"task_id": setup.call.task_id})
    try:
        await session.start()
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                break
            raw = message.get("text") or message.get("bytes") or b""
            if len(raw) > settings.max_body_bytes:
                log.warning("Retell message over %d bytes skipped", settings.max_body_bytes)
                continue
            try:
                event = parse_event(orjson.loads(raw))
            except (orjson.JSONDecodeError, ProtocolError) as exc:
                log.warning("Retell message skipped: %s", exc)
                continue
            await session.handle(event)
    except (OSError, WebSocketDisconnect):
        pass  # the connection dropped while sending: Retell reconnects if configured
    finally:
        await session.close()
        log.info("Retell call disconnected", extra={"task_id": setup.call.task_id})


async def _call_has_history(history: HistoryStore, call: CallContext, wait_s: float) -> bool:
    assert call.task_id is not None
    try:
        async with asyncio.timeout(wait_s):
            stored = await history.load(call.task_id, 1)
    except Exception as exc:  # unknown: greet (a new call is the common case)
        log.warning("could not read the Retell call's history: %r", exc)
        return False
    return stored.total_messages > 0 or bool(stored.messages)
