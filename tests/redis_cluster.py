"""A throwaway 3-master Redis Cluster on loopback, shared by the test session.

Three ``redis-server --cluster-enabled yes`` processes on free ports (each also needs its
bus port, +10000), joined by ``redis-cli --cluster create``. Tests use their own key
prefix on it, as on the standalone server; the fixture removes the servers and their
directory at the end of the session.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator

import pytest

MASTERS = 3
BUS_PORT_OFFSET = 10_000


def _free_cluster_port() -> int:
    """A free port whose cluster bus port (+10000) is free too."""
    for _ in range(100):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port + BUS_PORT_OFFSET > 65535:
            continue
        with socket.socket() as bus:
            try:
                bus.bind(("127.0.0.1", port + BUS_PORT_OFFSET))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair for a cluster node")


def _command(port: int, *args: str) -> str:
    result = subprocess.run(
        ["redis-cli", "-p", str(port), *args], capture_output=True, text=True, timeout=10
    )
    return result.stdout


class ThrowawayRedisCluster:
    """``start()`` three masters and create the cluster; ``stop()`` removes everything."""

    def __init__(self) -> None:
        if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
            raise FileNotFoundError("redis-server / redis-cli are not installed")
        self.directory = tempfile.mkdtemp(prefix="proxy-redis-cluster-")
        self.ports: list[int] = []
        self.processes: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        """Any one node: the cluster client discovers the others."""
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    def start(self) -> ThrowawayRedisCluster:
        for index in range(MASTERS):
            port = _free_cluster_port()
            self.ports.append(port)
            args = ["redis-server", "--port", str(port), "--bind", "127.0.0.1"]
            args += ["--cluster-enabled", "yes", "--dir", self.directory]
            args += ["--cluster-config-file", f"nodes-{index}.conf"]
            args += ["--cluster-node-timeout", "2000", "--save", "", "--appendonly", "no"]
            self.processes.append(subprocess.Popen(args, stdout=subprocess.DEVNULL))
        for port in self.ports:
            self._wait(lambda port=port: _command(port, "PING").strip() == "PONG", "start")
        nodes = [f"127.0.0.1:{port}" for port in self.ports]
        create = ["redis-cli", "--cluster", "create", *nodes, "--cluster-replicas", "0"]
        created = subprocess.run(
            [*create, "--cluster-yes"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert created.returncode == 0, created.stdout + created.stderr
        for port in self.ports:
            self._wait(lambda port=port: "cluster_state:ok" in _command(port, "CLUSTER", "INFO"))
        return self

    def _wait(self, ready: Callable[[], bool], what: str = "agree on its slots") -> None:
        deadline = time.monotonic() + 30
        while not ready():
            assert all(p.poll() is None for p in self.processes), "a cluster node exited"
            assert time.monotonic() < deadline, f"the Redis cluster did not {what}"
            time.sleep(0.05)

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
        self.processes = []
        shutil.rmtree(self.directory, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[ThrowawayRedisCluster]:
    try:
        cluster = ThrowawayRedisCluster()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    try:
        yield cluster.start()
    finally:
        cluster.stop()
