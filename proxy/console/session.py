"""Console sessions: a signed, expiring cookie, and a CSRF token bound to it.

The signing key is derived from the admin token, so every replica accepts the same
sessions with no extra secret to configure, and changing the admin token ends every
session. The cookie holds no token, only an expiry and a random session id, signed with
HMAC-SHA256; forms carry a CSRF token derived from the session id.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass

COOKIE = "console_session"
LIFETIME_SECONDS = 12 * 3600


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True, slots=True)
class Session:
    session_id: str
    expires_at: int
    csrf: str


class SessionSigner:
    def __init__(self, admin_token: str) -> None:
        self._key = hmac.new(
            admin_token.encode(), b"voice-llm-proxy console session v1", hashlib.sha256
        ).digest()

    def _sign(self, message: bytes) -> bytes:
        return hmac.new(self._key, message, hashlib.sha256).digest()

    def _csrf(self, session_id: str) -> str:
        return _b64(self._sign(b"csrf:" + session_id.encode()))

    def issue(self, now: float | None = None) -> tuple[str, Session]:
        """(cookie value, session)."""
        expires = int((now if now is not None else time.time()) + LIFETIME_SECONDS)
        session_id = secrets.token_urlsafe(18)
        payload = _b64(json.dumps({"sid": session_id, "exp": expires}).encode())
        value = payload + "." + _b64(self._sign(payload.encode()))
        return value, Session(session_id, expires, self._csrf(session_id))

    def read(self, value: str | None, now: float | None = None) -> Session | None:
        """The session a cookie value names, if it is authentic and not expired."""
        if not value or value.count(".") != 1 or len(value) > 512:
            return None
        payload, signature = value.split(".")
        try:
            valid = hmac.compare_digest(_unb64(signature), self._sign(payload.encode()))
            data = json.loads(_unb64(payload)) if valid else None
        except (ValueError, TypeError):
            return None
        if not isinstance(data, dict):
            return None
        session_id, expires = data.get("sid"), data.get("exp")
        if not isinstance(session_id, str) or not isinstance(expires, int):
            return None
        if expires <= (now if now is not None else time.time()):
            return None
        return Session(session_id, expires, self._csrf(session_id))

    @staticmethod
    def csrf_matches(session: Session, submitted: str | None) -> bool:
        return submitted is not None and hmac.compare_digest(session.csrf, submitted)

    @staticmethod
    def token_matches(admin_token: str, submitted: str) -> bool:
        return hmac.compare_digest(admin_token.encode(), submitted.encode())
