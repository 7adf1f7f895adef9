"""The servers a scenario runs against: Redis with AOF, a throwaway PostgreSQL, proxies.

Everything listens on free loopback ports and lives in the scenario's scratch
directory (``Processes.workdir``); ``Processes.stop_all`` stops the children, and the
Redis and PostgreSQL helpers stop their own servers.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import subprocess
import time
from pathlib import Path

from proxy.dev.bench.procs import HOST, Child, Processes, clean_env, free_port

ADMIN_TOKEN = "chaos-admin-token-0123456789"
SIGN_KEY = "chaossignkey0123"


class ChaosError(RuntimeError):
    """A scenario cannot run here (a binary is missing, a server did not start)."""


class AofRedis:
    """``redis-server`` with ``appendonly yes`` (fsync every write) in its own directory."""

    def __init__(self, workdir: str) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise ChaosError("redis-server is not on the PATH")
        self.binary, self.port = binary, free_port()
        self.dir = Path(workdir) / f"redis-{self.port}"
        self.dir.mkdir(parents=True)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def start(self) -> AofRedis:
        args = [self.binary, "--port", str(self.port), "--bind", HOST, "--dir", str(self.dir)]
        args += ["--appendonly", "yes", "--appendfsync", "always", "--save", ""]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_port(self.port, 10)
        return self

    def stop(self, *, kill: bool = False) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            self.proc.wait(10)
        self.proc = None


def _pg_bin(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


class ThrowawayPostgres:
    """A PostgreSQL cluster of its own (trust auth, free port), stopped and started at will."""

    def __init__(self, workdir: str) -> None:
        initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
        if initdb is None or pg_ctl is None:
            raise ChaosError("PostgreSQL server binaries (initdb, pg_ctl) not found")
        self.initdb, self.pg_ctl, self.port = initdb, pg_ctl, free_port()
        self.base = Path(workdir) / f"pg-{self.port}"
        self.base.mkdir(parents=True)
        self.data = self.base / "data"
        self._as: list[str] = []
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            user = pwd.getpwnam("postgres")
            for path in (Path(workdir), self.base):
                os.chown(path, user.pw_uid, user.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]
        self.running = False

    @property
    def url(self) -> str:
        return f"postgresql://postgres@{HOST}:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        subprocess.run([*self._as, *args], check=True, capture_output=True, timeout=60)

    def start(self) -> ThrowawayPostgres:
        if not self.data.exists():
            self._run(self.initdb, "-D", str(self.data), "-A", "trust", "-U", "postgres")
        options = f"-p {self.port} -k {self.base} -c listen_addresses={HOST} -c fsync=off"
        log = str(self.base / "server.log")
        self._run(self.pg_ctl, "-D", str(self.data), "-o", options, "-l", log, "-w", "start")
        self.running = True
        return self

    def stop(self) -> None:
        if self.running:
            self._run(self.pg_ctl, "-D", str(self.data), "-m", "fast", "-w", "stop")
            self.running = False


def _wait_port(port: int, timeout: float) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex((HOST, port)) == 0:
                return
        time.sleep(0.05)
    raise ChaosError(f"nothing listens on port {port} after {timeout:.0f} s")


def proxy_env(
    procs: Processes,
    *,
    upstream: str,
    redis_url: str | None = None,
    database_url: str | None = None,
    python_path: str | None = None,
    **extra: str,
) -> dict[str, str]:
    """The environment of a proxy replica; replicas on this host share the spool dir."""
    env = clean_env(
        PROXY_UPSTREAM_BASE_URL=upstream,
        PROXY_UPSTREAM_API_KEY="chaos",
        PROXY_LOG_LEVEL="warning",
        PROXY_ADMIN_TOKEN=ADMIN_TOKEN,
        PROXY_CALLBACK_SIGN_KEY=SIGN_KEY,
        PROXY_DATABASE_URL=database_url or f"sqlite+aiosqlite:///{procs.workdir}/proxy.db",
        PROXY_SPOOL_DIR=f"{procs.workdir}/spool",
        PROXY_HISTORY_TTL_SECONDS="3600",
    )
    if redis_url:
        env["PROXY_REDIS_URL"] = redis_url
        env["PROXY_REDIS_PREFIX"] = "chaos:"
    if python_path:  # run another checkout's proxy (the "before" column)
        env["PYTHONPATH"] = python_path
    env.update(extra)
    return env


def start_proxy(procs: Processes, env: dict[str, str], name: str, port: int | None = None) -> Child:
    port = port or free_port()
    args = ["serve", "--host", HOST, "--port", str(port), "--graceful-timeout", "5"]
    return procs.start(name, args, port, env)


def migrate(procs: Processes, env: dict[str, str]) -> None:
    """``proxy migrate`` with the replicas' environment (their code, their database)."""
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "proxy", "migrate"],
        env=env,
        cwd=procs.workdir,
        capture_output=True,
        timeout=120,
    )
    if result.returncode != 0:
        raise ChaosError(f"proxy migrate failed: {result.stdout.decode()}{result.stderr.decode()}")


def kill9(child: Child) -> None:
    """SIGKILL the replica's whole process group, now."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(child.proc.pid, signal.SIGKILL)
    child.proc.wait(10)


def sigterm(child: Child, timeout: float = 90) -> int:
    """SIGTERM the replica and wait for its graceful exit; its exit status. A replica
    that does not exit is an error that carries the end of its log."""
    os.killpg(child.proc.pid, signal.SIGTERM)
    try:
        return child.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        tail = child.log_tail(6000)
        message = f"{child.name} did not exit {timeout:g} s after SIGTERM:\n{tail}"
        raise ChaosError(message) from None
