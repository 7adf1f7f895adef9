"""Every error leaves as an OpenAI envelope with a true status, never a traceback."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse

from proxy.errors import InvalidRequest, NotFound, ProxyError

log = logging.getLogger(__name__)

_STATUS_TYPES = {401: "authentication_error", 403: "permission_error", 404: "invalid_request_error"}


def error_response(error: ProxyError) -> JSONResponse:
    return JSONResponse(error.envelope(), status_code=error.status, headers=error.headers or None)


# What every error response is; OpenAPI documents it instead of FastAPI's ``{"detail"}``.
ERROR_ENVELOPE_SCHEMA: dict[str, Any] = {
    "title": "ErrorEnvelope",
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type", "code", "param"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "code": {"type": ["string", "null"]},
                "param": {"type": ["string", "null"]},
            },
        }
    },
}


def _document_envelope(app: FastAPI) -> None:
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schemas = generate().get("components", {}).get("schemas", {})
            if "HTTPValidationError" in schemas:  # what our 422 handler really sends
                schemas["HTTPValidationError"] = ERROR_ENVELOPE_SCHEMA
                schemas.pop("ValidationError", None)
        return app.openapi_schema or generate()

    app.openapi = openapi  # type: ignore[method-assign]


def install_error_handlers(app: FastAPI) -> None:
    _document_envelope(app)

    @app.exception_handler(ProxyError)
    async def proxy_error(request: Request, exc: ProxyError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        param = ".".join(str(part) for part in first.get("loc", ())[1:]) or None
        message = f"{first.get('msg', 'invalid request')}" + (f" ({param})" if param else "")
        error = InvalidRequest(message, param=param, status=422 if _is_admin(request) else 400)
        return error_response(error)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            return error_response(NotFound(f"no route for {request.method} {request.url.path}"))
        error = ProxyError(str(exc.detail), status=exc.status_code, code=f"http_{exc.status_code}")
        error.error_type = _STATUS_TYPES.get(exc.status_code, "invalid_request_error")
        return error_response(error)

    @app.exception_handler(Exception)
    async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error handling %s %s", request.method, request.url.path)
        return error_response(ProxyError("internal error"))


def _is_admin(request: Request) -> bool:
    return request.url.path.startswith("/admin")
