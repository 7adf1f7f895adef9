"""Reading a chat-completions body: permissive (unknown fields are kept and forwarded),
but strict about what the proxy itself relies on."""

from __future__ import annotations

from typing import Any

import orjson

from proxy.errors import InvalidRequest

ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})


def parse_body(raw: bytes) -> dict[str, Any]:
    body = load_json_object(raw)
    _check(body)
    return body


def load_json_object(raw: bytes) -> dict[str, Any]:
    """A request body that must be one JSON object (chat completions, responses)."""
    if not raw:
        raise InvalidRequest("the request body is empty; expected a JSON object")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"the request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidRequest("the request body must be a JSON object")
    return body


def _check(body: dict[str, Any]) -> None:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("'model' is required and must be a non-empty string", param="model")
    if not isinstance(body.get("stream", False), bool):
        raise InvalidRequest("'stream' must be a boolean", param="stream")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("'messages' must be a non-empty array", param="messages")
    for index, message in enumerate(messages):
        param = f"messages.{index}"
        if not isinstance(message, dict):
            raise InvalidRequest(f"{param} must be an object", param=param)
        role = message.get("role")
        if not isinstance(role, str) or role not in ROLES:  # a list or object is unhashable
            raise InvalidRequest(
                f"{param}.role must be one of {', '.join(sorted(ROLES))}", param=f"{param}.role"
            )
        content = message.get("content")
        if content is not None and not isinstance(content, str | list):
            raise InvalidRequest(
                f"{param}.content must be a string or an array of parts",
                param=f"{param}.content",
            )
        _check_tool_fields(message, param)
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise InvalidRequest("'stream_options' must be an object", param="stream_options")


def _check_tool_fields(message: dict[str, Any], param: str) -> None:
    """Fields the proxy stores, counts and shows back: wrong types would fail later (500)."""
    for field in ("name", "tool_call_id"):
        value = message.get(field)
        if value is not None and not isinstance(value, str):
            raise InvalidRequest(f"{param}.{field} must be a string", param=f"{param}.{field}")
    calls = message.get("tool_calls")
    if calls is None:
        return
    if not isinstance(calls, list):
        raise InvalidRequest(f"{param}.tool_calls must be an array", param=f"{param}.tool_calls")
    for index, call in enumerate(calls):
        where = f"{param}.tool_calls.{index}"
        if not isinstance(call, dict):
            raise InvalidRequest(f"{where} must be an object", param=where)
        function = call.get("function")
        if function is not None and not isinstance(function, dict):
            raise InvalidRequest(f"{where}.function must be an object", param=f"{where}.function")
