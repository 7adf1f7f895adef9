"""CPU work per streamed request, counted: the proxy and the bare aiohttp relay
(``proxy.dev.bench.bare_relay``), each under valgrind's callgrind, same mock, same requests.

    uv run python -m tests.bench.instructions [--requests 300] [--concurrency 1]

CPU seconds per request on a shared VM move by 20% from one run to the next, more than
most changes to the hot path; instructions executed repeat within a few percent. Each server
starts under callgrind (a minute or more: everything runs about 50 times slower), takes
``--warmup`` requests, then its counters are zeroed, ``--requests`` are sent, and the
total is read from the dump: instructions per request, for every thread of the process.
The count depends on how many events each network read brings, so the default sends one
request at a time with the events well apart (``--gap-ms``): each event is read alone,
whatever the machine's load, and the two servers can run at the same time.
Needs ``valgrind`` and ``callgrind_control`` (Debian's valgrind package).
"""

from __future__ import annotations

import argparse
import asyncio
import compileall
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from proxy.dev.bench.procs import (
    Child,
    Processes,
    clean_env,
    free_port,
    start_mock,
    wait_ready,
)

HOST = "127.0.0.1"
STARTUP_SECONDS = 900  # under callgrind, importing everything takes minutes without .pyc
BODY = {
    "model": "bench-model",
    "stream": True,
    "messages": [{"role": "user", "content": "Where is my order?"}],
}


@dataclass
class Counted:
    child: Child  # the server, started under callgrind
    dumps: Path  # callgrind writes its dumps here


def start_counted(name: str, args: list[str], env: dict[str, str], workdir: Path) -> Counted:
    port = free_port()
    dumps = workdir / name
    dumps.mkdir()
    command = [
        "valgrind",
        "--tool=callgrind",
        f"--callgrind-out-file={dumps}/callgrind.%p",
        sys.executable,
        "-m",
        "proxy",
        *args,
        "--host",
        HOST,
        "--port",
        str(port),
    ]
    log = (workdir / f"{name}.log").open("w+b")
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=workdir)
    return Counted(Child(name, proc, port, log), dumps)


async def send(session: aiohttp.ClientSession, url: str, count: int, concurrency: int) -> None:
    """``count`` streamed requests, ``concurrency`` at a time; each must end in [DONE]."""
    left = count

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            async with session.post(f"{url}/v1/chat/completions", json=BODY) as response:
                body = await response.read()
            if response.status != 200 or not body.rstrip().endswith(b"data: [DONE]"):
                raise SystemExit(f"{url}: status {response.status}, body {body[-200:]!r}")

    await asyncio.gather(*(worker() for _ in range(concurrency)))


def callgrind(command: str, pid: int) -> None:
    subprocess.run(["callgrind_control", command, str(pid)], check=True, capture_output=True)


def total_after_zero(dumps: Path) -> int:
    """The instruction total of the newest dump (the one taken after the zeroing)."""
    newest = max(dumps.iterdir(), key=lambda path: path.stat().st_mtime)
    text = newest.read_text(errors="replace")
    found = re.search(r"^(?:summary|totals): (\d+)", text, re.MULTILINE)
    if found is None:
        raise SystemExit(f"no total in {newest}")
    return int(found.group(1))


async def count(server: Counted, warmup: int, requests: int, concurrency: int) -> float:
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        await wait_ready(session, server.child, "/healthz", timeout_s=STARTUP_SECONDS)
        await send(session, server.child.url, warmup, concurrency)
        callgrind("-z", server.child.proc.pid)
        await send(session, server.child.url, requests, concurrency)
        callgrind("-d", server.child.proc.pid)
    await asyncio.sleep(1)  # the dump is written by the server's own thread
    return total_after_zero(server.dumps) / requests


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--chunks", type=int, default=20, help="content chunks per reply")
    parser.add_argument("--gap-ms", type=float, default=20, help="between chunks")
    args = parser.parse_args()
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        raise SystemExit("needs valgrind and callgrind_control (apt-get install valgrind)")
    # Compiled once here (seconds), not imported from source under callgrind (minutes).
    import proxy

    trees = {Path(proxy.__file__).parent, Path(os.__file__).parent}
    trees |= {Path(entry) for entry in sys.path if entry.endswith("site-packages")}
    for tree in trees:
        compileall.compile_dir(tree, quiet=2, workers=os.cpu_count() or 1)
    workdir = Path(tempfile.mkdtemp(prefix="proxy-instructions-"))
    procs = Processes()
    mock = start_mock(procs, first_token_ms=50, gap_ms=args.gap_ms, chunks=args.chunks)
    servers: list[Counted] = []
    try:
        async with aiohttp.ClientSession() as session:
            await wait_ready(session, mock, "/v1/models")
        env = clean_env(
            PROXY_UPSTREAM_BASE_URL=f"{mock.url}/v1",
            PROXY_UPSTREAM_API_KEY="bench",
            PROXY_LOG_LEVEL="warning",
            PROXY_DATABASE_URL=f"sqlite+aiosqlite:///{workdir}/proxy.db",
        )
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        servers = [
            start_counted("proxy", ["serve", "--workers", "1"], env, workdir),
            start_counted("relay", ["bench-relay", "--upstream", f"{mock.url}/v1"], env, workdir),
        ]
        proxy_count, relay_count = await asyncio.gather(
            *(count(s, args.warmup, args.requests, args.concurrency) for s in servers)
        )
    finally:
        for server in servers:
            server.child.proc.terminate()
            server.child.proc.wait(timeout=60)
        procs.stop_all()
        shutil.rmtree(workdir, ignore_errors=True)
    print(
        f"instructions per streamed request ({args.chunks} chunks, {args.requests} requests, "
        f"{args.concurrency} at a time): proxy {proxy_count / 1e6:.3f} M, "
        f"relay {relay_count / 1e6:.3f} M, proxy/relay {proxy_count / relay_count:.2f}x"
    )


if __name__ == "__main__":
    asyncio.run(main())
