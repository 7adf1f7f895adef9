"""POST /callbacks/trtc: the engine's signed server callbacks (901-909).

The ``SdkAppId`` header names the tenant: the event applies to the task key
``<SdkAppId>:<TaskId>``, as the engine's chat requests do. The signature covers the
body only, so an app with its own key (``callback_sign_keys``) is what makes the
header trustworthy; the shared ``callback_sign_key`` serves every other app. Once any
per-app key exists, a callback must name its app (else a shared-key callback with no
``SdkAppId`` could address any app's task), and a ``TaskId`` may never hold ``:``
(which would let it spell another app's task key).
"""

from __future__ import annotations

import logging
from dataclasses import replace

import orjson
from fastapi import APIRouter, Request

from proxy.api.chat import read_body
from proxy.api.deps import SettingsDep
from proxy.call import MAX_TASK_ID, task_key, valid_app_id
from proxy.errors import AuthenticationFailed, InvalidRequest, ServiceUnavailable
from proxy.services import services
from proxy.settings import Settings
from proxy.voice.events import MalformedEvent, parse_event
from proxy.voice.signing import verify

log = logging.getLogger(__name__)
router = APIRouter(tags=["callbacks"])

MAX_CALLBACK_BYTES = 256 * 1024


def _sign_key(settings: Settings, app_id: str | None) -> str:
    own = settings.callback_sign_keys.get(app_id) if app_id else None
    key = own or settings.callback_sign_key
    if key is not None:
        return key.get_secret_value()
    if settings.callback_sign_keys:
        raise AuthenticationFailed("no callback key for this SdkAppId", code="invalid_signature")
    raise ServiceUnavailable("callbacks are disabled: set PROXY_CALLBACK_SIGN_KEY")


@router.post("/callbacks/trtc", summary="TRTC Conversational AI server callbacks")
async def trtc_callback(request: Request, settings: SettingsDep) -> dict[str, int]:
    header = request.headers.get("sdkappid")
    app_id = valid_app_id(header)
    if header and app_id is None:
        raise InvalidRequest("the SdkAppId header is not a valid app id", param="SdkAppId")
    if app_id is None and settings.callback_sign_keys:
        raise InvalidRequest(
            "this proxy has per-app callback keys: name the app in the SdkAppId header",
            param="SdkAppId",
        )
    key = _sign_key(settings, app_id)
    raw = await read_body(request, MAX_CALLBACK_BYTES)
    if not verify(key, raw, request.headers.get("sign")):
        raise AuthenticationFailed("invalid callback signature", code="invalid_signature")
    try:
        event = parse_event(orjson.loads(raw))
    except orjson.JSONDecodeError:
        raise InvalidRequest("the callback body is not valid JSON") from None
    except MalformedEvent as exc:
        raise InvalidRequest(str(exc)) from None
    task_id = event.task_id
    # Liberal (any printable text, as JSON can carry it) but never a ':' (a task key).
    if ":" in task_id or not task_id.isprintable() or len(task_id) > MAX_TASK_ID:
        raise InvalidRequest(
            "TaskId must be printable, without ':', at most 256 characters", param="TaskId"
        )
    event = replace(event, task_id=task_key(app_id, event.task_id))
    await services(request).callbacks.handle(event, app_id)
    return {"code": 0}
