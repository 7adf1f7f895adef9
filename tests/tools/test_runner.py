"""The tool runner against real HTTP tool servers on loopback.

Every failure becomes an error result for the model (never an exception); the SSRF
guard stops calls before any request reaches the server.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from typing import Any

import orjson
import pytest
from aiohttp import web

from proxy.tools.registry import ToolSpec
from proxy.tools.runner import MAX_CONTENT_BYTES, ToolCall, ToolResult, ToolRunner
from tests.servers import free_port

SECRET = "s3cret-value-never-logged"


@dataclass
class Seen:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class ToolServer:
    """A loopback HTTP server with one endpoint per behaviour; records every request."""

    port: int = 0
    requests: list[Seen] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    release: asyncio.Event = field(default_factory=asyncio.Event)

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def paths(self) -> list[str]:
        return [seen.path for seen in self.requests]

    async def _record(self, request: web.Request) -> dict[str, Any]:
        body = await request.read()
        self.requests.append(Seen(request.path, dict(request.headers), body))
        return orjson.loads(body) if body else {}

    async def weather(self, request: web.Request) -> web.Response:
        args = await self._record(request)
        return web.json_response({"city": args.get("city"), "temp_c": 21, "sky": "sunny"})

    async def slow(self, request: web.Request) -> web.Response:
        await self._record(request)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(0.3)
        finally:
            self.in_flight -= 1
        return web.json_response({"done": True})

    async def fail(self, request: web.Request) -> web.Response:
        await self._record(request)
        return web.Response(status=500, text="boom:\n  the database is down")

    async def hang(self, request: web.Request) -> web.Response:
        await self._record(request)
        await self.release.wait()
        return web.json_response({"late": True})

    async def text(self, request: web.Request) -> web.Response:
        await self._record(request)
        return web.Response(text="It is sunny in Paris.")

    async def big(self, request: web.Request) -> web.Response:
        await self._record(request)
        return web.json_response({"items": ["x" * 100] * 200})

    async def redirect(self, request: web.Request) -> web.Response:
        await self._record(request)
        raise web.HTTPFound("/weather")


@pytest.fixture
async def server() -> AsyncIterator[ToolServer]:
    tools = ToolServer()
    app = web.Application()
    for name in ("weather", "slow", "fail", "hang", "text", "big", "redirect"):
        app.router.add_post(f"/{name}", getattr(tools, name))
    runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    tools.port = runner.addresses[0][1]
    yield tools
    tools.release.set()
    await runner.cleanup()


@pytest.fixture
async def runner() -> AsyncIterator[ToolRunner]:
    tool_runner = ToolRunner()
    await tool_runner.start()
    yield tool_runner
    await tool_runner.close()


def spec(server: ToolServer, path: str = "/weather", **fields: Any) -> ToolSpec:
    fields.setdefault("allow_private_network", True)  # the test servers are on loopback
    return ToolSpec(
        name=fields.pop("name", "get_weather"),
        description="Current weather in a city.",
        parameters={"type": "object", "properties": {"city": {"type": "string"}}},
        url=server.url(path),
        **fields,
    )


def call(arguments: str = '{"city": "Paris"}', id: str = "call_1", name: str = "get_weather"):
    return ToolCall(id=id, name=name, arguments=arguments)


def assert_failed(result: ToolResult, *phrases: str) -> None:
    assert result.ok is False and result.data is None, result
    for phrase in phrases:
        assert phrase in result.content, result.content


async def test_a_json_result_is_given_to_the_model_as_compact_json(server, runner):
    result = await runner.run(call(), spec(server, show_result=True))
    assert result.ok is True and result.call_id == "call_1" and result.name == "get_weather"
    assert result.content == '{"city":"Paris","temp_c":21,"sky":"sunny"}'
    assert result.data == {"city": "Paris", "temp_c": 21, "sky": "sunny"}
    assert result.elapsed_ms > 0
    assert result.as_message() == {
        "role": "tool",
        "tool_call_id": "call_1",
        "content": result.content,
    }
    [seen] = server.requests
    assert orjson.loads(seen.body) == {"city": "Paris"}
    assert seen.headers["Content-Type"] == "application/json"


async def test_the_result_reaches_the_client_only_when_the_tool_shows_it(server, runner):
    result = await runner.run(call(), spec(server))
    assert result.ok is True and result.data is None


async def test_a_text_result_is_passed_as_it_is(server, runner):
    result = await runner.run(call(), spec(server, "/text", show_result=True))
    assert result.ok is True
    assert result.content == "It is sunny in Paris." and result.data == "It is sunny in Paris."


async def test_a_large_result_is_truncated_for_the_model(server, runner):
    result = await runner.run(call(), spec(server, "/big"))
    assert result.ok is True and result.content.endswith("(truncated)")
    assert MAX_CONTENT_BYTES < len(result.content.encode()) < MAX_CONTENT_BYTES + 50


async def test_calls_run_in_parallel_and_results_keep_the_calls_order(server, runner):
    slow = spec(server, "/slow", name="slow")
    weather = spec(server)
    calls = [
        call("{}", id="first", name="slow"),
        call('{"city": "Oslo"}', id="second"),
        call('{"n": 2}', id="third", name="slow"),
    ]
    results = await runner.run_all(calls, {"slow": slow, "get_weather": weather})
    assert [r.call_id for r in results] == ["first", "second", "third"]
    assert all(r.ok for r in results)
    assert orjson.loads(results[1].content)["city"] == "Oslo"
    assert server.max_in_flight == 2  # both slow calls were inside the server at once


async def test_an_http_error_becomes_an_error_result_for_the_model(server, runner):
    result = await runner.run(call(), spec(server, "/fail"))
    assert_failed(result)
    assert result.content == "tool get_weather failed with HTTP 500: boom: the database is down"


async def test_a_slow_tool_times_out(server, runner):
    result = await runner.run(call(), spec(server, "/hang", timeout_seconds=0.2))
    assert_failed(result, "tool get_weather timed out after 0.2 s")
    assert server.paths() == ["/hang"]


async def test_the_timeout_is_capped_by_the_runner(server):
    capped = ToolRunner(timeout_cap=0.2)
    await capped.start()
    try:
        result = await capped.run(call(), spec(server, "/hang", timeout_seconds=30))
    finally:
        await capped.close()
    assert_failed(result, "timed out after 0.2 s")


@pytest.mark.parametrize(
    ("arguments", "reason"),
    [
        ('{"city": ', "not valid JSON"),
        ("{'city': 'Paris'}", "not valid JSON"),
        ('["Paris"]', "must be a JSON object"),
        ('"Paris"', "must be a JSON object"),
    ],
)
async def test_invalid_arguments_are_reported_to_the_model(server, runner, arguments, reason):
    result = await runner.run(call(arguments), spec(server))
    assert_failed(result, "tool get_weather was not called", reason)
    assert server.requests == []


async def test_empty_arguments_mean_no_arguments(server, runner):
    result = await runner.run(call(""), spec(server))
    assert result.ok is True and server.requests[0].body == b"{}"


async def test_an_unknown_tool_is_an_error_result(server, runner):
    result = await runner.run(call(name="launch_rockets"), None)
    assert_failed(result, "there is no tool named launch_rockets")
    [result] = await runner.run_all([call(name="launch_rockets")], {"get_weather": spec(server)})
    assert_failed(result, "launch_rockets")
    assert server.requests == []


async def test_the_secret_header_comes_from_the_environment_and_is_never_logged(
    server, runner, monkeypatch, caplog
):
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("TEST_TOOL_SECRET", SECRET)
    secured = spec(server, secret_header="X-Api-Key", secret_env="TEST_TOOL_SECRET")
    result = await runner.run(call('{"city": "Reykjavik"}'), secured)
    assert result.ok is True
    assert server.requests[0].headers["X-Api-Key"] == SECRET
    assert "get_weather" in caplog.text
    assert SECRET not in caplog.text and "Reykjavik" not in caplog.text


async def test_an_unset_secret_variable_stops_the_call(server, runner, monkeypatch):
    monkeypatch.delenv("TEST_TOOL_SECRET", raising=False)
    secured = spec(server, secret_header="X-Api-Key", secret_env="TEST_TOOL_SECRET")
    result = await runner.run(call(), secured)
    assert_failed(result, "not configured")
    assert server.requests == []


@pytest.mark.parametrize(
    ("host", "reason"),
    [
        ("127.0.0.1", "blocked"),
        ("[::ffff:127.0.0.1]", "blocked"),
        ("localhost", "blocked"),
        ("2130706433", ""),  # aiohttp refuses this URL itself; the guard would block it too
    ],
)
async def test_a_private_url_is_blocked_unless_the_tool_allows_it(server, runner, host, reason):
    """Literal addresses are refused before the call, names by the connector's resolver
    (so a name that passed a check and then rebinds to loopback is refused too)."""
    guarded = replace(spec(server), url=server.url("/weather", host), allow_private_network=False)
    result = await runner.run(call(), guarded)
    assert_failed(result, reason)
    assert server.requests == []
    allowed = await runner.run(call(), replace(guarded, allow_private_network=True))
    if reason:
        assert allowed.ok is True and server.paths() == ["/weather"]


async def test_redirects_are_not_followed(server, runner):
    result = await runner.run(call(), spec(server, "/redirect"))
    assert_failed(result, "HTTP 302")
    assert server.paths() == ["/redirect"]


async def test_a_connection_failure_is_an_error_result(runner):
    unreachable = ToolSpec(
        name="get_weather",
        description="d",
        parameters={"type": "object"},
        url=f"http://127.0.0.1:{free_port()}/weather",
        allow_private_network=True,
    )
    result = await runner.run(call(), unreachable)
    assert_failed(result, "tool get_weather could not be reached")


async def test_a_runner_that_is_not_started_answers_with_an_error(server):
    result = await ToolRunner().run(call(), spec(server))
    assert_failed(result, "unavailable")
    assert server.requests == []
