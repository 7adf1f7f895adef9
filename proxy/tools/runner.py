"""Run the model's tool calls: POST each call's arguments to its tool's URL.

A call never raises: whatever goes wrong (arguments that are not JSON, an unknown
tool, a blocked URL, a timeout, an HTTP error) becomes an error ``ToolResult``
phrased for the model, which tells the user. Argument values, responses and
secrets are never logged: only the tool's name, the outcome and the time taken.

SSRF: a tool that may not reach private networks is called through a connector
whose resolver refuses non-public addresses (``proxy.net.guard``), so a name that
rebinds between check and connect still cannot reach one; literal IP hosts are
judged before the call, and redirects are never followed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from proxy.net.guard import BlockedURL, GuardedResolver, UnresolvedHost, precheck_url
from proxy.tools.registry import ToolSpec

log = logging.getLogger(__name__)

MAX_CONTENT_BYTES = 8 * 1024  # of a result, for the model
MAX_BODY_BYTES = 1024 * 1024  # read from a tool; the rest is dropped
SHORT_BODY_CHARS = 200  # of an error body, for the model


@dataclass(frozen=True, slots=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON text, as the model wrote it


@dataclass(frozen=True, slots=True)
class ToolResult:
    call_id: str
    name: str
    content: str  # the ``tool`` message content for the model
    ok: bool
    elapsed_ms: float
    data: Any | None = None  # the parsed result for the client app (meta.info), if shown

    def as_message(self) -> dict[str, Any]:
        return {"role": "tool", "tool_call_id": self.call_id, "content": self.content}


class _MissingSecret(Exception):
    pass


def _parse_arguments(text: str) -> dict[str, Any]:
    """The call's arguments; ``ValueError`` with a reason the model can act on."""
    if not text.strip():
        return {}  # models send "" for a function without parameters
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise ValueError("the arguments were not valid JSON") from None
    if not isinstance(value, dict):
        raise ValueError("the arguments must be a JSON object")
    return value


def _for_model(text: str) -> str:
    raw = text.encode()
    if len(raw) <= MAX_CONTENT_BYTES:
        return text
    return raw[:MAX_CONTENT_BYTES].decode(errors="ignore") + " ... (truncated)"


def _short(body: bytes) -> str:
    text = " ".join(body.decode(errors="replace").split())
    return text if len(text) <= SHORT_BODY_CHARS else text[:SHORT_BODY_CHARS] + "..."


async def _read_capped(response: aiohttp.ClientResponse) -> tuple[bytes, bool]:
    """The body, at most ``MAX_BODY_BYTES``; True when more was sent."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(64 * 1024):
        chunks.append(chunk)
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return b"".join(chunks)[:MAX_BODY_BYTES], True
    return b"".join(chunks), False


class ToolRunner:
    def __init__(self, timeout_cap: float = 30.0, *, max_connections: int = 100) -> None:
        self.timeout_cap = timeout_cap
        self._max_connections = max_connections
        self._public: aiohttp.ClientSession | None = None  # guarded: public addresses only
        self._private: aiohttp.ClientSession | None = None  # tools allowed private networks

    async def start(self) -> None:
        limit = self._max_connections
        self._public = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(resolver=GuardedResolver(), limit=limit),
            trust_env=False,
        )
        self._private = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                resolver=GuardedResolver(allow_private=True), limit=limit
            ),
            trust_env=False,
        )

    async def close(self) -> None:
        for session in (self._public, self._private):
            if session is not None:
                await session.close()
        self._public = self._private = None

    async def run_all(
        self, calls: Sequence[ToolCall], specs_by_name: Mapping[str, ToolSpec]
    ) -> list[ToolResult]:
        """Every call at once; results in the calls' order."""
        return list(
            await asyncio.gather(*(self.run(call, specs_by_name.get(call.name)) for call in calls))
        )

    async def run(self, call: ToolCall, spec: ToolSpec | None) -> ToolResult:
        started = time.perf_counter()

        def result(content: str, *, ok: bool = False, data: Any = None) -> ToolResult:
            elapsed_ms = (time.perf_counter() - started) * 1000
            return ToolResult(call.id, call.name, content, ok, elapsed_ms, data)

        name = call.name
        if spec is None:
            log.warning("tool call for unknown tool %r", name)
            return result(f"there is no tool named {name}")
        try:
            arguments = _parse_arguments(call.arguments)
        except ValueError as exc:
            log.info("tool %s: not called: invalid arguments", name)
            return result(f"tool {name} was not called: {exc}. Call it again with a JSON object.")
        timeout = min(spec.timeout_seconds, self.timeout_cap)
        if not timeout > 0:
            timeout = self.timeout_cap
        try:
            async with asyncio.timeout(timeout):
                status, body, truncated = await self._post(spec, arguments)
        except TimeoutError:
            log.warning("tool %s: timed out after %g s", name, timeout)
            return result(f"tool {name} timed out after {timeout:g} s")
        except UnresolvedHost:
            log.warning("tool %s: host does not resolve", name)
            return result(f"tool {name} could not be reached: its host does not resolve")
        except BlockedURL as exc:
            log.warning("tool %s: blocked: %s", name, exc)
            return result(f"tool {name} was not called: its URL is blocked ({exc})")
        except _MissingSecret as exc:
            log.error("tool %s: environment variable %s is unset", name, exc)
            return result(f"tool {name} is not configured correctly (its credentials are missing)")
        except (aiohttp.ClientError, OSError) as exc:
            log.warning("tool %s: connection failed: %s", name, type(exc).__name__)
            return result(f"tool {name} could not be reached ({type(exc).__name__})")
        except RuntimeError as exc:  # not started, or closed while running
            log.error("tool %s: %s", name, exc)
            return result(f"tool {name} is unavailable right now")
        elapsed_ms = (time.perf_counter() - started) * 1000
        log.info("tool %s: HTTP %d in %.0f ms", name, status, elapsed_ms)
        if not 200 <= status < 300:
            short = _short(body)
            return result(
                f"tool {name} failed with HTTP {status}" + (f": {short}" if short else "")
            )
        content, data = self._success(spec, body, truncated)
        return result(content, ok=True, data=data if spec.show_result else None)

    @staticmethod
    def _success(spec: ToolSpec, body: bytes, truncated: bool) -> tuple[str, Any]:
        """The content for the model (compact JSON, or the text) and the parsed result."""
        text = body.decode(errors="replace")
        try:
            if truncated:
                raise ValueError("partial body")
            data = orjson.loads(body)
            content = orjson.dumps(data).decode()
        except ValueError:  # not JSON: plain text is a fine result too
            data = text.strip() or None
            content = text.strip()
        if not content:
            content = f"tool {spec.name} succeeded (no content returned)"
        return _for_model(content), data

    async def _post(self, spec: ToolSpec, arguments: dict[str, Any]) -> tuple[int, bytes, bool]:
        checked = precheck_url(spec.url, allow_private=spec.allow_private_network)
        session = self._private if spec.allow_private_network else self._public
        if session is None:
            raise RuntimeError("the tool runner is not started")
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if spec.secret_header and spec.secret_env:
            secret = os.environ.get(spec.secret_env)
            if not secret:
                raise _MissingSecret(spec.secret_env)
            headers[spec.secret_header] = secret
        async with session.post(
            checked.url, data=orjson.dumps(arguments), headers=headers, allow_redirects=False
        ) as response:
            body, truncated = await _read_capped(response)
            return response.status, body, truncated
