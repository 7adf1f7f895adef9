"""Real servers for the tests: the proxy under uvicorn on a free loopback port."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import uvicorn

from proxy.app import create_app
from proxy.services import Services
from proxy.serving import HeaderTimeoutProtocol
from proxy.settings import Settings

T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ProxyServer:
    """``create_app(settings)`` served by uvicorn (uvloop + httptools) in a thread."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.port = free_port()
        self.app = create_app(settings)
        config = uvicorn.Config(
            self.app,
            host="127.0.0.1",
            port=self.port,
            loop="uvloop",
            http=HeaderTimeoutProtocol,  # what ``proxy serve`` runs
            log_config=None,
            access_log=False,
            lifespan="on",
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def start(self) -> ProxyServer:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("proxy server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)

    def drain(self) -> None:
        """Wait until what the proxy writes behind its answers (usage rows, turn logs,
        transcripts) is committed, so that none of it lands in the next test's logs."""
        services = self.state

        async def flush() -> None:
            await services.usage.writer.flush()
            await services.turn_logs.flush()
            await services.transcripts.flush()

        self.run(flush)

    def run(self, work: Callable[[], Coroutine[Any, Any, T]], timeout: float = 30) -> T:
        """``work()`` run on the server's event loop; its result."""
        loop = self._server.servers[0].get_loop()
        return asyncio.run_coroutine_threadsafe(work(), loop).result(timeout=timeout)

    @property
    def state(self) -> Services:
        """The running proxy's services (``proxy.services``)."""
        running: Services = self.app.state.services
        return running

    def __enter__(self) -> ProxyServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
