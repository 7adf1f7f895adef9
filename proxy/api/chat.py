"""POST /v1/chat/completions (and /chat/completions, which one engine page shows)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from starlette.responses import Response

from proxy.api.deps import AuthenticatedCaller, ChatServiceDep, SettingsDep
from proxy.api.jsonresponse import ORJSONResponse
from proxy.api.relay import RelayResponse
from proxy.chat.profiles import select_profile
from proxy.chat.request import parse_body
from proxy.context.call import CallContext
from proxy.errors import BodyTooLarge, InvalidRequest, ProxyError

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
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"request body exceeds {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


@router.post("/v1/chat/completions", include_in_schema=True, summary="Chat completions")
@router.post("/chat/completions", include_in_schema=False)
async def chat_completions(
    request: Request, service: ChatServiceDep, settings: SettingsDep, caller: AuthenticatedCaller
) -> Response:
    received_at = time.perf_counter()
    route = request.url.path
    requests = request.app.state.metrics.requests
    try:
        body = parse_body(await read_body(request, settings.max_body_bytes))
        body, profile = select_profile(body, caller, request.app.state.catalog)
    except ProxyError as exc:
        requests.labels(route, "", str(exc.status)).inc()
        raise
    model = str(body["model"])
    call = CallContext.from_headers(request.headers)
    if body.get("stream"):

        async def open_stream() -> AsyncIterator[bytes]:
            try:
                frames = await service.stream(body, call, profile, received_at)
            except ProxyError as exc:
                requests.labels(route, model, str(exc.status)).inc()
                raise
            requests.labels(route, model, "200").inc()
            return frames

        return RelayResponse(open_stream())
    try:
        completion = await service.complete(body, call, profile)
    except ProxyError as exc:
        requests.labels(route, model, str(exc.status)).inc()
        raise
    requests.labels(route, model, "200").inc()
    return ORJSONResponse(completion)
