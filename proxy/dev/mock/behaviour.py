"""What the mock upstream sends: ``MockBehaviour`` and the OpenAI payloads it renders to.

A behaviour is resolved per request from (later wins) the server defaults, the next
scripted behaviour, the ``/s/<key=value,...>`` path scenario and the body's ``mock``
object. Rendering is pure: it turns a behaviour plus the request body into encoded SSE
events (each with the pause to take before it) or one JSON body, so the server only
sleeps and writes.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson


class BehaviourError(ValueError):
    """An override named an unknown key or carried a value of the wrong type."""


@dataclass(frozen=True, slots=True)
class MockBehaviour:
    """How the mock answers one chat completion request."""

    first_token_ms: float = 0.0  # pause before the first event (or the error / JSON body)
    gap_ms: float = 0.0  # pause between streamed chunks
    # Content pieces. The default reply is padded to have enough words; an explicit reply
    # shorter than ``chunks`` characters gets one piece per character.
    chunks: int = 20
    reply: str | None = None  # None: "Reply to: <last user text>" plus deterministic filler
    status: int | None = None  # >= 400: answer with it and an OpenAI error envelope
    retry_after: int = 1  # seconds, sent as Retry-After with status 429
    fail_after_chunks: int | None = None  # close the connection after N chunks, no [DONE]
    malformed_after_chunks: int | None = None  # emit "data: {not json" after N chunks
    hang: bool = False  # accept the request, never send a byte
    tool_calls: list[dict[str, Any]] | None = None  # [{"name", "arguments"}] instead of text
    reasoning: str | None = None  # streamed as reasoning_content before the content
    think_tags: bool = False  # the reasoning inside the content as <think>...</think>
    reasoning_ms: float = 0.0  # pause between the reasoning and the answer
    role_first: bool = False  # a role-only chunk at once, then first_token_ms to the text
    extra_fields: dict[str, Any] | None = None  # merged into every chunk / the JSON body
    meta_info: dict[str, Any] | None = None  # a "meta.info" event before the first chunk

    def merged(self, overrides: Mapping[str, Any]) -> MockBehaviour:
        """A copy with ``overrides`` applied; string values (from URLs) are parsed."""
        if not overrides:
            return self
        if not isinstance(overrides, Mapping):
            raise BehaviourError("mock overrides must be a JSON object")
        return dataclasses.replace(self, **{k: _coerce(k, v) for k, v in overrides.items()})


_KINDS: dict[str, type] = {
    "first_token_ms": float,
    "gap_ms": float,
    "chunks": int,
    "reply": str,
    "status": int,
    "retry_after": int,
    "fail_after_chunks": int,
    "malformed_after_chunks": int,
    "hang": bool,
    "tool_calls": list,
    "reasoning": str,
    "think_tags": bool,
    "reasoning_ms": float,
    "role_first": bool,
    "extra_fields": dict,
    "meta_info": dict,
}
_OPTIONAL = {f.name for f in dataclasses.fields(MockBehaviour) if f.default is None}
_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}


def _coerce(key: str, value: Any) -> Any:
    if key not in _KINDS:
        raise BehaviourError(f"unknown mock behaviour key {key!r}; known: {sorted(_KINDS)}")
    if value is None and key in _OPTIONAL:
        return None
    kind = _KINDS[key]
    try:
        if kind is bool:
            if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
                return value.lower() in _TRUE
            if isinstance(value, bool | int):
                return bool(value)
            raise ValueError(value)
        if kind in (list, dict) and isinstance(value, str):
            value = orjson.loads(value)  # structured values arrive JSON-encoded in URLs
        if kind is str:
            return str(value)
        coerced = kind(value)
    except (TypeError, ValueError) as exc:
        raise BehaviourError(
            f"mock behaviour {key}={value!r} is not a valid {kind.__name__}"
        ) from exc
    if kind in (int, float) and coerced < 0:
        raise BehaviourError(f"mock behaviour {key} must not be negative")
    return _normalise_tool_calls(coerced) if key == "tool_calls" else coerced


def _normalise_tool_calls(calls: list[Any]) -> list[dict[str, Any]]:
    normalised = []
    for call in calls:
        if not isinstance(call, dict) or "name" not in call:
            raise BehaviourError("each mock tool call needs at least a 'name'")
        arguments = call.get("arguments", "{}")
        if not isinstance(arguments, str):
            arguments = orjson.dumps(arguments).decode()
        normalised.append({**call, "name": str(call["name"]), "arguments": arguments})
    return normalised


@functools.lru_cache(maxsize=512)
def parse_scenario(text: str) -> dict[str, str]:
    """``"status=503,chunks=5"`` -> ``{"status": "503", "chunks": "5"}`` (cached; read-only)."""
    scenario: dict[str, str] = {}
    # Split only on commas that start a new key, so JSON values may contain commas.
    for item in re.split(r",(?=\s*\w+=)", text) if text else ():
        key, sep, value = item.partition("=")
        if not sep:
            raise BehaviourError(f"scenario item {item!r} is not key=value")
        scenario[key.strip()] = value
    MockBehaviour().merged(scenario)  # reject unknown keys and bad values up front
    return scenario


_WORD = re.compile(r"\s*\S+")
_FILLER = ["this", "is", "a", "deterministic", "mock", "reply", "streamed", "in", "small", "pieces"]


@functools.lru_cache(maxsize=1024)
def split_pieces(text: str, count: int) -> tuple[str, ...]:
    """Split ``text`` into ``count`` non-empty pieces (fewer only if text is shorter)."""
    if count <= 0 or not text:
        return ()
    words = _WORD.findall(text) or [text]
    consumed = sum(map(len, words))
    words[-1] += text[consumed:]  # keep trailing whitespace so pieces rejoin exactly
    units: list[str] = words if len(words) >= count else list(text)
    count = min(count, len(units))
    bounds = [len(units) * i // count for i in range(count + 1)]
    return tuple("".join(units[a:b]) for a, b in itertools.pairwise(bounds))


def last_user_text(messages: Any) -> str:
    for message in reversed(messages if isinstance(messages, list) else []):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):  # content parts: keep the text ones
                content = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
            return content if isinstance(content, str) else ""
    return ""


def default_reply(messages: Any, chunks: int) -> str:
    """The default reply: "Reply to: " and the last user message's first 16 words, padded
    with filler words to at least ``chunks`` words."""
    text = " ".join(["Reply", "to:", *last_user_text(messages).split()[:16]])
    missing = chunks - len(text.split())
    if missing > 0:
        text += " " + " ".join(itertools.islice(itertools.cycle(_FILLER), missing))
    return text


def prompt_tokens(messages: Any) -> int:
    """A cheap deterministic estimate (4 characters a token), not a real tokenizer."""
    chars = sum(
        len(m["content"])
        for m in (messages if isinstance(messages, list) else [])
        if isinstance(m, dict) and isinstance(m.get("content"), str)
    )
    return max(1, chars // 4)


DEFAULT_MODEL = "mock-model"
FINGERPRINT = "fp_mock"
DONE_EVENT = b"data: [DONE]\n\n"
MALFORMED_EVENT = b"data: {not json\n\n"


@dataclass(slots=True)
class StreamPlan:
    """Encoded SSE events, each with the seconds to pause before it."""

    events: list[tuple[float, bytes]]
    abort: bool  # close the connection after the events instead of finishing the stream


def _deltas(b: MockBehaviour, body: dict[str, Any], completion_id: str) -> list[dict[str, Any]]:
    """Every chunk's delta in order: reasoning, then tool calls or content."""
    count = max(b.chunks, 1)
    deltas: list[dict[str, Any]] = []
    if b.reasoning and b.think_tags:
        pieces = ("<think>", *split_pieces(b.reasoning, count), "</think>\n\n")
        deltas += [{"content": p} for p in pieces]
    elif b.reasoning:
        pieces = split_pieces(b.reasoning, count)
        deltas += [{"content": None, "reasoning_content": p} for p in pieces]
    if b.tool_calls:
        for index, call in enumerate(b.tool_calls):
            # OpenAI's shape: id, type and name first, then bare argument fragments.
            head = {"index": index, "id": _tool_call_id(call, completion_id, index)}
            function = {"name": call["name"], "arguments": ""}
            deltas.append(
                {
                    "content": None,
                    "tool_calls": [{**head, "type": "function", "function": function}],
                }
            )
            fragments = split_pieces(call["arguments"], count)
            deltas += [
                {"tool_calls": [{"index": index, "function": {"arguments": f}}]} for f in fragments
            ]
    else:
        deltas += [{"content": p} for p in content_pieces(b, body)]
    if deltas:
        deltas[0] = {"role": "assistant", **deltas[0]}
    return deltas


def _tool_call_id(call: dict[str, Any], completion_id: str, index: int) -> str:
    return str(call.get("id") or f"call_{completion_id.removeprefix('chatcmpl-')}_{index}")


def content_pieces(b: MockBehaviour, body: dict[str, Any]) -> tuple[str, ...]:
    text = b.reply if b.reply is not None else default_reply(body.get("messages"), b.chunks)
    return split_pieces(text, b.chunks)


def _usage(body: dict[str, Any], completion_tokens: int, cached: int) -> dict[str, Any]:
    prompt = prompt_tokens(body.get("messages"))
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": min(cached, prompt)},
    }


def render_stream(
    b: MockBehaviour, body: dict[str, Any], completion_id: str, created: int, cached: int = 0
) -> StreamPlan:
    head = {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": body.get("model") or DEFAULT_MODEL,
        "system_fingerprint": FINGERPRINT,
    }
    extra = b.extra_fields or {}

    def chunk(delta: dict[str, Any] | None, finish: str | None = None) -> bytes:
        choices = [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]
        return b"data: " + orjson.dumps({**head, "choices": choices, **extra}) + b"\n\n"

    events: list[tuple[float, bytes]] = []
    first_s, gap_s = b.first_token_ms / 1000, b.gap_ms / 1000
    paced_before = False
    if b.role_first:  # as OpenAI does: the role at once, the words when they come
        events.append((0.0, chunk({"role": "assistant", "content": ""})))
    started = False

    def add(data: bytes, paced: bool, extra_s: float = 0.0) -> None:
        # first_token_ms before the very first event, gap_ms before each later chunk.
        nonlocal paced_before, started
        pause = first_s if not started else gap_s if paced and paced_before else 0.0
        events.append((pause + extra_s, data))
        paced_before, started = paced_before or paced, True

    if b.meta_info is not None:
        meta = {"id": completion_id, "type": "meta.info", "created": created}
        add(b"data: " + orjson.dumps({**meta, "metainfo": b.meta_info}) + b"\n\n", False)
    deltas = _deltas(b, body, completion_id)
    answer_at = _reasoning_count(b) if b.reasoning_ms else None
    malformed_at, fail_at = (
        _at_most(b.malformed_after_chunks, deltas),
        _at_most(b.fail_after_chunks, deltas),
    )
    for sent in range(len(deltas) + 1):
        if sent == malformed_at:
            add(MALFORMED_EVENT, False)
        if sent == fail_at:
            return StreamPlan(events, abort=True)
        if sent < len(deltas):
            add(chunk(deltas[sent]), True, b.reasoning_ms / 1000 if sent == answer_at else 0.0)
    add(chunk({}, "tool_calls" if b.tool_calls else "stop"), True)
    if (body.get("stream_options") or {}).get("include_usage"):
        usage = _usage(body, len(deltas), cached)
        add(
            b"data: " + orjson.dumps({**head, "choices": [], "usage": usage, **extra}) + b"\n\n",
            False,
        )
    add(DONE_EVENT, False)
    return StreamPlan(events, abort=False)


def _reasoning_count(b: MockBehaviour) -> int:
    if not b.reasoning:
        return 0
    return len(split_pieces(b.reasoning, max(b.chunks, 1))) + (2 if b.think_tags else 0)


def _at_most(limit: int | None, deltas: list[Any]) -> int | None:
    return None if limit is None else min(limit, len(deltas))


def render_json(
    b: MockBehaviour, body: dict[str, Any], completion_id: str, created: int, cached: int = 0
) -> tuple[float, bytes]:
    """The non-streaming body and how long to "generate" it (as long as the stream takes)."""
    deltas = _deltas(b, body, completion_id)
    delay_s = (b.first_token_ms + b.reasoning_ms + b.gap_ms * len(deltas)) / 1000
    if b.malformed_after_chunks is not None:
        return delay_s, b"{not json"
    message: dict[str, Any] = {"role": "assistant", "content": None, "refusal": None}
    if b.reasoning and not b.think_tags:
        message["reasoning_content"] = b.reasoning
    if b.tool_calls:
        message["tool_calls"] = [
            {
                "id": _tool_call_id(call, completion_id, index),
                "type": "function",
                "function": {"name": call["name"], "arguments": call["arguments"]},
            }
            for index, call in enumerate(b.tool_calls)
        ]
    else:
        message["content"] = "".join(content_pieces(b, body))
    if b.reasoning and b.think_tags:
        message["content"] = f"<think>{b.reasoning}</think>\n\n{message['content'] or ''}"
    completion = {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": body.get("model") or DEFAULT_MODEL,
        "system_fingerprint": FINGERPRINT,
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": "tool_calls" if b.tool_calls else "stop",
                "logprobs": None,
            }
        ],
        "usage": _usage(body, len(deltas), cached),
        **(b.extra_fields or {}),
    }
    return delay_s, orjson.dumps(completion)


_ERROR_KINDS: dict[int, tuple[str, str | None]] = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("permission_error", "unsupported_country_region_territory"),
    404: ("invalid_request_error", "model_not_found"),
    429: ("requests", "rate_limit_exceeded"),
    500: ("server_error", None),
    502: ("server_error", "bad_gateway"),
    503: ("server_error", "service_unavailable"),
    504: ("server_error", "timeout"),
}


def error_body(status: int, message: str | None = None) -> bytes:
    """The OpenAI error envelope for ``status``."""
    kind, code = _ERROR_KINDS.get(
        status, ("server_error" if status >= 500 else "invalid_request_error", None)
    )
    error = {
        "message": message or f"mock upstream status {status}",
        "type": kind,
        "code": code,
        "param": None,
    }
    return orjson.dumps({"error": error})


def reported_usage(b: MockBehaviour, body: dict[str, Any], cached: int) -> dict[str, Any]:
    """The usage the mock reports for a request (its last chunk, or the completion), given
    the cached tokens its prompt cache found (``RecordedRequest.cached_tokens``)."""
    return _usage(body, len(_deltas(b, body, "chatcmpl-usage")), cached)
