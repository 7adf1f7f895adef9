"""Redis Cluster failover: a master is killed mid-run and its replica takes over.

Six ``redis-server --cluster-enabled yes`` nodes on free loopback ports (each also
needs its bus port, +10000): three masters, each with one replica
(``redis-cli --cluster create --cluster-replicas 1``), and a short
``cluster-node-timeout`` so that a dead master's replica is promoted within seconds.
The proxy talks to the cluster (``PROXY_REDIS_CLUSTER=true``); the scenario plays
turns, ``kill -9``s the master that holds the first session's task, and counts, after
the failover, which answered turns the live history holds once, never or twice. Turns
the proxy refused to record say so in ``proxy_turns_not_recorded_total``: lost turns
are split into those refused loudly and those lost silently.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import aiohttp
from redis.crc import key_slot

from proxy.dev.bench.procs import HOST
from proxy.dev.chaos.engine import Session, Tally, run_sessions
from proxy.dev.chaos.scenarios import Options, _live_tally, _ready, _world
from proxy.dev.chaos.servers import ChaosError, _wait_port, proxy_env, start_proxy

NODE_TIMEOUT_MS = 1000  # a master silent this long is failed over to its replica
MASTERS = 3


def _free_cluster_port() -> int:
    """A free port whose cluster bus port (+10000) is free too."""
    for _ in range(100):
        with socket.socket() as sock:
            sock.bind((HOST, 0))
            port = int(sock.getsockname()[1])
        if port + 10000 > 65535:
            continue
        with socket.socket() as bus:
            try:
                bus.bind((HOST, port + 10000))
            except OSError:
                continue
        return port
    raise ChaosError("no free port pair for a cluster node")


def _cli(port: int, *args: str) -> str:
    result = subprocess.run(
        ["redis-cli", "-h", HOST, "-p", str(port), *args],
        capture_output=True,
        text=True,
        timeout=10,
    )
    return result.stdout


class ReplicatedCluster:
    """Three masters and three replicas; ``kill9_master_of(key)`` fails one over."""

    def __init__(self, workdir: str) -> None:
        if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
            raise ChaosError("redis-server / redis-cli are not on the PATH")
        self.dir = Path(workdir) / "redis-cluster"
        self.dir.mkdir(parents=True)
        self.nodes: dict[int, subprocess.Popen[bytes]] = {}

    @property
    def url(self) -> str:
        """Any one node: the cluster client discovers the others."""
        return f"redis://{HOST}:{next(iter(self.nodes))}/0"

    def start(self) -> ReplicatedCluster:
        for index in range(2 * MASTERS):
            port = _free_cluster_port()
            args = ["redis-server", "--port", str(port), "--bind", HOST, "--dir", str(self.dir)]
            args += ["--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{index}.conf"]
            args += ["--cluster-node-timeout", str(NODE_TIMEOUT_MS), "--save", ""]
            args += ["--appendonly", "no"]
            self.nodes[port] = subprocess.Popen(
                args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
        for port in self.nodes:
            _wait_port(port, 10)
        # The first three named are the masters, the next three their replicas.
        names = [f"{HOST}:{port}" for port in self.nodes]
        create = ["redis-cli", "--cluster", "create", *names, "--cluster-replicas", "1"]
        created = subprocess.run(
            [*create, "--cluster-yes"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if created.returncode != 0:
            raise ChaosError(f"redis-cli --cluster create failed: {created.stdout[-500:]}")
        self.wait(lambda: all(self._ok(p) for p in self.nodes), "agree on its slots")
        self.wait(lambda: self._replicas_in_sync() == MASTERS, "sync its replicas")
        return self

    def _ok(self, port: int) -> bool:
        return "cluster_state:ok" in _cli(port, "CLUSTER", "INFO")

    def _replicas_in_sync(self) -> int:
        return sum(
            "master_link_status:up" in _cli(port, "INFO", "replication")
            for port, proc in self.nodes.items()
            if proc.poll() is None
        )

    def wait(self, ready: Callable[[], bool], what: str, limit: float = 30) -> float:
        started = time.monotonic()
        while not ready():
            if time.monotonic() - started > limit:
                raise ChaosError(f"the Redis cluster did not {what} in {limit:.0f} s")
            time.sleep(0.05)
        return time.monotonic() - started

    def slots_of(self, port: int) -> list[tuple[int, int]]:
        """The slot ranges the master at ``port`` serves now."""
        alive = next(p for p, proc in self.nodes.items() if proc.poll() is None)
        for line in _cli(alive, "CLUSTER", "NODES").splitlines():
            fields = line.split()
            if fields[1].split("@")[0] == f"{HOST}:{port}":
                spans = [span.partition("-") for span in fields[8:] if span[0].isdigit()]
                return [(int(low), int(high or low)) for low, _, high in spans]
        return []

    def masters(self) -> list[int]:
        return [port for port in self.nodes if self.slots_of(port)]

    def kill9(self, port: int) -> None:
        proc = self.nodes[port]
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)

    def promoted(self, dead: int) -> bool:
        """The dead master's slots are served by another node (its replica, promoted),
        and every live node agrees the cluster is whole again."""
        live = [p for p, proc in self.nodes.items() if proc.poll() is None]
        return not self.slots_of(dead) and all(self._ok(p) for p in live)

    def stop(self) -> None:
        for proc in self.nodes.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.nodes.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


async def _samples(http: aiohttp.ClientSession, url: str, prefix: str) -> dict[str, int]:
    """The samples whose line starts with ``prefix``, by their labels."""
    async with http.get(f"{url}/metrics") as response:
        text = await response.text()
    found = {}
    for line in text.splitlines():
        if line.startswith(prefix):
            name, value = line.rsplit(" ", 1)
            found[name.partition("{")[2].rstrip("}")] = round(float(value))
    return found


async def cluster_failover(
    options: Options, *, turns: int = 8, pause: float = 0.4, kill_after: float = 1.2
) -> Tally:
    """``options.sessions`` sessions play ``turns`` turns ``pause`` s apart; a master is
    killed ``kill_after`` s in; once its replica serves its slots and the turns are over,
    every task's live history is read."""
    tally = Tally("Redis Cluster failover (kill -9 a master)")
    async with _world() as (procs, http, mock):
        cluster = ReplicatedCluster(procs.workdir)
        try:
            await asyncio.to_thread(cluster.start)
            env = proxy_env(
                procs,
                upstream=f"{mock.url}/v1",
                redis_url=cluster.url,
                python_path=options.python_path,
                PROXY_REDIS_CLUSTER="true",
            )
            proxy = start_proxy(procs, env, "proxy")
            await _ready(http, proxy)
            sessions = [Session(f"failover-{n}") for n in range(options.sessions)]
            victim = cluster.masters()[0]
            spans = cluster.slots_of(victim)
            on_victim = [s for s in sessions if _in(spans, f"chaos:{{{s.task_id}}}")]
            play = asyncio.create_task(
                run_sessions(http, sessions, turns, lambda s, n: [proxy.url], pause=pause)
            )
            await asyncio.sleep(kill_after)
            cluster.kill9(victim)
            promoted = partial(cluster.promoted, victim)
            took = await asyncio.to_thread(cluster.wait, promoted, "fail over")
            await play
            reasons = await _samples(http, proxy.url, "proxy_turns_not_recorded_total")
            refused = sum(reasons.values())
            redis_errors = 'proxy_store_errors_total{store="redis"}'
            felt = sum((await _samples(http, proxy.url, redis_errors)).values())
            await _live_tally(tally, http, proxy.url, sessions)
            silent = max(0, tally.lost - refused)
            tally.measures = {
                "failover_seconds": round(took, 1),
                "tasks_on_killed_master": len(on_victim),
                "refused_loudly": refused,
                "lost_silently": silent,
                "store_errors": felt,
            }
            tally.notes = (
                f"{len(on_victim)}/{len(sessions)} tasks on the killed master; its replica "
                f"served them {took:.1f} s later ({felt} Redis calls failed meanwhile); "
                f"{refused} turn(s) refused loudly (proxy_turns_not_recorded_total"
                f"{_labels(reasons)}), {silent} lost silently"
            )
            if refused:  # what the proxy said about them: the errors behind the refusals
                tally.notes += "".join(f"; logged: {line}" for line in _refusals(proxy.log_text()))
            return tally
        finally:
            cluster.stop()


def _refusals(log: str, limit: int = 5) -> list[str]:
    """The proxy's log lines about turns not recorded, and the store errors that were not
    an outage (a connection lost, a time box missed), distinct, shortened."""
    found: list[str] = []
    for line in log.splitlines():
        outage = "ConnectionError" in line or "TimeoutError" in line
        if "not recorded" in line or ("store unavailable" in line and not outage):
            short = line[:300]
            if short not in found:
                found.append(short)
    return found[:limit]


def _labels(samples: dict[str, int]) -> str:
    return "".join(f"; {labels} {n}" for labels, n in samples.items() if n)


def _in(spans: list[tuple[int, int]], key: str) -> bool:
    slot = key_slot(key.encode())
    return any(low <= slot <= high for low, high in spans)
