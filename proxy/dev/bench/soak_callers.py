"""The soak's callers: the admin setup, the voice sessions (engine stand-ins), and reading
back every task's stored history."""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from proxy.dev.bench.soak_procs import Child, SoakError
from proxy.dev.bench.soak_sessions import KNOWLEDGE, Planner, SessionPlan
from proxy.dev.voice.engine import EngineConfig, run_session
from proxy.dev.voice.room import RoundResult, SessionResult

ADMIN_TOKEN = "soak-admin-token-" + "0" * 16
SIGN_KEY = "soakSignKey0123456789"
SOAK_APP_ID = "1400000001"  # the engines' X-Sdk-App-Id: histories live under "<app>:<task>"
ENGINE_TIMEOUT_S = 2.0


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


# Reading back.


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
