"""Request dependencies, in one place: the services and the caller checks."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request

from proxy.chat.service import ChatService
from proxy.errors import AuthenticationFailed
from proxy.settings import Settings


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_chat_service(request: Request) -> ChatService:
    return request.app.state.chat


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def _matches_any(token: str, secrets: list[str]) -> bool:
    # Compare against every key, constant-time, so timing reveals nothing.
    found = False
    for secret in secrets:
        found |= hmac.compare_digest(token.encode(), secret.encode())
    return found


def require_caller(request: Request) -> None:
    settings = get_settings(request)
    if not settings.auth_required:
        return
    token = bearer_token(request)
    keys = [key.get_secret_value() for key in settings.api_keys]
    if token is None or not _matches_any(token, keys):
        raise AuthenticationFailed("missing or invalid API key (Authorization: Bearer <key>)")


def require_admin(request: Request) -> None:
    admin = get_settings(request).admin_token
    token = bearer_token(request)
    if admin is None:
        raise AuthenticationFailed("the admin API is disabled: set PROXY_ADMIN_TOKEN")
    if token is None or not _matches_any(token, [admin.get_secret_value()]):
        raise AuthenticationFailed("missing or invalid admin token")


SettingsDep = Annotated[Settings, Depends(get_settings)]
ChatServiceDep = Annotated[ChatService, Depends(get_chat_service)]
CallerDep = Depends(require_caller)
AdminDep = Depends(require_admin)
