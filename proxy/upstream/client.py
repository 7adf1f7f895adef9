"""Streaming client for OpenAI-compatible upstreams: the requests, their timeouts, and
upstream failures as the proxy's errors.

The HTTP is ``proxy.upstream.http1`` (httptools), its connections kept alive by
``proxy.upstream.pool``. Not a plain ``httpx.AsyncClient``: an httpx relay is reported to
collapse at 100 concurrent streams on this kind of machine (853 ms p50 time to first
token against 53 ms direct, httpx issue #3215). Not aiohttp's client either, which served
here until it measured as about a quarter of the proxy's event-loop CPU at 100 streams
(README, "Benchmarks").
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import Any

import orjson

from proxy.errors import (
    UpstreamError,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamTimeout,
)
from proxy.settings import UpstreamTarget
from proxy.upstream.http1 import ConnectFailed, HTTPError, Response
from proxy.upstream.pool import ConnectionPool
from proxy.upstream.shape import target_headers, target_url
from proxy.upstream.speakable import SpeakableFilter, strip_reasoning_from_completion
from proxy.upstream.sse import DONE, SSEDecoder

MAX_ERROR_BODY = 64 * 1024
MAX_COMPLETION_BODY = 64 * 1024 * 1024  # a non-streamed answer (or a model list)
DONE_GRACE_SECONDS = 2.0  # after [DONE], the wait for the body's end to reuse the connection


class UpstreamStream:
    """An open streaming response whose first events have already arrived."""

    def __init__(
        self,
        response: Response,
        decoder: SSEDecoder,
        first_events: list[bytes],
        target: UpstreamTarget,
        speakable: SpeakableFilter | None = None,
    ) -> None:
        self._response = response
        self._decoder = decoder
        self.first_events = first_events
        self.target = target
        self.waited = 0.0
        self.speakable = speakable or SpeakableFilter()
        self._done = _ends(first_events)  # the upstream sent its [DONE]

    @property
    def reasoning_text(self) -> str:
        return self.speakable.reasoning_text

    async def batches(self) -> AsyncGenerator[list[bytes], None]:
        """Data payloads, one list per network read (never waits to fill a batch)."""
        response = self._response
        while True:
            try:
                chunk = await response.read_chunk()
            except TimeoutError as exc:
                raise UpstreamTimeout("upstream stream exceeded its total timeout") from exc
            except HTTPError as exc:
                raise UpstreamError(f"upstream stream broke: {exc}") from exc
            if not chunk:
                tail = _relayable(self.speakable, self._decoder.flush())
                if tail:
                    self._done = _ends(tail)
                    yield tail
                return
            events = self._decoder.feed(chunk)
            if not self.speakable.passes(chunk):  # else: nothing to strip (the usual case)
                events = _relayable(self.speakable, events)
            if events:
                self._done = _ends(events)
                yield events

    def close(self) -> None:
        """Done with the stream. After the upstream's ``[DONE]`` its connection goes back
        to the pool (once the body's end arrives); before it, the connection is dropped:
        the upstream sees it close and stops generating."""
        if self._done:
            self._response.close_after_end(DONE_GRACE_SECONDS)
        else:
            self._response.close()


class UpstreamClient:
    """One connection pool for all upstream calls. Build in the app lifespan."""

    def __init__(self, max_connections: int = 1000) -> None:
        self._max_connections = max_connections
        self._pool: ConnectionPool | None = None

    async def start(self) -> None:
        self._pool = ConnectionPool(self._max_connections)

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    @property
    def pool(self) -> ConnectionPool:
        if self._pool is None:
            raise RuntimeError("UpstreamClient.start() was not called")
        return self._pool

    async def _post(self, target: UpstreamTarget, body: bytes) -> Response:
        return await self.pool.request(
            "POST",
            target_url(target),
            target_headers(target),
            body,
            connect_timeout=target.connect_timeout,
            total_timeout=target.total_timeout,
        )

    async def open_stream(
        self, target: UpstreamTarget, body: bytes, first_token_timeout: float | None = None
    ) -> UpstreamStream:
        """Send the request and wait for the first *speakable* event (text or a tool call,
        ``proxy.upstream.speakable``), within the first-token timeout. Role-only, empty
        and reasoning events before it are held (reasoning removed), not counted."""
        response: Response | None = None
        speakable = SpeakableFilter()
        held: list[bytes] = []
        wait = target.first_token_timeout if first_token_timeout is None else first_token_timeout
        try:
            async with asyncio.timeout(wait):
                response = await self._post(target, body)
                if not 200 <= response.status < 300:
                    raise await _status_error(response)
                decoder = SSEDecoder()
                while not speakable.decisive:
                    chunk = await response.read_chunk()
                    if not chunk:
                        held += _relayable(speakable, decoder.flush())
                        if not held:
                            raise UpstreamError("upstream closed the stream before any event")
                        break
                    held += _relayable(speakable, decoder.feed(chunk))
        except BaseException as exc:
            if response is not None:
                response.close()
            raise _translate(exc, target) from exc
        return UpstreamStream(response, decoder, held, target, speakable)

    async def complete(self, target: UpstreamTarget, body: bytes) -> dict[str, Any]:
        """A non-streaming completion, decoded.

        ``completion_timeout`` (default: the first-token timeout) applies to the response
        headers, which come with the whole answer: an upstream that says nothing in that
        time is given up on (and the next target tried). Reasoning is removed.
        """
        try:
            async with asyncio.timeout(target.completion_timeout or target.first_token_timeout):
                response = await self._post(target, body)
            try:
                if not 200 <= response.status < 300:
                    raise await _status_error(response)
                raw = await response.read(MAX_COMPLETION_BODY)
            finally:
                response.close()
        except BaseException as exc:
            raise _translate(exc, target) from exc
        try:
            decoded = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise UpstreamError("upstream returned a body that is not JSON") from exc
        if not isinstance(decoded, dict):
            raise UpstreamError("upstream returned JSON that is not an object")
        strip_reasoning_from_completion(decoded)
        return decoded

    async def list_models(
        self, target: UpstreamTarget, wait_seconds: float = 2.0
    ) -> list[dict[str, Any]]:
        response = await self.pool.request(
            "GET",
            f"{target.base_url}/models",
            target_headers(target),
            connect_timeout=wait_seconds,
            total_timeout=wait_seconds,
        )
        try:
            if response.status != 200:
                return []
            payload = orjson.loads(await response.read(MAX_COMPLETION_BODY))
        finally:
            response.close()
        data = payload.get("data") if isinstance(payload, dict) else None
        return [item for item in data or [] if isinstance(item, dict)]


def _ends(events: list[bytes]) -> bool:
    return bool(events) and events[-1] == DONE


def _relayable(speakable: SpeakableFilter, events: list[bytes]) -> list[bytes]:
    """The events with reasoning removed (reasoning-only events dropped)."""
    kept = []
    for event in events:
        cleaned = speakable.feed(event)
        if cleaned is not None:
            kept.append(cleaned)
    return kept


def _translate(exc: BaseException, target: UpstreamTarget) -> BaseException:
    """Map transport failures to the error tree; leave cancellation alone."""
    if isinstance(exc, UpstreamError | asyncio.CancelledError):
        return exc
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return UpstreamTimeout(f"upstream did not answer within its timeout ({target.base_url})")
    if isinstance(exc, ConnectFailed):
        return UpstreamError(f"cannot connect to upstream ({target.base_url})")
    if isinstance(exc, HTTPError):
        return UpstreamError(f"upstream request failed: {exc}")
    return exc


async def _status_error(response: Response) -> UpstreamError:
    """An upstream error status, keeping the upstream's own message when it has one."""
    try:
        raw = await response.read(MAX_ERROR_BODY)
        detail = orjson.loads(raw).get("error", {}).get("message")
    except Exception:
        detail = None
    message = f"upstream returned HTTP {response.status}" + (f": {detail}" if detail else "")
    headers = {}
    if "retry-after" in response.headers:
        headers["Retry-After"] = response.headers["retry-after"]
    response.close()
    if response.status < 400:  # a redirect: not followed
        return UpstreamError(message + " (redirects are not followed: check base_url)")
    if response.status == 429:
        return UpstreamRateLimited(message, headers=headers)
    if response.status in (408, 504):
        return UpstreamTimeout(message)
    if response.status >= 500:
        return UpstreamError(message)
    return UpstreamRejected(message, status=response.status)
