"""The proxy as a real process (``python -m proxy serve``), for shutdown and multi-replica tests."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import httpx

from tests.servers import free_port


class ProxyProcess:
    def __init__(
        self, env: dict[str, str], *, workers: int = 1, graceful_timeout: float = 30
    ) -> None:
        self.port = free_port()
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("PROXY_")},
            "PROXY_LOG_LEVEL": "warning",
            **env,
        }
        self.args = [
            sys.executable,
            "-m",
            "proxy",
            "serve",
            "--port",
            str(self.port),
            "--workers",
            str(workers),
            "--graceful-timeout",
            str(graceful_timeout),
        ]
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20) -> ProxyProcess:
        self.process = subprocess.Popen(
            self.args, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"proxy exited: {self.process.stdout.read().decode()}")  # type: ignore[union-attr]
            try:
                if httpx.get(self.url + "/healthz", timeout=0.5).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()  # never leave it running behind the failed test
        raise RuntimeError("proxy did not start")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
