"""Proxy replicas for the multi-process tests: logs to a file, patient start-up."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import httpx

from tests.e2e.procs import ProxyProcess

START_TIMEOUT_S = 60  # a loaded CI machine takes 15 s and more to import and start one


class LoggedProxy(ProxyProcess):
    """A replica whose log goes to a file (a pipe nobody reads would stall it)."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        super().__init__(env)
        self.log_path = log_path

    def start(self) -> LoggedProxy:
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                self.args, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log_path.read_text()
            try:
                if httpx.get(self.url + "/healthz", timeout=0.5).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError("proxy did not start")
