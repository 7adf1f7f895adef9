"""POST /v1/responses: the Responses API subset, served by the chat pipeline."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import replace

from fastapi import APIRouter, Request
from starlette.responses import Response

from proxy.api.chat import RequestCount, read_body
from proxy.api.deps import require_caller
from proxy.api.jsonresponse import ORJSONResponse
from proxy.api.relay import RelayResponse, cancel_on_disconnect
from proxy.call import CallContext
from proxy.chat.chunks import chunk_events
from proxy.chat.profiles import select_profile
from proxy.chat.service import ChatService
from proxy.errors import ProxyError
from proxy.observability import tracing, turnlog
from proxy.responses.conversation import resolve_turn
from proxy.responses.events import ResponseEventStream, ResponseShell, from_completion
from proxy.responses.references import resolve_references
from proxy.responses.request import load_body, to_chat_request
from proxy.services import services
from proxy.serving import request_connection
from proxy.usage import recorder as usage

router = APIRouter()
PATH = "/v1/responses"


@router.post(PATH, summary="Responses (text and function tools, over chat completions)")
async def create_response(request: Request) -> Response:
    received_at = time.perf_counter()
    state = services(request)
    count = RequestCount(state.metrics.requests, PATH)
    try:
        caller = await require_caller(request)
        state.concurrency.enter()
    except ProxyError as exc:
        count.done(exc.status)
        raise
    service: ChatService = state.chat
    streaming = False
    try:
        # meta.info has no place in this protocol: a queued one waits for a chat reply.
        headers = replace(CallContext.from_headers(request.headers), meta_info_capable=False)
        raw = load_body(await read_body(request, state.settings.max_body_bytes))
        store_wait = state.settings.redis_timeout_ms / 1000
        await resolve_references(raw, caller, state.history, store_wait)
        parsed = to_chat_request(raw)
        body, profile = select_profile(parsed.chat_body, caller, state.catalog)
        await state.rate_limiter.check(caller)
        count.model = str(body["model"])
        turn = await resolve_turn(parsed, headers, caller, state.history, store_wait)
        await state.budgets.check(caller, turn.call.app_id)
        usage.bind(state.usage, usage.owner_for(caller, turn.call, count.model))
        turnlog.identify(turn.call.task_id, count.model)
        tracing.annotate_turn(
            model=count.model,
            task_key=turn.call.task_id,
            app_id=turn.call.app_id,
            key_name=caller.name,
            body=body,
        )
        shell = ResponseShell(turn.response_id, str(body["model"]), parsed.echo)
        if parsed.stream:

            async def opening() -> AsyncIterator[bytes]:
                frames = await service.stream(body, turn.call, profile, received_at)
                return ResponseEventStream(shell).frames(chunk_events(frames))

            streaming = True  # the response leaves the gate when it ends
            return RelayResponse(
                count.stream(opening()), on_close=state.concurrency.leave, on_unstarted=count.done
            )
        completion = await cancel_on_disconnect(
            request.receive,
            service.complete(body, turn.call, profile),
            request_connection(request.scope),
        )
        count.done(200)
        usage.report_completion(completion)
        return ORJSONResponse(from_completion(shell, completion))
    except ProxyError as exc:
        count.done(exc.status)
        raise
    finally:
        if not streaming:
            state.concurrency.leave()
