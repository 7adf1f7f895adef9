"""The engine's callback signature: ``Sign = base64(HMAC-SHA256(key, raw body))``."""

from __future__ import annotations

import base64
import hashlib
import hmac


def sign(key: str, body: bytes) -> str:
    digest = hmac.new(key.encode(), body, hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def verify(key: str, body: bytes, signature: str | None) -> bool:
    """Constant-time check of a ``Sign`` header against the raw body."""
    if not signature:
        return False
    return hmac.compare_digest(sign(key, body).encode(), signature.strip().encode())
