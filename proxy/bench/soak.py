"""``proxy soak``: many voice sessions for a while, then every history checked.

Starts the soak mock upstream (50 ms to the first token, 20 chunks 10 ms apart) and
the proxy (``python -m proxy serve``: Redis under a unique key prefix, a temporary
SQLite database, signed callbacks, the admin API) as subprocesses on free loopback
ports, then runs ``--sessions`` concurrent engine stand-ins (``proxy.voice.engine``)
for ``--duration`` seconds. Each session is a stream of conversations (tasks) of
``--turns-per-session`` turns: normal turns, barge-ins while the reply streams and
while it is spoken (905 carries the spoken prefix), first attempts that stall past the
engine's Timeout and are retried under the same request id, turns that time out
twice, upstream 503s, streams cut mid-way, and (``--tools``) server-side tool turns;
some sessions re-send engine history (History 4), some use a profile with a
knowledge base (retrieval). Every turn the engine ran is then compared with
``GET /admin/tasks/{id}``: lost, duplicated and mismatched turns (the history must
hold what the user heard: the whole reply, the spoken prefix after a barge-in, the
user's words alone when every attempt timed out, nothing after an error before the
first byte). The proxy's RSS is sampled every second (slope over the second half of
the run, in MB/min). ``--seed`` fixes each caller's sequence of calls and turns (how
many fit in the duration depends on timing); ``--dump-failures`` writes every failing
task, turns and stored history, as JSON lines.

Exit status: 0 when nothing was lost, duplicated or mismatched, every error was an
injected one and memory stayed flat; 1 otherwise; 2 when the soak could not run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import IO, Any

import aiohttp
import orjson
import uvloop

from proxy.bench.procs import delete_keys, free_port, redis_error
from proxy.bench.soak_sessions import (
    KNOWLEDGE,
    Planner,
    SessionPlan,
    Verdict,
    round_errors,
    verify,
)
from proxy.voice.engine import EngineConfig, run_session
from proxy.voice.room import RoundResult, SessionResult

HOST = "127.0.0.1"
ADMIN_TOKEN = "soak-admin-token-" + "0" * 16
SIGN_KEY = "soakSignKey0123456789"
SOAK_APP_ID = "1400000001"  # the engines' X-Sdk-App-Id: histories live under "<app>:<task>"
ENGINE_TIMEOUT_S = 2.0
READY_TIMEOUT_S = 30.0
SETTLE_S = 3.0  # after the last turn: 905s and background writes land (grace is 2 s)


class SoakError(RuntimeError):
    """The soak cannot run (a server did not start, the admin API refused the setup)."""


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="proxy soak", description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--sessions", type=int, default=200, help="concurrent voice sessions (200)")
    add("--duration", type=float, default=60.0, help="seconds new turns are started (60)")
    add("--turns-per-session", type=int, default=8, help="turns per conversation/task (8)")
    # The engine's speech clock is virtual (the bot's speech is not waited out), so the
    # pause before a turn stands for the user's utterance, the VAD silence and the bot's
    # speech of the turn before: about 6 s in a real call.
    add("--think-ms", type=float, default=6000.0, help="mean pause before a turn (6000)")
    add("--seed", type=int, default=1)
    add("--tools", action="store_true", help="also server-side tool turns (a tools profile)")
    add("--no-retrieval", action="store_true", help="no knowledge-base sessions")
    add("--max-slope", type=float, default=10.0, help="RSS MB/min allowed (second half)")
    add("--redis-url", default=os.environ.get("PROXY_TEST_REDIS_URL", "redis://127.0.0.1:6379/0"))
    add("--json", action="store_true", help="print the report as JSON")
    add("--dump-failures", metavar="PATH", help="write each failing task (turns, history) here")
    args = parser.parse_args(argv)
    if args.sessions < 1 or args.duration <= 0 or args.turns_per_session < 1:
        parser.error("--sessions, --duration and --turns-per-session must be positive")
    return args


# Processes.


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]
    port: int
    log: IO[bytes]

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def log_text(self) -> str:
        with contextlib.suppress(OSError, ValueError):
            self.log.flush()
            self.log.seek(0)
            return self.log.read().decode(errors="replace")
        return ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)


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


# Setup through the admin API.


async def admin(
    http: aiohttp.ClientSession, proxy: Child, method: str, path: str, body: Any
) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    async with http.request(method, proxy.url + path, json=body, headers=headers) as response:
        payload = await response.read()
        if response.status >= 300:
            raise SoakError(f"{method} {path}: HTTP {response.status} {payload[:300]!r}")
        return orjson.loads(payload) if payload else {}


async def set_up(
    http: aiohttp.ClientSession, proxy: Child, mock: Child, *, tools: bool, retrieval: bool
) -> dict[str, str]:
    """Caller keys per profile (once a key exists every call needs one)."""
    keys = {}
    if tools:
        await admin(
            http,
            proxy,
            "POST",
            "/admin/tools",
            {
                "name": "lookup_order",
                "description": "Look up an order's delivery status",
                "parameters": {"type": "object", "properties": {"order": {"type": "string"}}},
                "url": f"{mock.url}/tool/lookup_order",
                "allow_private_network": True,
                "timeout_seconds": 3,
                "filler": "Let me check that order.",
            },
        )
        profile = {"name": "soak-tools", "tools": ["lookup_order"]}
        await admin(http, proxy, "POST", "/admin/profiles", profile)
    if retrieval:
        await admin(http, proxy, "POST", "/admin/knowledge-bases", {"name": "soak-kb"})
        document = {"source_id": "guide", "content": KNOWLEDGE, "content_type": "text/plain"}
        await admin(http, proxy, "POST", "/admin/knowledge-bases/soak-kb/documents", document)
        profile = {"name": "soak-rag", "knowledge_bases": ["soak-kb"]}
        await admin(http, proxy, "POST", "/admin/profiles", profile)
    for name, profile_name in (("plain", None), ("tools", "soak-tools"), ("rag", "soak-rag")):
        if (name == "tools" and not tools) or (name == "rag" and not retrieval):
            continue
        created = await admin(
            http, proxy, "POST", "/admin/keys", {"name": f"soak-{name}", "profile": profile_name}
        )
        keys[name] = str(created["key"])
    return keys


# The sessions.


@dataclass
class Conversation:
    task_id: str
    plan: SessionPlan
    result: SessionResult | None = None
    rounds: list[RoundResult] = field(default_factory=list)
    crash: str | None = None


async def caller(
    number: int,
    proxy: Child,
    keys: dict[str, str],
    args: argparse.Namespace,
    deadline: float,
    done: list[Conversation],
) -> None:
    planner = Planner(
        args.seed,
        number,
        tools=args.tools,
        retrieval=not args.no_retrieval,
        think_ms=args.think_ms,
    )
    await asyncio.sleep(planner.rng.uniform(0, min(3.0, args.duration / 4)))  # ramp up
    run = uuid.uuid4().hex[:6]
    conversation_number = 0
    while time.monotonic() < deadline:
        plan = planner.session()
        task_id = f"soak-{run}-{number}-{conversation_number}"
        conversation_number += 1
        conversation = Conversation(task_id, plan)
        done.append(conversation)
        config = EngineConfig(
            url=proxy.url + "/v1/chat/completions",
            api_key=keys[plan.profile],
            model="soak-model",
            system_prompt="You are a helpful voice assistant for an online shop.",
            timeout_s=ENGINE_TIMEOUT_S,
            history=plan.history,
            task_id=task_id,
            sdk_app_id=SOAK_APP_ID,
            user_id=f"user-{number}",
            room_id=f"room-{number}",
            callback_url=proxy.url + "/callbacks/trtc",
            callback_key=SIGN_KEY,
        )

        out_of_time: list[bool] = []

        async def turns(
            plan: SessionPlan = plan, out_of_time: list[bool] = out_of_time
        ) -> AsyncIterator[Any]:
            for turn_number in range(args.turns_per_session):
                turn = planner.turn(plan, turn_number)
                if time.monotonic() + turn.wait_ms / 1000 >= deadline:
                    plan.kinds.pop()  # the next turn would start too late: hang up
                    out_of_time.append(True)
                    return
                yield turn

        try:
            conversation.result = await run_session(
                config, turns(), on_round=conversation.rounds.append
            )
        except Exception as exc:  # recorded; the other sessions go on
            conversation.crash = f"{type(exc).__name__}: {exc}"
            await asyncio.sleep(1)
        if not conversation.rounds and conversation.crash is None:
            done.remove(conversation)  # a call that hung up before its first turn
        if out_of_time:
            return


# The report.


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


async def read_histories(
    http: aiohttp.ClientSession, proxy: Child, conversations: list[Conversation]
) -> dict[str, list[dict[str, Any]] | str]:
    semaphore = asyncio.Semaphore(16)
    found: dict[str, list[dict[str, Any]] | str] = {}
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

    async def read(task_id: str) -> None:
        async with semaphore:
            for attempt in range(3):
                try:
                    async with http.get(
                        f"{proxy.url}/admin/tasks/{task_id}",
                        params={"app_id": SOAK_APP_ID},
                        headers=headers,
                        timeout=aiohttp.ClientTimeout(total=30),
                    ) as response:
                        payload = await response.read()
                        if response.status == 404:
                            found[task_id] = []
                            return
                        if response.status == 200:
                            found[task_id] = orjson.loads(payload)["messages"]
                            return
                        found[task_id] = f"HTTP {response.status}"
                except (aiohttp.ClientError, TimeoutError) as exc:
                    found[task_id] = f"{type(exc).__name__}"
                await asyncio.sleep(0.5 * (attempt + 1))

    await asyncio.gather(*(read(c.task_id) for c in conversations))
    return found


def failure_record(
    conversation: Conversation, stored: list[dict[str, Any]], verdict: Verdict
) -> dict[str, Any]:
    rounds = [
        {
            "kind": kind,
            "request_id": rnd.request_id,
            "user": rnd.user_text,
            "received": rnd.received_text,
            "spoken": rnd.spoken_text,
            "interrupted": rnd.interrupted,
            "retries": rnd.retries,
            "error": rnd.error_code,
        }
        for kind, rnd in zip(conversation.plan.kinds, conversation.rounds, strict=False)
    ]
    keep = ("role", "content", "request_id", "interrupted", "source", "tool_calls", "created_at")
    history = [{k: m.get(k) for k in keep} for m in stored]
    return {
        "task_id": conversation.task_id,
        "profile": conversation.plan.profile,
        "engine_history": conversation.plan.history,
        "problems": verdict.examples,
        "rounds": rounds,
        "stored": history,
    }


def proxy_log_counts(text: str) -> tuple[Counter[str], Counter[str]]:
    """(errors, warnings) of the proxy's JSON log, by logger and message."""
    errors: Counter[str] = Counter()
    warnings: Counter[str] = Counter()
    for line in text.splitlines():
        try:
            entry = orjson.loads(line)
        except orjson.JSONDecodeError:
            if line.strip() and "Traceback" in line:
                errors["traceback (unstructured output)"] += 1
            continue
        if not isinstance(entry, dict):
            continue
        label = f"{entry.get('logger')}: {str(entry.get('msg'))[:70]}"
        if entry.get("level") in ("error", "critical"):
            errors[label] += 1
        elif entry.get("level") == "warning":
            warnings[label] += 1
    return errors, warnings


async def soak(args: argparse.Namespace) -> dict[str, Any]:
    problem = redis_error(args.redis_url)
    if problem:
        raise SoakError(f"Redis at {args.redis_url} is not usable: {problem}")
    workdir = tempfile.mkdtemp(prefix="proxy-soak-")
    prefix = f"proxysoak:{uuid.uuid4().hex[:12]}:"
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("PROXY_")}
    children: list[Child] = []
    try:
        mock = start_child(
            "mock",
            ["proxy.bench.soak_sessions", "--first-token-ms", "50", "--gap-ms", "10"],
            base_env,
            workdir,
        )
        children.append(mock)
        proxy_env = {
            **base_env,
            "PROXY_UPSTREAM_BASE_URL": f"http://{HOST}:{mock.port}/v1",
            "PROXY_UPSTREAM_API_KEY": "soak-upstream-key",
            "PROXY_REDIS_URL": args.redis_url,
            "PROXY_REDIS_PREFIX": prefix,
            "PROXY_HISTORY_TTL_SECONDS": "3600",
            "PROXY_CALLBACK_SIGN_KEY": SIGN_KEY,
            "PROXY_ADMIN_TOKEN": ADMIN_TOKEN,
            "PROXY_DATABASE_URL": f"sqlite+aiosqlite:///{workdir}/proxy.db",
            "PROXY_LOG_LEVEL": "warning",
        }
        serve = ["proxy", "serve", "--host", HOST, "--graceful-timeout", "2"]
        proxy = start_child("proxy", serve, proxy_env, workdir)
        children.append(proxy)
        return await _soak(args, mock, proxy)
    finally:
        for child in reversed(children):
            child.stop()
        delete_keys(args.redis_url, prefix)
        shutil.rmtree(workdir, ignore_errors=True)


async def _soak(args: argparse.Namespace, mock: Child, proxy: Child) -> dict[str, Any]:
    connector = aiohttp.TCPConnector(limit=64)
    async with aiohttp.ClientSession(connector=connector) as http:
        await wait_ready(http, mock, "/v1/models")
        await wait_ready(http, proxy, "/healthz")
        retrieval = not args.no_retrieval
        keys = await set_up(http, proxy, mock, tools=args.tools, retrieval=retrieval)
        await asyncio.sleep(0.5)  # the proxy's catalog picks up the new keys
        sampler = Sampler(proxy.proc.pid)
        stop_sampling = asyncio.Event()
        started = time.monotonic()
        sampling = asyncio.create_task(sampler.run(started, stop_sampling))
        conversations: list[Conversation] = []
        deadline = started + args.duration
        await asyncio.gather(
            *(caller(n, proxy, keys, args, deadline, conversations) for n in range(args.sessions))
        )
        finished = time.monotonic()
        await asyncio.sleep(SETTLE_S)
        stop_sampling.set()
        await sampling
        histories = await read_histories(http, proxy, conversations)
    return build_report(args, conversations, histories, sampler, finished - started, proxy)


def build_report(
    args: argparse.Namespace,
    conversations: list[Conversation],
    histories: dict[str, list[dict[str, Any]] | str],
    sampler: Sampler,
    elapsed: float,
    proxy: Child,
) -> dict[str, Any]:
    total = Verdict()
    injected: Counter[str] = Counter()
    unexpected: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    ttft: list[float] = []
    grounded = 0
    examples: list[str] = []
    failing: list[dict[str, Any]] = []
    for conversation in conversations:
        rounds = conversation.rounds
        if conversation.crash:
            unexpected[f"session crashed: {conversation.crash[:60]}"] += 1
        for kind, rnd in zip(conversation.plan.kinds, rounds, strict=False):
            kinds[kind] += 1
            good, bad = round_errors(kind, rnd)
            injected.update(good)
            unexpected.update(bad)
            if rnd.first_token_ms is not None:
                ttft.append(rnd.first_token_ms)
            if conversation.plan.profile == "rag" and any(
                isinstance(m, dict) and m.get("sources") for m in rnd.metainfo
            ):
                grounded += 1
        if conversation.result is not None:
            undelivered = sum(1 for c in conversation.result.callbacks if not c.delivered)
            if undelivered:
                unexpected["callback not delivered"] += undelivered
        stored = histories.get(conversation.task_id, "not read")
        if isinstance(stored, str):
            unexpected[f"admin task view failed: {stored}"] += 1
            continue
        verdict = verify(conversation.task_id, rounds, stored)
        if args.dump_failures and (verdict.lost or verdict.duplicated or verdict.mismatched):
            failing.append(failure_record(conversation, stored, verdict))
        for name in ("turns", "ok", "lost", "duplicated", "mismatched"):
            setattr(total, name, getattr(total, name) + getattr(verdict, name))
        examples.extend(verdict.examples[: max(0, 8 - len(examples))])
    if args.dump_failures:
        with open(args.dump_failures, "wb") as out:
            for record in failing:
                out.write(orjson.dumps(record) + b"\n")
    log_errors, log_warnings = proxy_log_counts(proxy.log_text())
    for label, count in log_errors.items():
        unexpected[f"proxy log error: {label}"] += count
    half = args.duration / 2
    rss = [m for t, m in sampler.samples if t <= args.duration]
    profiles = Counter(c.plan.profile for c in conversations)
    report: dict[str, Any] = {
        "config": {
            "sessions": args.sessions,
            "duration_s": args.duration,
            "turns_per_session": args.turns_per_session,
            "think_ms": args.think_ms,
            "seed": args.seed,
            "tools": args.tools,
            "retrieval": not args.no_retrieval,
            "engine_timeout_s": ENGINE_TIMEOUT_S,
        },
        "tasks": len(conversations),
        "tasks_by_profile": dict(profiles),
        "engine_history_tasks": sum(1 for c in conversations if c.plan.history),
        "turns": total.turns,
        "turns_by_kind": dict(kinds),
        "grounded_turns": grounded,
        "elapsed_s": round(elapsed, 1),
        "throughput_turns_per_s": round(total.turns / elapsed, 1) if elapsed else 0.0,
        "ttft_ms": {
            f"p{q}": round(v, 1) if (v := percentile(ttft, q)) is not None else None
            for q in (50, 95, 99)
        },
        "history": {
            "ok": total.ok,
            "lost": total.lost,
            "duplicated": total.duplicated,
            "mismatched": total.mismatched,
            "examples": examples,
        },
        "errors": {"injected": dict(injected), "unexpected": dict(unexpected)},
        "proxy_log_warnings": dict(log_warnings.most_common(8)),
        "rss_mb": {
            "start": round(rss[0], 1) if rss else None,
            "end": round(rss[-1], 1) if rss else None,
            "max": round(max(rss), 1) if rss else None,
            "slope_second_half_mb_per_min": round(sampler.slope_mb_per_min(half, args.duration), 2),
            "after_settle": round(sampler.samples[-1][1], 1) if sampler.samples else None,
            "every_5s": [round(m, 1) for _, m in sampler.samples[::5]],
        },
        "proxy_cpu_percent": round(sampler.cpu_percent(0, args.duration), 1),
    }
    slope = report["rss_mb"]["slope_second_half_mb_per_min"]
    report["passed"] = (
        total.lost == total.duplicated == total.mismatched == 0
        and not unexpected
        and total.turns > 0
        and slope <= args.max_slope
    )
    return report


def render(report: dict[str, Any]) -> str:
    c, h, rss = report["config"], report["history"], report["rss_mb"]
    ttft = report["ttft_ms"]
    rows: list[tuple[str, str]] = [
        ("sessions x duration", f"{c['sessions']} x {c['duration_s']:g} s"),
        ("turns per task, think", f"{c['turns_per_session']}, ~{c['think_ms']:g} ms"),
        ("tasks (profile)", f"{report['tasks']} ({_pairs(report['tasks_by_profile'])})"),
        ("tasks with engine History 4", str(report["engine_history_tasks"])),
        ("turns", str(report["turns"])),
        ("turns by kind", _pairs(report["turns_by_kind"])),
        ("grounded turns (retrieval)", str(report["grounded_turns"])),
        ("throughput", f"{report['throughput_turns_per_s']} turns/s"),
        ("TTFT p50 / p95 / p99", f"{ttft['p50']} / {ttft['p95']} / {ttft['p99']} ms"),
        ("history ok", str(h["ok"])),
        ("LOST turns", str(h["lost"])),
        ("DUPLICATED turns", str(h["duplicated"])),
        ("MISMATCHED turns", str(h["mismatched"])),
        ("injected errors", _pairs(report["errors"]["injected"]) or "none"),
        ("UNEXPECTED errors", _pairs(report["errors"]["unexpected"]) or "none"),
        ("proxy RSS start/end/max", f"{rss['start']} / {rss['end']} / {rss['max']} MB"),
        ("RSS slope (2nd half)", f"{rss['slope_second_half_mb_per_min']} MB/min"),
        ("proxy CPU (one core = 100)", f"{report['proxy_cpu_percent']} %"),
        ("result", "PASS" if report["passed"] else "FAIL"),
    ]
    width = max(len(name) for name, _ in rows)
    lines = ["proxy soak", "-" * (width + 40)]
    lines += [f"{name:<{width}}  {value}" for name, value in rows]
    if h["examples"]:
        lines += ["", "examples:", *(f"  {e}" for e in h["examples"])]
    if report["proxy_log_warnings"]:
        lines += ["", "proxy log warnings:"]
        lines += [f"  {n:>6}  {label}" for label, n in report["proxy_log_warnings"].items()]
    return "\n".join(lines) + "\n"


def _pairs(counts: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in counts.items())


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        report = uvloop.run(soak(args))
    except SoakError as exc:
        print(f"proxy soak: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    if args.json:
        sys.stdout.write(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        sys.stdout.write(render(report))
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
