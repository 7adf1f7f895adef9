"""POST /callbacks/trtc: the engine's signed server callbacks (901-909)."""

from __future__ import annotations

import logging

import orjson
from fastapi import APIRouter, Request

from proxy.api.chat import read_body
from proxy.api.deps import SettingsDep
from proxy.errors import AuthenticationFailed, InvalidRequest, ServiceUnavailable
from proxy.voice.events import MalformedEvent, parse_event
from proxy.voice.signing import verify

log = logging.getLogger(__name__)
router = APIRouter(tags=["callbacks"])

MAX_CALLBACK_BYTES = 256 * 1024


@router.post("/callbacks/trtc", summary="TRTC Conversational AI server callbacks")
async def trtc_callback(request: Request, settings: SettingsDep) -> dict[str, int]:
    key = settings.callback_sign_key
    if key is None:
        raise ServiceUnavailable("callbacks are disabled: set PROXY_CALLBACK_SIGN_KEY")
    raw = await read_body(request, MAX_CALLBACK_BYTES)
    if not verify(key.get_secret_value(), raw, request.headers.get("sign")):
        raise AuthenticationFailed("invalid callback signature", code="invalid_signature")
    try:
        event = parse_event(orjson.loads(raw))
    except orjson.JSONDecodeError:
        raise InvalidRequest("the callback body is not valid JSON") from None
    except MalformedEvent as exc:
        raise InvalidRequest(str(exc)) from None
    await request.app.state.callbacks.handle(event, request.headers.get("sdkappid"))
    return {"code": 0}
