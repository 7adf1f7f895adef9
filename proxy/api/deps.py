"""Request dependencies, in one place: the services and the caller checks.

They are ``async def`` on purpose: FastAPI runs plain ``def`` dependencies in a thread
pool, which cost a thread hop each on every request (measured: the biggest single
overhead of the chat path)."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request
from starlette.requests import HTTPConnection

from proxy.access.catalog import Caller
from proxy.chat.service import ChatService
from proxy.errors import AuthenticationFailed
from proxy.services import services
from proxy.settings import Settings


async def get_settings(request: Request) -> Settings:
    return services(request).settings


async def get_chat_service(request: Request) -> ChatService:
    return services(request).chat


def bearer_token(request: HTTPConnection) -> str | None:  # a Request or a WebSocket
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def _matches(token: str, secret: str) -> bool:
    return hmac.compare_digest(token.encode(), secret.encode())


async def require_caller(request: Request) -> Caller:
    """The caller named by the bearer key (from memory: never waits on the database)."""
    caller = services(request).catalog.authenticate(bearer_token(request))
    if caller is None:
        raise AuthenticationFailed("missing or invalid API key (Authorization: Bearer <key>)")
    request.state.caller = caller
    return caller


async def require_admin(request: Request) -> None:
    admin = services(request).settings.admin_token
    token = bearer_token(request)
    if admin is None:
        raise AuthenticationFailed("the admin API is disabled: set PROXY_ADMIN_TOKEN")
    if token is None or not _matches(token, admin.get_secret_value()):
        raise AuthenticationFailed("missing or invalid admin token")


SettingsDep = Annotated[Settings, Depends(get_settings)]
ChatServiceDep = Annotated[ChatService, Depends(get_chat_service)]
CallerDep = Depends(require_caller)
AuthenticatedCaller = Annotated[Caller, Depends(require_caller)]
AdminDep = Depends(require_admin)
