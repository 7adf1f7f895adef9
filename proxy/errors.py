"""One exception tree; every error a caller sees is an OpenAI error envelope.

    {"error": {"message": ..., "type": ..., "code": ..., "param": ...}}

Raise a ``ProxyError`` subclass anywhere below the API layer; ``api.errors`` turns
it into a response before the first byte, ``chat.sse`` into an SSE error event after.
"""

from __future__ import annotations

from typing import Any


class ProxyError(Exception):
    status: int = 500
    error_type: str = "server_error"
    code: str | None = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        status: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.param = param
        self.headers = headers or {}

    def envelope(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.error_type,
                "code": self.code,
                "param": self.param,
            }
        }


class InvalidRequest(ProxyError):
    status = 400
    error_type = "invalid_request_error"
    code = "invalid_request"


class BodyTooLarge(InvalidRequest):
    status = 413
    code = "body_too_large"


class AuthenticationFailed(ProxyError):
    status = 401
    error_type = "authentication_error"
    code = "invalid_api_key"


class NotFound(ProxyError):
    status = 404
    error_type = "invalid_request_error"
    code = "not_found"


class ServiceUnavailable(ProxyError):
    status = 503
    error_type = "server_error"
    code = "service_unavailable"


class UpstreamError(ProxyError):
    """The upstream failed. ``retryable`` errors move on to the next target."""

    status = 502
    error_type = "upstream_error"
    code = "upstream_failure"
    retryable = True


class UpstreamRateLimited(UpstreamError):
    status = 429
    error_type = "rate_limit_error"
    code = "rate_limit_exceeded"


class UpstreamTimeout(UpstreamError):
    status = 504
    error_type = "timeout_error"
    code = "upstream_timeout"


class UpstreamRejected(UpstreamError):
    """A 4xx other than 429: the request itself is wrong; another target would agree."""

    error_type = "invalid_request_error"
    code = "upstream_rejected"
    retryable = False


class PermissionDenied(ProxyError):
    status = 403
    error_type = "permission_error"
    code = "permission_denied"


class RateLimited(ProxyError):
    """This caller's key is over its per-minute limit (across all replicas)."""

    status = 429
    error_type = "rate_limit_error"
    code = "rate_limit_exceeded"


class Overloaded(ProxyError):
    status = 503
    error_type = "server_error"
    code = "server_overloaded"


class Conflict(ProxyError):
    """The change clashes with what exists (a config-declared entity, a taken name)."""

    status = 409
    error_type = "invalid_request_error"
    code = "conflict"
