"""The benchmark's subprocesses: the mock upstream and the proxy, on free loopback ports.

Every child runs in its own session (process group), so that stopping it also stops
uvicorn's worker processes; ``Processes.stop_all`` runs from the benchmark's
``finally`` and is safe to call twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import IO

import aiohttp

HOST = "127.0.0.1"
READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 5.0


class BenchError(RuntimeError):
    """The benchmark cannot go on (a child died, a server never became ready...)."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without the caller's ``PROXY_*`` settings, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROXY_")}
    env.update(extra)
    return env


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]
    port: int
    log: IO[bytes]

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_text(self) -> str:
        """Everything it wrote (stdout and stderr); empty once the log is closed."""
        try:
            self.log.flush()
            self.log.seek(0)
            return self.log.read().decode(errors="replace")
        except (OSError, ValueError):
            return ""

    def log_tail(self, limit: int = 2000) -> str:
        return self.log_text()[-limit:]

    def stop(self) -> None:
        """SIGTERM its process group; SIGKILL what is left after ``STOP_TIMEOUT_S``."""
        if self.alive():
            _signal_group(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                _signal_group(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=STOP_TIMEOUT_S)
        _signal_group(self.proc.pid, signal.SIGKILL)  # stragglers in its group, if any

    def peak_rss_mib(self) -> float | None:
        """VmHWM of the serving process(es): with uvicorn workers, the sum of the workers
        (the supervisor and multiprocessing's resource tracker serve no requests)."""
        workers = [pid for pid in _children(self.proc.pid) if b"spawn_main" in _cmdline(pid)]
        pids = workers or [self.proc.pid]
        peaks = [_vm_hwm_kib(pid) for pid in pids]
        known = [kib for kib in peaks if kib is not None]
        return sum(known) / 1024 if known else None

    def cpu_seconds(self) -> float:
        """CPU time (user + system) used so far by the child and its worker processes."""
        return sum(_cpu_seconds(pid) for pid in [self.proc.pid, *_children(self.proc.pid)])


def _cpu_seconds(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()  # fields: state, ppid, ...
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0  # gone, or no /proc: counted as nothing


def _vm_hwm_kib(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            return cmdline.read()
    except OSError:
        return b""


def _children(pid: int) -> list[int]:
    found = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(fields) > 1 and fields[1] == str(pid):  # fields: state, ppid, ...
            found.append(int(entry))
    return found


class Processes:
    """Starts children and guarantees they are stopped.

    Children run in a private scratch directory (removed by ``stop_all``), so nothing
    they write by default, such as the proxy's SQLite file, lands in the caller's tree.
    """

    def __init__(self) -> None:
        self._children: list[Child] = []
        self.workdir = tempfile.mkdtemp(prefix="proxy-bench-")

    def start(self, name: str, args: list[str], port: int, env: dict[str, str]) -> Child:
        log = tempfile.TemporaryFile(prefix=f"proxy-bench-{name}-")  # noqa: SIM115 (Child owns it)
        proc = subprocess.Popen(
            [sys.executable, "-m", "proxy", *args],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=self.workdir,
            start_new_session=True,  # its own process group: workers stop with it
        )
        child = Child(name, proc, port, log)
        self._children.append(child)
        return child

    def stop(self, child: Child) -> None:
        child.stop()
        if child in self._children:
            self._children.remove(child)
        child.log.close()

    def stop_all(self) -> None:
        for child in list(reversed(self._children)):
            try:
                self.stop(child)
            except Exception as exc:  # keep stopping the others
                print(f"bench: could not stop {child.name}: {exc!r}", file=sys.stderr)
        shutil.rmtree(self.workdir, ignore_errors=True)


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def start_mock(
    procs: Processes, *, first_token_ms: float, gap_ms: float, chunks: int, name: str = "mock"
) -> Child:
    port = free_port()
    args = ["mock-upstream", "--host", HOST, "--port", str(port), "--no-record"]
    args += ["--first-token-ms", str(first_token_ms), "--gap-ms", str(gap_ms)]
    args += ["--chunks", str(chunks)]
    return procs.start(name, args, port, clean_env())


def start_proxy(
    procs: Processes,
    *,
    upstream_base_url: str,
    workers: int = 1,
    redis_url: str | None = None,
    redis_prefix: str | None = None,
    name: str = "proxy",
) -> Child:
    port = free_port()
    env = clean_env(
        PROXY_UPSTREAM_BASE_URL=upstream_base_url,
        PROXY_UPSTREAM_API_KEY="bench",
        PROXY_LOG_LEVEL="warning",
        # The default durable store (a SQLite file), kept out of the caller's directory.
        PROXY_DATABASE_URL=f"sqlite+aiosqlite:///{procs.workdir}/proxy-{port}.db",
    )
    if redis_url:
        env["PROXY_REDIS_URL"] = redis_url
        env["PROXY_REDIS_PREFIX"] = redis_prefix or "proxybench:"
        env["PROXY_HISTORY_TTL_SECONDS"] = "3600"  # leftovers expire even if cleanup fails
    args = ["serve", "--host", HOST, "--port", str(port), "--workers", str(workers)]
    args += ["--graceful-timeout", "1"]
    return procs.start(name, args, port, env)


def start_relay(procs: Processes, *, upstream_base_url: str, name: str = "relay") -> Child:
    """The bare aiohttp relay (``proxy.dev.bench.bare_relay``): the floor for added latency."""
    port = free_port()
    args = ["bench-relay", "--host", HOST, "--port", str(port), "--upstream", upstream_base_url]
    return procs.start(name, args, port, clean_env())


async def wait_ready(
    session: aiohttp.ClientSession, child: Child, path: str, timeout_s: float = READY_TIMEOUT_S
) -> None:
    """Poll ``GET path`` until it answers 200; fail fast if the child exits."""
    deadline = time.monotonic() + timeout_s
    probe = aiohttp.ClientTimeout(total=1.0)
    while time.monotonic() < deadline:
        if not child.alive():
            raise BenchError(
                f"{child.name} exited with status {child.proc.returncode}:\n{child.log_tail()}"
            )
        try:
            async with session.get(child.url + path, timeout=probe) as response:
                await response.read()
                if response.status == 200:
                    return
        except (aiohttp.ClientError, TimeoutError, OSError):
            pass
        await asyncio.sleep(0.05)
    raise BenchError(f"{child.name} not ready after {timeout_s:.0f} s:\n{child.log_tail()}")


# Redis, for --history: the same key prefix as the proxy under test.

PREFILL_USER = "Can you remind me what we said about the delivery for order number {n}?"
PREFILL_ASSISTANT = (
    "Sure. Order {n} ships tomorrow morning and should reach you by Thursday; "
    "I will send you the tracking link as soon as it is available."
)


def redis_error(url: str) -> str | None:
    """Why Redis at ``url`` is unusable, or None if it answers PING."""
    import redis

    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
        try:
            client.ping()
        finally:
            client.close()
    except (redis.RedisError, OSError, ValueError) as exc:
        return repr(exc)
    return None


async def prefill_tasks(url: str, prefix: str, task_ids: list[str], turns: int) -> None:
    """Store ``turns`` user/assistant turns for each task, as the proxy would have.

    Written with ``RedisHistoryStore.commit_turn`` (one call per turn), token counts
    cached on the messages like the proxy's own commits; tasks are filled concurrently.
    """
    import redis.asyncio as redis

    from proxy.context.budget import TokenCounter
    from proxy.context.history import StoredMessage
    from proxy.context.redis_store import RedisHistoryStore

    counter = TokenCounter()
    client = redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=10)
    store = RedisHistoryStore(client, prefix=prefix, ttl_seconds=3600)

    async def fill(task_id: str) -> None:
        for n in range(turns):
            user = StoredMessage(role="user", content=PREFILL_USER.format(n=n))
            assistant = StoredMessage(role="assistant", content=PREFILL_ASSISTANT.format(n=n))
            counter.count_message(user)
            counter.count_message(assistant)
            await store.commit_turn(task_id, None, None, [user, assistant], answer=None)

    try:
        await asyncio.gather(*(fill(task_id) for task_id in task_ids))
    finally:
        await store.close()


def delete_keys(url: str, prefix: str) -> int:
    """Delete every key under ``prefix``; returns how many (0 if Redis is gone)."""
    import redis

    deleted = 0
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=5)
        try:
            batch: list[bytes] = []
            for key in client.scan_iter(match=f"{prefix}*", count=1000):
                batch.append(key)
                if len(batch) >= 1000:
                    deleted += int(client.delete(*batch))
                    batch.clear()
            if batch:
                deleted += int(client.delete(*batch))
        finally:
            client.close()
    except (redis.RedisError, OSError) as exc:
        print(f"bench: could not delete the {prefix}* keys: {exc!r}", file=sys.stderr)
    return deleted
