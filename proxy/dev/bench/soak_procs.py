"""The soak's child processes (mock upstream, proxy: ``proxy.dev.bench.procs.Child``) and the
proxy's RSS and CPU samples."""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

import aiohttp

from proxy.dev.bench.procs import HOST, Child, free_port

__all__ = ["HOST", "Child", "Sampler", "SoakError", "start_child", "wait_ready"]
READY_TIMEOUT_S = 30.0


class SoakError(RuntimeError):
    """The soak cannot run (a server did not start, the admin API refused the setup)."""


def start_child(name: str, args: list[str], env: dict[str, str], workdir: str) -> Child:
    port = free_port()
    log = tempfile.TemporaryFile(prefix=f"proxy-soak-{name}-")  # noqa: SIM115 (Child owns it)
    proc = subprocess.Popen(
        [sys.executable, "-m", *args, "--port", str(port)],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=workdir,
        start_new_session=True,  # its own process group: stopped with its children
    )
    return Child(name, proc, port, log)


async def wait_ready(http: aiohttp.ClientSession, child: Child, path: str) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if child.proc.poll() is not None:
            raise SoakError(f"{child.name} exited:\n{child.log_text()[-2000:]}")
        with contextlib.suppress(aiohttp.ClientError, TimeoutError, OSError):
            async with http.get(child.url + path, timeout=aiohttp.ClientTimeout(total=1)) as r:
                if r.status < 500:
                    return
        await asyncio.sleep(0.05)
    raise SoakError(f"{child.name} not ready after {READY_TIMEOUT_S:.0f} s")


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as stat:
                ppid = int(stat.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        parents.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(parents.get(current, ()))
    return found


def _rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _cpu_ticks(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime + stime
    except (OSError, ValueError, IndexError):
        return 0


@dataclass
class Sampler:
    pid: int
    samples: list[tuple[float, float]] = field(default_factory=list)  # (seconds, MiB)
    cpu: list[tuple[float, int]] = field(default_factory=list)  # (seconds, ticks)

    async def run(self, started: float, stop: asyncio.Event) -> None:
        while not stop.is_set():
            pids = _tree(self.pid)
            now = time.monotonic() - started
            self.samples.append((now, sum(_rss_kib(p) for p in pids) / 1024))
            self.cpu.append((now, sum(_cpu_ticks(p) for p in pids)))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)

    def slope_mb_per_min(self, since: float, until: float) -> float:
        points = [(t, m) for t, m in self.samples if since <= t <= until]
        if len(points) < 3:
            return 0.0
        mean_t = statistics.fmean(t for t, _ in points)
        mean_m = statistics.fmean(m for _, m in points)
        num = sum((t - mean_t) * (m - mean_m) for t, m in points)
        den = sum((t - mean_t) ** 2 for t, _ in points)
        return num / den * 60 if den else 0.0

    def cpu_percent(self, since: float, until: float) -> float:
        window = [(t, c) for t, c in self.cpu if since <= t <= until]
        if len(window) < 2:
            return 0.0
        (t0, c0), (t1, c1) = window[0], window[-1]
        return (c1 - c0) / os.sysconf("SC_CLK_TCK") / (t1 - t0) * 100 if t1 > t0 else 0.0
