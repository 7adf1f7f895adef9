"""POST /v1/chat/completions (and /chat/completions, which one engine page shows)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from proxy.api.deps import AuthenticatedCaller, ChatServiceDep, SettingsDep
from proxy.api.jsonresponse import ORJSONResponse
from proxy.api.relay import RelayResponse
from proxy.chat.profiles import select_profile
from proxy.chat.request import parse_body
from proxy.context.call import CallContext
from proxy.errors import BodyTooLarge, InvalidRequest

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
    body = parse_body(await read_body(request, settings.max_body_bytes))
    body, profile = select_profile(body, caller, request.app.state.catalog)
    call = CallContext.from_headers(request.headers)
    if body.get("stream"):
        return RelayResponse(service.stream(body, call, profile))
    return ORJSONResponse(await service.complete(body, call, profile))
