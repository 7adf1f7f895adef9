"""The mock upstream on its own event loop in a daemon thread (sync tests, isolation)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import uvloop

from proxy.dev.mock.behaviour import MockBehaviour
from proxy.dev.mock.recording import RecordedRequest
from proxy.dev.mock.server import MockUpstream, ScriptEntry

T = TypeVar("T")
_POLL_S = 0.005


def _poll_blocking(probe: Callable[[], T | None], timeout: float, what: str) -> T:
    deadline = time.monotonic() + timeout
    while (found := probe()) is None:
        if time.monotonic() >= deadline:
            raise TimeoutError(f"mock upstream: timed out waiting for {what}")
        time.sleep(_POLL_S)
    return found


class MockUpstreamThread:
    """The same server on its own event loop in a daemon thread (sync tests, isolation)."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        defaults: MockBehaviour | None = None,
        record: bool = True,
    ) -> None:
        self.server = MockUpstream(host, port, defaults, record)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> MockUpstreamThread:
        started: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._thread = threading.Thread(target=self._run, args=(started,), daemon=True)
        self._thread.start()
        started.result(timeout=10)
        return self

    def _run(self, started: concurrent.futures.Future[None]) -> None:
        loop = self._loop = uvloop.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self.server.start())
        except BaseException as exc:
            started.set_exception(exc)
            loop.close()
            return
        started.set_result(None)
        loop.run_forever()
        loop.close()

    def stop(self) -> None:
        if self._loop is None or self._thread is None:
            return
        asyncio.run_coroutine_threadsafe(self.server.stop(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop = self._thread = None

    def __enter__(self) -> MockUpstreamThread:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _in_loop(self, call: Callable[[], T]) -> T:
        """Run ``call`` on the server's loop, so state changes are ordered with requests."""
        if self._loop is None:
            raise RuntimeError("the mock upstream thread is not started")
        done: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            try:
                done.set_result(call())
            except BaseException as exc:
                done.set_exception(exc)

        self._loop.call_soon_threadsafe(run)
        return done.result(timeout=10)

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def base_url(self) -> str:
        return self.server.base_url

    def scenario_url(self, **overrides: Any) -> str:
        return self.server.scenario_url(**overrides)

    @property
    def requests(self) -> list[RecordedRequest]:
        return self._in_loop(lambda: self.server.requests)

    def clear(self) -> None:
        self._in_loop(self.server.clear)

    def script(self, behaviours: Iterable[ScriptEntry]) -> None:
        entries = list(behaviours)
        self._in_loop(lambda: self.server.script(entries))

    def wait_for_outcome(self, index: int, timeout: float = 5.0) -> RecordedRequest:
        return _poll_blocking(
            lambda: self.server.finished_request(index), timeout, f"request {index}"
        )

    def wait_for_requests(self, count: int, timeout: float = 5.0) -> list[RecordedRequest]:
        return _poll_blocking(lambda: self.server._at_least(count), timeout, f"{count} requests")
