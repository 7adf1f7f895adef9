"""POST /v1/chat/completions (and /chat/completions, which one engine page shows)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Coroutine
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from prometheus_client import Counter
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from proxy.api.deps import require_caller
from proxy.api.errors import error_response
from proxy.api.jsonresponse import ORJSONResponse
from proxy.api.relay import CLIENT_CLOSED, RelayResponse, cancel_on_disconnect
from proxy.call import CallContext
from proxy.chat.profiles import select_profile
from proxy.chat.request import parse_body
from proxy.chat.service import ChatService
from proxy.chat.sse import DONE_FRAME
from proxy.engines.adapt import adapt_request
from proxy.engines.variables import with_variables
from proxy.errors import BodyTooLarge, InvalidRequest, ProxyError
from proxy.metrics import ClosedLabels
from proxy.observability import tracing, turnlog
from proxy.services import services
from proxy.serving import request_connection
from proxy.usage import recorder as usage

log = logging.getLogger(__name__)

LOOP_TURNS_FOR_HANGUP = 2  # through ASGI: the read of EOF, then connection_lost (call_soon)
router = APIRouter()


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise InvalidRequest("invalid Content-Length header")
        if int(declared) > limit:
            raise BodyTooLarge(f"request body exceeds {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge(f"request body exceeds {limit} bytes")
            chunks.append(chunk)
    except ClientDisconnect:  # left mid-upload: a caller's doing, not an internal error
        raise InvalidRequest(
            "the client closed the connection before sending the whole body",
            code="client_disconnected",
        ) from None
    return b"".join(chunks)


async def caller_left(request: Request, call: CallContext) -> bool:
    """Whether the caller hung up before its turn started. A request that claims (it
    has a request id) first lets the loop poll its socket again: a hang-up that came
    with the request (a stalled replica reads both at once) is then known."""
    connection = request_connection(request.scope)
    if connection is None:  # another server: through ASGI, the EOF's read, then its close
        if call.request_id is not None:
            for _ in range(LOOP_TURNS_FOR_HANGUP):
                await asyncio.sleep(0)
        return await request.is_disconnected()
    if call.request_id is not None:
        # One trip: the loop reads the socket again (a read of the request's bytes stops
        # short of the EOF behind them), and ``eof_received`` marks the request at once.
        await asyncio.sleep(0)
    return connection.gone


class RequestCount:
    """``proxy_requests_total`` for one request: by route, model and the status it got."""

    def __init__(self, counter: ClosedLabels[Counter], route: str) -> None:
        self.counter, self.route, self.model = counter, route, ""

    def done(self, status: int) -> None:
        self.counter.labels(self.route, self.model, str(status)).inc()

    async def stream(
        self, opening: Coroutine[Any, Any, AsyncIterator[bytes]]
    ) -> AsyncIterator[bytes]:
        """Counts a stream by its status: 200, or its error before the first byte."""
        try:
            frames = await opening
        except ProxyError as exc:
            self.done(exc.status)
            raise
        self.done(200)
        return frames


CHAT_PATHS = frozenset({"/v1/chat/completions", "/chat/completions"})


@router.post("/v1/chat/completions", include_in_schema=True, summary="Chat completions")
@router.post("/chat/completions", include_in_schema=False)
async def chat_completions(request: Request) -> Response:
    """Documents the endpoint; requests are served by ``ProxyApp.chat_path`` first."""
    return await handle_chat(request)


async def handle_chat(request: Request) -> Response:
    received_at = time.perf_counter()
    state = services(request)
    count = RequestCount(state.metrics.requests, request.scope["path"])
    try:
        caller = await require_caller(request)
        state.concurrency.enter()
    except ProxyError as exc:
        count.done(exc.status)
        raise
    service: ChatService = state.chat
    streaming = False
    try:
        call = CallContext.from_headers(request.headers).for_tenant(caller.app_id)
        body = parse_body(await read_body(request, state.settings.max_body_bytes))
        engine = adapt_request(body)  # an engine's own fields never reach the upstream
        body, call = engine.body, engine.applied_to(call, caller.meta_info_events)
        body, profile = select_profile(body, caller, state.catalog)
        profile = with_variables(profile, engine.variables)
        await state.rate_limiter.check(caller)
        await state.budgets.check(caller, call.app_id)
        count.model = str(body["model"])
        usage.bind(state.usage, usage.owner_for(caller, call, count.model))
        turnlog.identify(call.task_id, count.model)
        tracing.annotate_turn(
            model=count.model,
            task_key=call.task_id,
            app_id=call.app_id,
            key_name=caller.name,
            body=body,
        )
        if call.task_id is not None and await caller_left(request, call):
            # Read only after its caller gave up (a stalled replica): never claimed, so
            # it cannot take over the retry that the engine listens to.
            service.left_before_start(body, call)
            raise InvalidRequest(
                "the client closed the connection before the reply",
                code="client_disconnected",
                status=CLIENT_CLOSED,
            )
        if body.get("stream"):
            opening = count.stream(service.stream(body, call, profile, received_at))
            streaming = True  # the response leaves the gate when it ends
            return RelayResponse(
                opening,
                on_close=state.concurrency.leave,
                on_unstarted=count.done,
                final_frame=DONE_FRAME,
            )
        # A caller that leaves (the engine's Timeout) must not keep the upstream busy.
        completion = await cancel_on_disconnect(
            request.receive,
            service.complete(body, call, profile),
            request_connection(request.scope),
        )
        count.done(200)
        usage.report_completion(completion)
        return ORJSONResponse(completion)
    except ProxyError as exc:
        count.done(exc.status)
        raise
    finally:
        if not streaming:
            state.concurrency.leave()


class ProxyApp(FastAPI):
    """The application, with chat completions on a short path.

    ``POST /v1/chat/completions`` (and ``/chat/completions``) goes from the server
    straight to ``chat_path`` (the access middleware around ``chat_endpoint``): none of
    FastAPI's and Starlette's layers (routing, dependency solving, exception middleware,
    FastAPI's per-request telemetry checks, which read the environment every time), about
    a third of the proxy's own CPU per request when measured. Everything else, and the
    OpenAPI documentation of the endpoint, stays with FastAPI.
    """

    chat_path: ASGIApp | None = None  # set by create_app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        chat = self.chat_path
        if (
            chat is not None
            and scope["type"] == "http"
            and scope["path"] in CHAT_PATHS
            and scope["method"] == "POST"
        ):
            scope["app"] = self  # what Starlette would set: request.app
            await chat(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


async def chat_endpoint(scope: Scope, receive: Receive, send: Send) -> None:
    """``handle_chat`` as a bare ASGI app: errors leave as OpenAI-style envelopes."""
    request = Request(scope, receive)
    try:
        response = await handle_chat(request)
    except ProxyError as exc:
        response = error_response(exc)
    except Exception:
        log.exception("unexpected error handling a chat request")
        response = error_response(ProxyError("internal error"))
    await response(scope, receive, send)
