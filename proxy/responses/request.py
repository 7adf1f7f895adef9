"""A Responses API request (``POST /v1/responses``) as a chat-completions body.

The subset served is what the OpenAI Agents SDK, the openai SDKs' ``responses.create``
and the Vercel AI SDK's ``openai(model)`` send for text and function tools:

- ``input`` as a string or message items (text, and images by URL), ``instructions``;
- function tools, ``tool_choice``, ``function_call`` / ``function_call_output`` items;
- ``previous_response_id`` (the task's own history continues it), ``store``;
- sampling and length fields, ``text.format`` (as ``response_format``), ``metadata``.

Anything else (built-in tools, ``background``, ``conversation``, stored prompts, item
references, reasoning items, files) is refused with a 400 that names it, never ignored:
a client that relies on it must not get a silently different answer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from proxy.chat.request import load_json_object
from proxy.errors import InvalidRequest
from proxy.responses.ids import ResponseRef, parse_response_id

# Accepted and forwarded (or used) as described in ``to_chat_request``.
_FORWARDED = ("temperature", "top_p", "user", "parallel_tool_calls")
# Accepted and dropped: they tune OpenAI's own service, not the answer.
_DROPPED = frozenset(
    {"service_tier", "prompt_cache_key", "safety_identifier", "stream_options", "truncation"}
)
_HANDLED = frozenset(
    {
        "model",
        "input",
        "instructions",
        "stream",
        "tools",
        "tool_choice",
        "previous_response_id",
        "max_output_tokens",
        "metadata",
        "store",
        "text",
        "reasoning",
        "include",
        "top_logprobs",
        "profile",  # the proxy's own: choose an agent profile, as on chat completions
        *_FORWARDED,
    }
)
_MESSAGE_ROLES = frozenset({"user", "system", "developer", "assistant"})
_TEXT_PARTS = frozenset({"input_text", "output_text", "text"})


@dataclass(slots=True)
class ResponsesRequest:
    chat_body: dict[str, Any]  # what the chat pipeline gets
    stream: bool
    previous: ResponseRef | None
    store: bool
    echo: dict[str, Any] = field(default_factory=dict)  # request fields the response repeats


def load_body(raw: bytes) -> dict[str, Any]:
    return load_json_object(raw)


def to_chat_request(body: dict[str, Any]) -> ResponsesRequest:
    _refuse_unsupported(body)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("'model' is required and must be a non-empty string", param="model")
    stream = body.get("stream")
    stream = False if stream is None else stream
    if not isinstance(stream, bool):
        raise InvalidRequest("'stream' must be a boolean", param="stream")
    store = body.get("store")
    if store is not None and not isinstance(store, bool):
        raise InvalidRequest("'store' must be a boolean", param="store")
    previous = body.get("previous_response_id")
    ref = parse_response_id(previous) if previous is not None else None

    messages: list[dict[str, Any]] = []
    instructions = body.get("instructions")
    if instructions is not None:
        if not isinstance(instructions, str):
            raise InvalidRequest("'instructions' must be a string", param="instructions")
        if instructions:
            messages.append({"role": "system", "content": instructions})
    messages += input_messages(body.get("input"))
    if not any(m["role"] not in ("system", "developer") for m in messages):
        raise InvalidRequest("'input' must hold at least one message or item", param="input")

    chat: dict[str, Any] = {"model": model, "messages": messages, "stream": stream}
    if stream:
        chat["stream_options"] = {"include_usage": True}
    for name in _FORWARDED:
        if body.get(name) is not None:
            chat[name] = body[name]
    if body.get("max_output_tokens") is not None:
        limit = body["max_output_tokens"]
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            raise InvalidRequest(
                "'max_output_tokens' must be a positive integer", param="max_output_tokens"
            )
        chat["max_tokens"] = body["max_output_tokens"]
    if body.get("tools"):
        chat["tools"] = chat_tools(body["tools"])
    if body.get("tool_choice") is not None:
        chat["tool_choice"] = chat_tool_choice(body["tool_choice"])
    response_format = _response_format(body.get("text"))
    if response_format is not None:
        chat["response_format"] = response_format
    effort = _reasoning_effort(body.get("reasoning"))
    if effort is not None:
        chat["reasoning_effort"] = effort
    if "profile" in body:  # checked where chat completions check it (select_profile)
        chat["profile"] = body["profile"]
    metadata = body.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise InvalidRequest("'metadata' must be an object", param="metadata")
    echo = {
        "instructions": instructions,
        "max_output_tokens": body.get("max_output_tokens"),
        "metadata": metadata or {},
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "previous_response_id": previous,
        "reasoning": body.get("reasoning") or {"effort": None, "summary": None},
        "temperature": body.get("temperature"),
        "text": body.get("text") or {"format": {"type": "text"}},
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": body.get("tools") or [],
        "top_p": body.get("top_p"),
        "truncation": body.get("truncation") or "disabled",
        "user": body.get("user"),
        "store": store is not False,
    }
    return ResponsesRequest(chat, stream, ref, store is not False, echo)


def _refuse_unsupported(body: dict[str, Any]) -> None:
    for name, value in body.items():
        if name in _HANDLED or name in _DROPPED:
            continue
        if value is None or value is False or value in ([], {}):
            continue  # an SDK sending a default it did not set
        raise InvalidRequest(
            f"'{name}' is not supported by this proxy's Responses API (it serves text, "
            "function tools and previous_response_id over chat-completions upstreams)",
            param=name,
            code="unsupported_parameter",
        )
    include = body.get("include")
    if include:
        raise InvalidRequest(
            f"'include' values are not supported: {include!r}",
            param="include",
            code="unsupported_parameter",
        )
    if body.get("top_logprobs"):
        raise InvalidRequest(
            "'top_logprobs' is not supported", param="top_logprobs", code="unsupported_parameter"
        )


def input_messages(value: Any) -> list[dict[str, Any]]:
    """``input`` as chat messages; function calls join the assistant message before them."""
    if value is None:
        return []
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    if not isinstance(value, list):
        raise InvalidRequest("'input' must be a string or an array of items", param="input")
    messages: list[dict[str, Any]] = []
    for index, item in enumerate(value):
        param = f"input.{index}"
        if not isinstance(item, dict):
            raise InvalidRequest(f"{param} must be an object", param=param)
        kind = item.get("type") or ("message" if "role" in item else None)
        if kind == "message":
            messages.append(_message(item, param))
        elif kind == "function_call":
            _add_function_call(messages, item, param)
        elif kind == "function_call_output":
            messages.append(_function_output(item, param))
        else:
            raise InvalidRequest(
                f"{param}: input items of type {kind!r} are not supported (message, "
                "function_call and function_call_output are)",
                param=f"{param}.type",
                code="unsupported_input_item",
            )
    return messages


def _message(item: dict[str, Any], param: str) -> dict[str, Any]:
    role = item.get("role")
    if role not in _MESSAGE_ROLES:
        raise InvalidRequest(
            f"{param}.role must be one of {', '.join(sorted(_MESSAGE_ROLES))}",
            param=f"{param}.role",
        )
    content = item.get("content")
    if isinstance(content, str):
        return {"role": role, "content": content}
    if not isinstance(content, list):
        raise InvalidRequest(
            f"{param}.content must be a string or an array of parts", param=f"{param}.content"
        )
    parts: list[dict[str, Any]] = []
    for number, part in enumerate(content):
        parts.append(_content_part(part, role, f"{param}.content.{number}"))
    if all(p["type"] == "text" for p in parts):  # plain text: stored and matched as such
        return {"role": role, "content": "".join(p["text"] for p in parts)}
    return {"role": role, "content": parts}


def _content_part(part: Any, role: str, where: str) -> dict[str, Any]:
    kind = part.get("type") if isinstance(part, dict) else None
    if isinstance(part, dict):
        if kind in _TEXT_PARTS and isinstance(part.get("text"), str):
            return {"type": "text", "text": part["text"]}
        if kind == "input_image" and role == "user" and isinstance(part.get("image_url"), str):
            image: dict[str, Any] = {"url": part["image_url"]}
            if part.get("detail") in ("low", "high", "auto"):
                image["detail"] = part["detail"]
            return {"type": "image_url", "image_url": image}
    raise InvalidRequest(
        f"{where}: content parts of type {kind!r} are not supported here (text, "
        "and user images by URL, are)",
        param=where,
        code="unsupported_content",
    )


def _add_function_call(messages: list[dict[str, Any]], item: dict[str, Any], param: str) -> None:
    call_id, name, arguments = item.get("call_id"), item.get("name"), item.get("arguments")
    if not isinstance(call_id, str) or not call_id:
        raise InvalidRequest(f"{param}.call_id must be a string", param=f"{param}.call_id")
    if not isinstance(name, str) or not name:
        raise InvalidRequest(f"{param}.name must be a string", param=f"{param}.name")
    if not isinstance(arguments, str):
        raise InvalidRequest(f"{param}.arguments must be a string", param=f"{param}.arguments")
    call = {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}
    last = messages[-1] if messages else None
    if last is not None and last["role"] == "assistant":
        last.setdefault("tool_calls", []).append(call)
    else:
        messages.append({"role": "assistant", "content": None, "tool_calls": [call]})


def _function_output(item: dict[str, Any], param: str) -> dict[str, Any]:
    call_id, output = item.get("call_id"), item.get("output")
    if not isinstance(call_id, str) or not call_id:
        raise InvalidRequest(f"{param}.call_id must be a string", param=f"{param}.call_id")
    if isinstance(output, list):  # an array of output parts: text only
        texts = [p.get("text") for p in output if isinstance(p, dict)]
        if len(texts) != len(output) or not all(isinstance(t, str) for t in texts):
            raise InvalidRequest(
                f"{param}.output parts must be text",
                param=f"{param}.output",
                code="unsupported_content",
            )
        output = "".join(texts)  # type: ignore[arg-type]
    if not isinstance(output, str):
        raise InvalidRequest(f"{param}.output must be a string", param=f"{param}.output")
    return {"role": "tool", "tool_call_id": call_id, "content": output}


def chat_tools(tools: Any) -> list[dict[str, Any]]:
    if not isinstance(tools, list):
        raise InvalidRequest("'tools' must be an array", param="tools")
    out: list[dict[str, Any]] = []
    for index, tool in enumerate(tools):
        param = f"tools.{index}"
        if not isinstance(tool, dict) or tool.get("type") != "function":
            kind = tool.get("type") if isinstance(tool, dict) else None
            raise InvalidRequest(
                f"{param}: tools of type {kind!r} are not supported (function tools are)",
                param=f"{param}.type",
                code="unsupported_tool",
            )
        name = tool.get("name")
        if not isinstance(name, str) or not name:
            raise InvalidRequest(f"{param}.name must be a string", param=f"{param}.name")
        function: dict[str, Any] = {"name": name}
        for key in ("description", "parameters", "strict"):
            if tool.get(key) is not None:
                function[key] = tool[key]
        out.append({"type": "function", "function": function})
    return out


def chat_tool_choice(choice: Any) -> Any:
    if choice in ("auto", "none", "required"):
        return choice
    if (
        isinstance(choice, dict)
        and choice.get("type") == "function"
        and isinstance(choice.get("name"), str)
    ):
        return {"type": "function", "function": {"name": choice["name"]}}
    raise InvalidRequest(
        "'tool_choice' must be auto, none, required or a function tool",
        param="tool_choice",
        code="unsupported_tool",
    )


def _response_format(text: Any) -> dict[str, Any] | None:
    if text is None:
        return None
    if not isinstance(text, dict):
        raise InvalidRequest("'text' must be an object", param="text")
    fmt = text.get("format")
    if fmt is None or (isinstance(fmt, dict) and fmt.get("type") == "text"):
        return None
    if isinstance(fmt, dict) and fmt.get("type") == "json_object":
        return {"type": "json_object"}
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        schema = {k: fmt[k] for k in ("name", "schema", "strict", "description") if k in fmt}
        return {"type": "json_schema", "json_schema": schema}
    raise InvalidRequest(
        "'text.format' must be text, json_object or json_schema", param="text.format"
    )


def _reasoning_effort(reasoning: Any) -> str | None:
    if reasoning is None:
        return None
    if not isinstance(reasoning, dict):
        raise InvalidRequest("'reasoning' must be an object", param="reasoning")
    if reasoning.get("summary") or reasoning.get("generate_summary"):
        raise InvalidRequest(
            "reasoning summaries are not supported",
            param="reasoning.summary",
            code="unsupported_parameter",
        )
    effort = reasoning.get("effort")
    return effort if isinstance(effort, str) else None
