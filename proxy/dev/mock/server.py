"""The mock upstream's HTTP server (``MockUpstream``), on the running event loop.

One server plays several upstreams: a ``/s/<key=value,...>`` path prefix before ``/v1``
selects a scenario (keys are ``MockBehaviour`` fields), e.g. a proxy configured with
``http://127.0.0.1:PORT/s/status=503/v1`` sees a failing upstream. Chat requests are
recorded with how they ended (``proxy.dev.mock.recording``), so tests can assert on what
the proxy sent and on whether it hung up. Usage reports ``cached_tokens`` from a prompt
cache model (``proxy.dev.mock.cache``).
"""

from __future__ import annotations

import asyncio
import itertools
import re
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar
from urllib.parse import quote

import orjson
from aiohttp import web

from proxy.dev.mock.behaviour import (
    DEFAULT_MODEL,
    BehaviourError,
    MockBehaviour,
    error_body,
    parse_scenario,
    prompt_tokens,
    render_json,
    render_stream,
)
from proxy.dev.mock.cache import PromptCache
from proxy.dev.mock.recording import Headers, RecordedRequest

T = TypeVar("T")
ScriptEntry = MockBehaviour | Mapping[str, Any]  # a full behaviour, or overrides of the defaults
_SCENARIO = re.compile(r"(?:^|/)s/([^/]+)")


def _json_response(
    status: int, payload: bytes, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        status=status, body=payload, content_type="application/json", headers=headers
    )


def _drop_connection(request: web.Request) -> None:
    # close() flushes what was already written, then sends FIN: an unterminated body.
    if request.transport is not None:
        request.transport.close()


class MockUpstream:
    """The mock server on the running event loop: ``await start()`` ... ``await stop()``."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        defaults: MockBehaviour | None = None,
        record: bool = True,
    ) -> None:
        self.host, self.port = host, port
        self.defaults = defaults or MockBehaviour()
        self.record = record
        self._requests: list[RecordedRequest] = []
        self._script: deque[MockBehaviour] = deque()
        self._ids = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self._stopping = False
        self._changed = asyncio.Event()  # set (and replaced) whenever a record changes
        self.prompt_cache = PromptCache()

    # -- lifecycle and addresses -------------------------------------------------

    async def start(self) -> MockUpstream:
        self._stopping = False
        # handler_cancellation: a client hanging up cancels its handler at once, even mid-pause.
        runner = web.AppRunner(
            self.build_app(), access_log=None, handler_cancellation=True, shutdown_timeout=0.5
        )
        await runner.setup()
        await web.TCPSite(runner, self.host, self.port, backlog=4096).start()
        self._runner, self.port = runner, runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            self._stopping = True
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def __aenter__(self) -> MockUpstream:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @property
    def url(self) -> str:
        if not self.port:
            raise RuntimeError("the mock upstream is not started")
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def scenario_url(self, **overrides: Any) -> str:
        """The base URL of an upstream behaving like ``defaults.merged(overrides)``."""
        self.defaults.merged(overrides)  # fail here, not in the request, on a bad key
        items = ",".join(f"{key}={quote(_url_value(v), safe='')}" for key, v in overrides.items())
        return f"{self.url}/s/{items}/v1"

    # -- state for tests -----------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        return list(self._requests)

    def clear(self) -> None:
        """Forget recorded requests and any queued script."""
        self._requests.clear()
        self._script.clear()
        self.prompt_cache.clear()

    def script(self, behaviours: Iterable[ScriptEntry]) -> None:
        """Queue behaviours used one per chat request, before path and body overrides."""
        resolved = [
            b if isinstance(b, MockBehaviour) else self.defaults.merged(b) for b in behaviours
        ]
        self._script.extend(resolved)

    def finished_request(self, index: int) -> RecordedRequest | None:
        if index < len(self._requests) and self._requests[index].outcome != "in_progress":
            return self._requests[index]
        return None

    # ``timeout`` (not asyncio.timeout) so the API matches MockUpstreamThread's blocking one.
    async def wait_for_outcome(self, index: int, timeout: float = 5.0) -> RecordedRequest:  # noqa: ASYNC109
        """Wait until request ``index`` has ended; returns its record."""
        return await self._wait(lambda: self.finished_request(index), timeout, f"request {index}")

    async def wait_for_requests(self, count: int, timeout: float = 5.0) -> list[RecordedRequest]:  # noqa: ASYNC109
        """Wait until at least ``count`` chat requests have arrived."""
        return await self._wait(lambda: self._at_least(count), timeout, f"{count} requests")

    async def _wait(self, probe: Callable[[], T | None], limit_s: float, what: str) -> T:
        try:
            async with asyncio.timeout(limit_s):
                while (found := probe()) is None:
                    await self._changed.wait()
        except TimeoutError:
            raise TimeoutError(f"mock upstream: timed out waiting for {what}") from None
        return found

    def _notify_change(self) -> None:
        # Wake every waiter once; later waiters wait on the fresh event.
        self._changed.set()
        self._changed = asyncio.Event()

    def _at_least(self, count: int) -> list[RecordedRequest] | None:
        return self.requests if len(self._requests) >= count else None

    # -- HTTP ------------------------------------------------------------------------

    def build_app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)  # long voice-agent contexts
        routes = app.router
        for prefix in ("", "/{prefix:.+}"):
            routes.add_post(prefix + "/v1/chat/completions", self._chat)
            routes.add_get(prefix + "/v1/models", self._models)
        routes.add_post("/_mock/script", self._post_script)
        routes.add_delete("/_mock/script", self._delete_script)
        routes.add_get("/_mock/requests", self._get_requests)
        routes.add_delete("/_mock/requests", self._delete_requests)
        # Upstreams shaped otherwise (Azure's deployments, MiniMax's chatcompletion_v2):
        # any other POST is a chat request too, recorded with its path and query.
        routes.add_post("/{path:.+}", self._chat)
        return app

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        started_at = time.monotonic()
        body: Any = None
        scenario: dict[str, str] = {}
        try:
            body = orjson.loads(await request.read() or b"{}")
            if not isinstance(body, dict):
                raise BehaviourError("the request body must be a JSON object")
            scenario = _scenario(request)
            behaviour = self._behaviour_for(scenario, body)
        except ValueError as exc:  # bad JSON or bad overrides: the caller's mistake
            if self.record:
                self._recorded(request, scenario, body, self.defaults, started_at, "error_status")
            return _json_response(400, error_body(400, str(exc)))
        record = (
            self._recorded(request, scenario, body, behaviour, started_at) if self.record else None
        )
        outcome = "in_progress"
        try:
            response, outcome = await self._respond(request, body, behaviour, record)
            return response
        except asyncio.CancelledError:
            outcome = "server_stopped" if self._stopping else "client_closed"
            raise
        finally:
            if record is not None:
                record.outcome, record.ended_at = outcome, time.monotonic()
                self._notify_change()

    def _behaviour_for(self, scenario: dict[str, str], body: dict[str, Any]) -> MockBehaviour:
        scripted = self._script.popleft() if self._script else None
        try:
            return (scripted or self.defaults).merged(scenario).merged(body.get("mock") or {})
        except BehaviourError:
            if scripted is not None:  # a rejected request does not use up a script step
                self._script.appendleft(scripted)
            raise

    def _recorded(
        self,
        request: web.Request,
        scenario: dict[str, str],
        body: Any,
        behaviour: MockBehaviour,
        started_at: float,
        outcome: str = "in_progress",
    ) -> RecordedRequest:
        ended_at = None if outcome == "in_progress" else time.monotonic()
        headers = Headers((str(k), v) for k, v in request.headers.items())  # orjson rejects istr
        index = len(self._requests)
        record = RecordedRequest(
            index, request.path, scenario, headers, body, behaviour, started_at, outcome, ended_at
        )
        record.query = dict(request.query)
        self._requests.append(record)
        self._notify_change()
        return record

    async def _respond(
        self,
        request: web.Request,
        body: dict[str, Any],
        b: MockBehaviour,
        record: RecordedRequest | None = None,
    ) -> tuple[web.StreamResponse, str]:
        if b.hang:
            await asyncio.get_running_loop().create_future()  # only a hang-up or stop() ends this
        if b.status is not None and b.status >= 400:
            if b.first_token_ms:
                await asyncio.sleep(b.first_token_ms / 1000)
            headers = {"Retry-After": str(b.retry_after)} if b.status == 429 else None
            return _json_response(b.status, error_body(b.status), headers), "error_status"
        completion_id = f"chatcmpl-mock{next(self._ids)}"
        messages = body.get("messages")
        reports_usage = not body.get("stream") or (body.get("stream_options") or {}).get(
            "include_usage"
        )
        cached = (
            self.prompt_cache.cached_tokens(messages, prompt_tokens(messages))
            if reports_usage
            else 0
        )
        if record is not None:
            record.cached_tokens = cached
        if body.get("stream"):
            return await self._stream(request, body, b, completion_id, cached)
        delay_s, payload = render_json(b, body, completion_id, int(time.time()), cached)
        if delay_s:
            await asyncio.sleep(delay_s)
        if b.fail_after_chunks is not None:
            _drop_connection(request)
            return web.Response(), "failed_mid_stream"
        return _json_response(200, payload), "completed"

    async def _stream(
        self,
        request: web.Request,
        body: dict[str, Any],
        b: MockBehaviour,
        completion_id: str,
        cached: int,
    ) -> tuple[web.StreamResponse, str]:
        plan = render_stream(b, body, completion_id, int(time.time()), cached)
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream; charset=utf-8",
                "Cache-Control": "no-cache",
            }
        )
        try:
            await response.prepare(request)
            pending: list[bytes] = []  # events due without a pause go out in one write
            for delay_s, event in plan.events:
                if delay_s > 0:
                    if pending:
                        await response.write(b"".join(pending))
                        pending.clear()
                    await asyncio.sleep(delay_s)
                pending.append(event)
            if plan.abort:
                if pending:
                    await response.write(b"".join(pending))
                _drop_connection(request)
                return response, "failed_mid_stream"
            await response.write_eof(b"".join(pending))
        except ConnectionError:  # the client hung up while we were writing
            return response, "client_closed"
        return response, "completed"

    async def _models(self, request: web.Request) -> web.Response:
        try:
            behaviour = self.defaults.merged(_scenario(request))
        except BehaviourError as exc:
            return _json_response(400, error_body(400, str(exc)))
        if behaviour.status is not None and behaviour.status >= 400:
            return _json_response(behaviour.status, error_body(behaviour.status))
        model = {"id": DEFAULT_MODEL, "object": "model", "created": 0, "owned_by": "mock"}
        return _json_response(200, orjson.dumps({"object": "list", "data": [model]}))

    async def _post_script(self, request: web.Request) -> web.Response:
        try:
            payload = orjson.loads(await request.read() or b"{}")
            behaviours = payload.get("behaviours") if isinstance(payload, dict) else None
            if not isinstance(behaviours, list):
                raise BehaviourError('expected {"behaviours": [{...}, ...]}')
            self.script(behaviours)
        except ValueError as exc:
            return _json_response(400, error_body(400, str(exc)))
        return _json_response(200, orjson.dumps({"queued": len(self._script)}))

    async def _delete_script(self, request: web.Request) -> web.Response:
        self._script.clear()
        return _json_response(200, b'{"queued":0}')

    async def _get_requests(self, request: web.Request) -> web.Response:
        return _json_response(200, orjson.dumps(self._requests))  # orjson encodes dataclasses

    async def _delete_requests(self, request: web.Request) -> web.Response:
        self._requests.clear()
        return _json_response(200, b"[]")


def _scenario(request: web.Request) -> dict[str, str]:
    match = _SCENARIO.search(request.match_info.get("prefix", ""))
    return parse_scenario(match.group(1)) if match else {}


def _url_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return orjson.dumps(value).decode() if isinstance(value, list | dict) else str(value)
